"""Normalised delta end-effector actions <-> absolute target poses and gripper commands.

Shared by the simulator and the real arm: a policy action (dx, dy, dz, droll, dpitch, dyaw,
grip) in [-1, 1] is integrated onto the current end-effector pose, clipped to a workspace box
and a maximum step, and turned into an absolute target pose (what a Cartesian impedance
controller, or robosuite's OSC_POSE with absolute input, tracks) plus a commanded finger
opening. `ArmCommandAdapter.action` inverts this for recorded bags.

All poses are in the robot base frame; quaternions are (x, y, z, w).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ACTION_DIM = 7  # dx, dy, dz, droll, dpitch, dyaw, grip
_AXES = ("x", "y", "z")


@dataclass(frozen=True)
class AdapterConfig:
    """Scales and limits of the adapter.

    The default workspace box is the simulated lift task's, in its robot base frame, where the
    table surface is at z = -0.112 m: a real arm (base on the table, z = 0 there) must set its
    own box in its parameter file.
    """

    max_translation: float = 0.03  # metres per control step when |a_i| = 1 (0.6 m/s at 20 Hz)
    max_rotation: float = 0.1  # radians per control step when |a_i| = 1
    workspace_low: tuple[float, float, float] = (0.25, -0.35, -0.105)
    workspace_high: tuple[float, float, float] = (0.80, 0.35, 0.35)
    gripper_open_width: float = 0.08
    gripper_closed_width: float = 0.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.max_translation) and self.max_translation > 0):
            raise ValueError(f"max_translation must be > 0 metres, got {self.max_translation}")
        if not (np.isfinite(self.max_rotation) and self.max_rotation > 0):
            raise ValueError(f"max_rotation must be > 0 radians, got {self.max_rotation}")
        low = np.asarray(self.workspace_low, dtype=float)
        high = np.asarray(self.workspace_high, dtype=float)
        if low.shape != (3,) or high.shape != (3,) or not np.all(low < high):
            raise ValueError(
                f"workspace_low {self.workspace_low} must be 3 numbers each below "
                f"workspace_high {self.workspace_high}"
            )
        if self.gripper_closed_width < 0 or self.gripper_open_width <= self.gripper_closed_width:
            raise ValueError(
                f"need 0 <= gripper_closed_width ({self.gripper_closed_width}) < "
                f"gripper_open_width ({self.gripper_open_width})"
            )


@dataclass
class ArmCommand:
    """An absolute end-effector target in the base frame and a commanded finger opening."""

    target_pos: np.ndarray  # (3,)
    target_quat: np.ndarray  # (4,) x, y, z, w
    gripper_width: float  # commanded finger opening (m)
    limited: tuple[str, ...] = ()  # why the command was limited, e.g. ("workspace_z_low",)


def quat_multiply(q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """Hamilton product q1 * q2 of (x, y, z, w) quaternions (rotate by q2, then by q1)."""
    x1, y1, z1, w1 = q1
    x2, y2, z2, w2 = q2
    return np.array(
        [
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        ]
    )


def quat_conjugate(quat: np.ndarray) -> np.ndarray:
    """Inverse of a unit (x, y, z, w) quaternion."""
    return np.array([-quat[0], -quat[1], -quat[2], quat[3]])


def rotvec_to_quat(rotvec: np.ndarray) -> np.ndarray:
    """Rotation vector (axis * angle, radians) -> unit (x, y, z, w) quaternion."""
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.array([*(0.5 * rotvec), 1.0]) / np.sqrt(1.0 + 0.25 * angle**2)
    axis = rotvec / angle
    return np.array([*(np.sin(angle / 2) * axis), np.cos(angle / 2)])


def quat_to_rotvec(quat: np.ndarray) -> np.ndarray:
    """Unit (x, y, z, w) quaternion -> rotation vector of the shortest rotation (angle <= pi)."""
    quat = quat if quat[3] >= 0 else -quat
    sin_half = float(np.linalg.norm(quat[:3]))
    angle = 2.0 * np.arctan2(sin_half, quat[3])
    if sin_half < 1e-12:
        return 2.0 * quat[:3]
    return quat[:3] / sin_half * angle


def relative_rotvec(from_quat: np.ndarray, to_quat: np.ndarray) -> np.ndarray:
    """The base-frame rotation vector (angle <= pi) that turns orientation `from_quat` into
    `to_quat` (unit (x, y, z, w) quaternions): the inverse of `rotated`."""
    return quat_to_rotvec(quat_multiply(to_quat, quat_conjugate(from_quat)))


def rotated(quat: np.ndarray, rotvec: np.ndarray) -> np.ndarray:
    """Orientation `quat` turned by the base-frame rotation vector `rotvec` (applied on the
    left), as a unit quaternion."""
    turned = quat_multiply(rotvec_to_quat(rotvec), quat)
    return turned / np.linalg.norm(turned)


MIN_QUAT_NORM = 1e-6  # a shorter quaternion is no rotation


def _unit_quat(quat: np.ndarray, name: str) -> np.ndarray:
    quat = np.asarray(quat, dtype=np.float64)
    if quat.shape != (4,) or not np.all(np.isfinite(quat)):
        raise ValueError(f"{name} must be 4 finite numbers (x, y, z, w), got {quat!r}")
    norm = np.linalg.norm(quat)
    if norm < MIN_QUAT_NORM:
        raise ValueError(f"{name} {quat!r} has zero norm; it is not a rotation")
    return quat / norm


def _position(pos: np.ndarray, name: str) -> np.ndarray:
    pos = np.asarray(pos, dtype=np.float64)
    if pos.shape != (3,) or not np.all(np.isfinite(pos)):
        raise ValueError(f"{name} must be 3 finite numbers (metres), got {pos!r}")
    return pos


class ArmCommandAdapter:
    """Turns normalised delta actions into absolute arm commands, and back."""

    def __init__(self, config: AdapterConfig = AdapterConfig()) -> None:
        self.config = config
        self._low = np.asarray(config.workspace_low, dtype=np.float64)
        self._high = np.asarray(config.workspace_high, dtype=np.float64)

    def command(self, action: np.ndarray, eef_pos: np.ndarray, eef_quat: np.ndarray) -> ArmCommand:
        """The target pose and gripper width for `action` taken at pose (eef_pos, eef_quat).

        Components outside [-1, 1] are clipped ("action_clipped"). The translated target is
        clipped to the workspace box ("workspace_<axis>_<low|high>"), then kept within one
        maximum step of the current position ("max_step_<axis>"), so an arm that starts outside
        the box is led back at the normal speed instead of jumping.
        """
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (ACTION_DIM,):
            raise ValueError(
                f"action must have shape ({ACTION_DIM},) (dx, dy, dz, droll, dpitch, dyaw, "
                f"grip), got {action.shape}"
            )
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action has non-finite values: {action!r}")
        eef_pos = _position(eef_pos, "eef_pos")
        eef_quat = _unit_quat(eef_quat, "eef_quat")
        limited: list[str] = []
        if np.any(np.abs(action) > 1.0):
            limited.append("action_clipped")
            action = np.clip(action, -1.0, 1.0)

        step = self.config.max_translation
        target_pos = eef_pos + action[:3] * step
        for axis, name in enumerate(_AXES):
            if target_pos[axis] < self._low[axis]:
                limited.append(f"workspace_{name}_low")
            elif target_pos[axis] > self._high[axis]:
                limited.append(f"workspace_{name}_high")
        target_pos = np.clip(target_pos, self._low, self._high)
        for axis, name in enumerate(_AXES):
            if abs(target_pos[axis] - eef_pos[axis]) > step * (1 + 1e-9):
                limited.append(f"max_step_{name}")
        target_pos = eef_pos + np.clip(target_pos - eef_pos, -step, step)

        # A base-frame rotation vector applied on the left of the current orientation.
        target_quat = rotated(eef_quat, action[3:6] * self.config.max_rotation)
        if np.dot(target_quat, eef_quat) < 0:  # same hemisphere as the current pose
            target_quat = -target_quat

        closed = action[6] > 0
        width = self.config.gripper_closed_width if closed else self.config.gripper_open_width
        return ArmCommand(target_pos, target_quat, float(width), tuple(limited))

    def action(self, eef_pos: np.ndarray, eef_quat: np.ndarray, command: ArmCommand) -> np.ndarray:
        """The normalised (7,) action that leads from (eef_pos, eef_quat) to `command`.

        Clipped to [-1, 1]: a recorded target further away than one maximum step (a slower
        controller, a teleoperator) maps to a full-speed action in its direction.
        """
        eef_pos = _position(eef_pos, "eef_pos")
        eef_quat = _unit_quat(eef_quat, "eef_quat")
        target_pos = _position(command.target_pos, "command.target_pos")
        target_quat = _unit_quat(command.target_quat, "command.target_quat")
        if not np.isfinite(command.gripper_width):
            raise ValueError(f"command.gripper_width is not finite: {command.gripper_width}")
        translation = (target_pos - eef_pos) / self.config.max_translation
        rotation = relative_rotvec(eef_quat, target_quat)
        midpoint = 0.5 * (self.config.gripper_open_width + self.config.gripper_closed_width)
        grip = 1.0 if command.gripper_width < midpoint else -1.0
        action = np.concatenate([translation, rotation / self.config.max_rotation, [grip]])
        return np.clip(action, -1.0, 1.0)
