"""Run the scripted expert in the simulator and keep what happened as `Episode`s."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from cfgrl_ros.data.episode import Episode
from cfgrl_ros.sim.env import FrankaSimEnv
from cfgrl_ros.sim.expert import ScriptedExpert


def expert_episode(
    env: FrankaSimEnv, expert: ScriptedExpert, seed: int | None = None, success_delay: int = 0
) -> Episode:
    """One episode of `expert` in `env` from `env.reset(seed=seed)` to success or the horizon.

    Row t holds the observation at tick t, the action taken there and the reward it earned.
    success_delay: after a success the arm holds still (no motion, the gripper as it was) for
    this many more ticks before the episode ends, as when an operator marks the success after
    the fact; `metadata["success_tick"]` is then the row whose action completed the task.
    """
    obs, _ = env.reset(seed=seed)
    expert.reset(env.goal_pos)
    rows: dict[str, list[np.ndarray]] = {name: [] for name in obs}
    actions, rewards = [], []
    done = False
    while not done:
        action = expert.act(obs)
        for name, value in obs.items():
            rows[name].append(value)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        actions.append(action)
        rewards.append(reward)
        obs, done = next_obs, terminated or truncated
    metadata = {"task": env.task, "seed": seed, "noise": expert.noise, "source": "expert"}
    if env.success and success_delay:
        metadata["success_tick"] = len(actions) - 1
        hold = np.zeros_like(actions[-1])
        hold[-1] = actions[-1][-1]  # the gripper stays as it was
        for _ in range(success_delay):
            for name, value in obs.items():
                rows[name].append(value)
            obs, _, _, _, _ = env.step(hold)
            actions.append(hold)
            rewards.append(0.0)
    return Episode(
        observations={name: np.stack(values) for name, values in rows.items()},
        actions=np.stack(actions).astype(np.float32),
        rewards=np.asarray(rewards, dtype=np.float32),
        success=env.success,
        metadata=metadata,
    )


def expert_episodes(
    env: FrankaSimEnv, expert: ScriptedExpert, count: int, seed: int = 0
) -> Iterator[Episode]:
    """`count` expert episodes with reset seeds seed, seed + 1, ..."""
    for index in range(count):
        yield expert_episode(env, expert, seed + index)
