"""A simulated operator who takes over when an episode goes badly, for measuring interventions.

A person watching a learning robot steps in when it makes no progress or drops the object, drives
for a moment and hands back. `ScriptedOperator` does the same with the scripted expert as its
hands: at each decision it measures the task's progress (how close the hand is to the object;
once the object is lifted, how close it is to the goal), and takes over when the progress has not
improved by `OperatorConfig.progress_step` for `patience` decisions, or the object fell. It then
drives `drive_decisions` decisions and hands back; at most `max_takeovers` times per episode.

It sees what a person sees, the object included: it needs the simulator's object pose even when
the policy does not read it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cfgrl_ros.settings import setting, setting_problems
from cfgrl_ros.sim.expert import ScriptedExpert, holding

LIFTED = 0.02  # m above the object's height at the episode's start: it is off the table
AT_OBJECT = 0.02  # m between the hand and the object: closing the fingers is progress
OPEN_WIDTH = 0.08  # m: the fingers' opening, counted while the hand is not at the object
RELEASE_HEIGHT = 0.10  # m above the goal where pick_place_can's object is let go


@dataclass(frozen=True)
class OperatorConfig:
    """When the scripted operator takes over, and for how long."""

    patience: int = setting(
        4, "decisions without progress before the operator takes over", minimum=1
    )
    drive_decisions: int = setting(
        3, "decisions the operator drives at each takeover before handing back", minimum=1
    )
    max_takeovers: int = setting(2, "takeovers per episode at most", minimum=0)
    progress_step: float = setting(
        0.01,
        "metres the hand (or the lifted object) must come closer to its goal to count as progress",
        minimum=0.0,
        above=True,
    )
    noise: float = setting(0.0, "the operator's expert noise (0: a steady hand)", minimum=0.0)

    def __post_init__(self) -> None:
        problems = setting_problems(self)
        if problems:
            raise ValueError("invalid OperatorConfig: " + "; ".join(problems))


class ScriptedOperator:
    """Decides at each decision whether it drives; then acts like the scripted expert.

    `task` and `goal_pos` are the simulator's (FrankaSimEnv.task, .goal_pos). `reset(obs)` at the
    start of each episode, `drives(obs)` at the start of each decision, `act(obs)` at each
    control tick of a decision it drives.
    """

    def __init__(
        self,
        task: str,
        goal_pos: np.ndarray | None,
        config: OperatorConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.config = config or OperatorConfig()
        self.expert = ScriptedExpert(task, self.config.noise, seed=seed)
        self._goal_pos = None if goal_pos is None else np.asarray(goal_pos, dtype=float)
        self._new_episode(start_height=0.0)

    def reset(self, obs: dict[str, np.ndarray]) -> None:
        """An episode starts at `obs`."""
        self._new_episode(float(obs["object_pos"][2]))

    def _new_episode(self, start_height: float) -> None:
        self._start_height = start_height
        self.takeovers = 0
        self._best = -np.inf
        self._stalled = 0
        self._was_lifted = False
        self._driving_left = 0
        self._handing_back = False

    def progress(self, obs: dict[str, np.ndarray]) -> float:
        """Higher is closer to success (metres). Before the object is lifted: minus the hand's
        distance to it, and at the object minus the finger opening too (closing on it is
        progress). Once lifted: 1 plus its height gain (lift), or 1 minus its distance to the
        point above the goal where it is let go (pick_place_can)."""
        object_pos = np.asarray(obs["object_pos"], dtype=float)
        if not self._lifted(obs):
            distance = float(np.linalg.norm(np.asarray(obs["eef_pos"]) - object_pos))
            opening = float(np.asarray(obs["gripper_width"]).reshape(-1)[0])
            return -distance - (opening if distance < AT_OBJECT else OPEN_WIDTH)
        if self._goal_pos is None:
            return 1.0 + object_pos[2] - self._start_height
        release = self._goal_pos + np.array([0.0, 0.0, RELEASE_HEIGHT])
        return 1.0 - float(np.linalg.norm(object_pos - release))

    def drives(self, obs: dict[str, np.ndarray]) -> bool:
        """Whether the operator drives the decision starting at `obs`."""
        if self._driving_left > 0:
            self._driving_left -= 1
            return True
        progress = self.progress(obs)
        lifted = self._lifted(obs)
        dropped = self._was_lifted and not lifted
        self._was_lifted = lifted
        if self._handing_back:  # the policy's patience starts where the operator left off
            self._handing_back = False
            self._best, self._stalled = progress, 0
            return False
        if progress > self._best + self.config.progress_step:
            self._best, self._stalled = progress, 0
        else:
            self._stalled += 1
        if self.takeovers >= self.config.max_takeovers or not (
            dropped or self._stalled >= self.config.patience
        ):
            return False
        self.take_over(obs)
        return True

    def take_over(self, obs: dict[str, np.ndarray]) -> None:
        """Drive from `obs` for `drive_decisions` decisions (counted as a takeover)."""
        self.takeovers += 1
        self._driving_left = self.config.drive_decisions - 1
        self._handing_back = True
        self.expert.resume(obs, self._goal_pos)

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return self.expert.act(obs)

    def _lifted(self, obs: dict[str, np.ndarray]) -> bool:
        return float(obs["object_pos"][2]) > self._start_height + LIFTED and holding(obs)
