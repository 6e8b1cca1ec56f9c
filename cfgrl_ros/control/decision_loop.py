"""The policy node's control loop without ROS: phases driven by observations, noise, events, time.

The node (cfgrl_ros.nodes.policy_node) turns messages and service calls into calls of
``DecisionLoop`` and publishes what they return; the loop decides. Every input takes ``now``,
the node's clock in seconds, so tests drive it with a fake clock.

Phases (``DecisionLoop.phase``):

- IDLE: no episode, not homing; nothing is sent.
- HOMING: ``~/home`` accepted; each control step moves the arm one limited step towards the
  home pose with the gripper open, until it is there or ``home.timeout`` has passed.
- AWAITING_NOISE: a decision's features were sent to the noise actor; the arm keeps its last
  target until the answer (matched by the decision's stamp) or the deadline (``noise_timeout``,
  ``first_noise_timeout`` for an episode's first decision), then the chunk is decoded from the
  answer or from w0 ~ N(0, I), the base policy.
- EXECUTING: an episode runs; each control step sends the next action of the chunk, and after
  ``exec_horizon`` actions a new decision starts. A decision's record (`Decided`) is output
  once it is over: the next decision starts or the episode ends.
- STOPPING: lockstep only: the episode ended while the simulator had not answered the last
  target; the episode-end record waits for that answer (at most ``stop_wait``), so that it
  describes the state the last command led to.

Operator: ``takeover(True)`` (refused with the reason when no episode runs, while paused,
homing or stopping) hands the arm to the operator at the next control step: each step then
sends the operator's latest action (`operator_action`) instead of the chunk's, or holds the arm
when none is younger than ``operator_timeout`` (the operator stays in control: control never
goes back to the policy unasked). Decisions go on on the same grid: one started while the
operator drives decodes nothing, and the records mark the operator's ticks. ``takeover(False)``
hands back at the next decision, so that the policy executes whole chunks decoded for the
state they start from. An episode's end hands back too.

Control steps: with ``lockstep`` false the node's timer calls ``tick`` (the deadlines, then a
control step: at most one command per tick) and observations are checked against ``now``. With
``lockstep`` true a fresh observation (every part received after the last command and after the
last episode's end; ``observed`` counts receipts) makes the step, and the observation's stamp
is the envelope's time: the simulated world stands still between steps. An episode that finds
no fresh observation (a part of the simulator's reset observation was lost, or was taken as the
answer to the last episode's command) sends a hold after ``lockstep_resend``, so that the
simulator steps and publishes. Every command passes the adapter and the safety envelope (stale
or missing observations hold the arm; pause holds it; shutdown sends a last hold).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol

import numpy as np

from cfgrl_ros.arm.command_adapter import ACTION_DIM, ArmCommand, ArmCommandAdapter
from cfgrl_ros.arm.safety import SafetyEnvelope
from cfgrl_ros.control.messages import Log, Reply

if TYPE_CHECKING:
    from cfgrl_ros.nodes.arm_interface import HomePose

LOCKSTEP_RESEND = 1.0  # seconds without an answer from a lockstep simulator: send again
STOP_WAIT = 0.5  # seconds to wait for the simulator's answer to the last target at an end
ARM_PARTS = ("joint_states", "current_pose")  # what homing needs of the observation

Observed = tuple[dict[str, np.ndarray], float]  # an observation and its (oldest part's) stamp


class Phase(Enum):
    IDLE = "idle"
    HOMING = "homing"
    AWAITING_NOISE = "awaiting noise"
    EXECUTING = "executing"
    STOPPING = "stopping"


class Policy(Protocol):
    """What the loop needs of a policy (the node wraps a FlowPolicy)."""

    noise_shape: tuple[int, int]
    feature_dim: int

    def encode(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """Features [D] of an observation; ValueError if it does not fit."""

    def decode(self, features: np.ndarray, noise: np.ndarray, guidance_weight: float) -> np.ndarray:
        """The action chunk [H, 7] decoded from `noise` [H, 7]."""


class ObservationSource(Protocol):
    def __call__(self, with_images: bool, arm_only: bool = False) -> Observed | None:
        """The latest observation, None while a part is missing; ValueError if one is bad.

        ``arm_only``: only joint states and end-effector pose are needed (homing).
        """


@dataclass(frozen=True)
class LoopSettings:
    """How the loop runs; the policy node's parameters of the same names take these defaults."""

    exec_horizon: int  # the noise agent's (DsrlConfig.exec_horizon): the two must agree
    lockstep: bool = False
    noise_timeout: float = 0.05
    first_noise_timeout: float = 30.0
    use_noise_actor: bool = True
    lockstep_resend: float = LOCKSTEP_RESEND
    stop_wait: float = STOP_WAIT
    operator_timeout: float = 0.25  # seconds an operator action is used for


