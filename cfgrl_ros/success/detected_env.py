"""The simulator with a learned success detector in place of its own success signal.

On a real arm nothing knows when the task is done but the detector (or the operator), so to
measure DSRL with a detector in the loop (`cfgrl-ros adapt --success-detector`), episodes must
end when the detector says so, exactly as success_detector_node ends them in the graph: at the
first tick whose score has stayed at or above `threshold` for `hold_ticks` ticks. The agent
then sees the detector's success as its reward; the simulator's ground truth is kept beside it
to count what the detector got wrong. An episode the detector never ends runs to the horizon,
the arm acting on after the task was done, as it would live.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from cfgrl_ros.sim.env import FrankaSimEnv
from cfgrl_ros.success.detector import SuccessDetector

# How an episode's detection compares with the simulator's ground truth.
VERDICTS = ("success", "false success", "missed", "failure")


def verdict(detected: bool, done: bool) -> str:
    """success (both), false success (detected, task not done), missed (done, not detected),
    failure (neither)."""
    if detected:
        return "success" if done else "false success"
    return "missed" if done else "failure"


class DetectedSuccessEnv(gym.Wrapper):
    """A FrankaSimEnv whose success (reward 1, termination, info["success"]) is the detector's.

    info["true_success"]: whether the simulator saw the task done at any tick of the episode.
    With `detecting` False it passes the simulator's own signals through (an evaluation of the
    true success rate).
    """

    def __init__(
        self, env: FrankaSimEnv, detector: SuccessDetector, threshold: float, hold_ticks: int
    ) -> None:
        super().__init__(env)
        self.detector = detector
        self.threshold = threshold
        self.hold_ticks = hold_ticks
        self.detecting = True
        self._run = 0  # consecutive scores at or above the threshold

    def reset(self, **kwargs: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self._run = 0
        observation, info = self.env.reset(**kwargs)
        return observation, {**info, "true_success": False}

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        info = {**info, "true_success": self.env.success}
        if not self.detecting:
            return observation, reward, terminated, truncated, info
        score = float(self.detector.scores(observation)[0])
        self._run = self._run + 1 if score >= self.threshold else 0
        detected = self._run >= self.hold_ticks
        truncated = not detected and self.env.steps >= self.env.horizon
        info = {**info, "success": detected, "score": score}
        return observation, float(detected), detected, truncated, info
