"""The safety envelope: the last check between the policy and the arm, on every control tick.

ROS-free and independent of the command adapter: the adapter already clips its targets, and
this module checks the final target again with its own limits, so that a bug or a bad
configuration upstream cannot move the arm outside what the operator allows.

The policy node, on every control tick::

    verdict = envelope.check_observation(obs, stamp, now)
    command = adapter.command(action, obs["eef_pos"], obs["eef_quat"]) if verdict.ok else None
    safe = envelope.filter_command(command, now, blocked=mode_guard.check(now).blocking_reason)
    if safe.command is not None:
        publish(safe.command)  # target pose + gripper width

and ``envelope.pause()`` / ``envelope.resume()`` from its ``~/pause`` / ``~/resume`` services,
``envelope.shutdown(now)`` (publish the returned hold once) before it exits, and
``envelope.status()`` for its diagnostics. ``now`` and ``stamp`` are seconds on one clock
(the node's ROS clock).

What comes out (``SafeCommand.command``):

- the command, possibly limited: the target clipped to the workspace box, then moved at most
  ``max_translation_step`` metres and ``max_rotation_step`` radians from the measured pose,
  the gripper width clipped to its range;
- a *hold*: the measured pose of the last accepted observation, or the target sent after it
  (the arm is on its way there: holding the older measured pose would move it back), latched
  when holding starts and repeated unchanged while it lasts (latching avoids creeping under
  gravity), with the last
  safe gripper width (an object in the hand stays there). Holding happens when the observation
  is invalid (NaN/inf, malformed, stale), the command is invalid, the envelope is paused, or
  after shutdown;
- ``None``, publish nothing: no observation has been accepted yet, none for longer than
  ``watchdog_timeout`` (the watchdog), or an external guard blocks the arm (e.g. the robot
  mode guard during a reflex or a user stop). The Cartesian controller then keeps its last
  target, which was within one step of a measured pose.

Every rejection or limitation has a reason (keys of ``REASONS``) and ``counts`` counts, per
reason, the ticks it applied to.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from cfgrl_ros.arm.command_adapter import ArmCommand, relative_rotvec, rotated
from cfgrl_ros.observation import OBSERVATION_FIELDS, PROPRIOCEPTION, is_finite
from cfgrl_ros.settings import setting, setting_problems

REASONS: dict[str, str] = {
    # observation (check_observation)
    "no_observation": "no observation has been accepted yet",
    "malformed_observation": "the observation lacks a field or a field has the wrong size",
    "non_finite_observation": "the observation has NaN or inf values",
    "invalid_eef_quat": "the end-effector quaternion is not of unit length",
    "stale_observation": "the observation is older than max_observation_age",
    "future_observation": "the observation is stamped ahead of the clock (clocks disagree)",
    # ticks (filter_command)
    "watchdog": "no observation accepted for longer than watchdog_timeout: targets stopped",
    "paused": "paused by the operator: holding",
    "shutdown": "shut down: holding",
    "no_command": "no command this tick: holding",
    "non_finite_command": "the command has NaN or inf values: holding",
    "outside_workspace": "the target was clipped to the workspace box",
    "max_translation_step": "the target was moved back to max_translation_step from the arm",
    "max_rotation_step": "the target was rotated back to max_rotation_step from the arm",
    "gripper_width_clipped": "the gripper width was clipped to its range",
    # gripper (limit_grasp_force)
    "grasp_force_limited": "the grasp force was lowered to max_grasp_force",
}

# diagnostic_msgs/DiagnosticStatus levels, without importing ROS.
LEVEL_OK, LEVEL_WARN, LEVEL_ERROR = 0, 1, 2

_QUAT_NORM_TOLERANCE = 0.01


@dataclass(frozen=True)
class SafetyConfig:
    """Limits of the safety envelope (base frame, metres, radians, seconds, newtons).

    Set ``max_translation_step`` at or above sqrt(3) x the adapter's ``max_translation``, and
    ``max_rotation_step`` at or above sqrt(3) x its ``max_rotation``, so the envelope only
    acts when something upstream is wrong (the defaults do, for the adapter's defaults).
    """

    workspace_low: tuple[float, float, float] = setting(
        (0.25, -0.45, -0.105),
        "lower corner (x, y, z) of the box targets are clipped to, base frame, m",
    )
    workspace_high: tuple[float, float, float] = setting(
        (0.85, 0.45, 0.40),
        "upper corner (x, y, z) of the box targets are clipped to, base frame, m",
    )
    max_translation_step: float = setting(
        0.06,
        "largest distance (m) between a target and the measured position; at least sqrt(3) x "
        "the adapter's max_translation (0.052 m for 0.03 m)",
        minimum=0.0,
        above=True,
    )
    max_rotation_step: float = setting(
        0.25,
        "largest angle (rad) between a target and the measured orientation; at least sqrt(3) "
        "x the adapter's max_rotation (0.17 rad for 0.1 rad)",
        minimum=0.0,
        above=True,
    )
    gripper_min_width: float = setting(0.0, "smallest commanded finger opening (m)", minimum=0.0)
    gripper_max_width: float = setting(0.08, "largest commanded finger opening (m)", minimum=0.0)
    max_grasp_force: float = setting(
        40.0,
        "largest grasp force (N); a larger grasp_force is lowered to it",
        minimum=0.0,
        above=True,
    )
    max_observation_age: float = setting(
        0.25, "observations older than this (s) hold the arm", minimum=0.0, above=True
    )
    watchdog_timeout: float = setting(
        1.0,
        "without an accepted observation for this long (s), stop sending targets",
        minimum=0.0,
        above=True,
    )

    def __post_init__(self) -> None:
        problems = setting_problems(self)
        if problems:
            raise ValueError("invalid safety settings: " + "; ".join(problems))
        low = np.asarray(self.workspace_low, dtype=float)
        high = np.asarray(self.workspace_high, dtype=float)
        if low.shape != (3,) or high.shape != (3,) or not np.all(low < high):
            raise ValueError(
                f"workspace_low {self.workspace_low} must be 3 numbers each below "
                f"workspace_high {self.workspace_high}"
            )
        if not self.gripper_min_width < self.gripper_max_width:
            raise ValueError(
                f"need 0 <= gripper_min_width ({self.gripper_min_width}) < "
                f"gripper_max_width ({self.gripper_max_width})"
            )
        if not self.max_observation_age < self.watchdog_timeout:
            raise ValueError(
                f"need 0 < max_observation_age ({self.max_observation_age}) < "
                f"watchdog_timeout ({self.watchdog_timeout}) seconds"
            )


@dataclass(frozen=True)
class Verdict:
    """Whether an observation may be acted on; if not, why (keys of ``REASONS``)."""

    ok: bool
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class SafeCommand:
    """What to publish this tick: ``command`` (None: nothing) and why it differs, if it does."""

    command: ArmCommand | None
    reasons: tuple[str, ...] = ()
    holding: bool = False


@dataclass(frozen=True)
class SafetyStatus:
    """A diagnostics summary: level (LEVEL_OK/WARN/ERROR), message, key-values."""

    level: int
    message: str
    values: dict[str, str] = field(default_factory=dict)


def rotation_angle(quat_a: np.ndarray, quat_b: np.ndarray) -> float:
    """Angle (radians, in [0, pi]) of the rotation between two unit (x, y, z, w) quaternions."""
    cosine = abs(float(np.dot(quat_a, quat_b)))
    return 2.0 * float(np.arccos(min(1.0, cosine)))


class SafetyEnvelope:
    """Checks observations and commands against a ``SafetyConfig``; see the module docstring."""

    def __init__(self, config: SafetyConfig = SafetyConfig()) -> None:
        self.config = config
        self.counts: Counter[str] = Counter()
        self._low = np.asarray(config.workspace_low, dtype=np.float64)
        self._high = np.asarray(config.workspace_high, dtype=np.float64)
        # The last accepted observation: where the arm was, and when.
        self._accepted_stamp: float | None = None
        self._accepted_pos = np.zeros(3)
        self._accepted_quat = np.array([0.0, 0.0, 0.0, 1.0])
        self._gripper_width = 0.0  # last safe commanded width, else the measured one
        self._commanded_gripper = False
        self._last_verdict: Verdict | None = None
        self._hold: ArmCommand | None = None  # latched while a hold lasts
        self._sent_since_accepted: ArmCommand | None = None  # the last target after that pose
        self._paused = False
        self._shut_down = False
        self._last = SafeCommand(None, ("no_observation",))

    # -- operator state -------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def shut_down(self) -> bool:
        return self._shut_down

    def pause(self) -> None:
        """Hold the arm from the next tick on, until ``resume()``."""
        self._paused = True

    def resume(self) -> bool:
        """Let commands through again; False (and still holding) after ``shutdown``."""
        if self._shut_down:
            return False
        self._paused = False
        return True

    def shutdown(self, now: float, blocked: str = "") -> SafeCommand:
        """Hold the current pose from now on; returns the hold to publish once (or None)."""
        self._shut_down = True
        return self.filter_command(None, now, blocked)

    # -- per tick -------------------------------------------------------------------------

    def check_observation(
        self, obs: Mapping[str, np.ndarray] | None, stamp: float | None, now: float
    ) -> Verdict:
        """Accept or reject the observation taken at ``stamp`` (seconds), checked at ``now``.

        An accepted observation's end-effector pose is what ``filter_command`` measures steps
        from and holds; a rejected one changes nothing but the verdict.
        """
        reasons = self._observation_problems(obs, stamp, now)
        verdict = Verdict(not reasons, tuple(reasons))
        self.counts.update(reasons)
        self._last_verdict = verdict
        if verdict.ok:
            self._sent_since_accepted = None
            self._accepted_stamp = float(stamp)
            self._accepted_pos = np.asarray(obs["eef_pos"], dtype=np.float64).copy()
            quat = np.asarray(obs["eef_quat"], dtype=np.float64)
            self._accepted_quat = quat / np.linalg.norm(quat)
            if not self._commanded_gripper:
                self._gripper_width = self._clip_width(float(np.sum(obs["gripper_width"])))
        return verdict

    def filter_command(
        self, command: ArmCommand | None, now: float, blocked: str = ""
    ) -> SafeCommand:
        """The command to publish at ``now``: ``command`` if safe, limited, a hold, or None.

        ``command`` is None when there is nothing new to send (the observation was rejected).
        ``blocked`` is a reason from an external guard (e.g. "robot_mode_reflex") that forbids
        commanding the arm at all; it is counted like the envelope's own reasons.
        """
        if self._accepted_stamp is None:
            if self._last_verdict is None:
                return self._stop(("no_observation",))
            return self._stop(self._last_verdict.reasons, count=False)  # counted when checked
        age = now - self._accepted_stamp
        if age > self.config.watchdog_timeout:
            return self._stop(("watchdog",))
        if blocked:
            return self._stop((blocked,))
        if self._shut_down:
            return self._hold_output(("shutdown",))
        if self._paused:
            return self._hold_output(("paused",))
        if not self._last_verdict.ok:
            # Already counted by check_observation; reported again so the caller can log it.
            return self._hold_output(self._last_verdict.reasons, count=False)
        if age > self.config.max_observation_age:
            return self._hold_output(("stale_observation",))
        if command is None:
            return self._hold_output(("no_command",))
        target_pos = np.asarray(command.target_pos, dtype=np.float64)
        target_quat = np.asarray(command.target_quat, dtype=np.float64)
        width = float(command.gripper_width)
        if (
            target_pos.shape != (3,)
            or target_quat.shape != (4,)
            or not np.all(np.isfinite(target_pos))
            or not np.all(np.isfinite(target_quat))
            or not np.isfinite(width)
            or np.linalg.norm(target_quat) < 1e-6
        ):
            return self._hold_output(("non_finite_command",))

        reasons: list[str] = []
        target_pos, limited = self._limit_position(target_pos)
        reasons += limited
        target_quat, limited = self._limit_rotation(target_quat / np.linalg.norm(target_quat))
        reasons += limited
        safe_width = self._clip_width(width)
        if safe_width != width:
            reasons.append("gripper_width_clipped")
        self._gripper_width = safe_width
        self._commanded_gripper = True
        self._hold = None
        safe = ArmCommand(target_pos, target_quat, safe_width, tuple(command.limited))
        self._sent_since_accepted = safe
        return self._output(SafeCommand(safe, tuple(reasons)))

    def limit_grasp_force(self, force: float) -> float:
        """``force`` (N) lowered to ``max_grasp_force`` if above it (counted)."""
        if not (np.isfinite(force) and force >= 0):
            raise ValueError(f"grasp force must be a finite number >= 0 newtons, got {force}")
        if force > self.config.max_grasp_force:
            self.counts["grasp_force_limited"] += 1
            return self.config.max_grasp_force
        return float(force)

    def status(self) -> SafetyStatus:
        """The state after the last tick, for diagnostic_msgs/DiagnosticStatus."""
        last = self._last
        if last.command is None:
            level, state = LEVEL_ERROR, "stopped"
        elif last.holding:
            level, state = LEVEL_WARN, "holding"
        elif last.reasons:
            level, state = LEVEL_WARN, "limited"
        else:
            level, state = LEVEL_OK, "running"
        message = state + "".join(f"; {REASONS.get(r, r)}" for r in last.reasons)
        values = {"state": state, "paused": str(self._paused), "shut_down": str(self._shut_down)}
        values.update({f"count.{reason}": str(n) for reason, n in sorted(self.counts.items())})
        return SafetyStatus(level, message, values)

    # -- helpers --------------------------------------------------------------------------

    def _observation_problems(
        self, obs: Mapping[str, np.ndarray] | None, stamp: float | None, now: float
    ) -> list[str]:
        if obs is None or stamp is None:
            return ["no_observation"]
        # The arm's own fields always; the object pose only where the policy reads one.
        if any(name not in obs for name in PROPRIOCEPTION) or any(
            np.asarray(obs[name]).shape[-1:] != (size,)
            for name, size in OBSERVATION_FIELDS.items()
            if name in obs
        ):
            return ["malformed_observation"]
        if not is_finite(obs) or not np.isfinite(stamp):
            return ["non_finite_observation"]
        problems = []
        if abs(np.linalg.norm(np.asarray(obs["eef_quat"], dtype=np.float64)) - 1.0) > (
            _QUAT_NORM_TOLERANCE
        ):
            problems.append("invalid_eef_quat")
        if now - stamp > self.config.max_observation_age:
            problems.append("stale_observation")
        elif stamp - now > self.config.max_observation_age:
            problems.append("future_observation")
        return problems

    def _limit_position(self, target_pos: np.ndarray) -> tuple[np.ndarray, list[str]]:
        reasons = []
        clipped = np.clip(target_pos, self._low, self._high)
        if not np.array_equal(clipped, target_pos):
            reasons.append("outside_workspace")
        # Measured from where the arm is: an arm outside the box is led back one step at a time.
        step = clipped - self._accepted_pos
        distance = float(np.linalg.norm(step))
        if distance > self.config.max_translation_step:
            reasons.append("max_translation_step")
            clipped = self._accepted_pos + step * (self.config.max_translation_step / distance)
        return clipped, reasons

    def _limit_rotation(self, target_quat: np.ndarray) -> tuple[np.ndarray, list[str]]:
        angle = rotation_angle(target_quat, self._accepted_quat)
        if angle <= self.config.max_rotation_step:
            return target_quat, []
        # Rotate from the measured orientation towards the target by the allowed angle.
        delta = relative_rotvec(self._accepted_quat, target_quat)
        scaled = delta * (self.config.max_rotation_step / float(np.linalg.norm(delta)))
        return rotated(self._accepted_quat, scaled), ["max_rotation_step"]

    def _clip_width(self, width: float) -> float:
        return float(np.clip(width, self.config.gripper_min_width, self.config.gripper_max_width))

    def _hold_output(self, reasons: tuple[str, ...], count: bool = True) -> SafeCommand:
        if self._hold is None:  # a hold starts: latch where the arm was last seen or sent
            sent = self._sent_since_accepted
            position, quaternion = (
                (self._accepted_pos, self._accepted_quat)
                if sent is None
                else (np.asarray(sent.target_pos), np.asarray(sent.target_quat))
            )
            self._hold = ArmCommand(position.copy(), quaternion.copy(), self._gripper_width)
        return self._output(SafeCommand(self._hold, reasons, holding=True), count)

    def _stop(self, reasons: tuple[str, ...], count: bool = True) -> SafeCommand:
        self._hold = None  # the next hold latches a fresh pose
        return self._output(SafeCommand(None, reasons), count)

    def _output(self, safe: SafeCommand, count: bool = True) -> SafeCommand:
        if count:
            self.counts.update(safe.reasons)
        self._last = safe
        return safe
