"""An episode of arm data: observations, normalised actions, sparse rewards."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cfgrl_ros.arm.command_adapter import ACTION_DIM  # dx .. dyaw, grip; each in [-1, 1]
from cfgrl_ros.observation import OBSERVATIONS, ObservationSpec


@dataclass
class Episode:
    """One episode at the control rate; row t of every array belongs to control tick t.

    observations: field -> array [T, ...] (the fields of cfgrl_ros.observation, images optional)
    actions: [T, ACTION_DIM] normalised delta end-effector actions taken at tick t
    rewards: [T] sparse: 1.0 at the tick where success was reached, else 0.0
    success: whether the episode ended in success (it then terminates at its last tick)
    """

    observations: dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    success: bool
    synthetic: bool = False
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        length = len(self.actions)
        if self.actions.ndim != 2 or self.actions.shape[1] != ACTION_DIM:
            raise ValueError(f"actions have shape {self.actions.shape}, expected (T, {ACTION_DIM})")
        if length == 0:
            raise ValueError("episode has no actions")
        for name, values in self.observations.items():
            if len(values) != length:
                raise ValueError(
                    f"observation {name!r} has {len(values)} rows but there are {length} actions"
                )
        if self.rewards.shape != (length,):
            raise ValueError(f"rewards have shape {self.rewards.shape}, expected ({length},)")

    def __len__(self) -> int:
        return len(self.actions)

    def states(self, observation: ObservationSpec = OBSERVATIONS["state"]) -> np.ndarray:
        """[T, state_dim] float32 state vectors of `observation` (default: every field)."""
        return observation.state_vector(self.observations)


def action_chunks(actions: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunks [T, horizon, A] of the actions from each tick, and a validity mask [T, horizon].

    Past the end of the episode a chunk repeats the last action (mask False there): a policy
    asked to act at the end should keep doing what ended the episode, not stop.
    """
    length = len(actions)
    index = np.arange(length)[:, None] + np.arange(horizon)[None, :]
    mask = index < length
    return actions[np.minimum(index, length - 1)], mask


def episodes_task(episodes: Sequence[Episode]) -> str:
    """The simulated task the episodes were recorded on ("" when no bag says: a real arm).

    Raises ValueError when episodes of different tasks are mixed: one policy learns one task.
    """
    tasks = {episode.metadata.get("task", "") for episode in episodes} - {""}
    if len(tasks) > 1:
        bags = {
            task: sorted(
                {str(e.metadata.get("bag")) for e in episodes if e.metadata.get("task") == task}
            )
            for task in sorted(tasks)
        }
        raise ValueError(
            f"the bags hold episodes of different tasks ({bags}): train one policy per task"
        )
    return tasks.pop() if tasks else ""


def mix_synthetic(episodes: Sequence[Episode], ratio: float | None, seed: int = 0) -> list[Episode]:
    """Every recorded episode, and synthetic ones up to `ratio` control ticks per recorded tick.

    Synthetic episodes (policy-guided diffusion output) are drawn in a random order (`seed`) and
    kept while they fit the budget. ratio None keeps all episodes; 0 drops synthetic data.
    """
    if ratio is None:
        return list(episodes)
    if not (np.isfinite(ratio) and ratio >= 0):
        raise ValueError(f"the synthetic ratio must be a number >= 0, got {ratio}")
    real = [episode for episode in episodes if not episode.synthetic]
    synthetic = [episode for episode in episodes if episode.synthetic]
    if not real:
        raise ValueError(
            "a synthetic ratio counts synthetic ticks per recorded tick, but every episode given "
            "is synthetic: add a bag of recorded episodes or leave the ratio out"
        )
    budget = ratio * sum(len(episode) for episode in real)
    kept, ticks = [], 0
    for index in np.random.default_rng(seed).permutation(len(synthetic)):
        if ticks + len(synthetic[index]) <= budget:
            kept.append(index)
            ticks += len(synthetic[index])
    return real + [synthetic[index] for index in sorted(kept)]
