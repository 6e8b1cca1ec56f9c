"""Episodes -> the flat tensors policy and value training sample from.

Recorded episodes train both the policy and the value function. Synthetic episodes (policy-guided
diffusion, ``Episode.synthetic``) train only the value function (docs/algorithms.md section 4): the
policy imitates what the robot really did. The end of a recorded episode is terminal, success or
not (the arm is reset after it and no more reward comes); a synthetic episode that ends without
success was cut at its window length, so nothing is known past its end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cfgrl_ros.data.episode import Episode, action_chunks
from cfgrl_ros.observation import ObservationSpec


@dataclass
class ChunkDataset:
    """One row per control tick t of every episode (N rows in all), on the training device.

    Rows of recorded episodes come first (rows 0 .. policy_rows - 1: the rows the policy trains
    on), then those of synthetic episodes.
    states [N, state_dim] raw; chunks [N, H, A] the actions from t on (env units; past the end
    of an episode the last action repeats, as in action_chunks); images key -> [policy_rows, h,
    w, 3] uint8; episode_index [N] which episode a row belongs to (numbered in row order);
    episode_end [N] the row of the episode's last tick.
    Value targets (discount gamma, value horizon n):
    returns [N] Monte-Carlo return sum_k gamma^k r_{t+k} to the end of the episode, known
    where complete_return [N] (the episode's end is terminal);
    n_step_rewards [N] sum_{k<n} gamma^k r_{t+k} (within the episode);
    next_row [N] the row of s_{t+n}; next_discount [N] gamma^n, or 0 where the n steps reach a
    terminal end; td_valid [N] False where they run past a cut-off end (no TD target).
    """

    states: torch.Tensor
    chunks: torch.Tensor
    images: dict[str, torch.Tensor]
    episode_index: torch.Tensor
    episode_end: torch.Tensor
    returns: torch.Tensor
    complete_return: torch.Tensor
    n_step_rewards: torch.Tensor
    next_row: torch.Tensor
    next_discount: torch.Tensor
    td_valid: torch.Tensor
    episode_count: int
    policy_rows: int

    def __len__(self) -> int:
        return len(self.states)

    def fingerprint(self) -> list[float]:
        """A cheap summary that tells whether a resumed run sees the same data."""
        return [
            float(len(self)),
            float(self.episode_count),
            float(self.policy_rows),
            float(self.states.double().sum()),
            float(self.chunks.double().sum()),
            float(self.returns.double().sum()),
        ]


def build_dataset(
    episodes: Sequence[Episode],
    horizon: int,
    observation: ObservationSpec,
    discount: float,
    value_horizon: int,
    device: torch.device,
) -> ChunkDataset:
    """Flatten episodes into a ChunkDataset of the inputs `observation` names (the policy's);
    raises ValueError naming a bad episode."""
    if not any(not episode.synthetic for episode in episodes):
        raise ValueError(
            f"no recorded episodes among the {len(episodes)} given: the policy learns from "
            "recorded ones (synthetic episodes only train the value function)"
        )
    numbered = sorted(enumerate(episodes), key=lambda pair: pair[1].synthetic)  # stable
    columns: dict[str, list[np.ndarray]] = {
        name: []
        for name in (
            "states",
            "chunks",
            "episode_index",
            "episode_end",
            "returns",
            "complete_return",
            "n_step_rewards",
            "next_row",
            "next_discount",
            "td_valid",
        )
    }
    image_keys, image_size = observation.image_keys, observation.image_size
    images: dict[str, list[np.ndarray]] = {key: [] for key in image_keys}
    offset = 0
    for index, (number, episode) in enumerate(numbered):
        length = len(episode)
        states = episode.states(observation)
        if not np.all(np.isfinite(states)) or not np.all(np.isfinite(episode.actions)):
            raise ValueError(f"episode {number} has NaN or infinite states or actions")
        columns["states"].append(states)
        columns["chunks"].append(action_chunks(episode.actions.astype(np.float32), horizon)[0])
        for key in image_keys if not episode.synthetic else ():
            if key not in episode.observations:
                raise ValueError(
                    f"episode {number} has no camera image {key!r} (has "
                    f"{sorted(episode.observations)}); record with that camera or train state-only"
                )
            frames = np.asarray(episode.observations[key])
            if frames.dtype != np.uint8 or frames.shape[1:] != (*image_size, 3):
                raise ValueError(
                    f"episode {number}: camera image {key!r} is {frames.dtype} "
                    f"{list(frames.shape[1:])}, the policy expects uint8 "
                    f"{[*image_size, 3]} (policy image_size {image_size}); resize the images "
                    "when reading the bags or change image_size"
                )
            images[key].append(frames)
        rewards = episode.rewards.astype(np.float64)
        terminal_end = episode.success or not episode.synthetic
        columns["episode_index"].append(np.full(length, index))
        columns["episode_end"].append(np.full(length, offset + length - 1))

        # G_t = r_t + gamma G_{t+1}, G_T = 0
        returns = np.zeros(length)
        running = 0.0
        for t in range(length - 1, -1, -1):
            running = rewards[t] + discount * running
            returns[t] = running
        columns["returns"].append(returns)
        columns["complete_return"].append(np.full(length, terminal_end))

        # R^n_t = sum_{k < n} gamma^k r_{t+k}, rewards past the end are 0
        padded = np.concatenate([rewards, np.zeros(value_horizon)])
        columns["n_step_rewards"].append(
            sum(discount**k * padded[k : k + length] for k in range(value_horizon))
        )
        ticks = np.arange(length)
        has_next = ticks + value_horizon <= length - 1
        columns["next_row"].append(offset + np.where(has_next, ticks + value_horizon, ticks))
        columns["next_discount"].append(np.where(has_next, discount**value_horizon, 0.0))
        columns["td_valid"].append(has_next | terminal_end)
        offset += length

    dtypes = {"episode_index": torch.long, "episode_end": torch.long, "next_row": torch.long}
    dtypes |= {"complete_return": torch.bool, "td_valid": torch.bool}
    tensors = {
        name: torch.as_tensor(
            np.concatenate(parts), dtype=dtypes.get(name, torch.float32), device=device
        )
        for name, parts in columns.items()
    }
    return ChunkDataset(
        **tensors,
        images={
            key: torch.as_tensor(np.concatenate(frames), device=device)
            for key, frames in images.items()
        },
        episode_count=len(episodes),
        policy_rows=sum(len(episode) for episode in episodes if not episode.synthetic),
    )
