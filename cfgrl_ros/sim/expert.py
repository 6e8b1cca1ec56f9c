"""A scripted pick-and-place expert with one noise knob, for demonstrations of any quality.

The expert reads the observation (end-effector and object poses in the robot base frame) and
outputs the same normalised 7-d actions a policy does: proportional moves toward the current
waypoint (above the object, down to it, close, lift; for pick_place_can then over the goal
bin, down, open, up). With `noise` = 0 it succeeds almost always; raising `noise` degrades it
in three ways that real demonstrations fail: jittery motion (per-step Gaussian action noise
with standard deviation `noise`), a missed grasp point (a per-episode offset, standard
deviation 5 cm x `noise` per horizontal axis) and accidental gripper toggles (with
probability 10% x `noise` per step the grip command flips for 4 steps).
"""

from __future__ import annotations

import numpy as np

from cfgrl_ros.arm.command_adapter import (
    AdapterConfig,
    quat_multiply,
    relative_rotvec,
    rotvec_to_quat,
)
from cfgrl_ros.sim.tasks import task_adapter_config, task_spec

GRASP_OFFSET_STD = 0.05  # m per unit of noise, per horizontal axis, drawn once per episode
FLIP_PROBABILITY = 0.1  # per step per unit of noise
FLIP_STEPS = 4  # control steps a flipped grip command lasts

_UP = np.array([0.0, 0.0, 1.0])
_DOWN = np.array([1.0, 0.0, 0.0, 0.0])  # hand pointing down, fingers along the base y axis
_APPROACH_HEIGHT = 0.06  # m above the grasp point before descending
_LIFT_HEIGHT = 0.12  # m the object is lifted above the grasp point
_CARRY_Z = 0.08  # m: base-frame height at which pick_place_can carries the object
_RELEASE_HEIGHT = 0.10  # m above the goal (bin floor) at which the object is let go
_CLOSE_STEPS = 8  # control steps the fingers need to close on the object
_OPEN_STEPS = 5
_GAIN = 0.8  # fraction of the remaining error commanded per step (below 1: the arm lags)
_HOLD_DISTANCE = 0.03  # m between grasp point and object centre when it is held
_HOLD_WIDTH = 0.075  # m: fingers narrower than this (open is 0.08) are closing or closed