# ---------------------------------------------------------------------------------- outputs
@dataclass(frozen=True)
class SendCommand:
    """Publish this (safe) command: gripper first, then the target pose."""

    command: ArmCommand


@dataclass(frozen=True)
class RequestNoise:
    """Ask the noise actor for a decision's noise; re-check deadlines after `timeout`."""

    stamp_ns: int
    guidance_weight: float
    features: np.ndarray
    timeout: float


@dataclass(frozen=True)
class Decided:
    """A decision that is over, for the decision record (`chunk`: as executed, `operator`: the
    rows the operator drove; cfgrl_ros.nodes.decision_messages explains both)."""

    stamp_ns: int
    features: np.ndarray
    noise: np.ndarray
    chunk: np.ndarray
    guidance_weight: float
    from_actor: bool
    index: int
    operator: np.ndarray


@dataclass(frozen=True)
class EpisodeEnded:
    """The episode-end record: the final state's features, outcome, decisions made."""

    stamp_ns: int
    features: np.ndarray
    success: bool
    decisions: int


Output = SendCommand | RequestNoise | Decided | EpisodeEnded | Log


@dataclass
class Decision:
    """The decision being made or executed."""

    stamp_ns: int
    features: np.ndarray
    guidance_weight: float
    index: int
    chunk: np.ndarray | None = None  # as executed so far; None while waiting for the noise actor
    noise: np.ndarray | None = None
    from_actor: bool = False
    decoded: bool = True  # False: the operator drove from the start, nothing was decoded
    step: int = 0  # actions of the chunk sent so far
    operator: np.ndarray | None = None  # [H] bool: the rows the operator drove

    def executed(self, action: np.ndarray, by_operator: bool) -> None:
        """Row `step` went out as `action`: the decoded row, or the operator's (written in, and
        when nothing was decoded also into the rows after it)."""
        if by_operator:
            self.chunk[self.step if self.decoded else slice(self.step, None)] = action
            self.operator[self.step] = True
        self.step += 1

    def record(self) -> Decided:
        return Decided(
            self.stamp_ns,
            self.features,
            self.noise,
            self.chunk.copy(),
            self.guidance_weight,
            self.from_actor,
            self.index,
            self.operator.copy(),
        )


