"""Decision transitions: SB3's replay buffer with compact checkpoints, and transitions from data.

One transition is one decision: (features s, buffer action, reward summed over the executed
ticks, next features s', done). The buffer action is the agent's noise action for DSRL-SAC and
the executed action chunk for DSRL-NA, so recorded episodes (which have no noise) can feed
DSRL-NA directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.buffers import ReplayBuffer

from cfgrl_ros.data.episode import Episode, action_chunks
from cfgrl_ros.dsrl.noise_space import FrozenPolicy

_STORAGE = (
    "observations",
    "next_observations",
    "actions",
    "rewards",
    "dones",
    "timeouts",
    "sources",
)
SOURCE_KEY = "source"  # the key of a transition's info that names where it came from


class DecisionReplayBuffer(ReplayBuffer):
    """SB3's ReplayBuffer whose pickle holds only the filled rows, and that tags each row with
    its source (the arm of a fleet that made it, or "offline").

    SB3 preallocates `buffer_size` rows and pickles all of them; a checkpoint of a buffer with
    200k rows and 50 transitions would be mostly zeros. Loading pads back to full capacity.
    The source comes in the transition's info (`SOURCE_KEY`), so SB3's own `add` signature and
    callers stay as they are; a buffer pickled before sources existed reads as source "".
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sources = np.zeros(self.buffer_size, dtype=np.int32)  # index into source_names
        self.source_names: list[str] = [""]

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        name = str(infos[0].get(SOURCE_KEY, "")) if infos else ""
        if name not in self.source_names:
            self.source_names.append(name)
        self.sources[self.pos] = self.source_names.index(name)
        super().add(obs, next_obs, action, reward, done, infos)

    def source_counts(self) -> dict[str, int]:
        """How many stored transitions (rows now in the buffer) came from each source."""
        counts = np.bincount(self.sources[: len(self)], minlength=len(self.source_names))
        return {
            name: int(count) for name, count in zip(self.source_names, counts, strict=True) if count
        }

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        filled = self.buffer_size if self.full else self.pos
        for name in _STORAGE:
            state[name] = state[name][:filled]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        capacity = state["buffer_size"]
        if "sources" not in state:  # pickled before rows had sources
            filled = capacity if state["full"] else state["pos"]
            state["sources"] = np.zeros(filled, dtype=np.int32)
            state["source_names"] = [""]
        for name in _STORAGE:
            stored = state[name]
            if len(stored) < capacity:
                padded = np.zeros((capacity, *stored.shape[1:]), dtype=stored.dtype)
                padded[: len(stored)] = stored
                state[name] = padded
        self.__dict__.update(state)

    def __len__(self) -> int:
        return self.buffer_size if self.full else self.pos


@dataclass
class DecisionTransitions:
    """A batch of N decisions (arrays with N rows) built from recorded episodes."""

    features: np.ndarray  # [N, feature_dim]
    chunks: np.ndarray  # [N, exec_horizon, A] the executed actions
    rewards: np.ndarray  # [N] summed over the executed ticks
    next_features: np.ndarray  # [N, feature_dim]
    terminated: np.ndarray  # [N] bool: success within the decision

    def __len__(self) -> int:
        return len(self.rewards)


def encode_observations(
    policy: FrozenPolicy, observations: Mapping[str, np.ndarray], batch_size: int = 512
) -> np.ndarray:
    """Features [T, feature_dim] (float32) of batched observation fields ([T, ...] arrays)."""
    length = len(next(iter(observations.values())))
    parts = []
    with torch.no_grad():
        for start in range(0, length, batch_size):
            batch = {key: value[start : start + batch_size] for key, value in observations.items()}
            parts.append(policy.encode(policy.inputs_from_observation(batch)).cpu().numpy())
    return np.concatenate(parts).astype(np.float32)


def episode_transitions(
    episodes: Iterable[Episode], policy: FrozenPolicy, exec_horizon: int
) -> DecisionTransitions:
    """Every decision that recorded episodes contain, starting at every tick.

    A decision at tick t executes actions t .. t+exec_horizon-1. Its reward is the sum of those
    ticks' rewards and its next state is the observation at t+exec_horizon. A decision that
    reaches the end of a successful episode is terminal (success ends an episode); one that
    reaches the end of an unsuccessful episode has no recorded next state and is left out.
    """
    if exec_horizon < 1:
        raise ValueError(f"exec_horizon must be >= 1, got {exec_horizon}")
    parts: list[DecisionTransitions] = []
    for episode in episodes:
        length = len(episode)
        features = encode_observations(policy, episode.observations)
        chunks, _ = action_chunks(episode.actions, exec_horizon)
        ticks = np.arange(length)
        ends = ticks + exec_horizon  # first tick after the decision
        reaches_end = ends >= length
        keep = ~reaches_end | episode.success
        cumulative = np.concatenate([[0.0], np.cumsum(episode.rewards)])
        rewards = cumulative[np.minimum(ends, length)] - cumulative[ticks]
        next_index = np.minimum(ends, length - 1)
        parts.append(
            DecisionTransitions(
                features=features[keep],
                chunks=chunks[keep].astype(np.float32),
                rewards=rewards[keep].astype(np.float32),
                next_features=features[next_index][keep],
                terminated=(reaches_end & episode.success)[keep],
            )
        )
    if not parts:
        raise ValueError("no episodes given: offline data needs at least one recorded episode")
    fields = ("features", "chunks", "rewards", "next_features", "terminated")
    return DecisionTransitions(
        **{name: np.concatenate([getattr(part, name) for part in parts]) for name in fields}
    )