class ScriptedExpert:
    """Waypoint expert for the tasks of `cfgrl_ros.sim.env`, with `noise` in [0, inf).

    Call `reset(goal_pos)` at the start of each episode (it draws the episode's grasp offset),
    then `act(obs)` once per control step.
    """

    def __init__(
        self,
        task: str = "lift",
        noise: float = 0.0,
        adapter_config: AdapterConfig | None = None,
        seed: int | None = None,
    ) -> None:
        task_spec(task)  # validates the name
        if not (np.isfinite(noise) and noise >= 0):
            raise ValueError(f"noise must be a finite number >= 0, got {noise}")
        self.task = task
        self.noise = float(noise)
        self.config = adapter_config or task_adapter_config(task)
        self.rng = np.random.default_rng(seed)
        self.phase = "approach"
        self._grasp_offset = np.zeros(3)
        self._goal_pos: np.ndarray | None = None
        self._phase_steps = 0
        self._flip_steps_left = 0
        self._lift_from = np.zeros(3)

    def reset(self, goal_pos: np.ndarray | None = None) -> None:
        """Start an episode; `goal_pos` (base frame) is where pick_place_can puts the object."""
        if self.task == "pick_place_can" and goal_pos is None:
            raise ValueError("pick_place_can needs goal_pos: pass FrankaSimEnv.goal_pos")
        self._goal_pos = None if goal_pos is None else np.asarray(goal_pos, dtype=float)
        offset_std = GRASP_OFFSET_STD * self.noise
        self._grasp_offset = np.array([*self.rng.normal(0.0, offset_std, 2), 0.0])
        self.phase = "approach"
        self._phase_steps = 0
        self._flip_steps_left = 0

    def resume(self, obs: dict[str, np.ndarray], goal_pos: np.ndarray | None = None) -> None:
        """Take over an episode in progress (a scripted operator): from "lift" when the object
        is in the hand, else from "approach"."""
        self.reset(goal_pos)
        if holding(obs):
            self._advance("lift")
            self._lift_from = np.asarray(obs["eef_pos"], dtype=float).copy()

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The next normalised action (7,) float32 in [-1, 1]."""
        target_pos, target_quat, close = self._waypoint(obs)
        translation = _GAIN * (target_pos - obs["eef_pos"]) / self.config.max_translation
        relative = relative_rotvec(np.asarray(obs["eef_quat"]), target_quat)
        rotation = _GAIN * relative / self.config.max_rotation
        motion = np.clip(np.concatenate([translation, rotation]), -1.0, 1.0)
        if self.noise > 0:
            motion = motion + self.rng.normal(0.0, self.noise, 6)
            if self._flip_steps_left == 0 and self.rng.random() < FLIP_PROBABILITY * self.noise:
                self._flip_steps_left = FLIP_STEPS
        if self._flip_steps_left > 0:
            self._flip_steps_left -= 1
            close = not close
        action = np.concatenate([motion, [1.0 if close else -1.0]])
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    # Phases advance on what the arm has reached, so a slow or jittery arm is waited for.
    def _waypoint(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, bool]:
        eef = np.asarray(obs["eef_pos"])
        grasp = np.asarray(obs["object_pos"]) + self._grasp_offset
        above = grasp + _APPROACH_HEIGHT * _UP
        grasp_quat = self._grasp_orientation(obs)
        self._phase_steps += 1

        if self.phase == "approach":
            if _near(eef[:2], above[:2], 0.01) and eef[2] < above[2] + 0.03:
                self._advance("descend")
            return above, grasp_quat, False
        if self.phase == "descend":
            if _near(eef, grasp, 0.012):
                self._advance("close")
            return grasp, grasp_quat, False
        if self.phase == "close":
            if self._phase_steps >= _CLOSE_STEPS:
                self._advance("lift")
                self._lift_from = eef.copy()
            return grasp, grasp_quat, True
        if self.phase == "lift":
            if self.task == "lift":
                return self._lift_from + _LIFT_HEIGHT * _UP, grasp_quat, True
            carry = np.array([eef[0], eef[1], _CARRY_Z])
            if eef[2] > _CARRY_Z - 0.03:
                self._advance("carry")
            return carry, grasp_quat, True
        assert self._goal_pos is not None
        release = self._goal_pos + _RELEASE_HEIGHT * _UP
        if self.phase == "carry":
            if _near(eef[:2], release[:2], 0.02):
                self._advance("lower")
            return np.array([*release[:2], _CARRY_Z]), grasp_quat, True
        if self.phase == "lower":
            if eef[2] < release[2] + 0.02:
                self._advance("release")
            return release, grasp_quat, True
        if self.phase == "release":
            if self._phase_steps >= _OPEN_STEPS:
                self._advance("retreat")
            return release, grasp_quat, False
        return np.array([*release[:2], _CARRY_Z]), grasp_quat, False  # retreat

    def _advance(self, phase: str) -> None:
        self.phase = phase
        self._phase_steps = 0

    def _grasp_orientation(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Hand pointing down, turned about the vertical to face the object's sides."""
        if self.task != "lift":
            return _DOWN  # a can is round
        x, y, z, w = obs["object_quat"]
        yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
        yaw = (yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4  # a cube looks the same every 90 deg
        return quat_multiply(rotvec_to_quat(np.array([0.0, 0.0, yaw])), _DOWN)


def holding(obs: dict[str, np.ndarray]) -> bool:
    """The object is between the fingers: near the grasp point and the fingers closed on it."""
    near = _near(obs["eef_pos"], obs["object_pos"], _HOLD_DISTANCE)
    return near and float(np.asarray(obs["gripper_width"]).reshape(-1)[0]) < _HOLD_WIDTH


def _near(a: np.ndarray, b: np.ndarray, tolerance: float) -> bool:
    return bool(np.linalg.norm(np.asarray(a) - np.asarray(b)) < tolerance)