class DecisionLoop:
    """The policy node's decisions, homing and episode state; see the module docstring."""

    def __init__(
        self,
        settings: LoopSettings,
        policy: Policy | None,
        observe: ObservationSource,
        fields: tuple[str, ...],
        adapter: ArmCommandAdapter,
        envelope: SafetyEnvelope,
        home: HomePose,
        *,
        guidance_weight: float = 1.0,
        noise_actor_listening: Callable[[], bool] = lambda: True,
        blocked: Callable[[float], str] = lambda now: "",
        rng: np.random.Generator | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.observe = observe
        self.fields = fields  # observation parts that must all be fresh in lockstep
        self.adapter = adapter
        self.envelope = envelope
        self.home = home
        self.guidance_weight = guidance_weight
        self.noise_actor_listening = noise_actor_listening
        self.blocked = blocked  # an external guard's reason not to command the arm at all
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.counts = {
            "decisions": 0,
            "actor_noise": 0,
            "fallbacks": 0,
            "late_answers": 0,
            "operator_decisions": 0,
            "takeovers": 0,
        }

        self.running = False
        self.decision: Decision | None = None
        self.decision_index = 0
        self._noise_deadline = 0.0
        self._stopping_since: float | None = None
        self._homing_until: float | None = None
        self._outcome = False
        self._last_features = np.zeros(policy.feature_dim if policy else 0, dtype=np.float32)
        # Without a policy the operator drives every episode (recording demonstrations).
        self.operator_driving = False
        self._handing_back = False
        self._operator_action: np.ndarray | None = None
        self._operator_action_time = -np.inf
        self._last_command: ArmCommand | None = None
        self._last_command_time = 0.0
        self._started_at = 0.0
        self._last_stamp_ns = 0
        # Receipt numbers order arrivals of observation parts (lockstep freshness).
        self._receipts = 0
        self._part_receipts: dict[str, int] = {}
        self._command_receipt = 0  # receipts up to here were seen before the last command
        self._episode_receipt = 0  # ... before the last episode ended
        self._logged_at: dict[str, float] = {}

    @property
    def phase(self) -> Phase:
        if self._homing_until is not None:
            return Phase.HOMING
        if self._stopping_since is not None:
            return Phase.STOPPING
        if not self.running:
            return Phase.IDLE
        if self.decision is not None and self.decision.chunk is None:
            return Phase.AWAITING_NOISE
        return Phase.EXECUTING

    # ------------------------------------------------------------------------------ inputs
    def observed(self, part: str, now: float) -> list[Output]:
        """A message of observation part `part` arrived; lockstep steps when all are fresh."""
        self._receipts += 1
        self._part_receipts[part] = self._receipts
        if not (self.settings.lockstep and self.fresh()):
            return []
        if self._stopping_since is not None:
            return self._publish_end(now)
        return self.control_step(now) if self.running else []

    def fresh(self) -> bool:
        """Every part arrived after the last command and after the last episode's end."""
        if any(part not in self._part_receipts for part in self.fields):
            return False
        barrier = max(self._command_receipt, self._episode_receipt)
        return all(self._part_receipts[part] > barrier for part in self.fields)

    def control_step(self, now: float) -> list[Output]:
        """One control step: a homing step, the chunk's next action, or a new decision."""
        if self._homing_until is not None:
            return self._home_step(now)
        if self.phase != Phase.EXECUTING:
            return []
        out: list[Output] = []
        observation, stamp = self._observe(out, now, with_images=False)
        at = self._envelope_time(stamp, now)
        verdict = self.envelope.check_observation(observation, stamp, at)
        decision = self.decision
        if self.policy is None:  # no decisions: the operator's action, or a hold
            self._send(out, observation, self._operator(out, now) if verdict.ok else None, at, now)
            return out
        if verdict.ok and (decision is None or decision.step >= self.settings.exec_horizon):
            if decision is not None:  # over: its record, once
                out.append(decision.record())
                self.decision = None
            return out + self._start_decision(now)
        action = None
        if verdict.ok:
            action = self._next_action(decision, out, now)
        self._send(out, observation, action, at, now)
        return out

    def _next_action(self, decision: Decision, out: list[Output], now: float) -> np.ndarray | None:
        """The decision's next row (the operator's while it drives; None: hold), marked sent."""
        by_operator = self.operator_driving
        action = self._operator(out, now) if by_operator else decision.chunk[decision.step]
        if action is not None:
            decision.executed(action, by_operator)
        return action

    def _operator(self, out: list[Output], now: float) -> np.ndarray | None:
        """The operator's latest action, None (hold) when none is younger than the timeout."""
        age = now - self._operator_action_time
        if age <= self.settings.operator_timeout:
            return self._operator_action
        silence = "never received" if self._operator_action is None else f"{age:.2f} s old"
        self._log(
            out,
            now,
            "warning",
            f"operator: holding the arm, the operator's input is {silence} (operator_timeout "
            f"{self.settings.operator_timeout} s); the operator keeps control",
            throttle=2.0,
        )
        return None

    def operator_action(self, action: np.ndarray, now: float) -> None:
        """The operator's latest normalised action (used while the operator drives)."""
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (ACTION_DIM,) or not np.all(np.isfinite(action)):
            raise ValueError(f"operator action must be {ACTION_DIM} finite numbers, got {action!r}")
        self._operator_action = action
        self._operator_action_time = now

    def takeover(self, operator: bool, now: float) -> tuple[Reply, list[Output]]:
        """``operator`` True: the operator drives from the next control step; False: the policy
        from the next decision. Refused, with the reason, when that cannot happen now."""
        out: list[Output] = []
        refusal = ""
        if self.policy is None:
            refusal = "there is no policy: the operator drives every episode"
        elif not operator:
            if not self.operator_driving:
                refusal = "the operator is not driving"
        elif self.envelope.shut_down:
            refusal = "shut down: cannot move the arm"
        elif self.envelope.paused:
            refusal = "paused: call ~/resume first"
        elif self._homing_until is not None:
            refusal = "homing: wait until the arm is home and an episode runs"
        elif not self.running:
            refusal = "no episode is running"
        if refusal:
            request = "takeover" if operator else "hand back"
            return Reply(False, f"{request} refused: {refusal}"), out
        if not operator:
            self._handing_back = True
            self._log(out, now, "info", "operator: the policy drives again from the next decision")
            return Reply(True, "the policy drives from the next decision"), out
        self._handing_back = False
        if self.operator_driving:
            return Reply(True, "the operator already drives"), out
        self.operator_driving = True
        self.counts["takeovers"] += 1
        self._log(out, now, "info", "operator: takeover, the operator drives from the next step")
        return Reply(True, "the operator drives from the next control step"), out

    def on_noise(self, stamp_ns: int, noise: np.ndarray, now: float) -> list[Output]:
        """The noise actor's answer for the decision stamped `stamp_ns`."""
        decision = self.decision
        if decision is None or decision.chunk is not None or stamp_ns != decision.stamp_ns:
            self.counts["late_answers"] += 1
            return []
        return self._finish_decision(noise, now)

    def tick(self, now: float) -> list[Output]:
        """Timer mode's control tick: the deadlines, then a control step if they sent nothing.

        One command per tick: two would both be relative to the same measured pose, so the
        first (a fallback decision's first action) would be overwritten before it is executed.
        """
        out = self.check_deadlines(now)
        if any(isinstance(output, SendCommand) for output in out):
            return out
        return out + self.control_step(now)

    def check_deadlines(self, now: float) -> list[Output]:
        """The noise deadline, a stalled lockstep stop or start, an unanswered lockstep command."""
        out: list[Output] = []
        phase = self.phase
        if phase == Phase.STOPPING and now - self._stopping_since > self.settings.stop_wait:
            return self._publish_end(now)
        if phase == Phase.AWAITING_NOISE and now >= self._noise_deadline:
            self._log(
                out,
                now,
                "warning",
                "no noise from the noise actor in time: this decision uses the base policy",
                throttle=5.0,
            )
            return out + self._finish_decision(None, now)
        if (
            self.settings.lockstep
            and phase == Phase.EXECUTING
            and self._last_command is not None
            and now - self._last_command_time > self.settings.lockstep_resend
        ):
            self._log(
                out,
                now,
                "warning",
                f"no observation from the simulator {self.settings.lockstep_resend}s after the "
                "last target; sending it again",
            )
            self._publish_command(out, self._last_command, now)
        elif (
            self.settings.lockstep
            and phase == Phase.EXECUTING
            and self._last_command is None
            and not self.fresh()
            and now - self._started_at > self.settings.lockstep_resend
        ):
            self._log(
                out,
                now,
                "warning",
                f"no fresh observation from the simulator {self.settings.lockstep_resend}s after "
                "the episode's start; sending a hold so that it steps and publishes",
                throttle=5.0,
            )
            observation, stamp = self._observe(out, now, with_images=False)
            at = self._envelope_time(stamp, now)
            self.envelope.check_observation(observation, stamp, at)
            self._send(out, observation, None, at, now)
        return out

    # ---------------------------------------------------------------------------- episodes
    def start_episode(self, now: float) -> tuple[Reply, list[Output]]:
        """Start an episode (the reward/reset node's call); a running one ends as a failure."""
        if self.envelope.shut_down:
            return Reply(False, "shut down: cannot move the arm"), []
        out: list[Output] = []
        # A running episode's decisions need their end record, and its last target must not be
        # resent to a simulator that was reset since (the end clears it).
        if self.running:
            self._log(
                out, now, "warning", "episode started while one was running: it ends as a failure"
            )
            out += self.end_episode(False, now)
        if self._stopping_since is not None:  # the last episode's record is due now
            out += self._publish_end(now)
        self.decision = None
        if self._homing_until is not None:
            self._homing_until = None
            if not self._at_home():
                self._log(out, now, "warning", "episode started before the arm was home")
        self.running = True
        self.decision_index = 0
        self._started_at = now
        self.operator_driving = self.policy is None
        self._handing_back = False
        self._log(out, now, "info", "episode started")
        if self.settings.lockstep and self.fresh():
            out += self.control_step(now)  # the simulator's reset observation came first
        return Reply(True, "episode started"), out

    def end_episode(self, success: bool, now: float) -> list[Output]:
        """End the running episode; its end record follows (lockstep: after the last answer)."""
        if not self.running:
            return []
        out: list[Output] = []
        if self.decision is not None and self.decision.chunk is not None:
            out.append(self.decision.record())
        self.running = False
        self.decision = None
        self.operator_driving = self._handing_back = False
        self._outcome = success
        if self.settings.lockstep and self._last_command is not None and not self.fresh():
            self._stopping_since = now
            return out
        return out + self._publish_end(now)

    def _publish_end(self, now: float) -> list[Output]:
        self._stopping_since = None
        out: list[Output] = []
        features = None
        try:
            observed = self.observe(with_images=True)
            if observed is not None and self.policy is not None:
                features = self.policy.encode(observed[0])
        except ValueError as error:
            self._log(out, now, "error", f"cannot encode the final observation: {error}")
        if features is None:  # the best estimate of the final state: the last decision's
            features = self._last_features
            if self.policy is not None:
                self._log(
                    out, now, "warning", "no final observation; the end record repeats the last one"
                )
        out.append(EpisodeEnded(self._stamp(now), features, self._outcome, self.decision_index))
        self._episode_receipt = self._receipts
        self._last_command = None
        outcome = "success" if self._outcome else "failure"
        self._log(
            out, now, "info", f"episode ended in {outcome} after {self.decision_index} decisions"
        )
        return out

    # ---------------------------------------------------------------------------- decisions
    def _start_decision(self, now: float) -> list[Output]:
        out: list[Output] = []
        try:
            observation, _ = self.observe(with_images=True)
            features = self.policy.encode(observation)
        except ValueError as error:
            self._log(out, now, "error", f"cannot encode the observation: {error}")
            return out
        if self._handing_back:
            self.operator_driving = self._handing_back = False
        stamp_ns = self._stamp(now)
        horizon = self.policy.noise_shape[0]
        self.decision = Decision(
            stamp_ns,
            features,
            self.guidance_weight,
            self.decision_index,
            operator=np.zeros(horizon, dtype=bool),
        )
        self._last_features = features
        if self.operator_driving:
            return out + self._operator_decision(now)
        if not self.settings.use_noise_actor or not self.noise_actor_listening():
            return out + self._finish_decision(None, now)
        first = self.decision_index == 0
        timeout = self.settings.first_noise_timeout if first else self.settings.noise_timeout
        self._noise_deadline = now + timeout
        out.append(RequestNoise(stamp_ns, self.guidance_weight, features, timeout))
        return out

    def _finish_decision(self, noise: np.ndarray | None, now: float) -> list[Output]:
        """Decode the chunk (from `noise`, or N(0, I) when None), send its first action."""
        decision = self.decision
        decision.from_actor = noise is not None
        if noise is None:
            noise = self.rng.standard_normal(self.policy.noise_shape).astype(np.float32)
        decision.noise = noise
        decision.chunk = self.policy.decode(decision.features, noise, decision.guidance_weight)
        self.decision_index += 1
        self.counts["decisions"] += 1
        self.counts["actor_noise" if decision.from_actor else "fallbacks"] += 1
        return self._first_action(decision, now)

    def _operator_decision(self, now: float) -> list[Output]:
        """A decision the operator drives from its start: nothing to decode."""
        decision = self.decision
        decision.decoded = False
        decision.noise = np.zeros(self.policy.noise_shape, dtype=np.float32)
        decision.chunk = np.zeros(self.policy.noise_shape, dtype=np.float32)
        self.decision_index += 1
        self.counts["decisions"] += 1
        self.counts["operator_decisions"] += 1
        return self._first_action(decision, now)

    def _first_action(self, decision: Decision, now: float) -> list[Output]:
        out: list[Output] = []
        observation, stamp = self._observe(out, now, with_images=False)
        at = self._envelope_time(stamp, now)
        verdict = self.envelope.check_observation(observation, stamp, at)
        action = self._next_action(decision, out, now) if verdict.ok else None
        self._send(out, observation, action, at, now)
        return out

    # ------------------------------------------------------------------------------ homing
    def request_home(self, now: float) -> tuple[Reply, list[Output]]:
        """Start homing (``~/home``); refused in lockstep, during an episode, after shutdown."""
        refusal = ""
        if self.settings.lockstep:
            refusal = "lockstep simulator: reset it with its ~/reset service instead"
        elif self.running or self._stopping_since is not None:
            refusal = "an episode is running: end it first (episode_event success or failure)"
        elif self.envelope.shut_down:
            refusal = "shut down: cannot move the arm"
        if refusal:
            return Reply(False, f"not homing: {refusal}"), []
        self._homing_until = now + self.home.timeout
        out = self._home_step(now)  # the first command goes out before the answer
        if self._homing_until is None:
            message = "at the home pose, gripper open"
        elif self.envelope.paused:
            message = "paused: homing starts after ~/resume"
        else:
            message = f"moving to the home pose {self.home.position.tolist()}"
        return Reply(True, message), out

    def _home_step(self, now: float) -> list[Output]:
        """One control step towards the home pose, gripper open; homing ends when there."""
        out: list[Output] = []
        if now > self._homing_until:
            self._homing_until = None
            self._log(
                out,
                now,
                "error",
                f"the arm did not reach the home pose within {self.home.timeout}s: homing stopped",
            )
            return out
        observation, stamp = self._observe(out, now, with_images=False, arm_only=True)
        if not self.envelope.check_observation(observation, stamp, now).ok:
            self._send(out, observation, None, now, now)  # the envelope holds (or stops) the arm
            return out
        position, quaternion = observation["eef_pos"], observation["eef_quat"]
        action = self.home.action(self.adapter, position, quaternion)
        sent = self._send(out, observation, action, now, now)
        # Done once the arm is home and the command (target home, gripper open) went out.
        if sent and self.home.reached(position, quaternion):
            self._homing_until = None
            self._log(out, now, "info", "at the home pose, gripper open")
        return out

    def _at_home(self) -> bool:
        try:
            observed = self.observe(with_images=False, arm_only=True)
        except ValueError:
            return False
        return observed is not None and self.home.reached(
            observed[0]["eef_pos"], observed[0]["eef_quat"]
        )

    # ------------------------------------------------------------------- operator, shutdown
    def pause(self) -> Reply:
        self.envelope.pause()
        return Reply(True, "holding the arm until ~/resume")

    def resume(self) -> Reply:
        resumed = self.envelope.resume()
        return Reply(resumed, "resumed" if resumed else "shut down: cannot resume")

    def shutdown(self, now: float, can_publish: bool) -> list[Output]:
        """Hold the arm where it is from now on; the last hold, if it may and can be sent.

        Not in lockstep (a target would step the simulator), not when the node can no longer
        publish, and nothing when the external guard forbids commanding the arm.
        """
        publish = can_publish and not self.settings.lockstep
        blocked = self.blocked(now) if publish else ""
        safe = self.envelope.shutdown(now, blocked)
        self._homing_until = None
        if safe.command is None or not publish:
            return []
        out: list[Output] = []
        self._publish_command(out, safe.command, now)
        return out

    # ------------------------------------------------------------------------------ helpers
    def _observe(
        self, out: list[Output], now: float, with_images: bool, arm_only: bool = False
    ) -> tuple[dict[str, np.ndarray] | None, float | None]:
        try:
            observed = self.observe(with_images=with_images, arm_only=arm_only)
        except ValueError as error:
            self._log(out, now, "error", str(error), throttle=5.0)
            observed = None
        return observed if observed is not None else (None, None)

    def _envelope_time(self, stamp: float | None, now: float) -> float:
        # Lockstep: the simulated world stands still between steps, so "now" is its stamp.
        return stamp if self.settings.lockstep and stamp is not None else now

    def _send(
        self,
        out: list[Output],
        observation: dict[str, np.ndarray] | None,
        action: np.ndarray | None,
        at: float,
        now: float,
    ) -> bool:
        """One command through the adapter and the envelope at time `at` (a hold: action None).

        Returns whether the action's command (possibly limited) went out: not a hold, not a stop.
        """
        command = None
        if action is not None:
            try:
                command = self.adapter.command(
                    action, observation["eef_pos"], observation["eef_quat"]
                )
            except ValueError as error:  # a non-finite action: the envelope holds the arm
                self._log(out, now, "error", f"action not sent: {error}", throttle=2.0)
        safe = self.envelope.filter_command(command, at, self.blocked(at))
        if safe.reasons:
            self._log(out, now, "warning", f"safety: {', '.join(safe.reasons)}", throttle=2.0)
        if safe.command is not None:
            self._publish_command(out, safe.command, now)
        return safe.command is not None and not safe.holding

    def _publish_command(self, out: list[Output], command: ArmCommand, now: float) -> None:
        self._command_receipt = self._receipts
        self._last_command = command
        self._last_command_time = now
        out.append(SendCommand(command))

    def _stamp(self, now: float) -> int:
        # Decisions are matched to answers by stamp: strictly increasing, even on a coarse clock.
        self._last_stamp_ns = max(round(now * 1e9), self._last_stamp_ns + 1)
        return self._last_stamp_ns

    def _log(
        self, out: list[Output], now: float, level: str, text: str, throttle: float = 0.0
    ) -> None:
        """Log `text`; a throttled one at most once per `throttle` seconds per kind (its text
        up to the first colon: "safety: paused" and "safety: stale_observation" are one kind)."""
        if throttle:
            key = f"{level}:{text.split(':')[0]}"
            if now - self._logged_at.get(key, -np.inf) < throttle:
                return
            self._logged_at[key] = now
        out.append(Log(level, text))
