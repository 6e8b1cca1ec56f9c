"""Roll out a flow policy in the simulator at several guidance weights.

Every decision encodes the observation, samples an action chunk (H x 7) from start noise
w0 ~ N(0, I) at guidance weight w, and executes its first `exec_horizon` actions: one step of
`cfgrl_ros.dsrl.NoiseSpaceEnv`, the decision DSRL learns in. Episode i starts from
``env.reset(seed=seed + i)`` and draws its start noises from a generator seeded with (seed, i),
for every w alike: the weights are compared on the same initial states and the same noise
(common random numbers), so differences come from w, not from luck.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cfgrl_ros.dsrl.noise_space import NoiseSpaceEnv
from cfgrl_ros.observation import DEFAULT_IMAGE_SIZE, ObservationSpec
from cfgrl_ros.policy.flow_policy import FlowPolicy
from cfgrl_ros.sim.env import FrankaSimEnv


@dataclass
class EvalResult:
    """Success rates and mean episode lengths (control ticks) per guidance weight."""

    task: str
    episodes: int
    seed: int
    success: dict[float, float]
    mean_length: dict[float, float]

    def summary(self) -> dict:
        """The JSON summary: {"task", "episodes", "seed", "success": {"w": rate}, ...}."""
        return {
            "task": self.task,
            "episodes": self.episodes,
            "seed": self.seed,
            "success": {weight_key(w): rate for w, rate in self.success.items()},
            "mean_length": {weight_key(w): length for w, length in self.mean_length.items()},
        }


def weight_key(guidance_weight: float) -> str:
    """1.0 -> "1", 1.5 -> "1.5": how a weight is named in summaries."""
    return format(float(guidance_weight), "g")


def check_task(policy: FlowPolicy, task: str) -> None:
    """ValueError naming both tasks when `policy` was trained on another task than `task`."""
    trained = policy.config.task
    if trained and trained != task:
        raise ValueError(
            f"the policy was trained on {trained} demonstrations, not {task}: pass --task "
            f"{trained} (or train a {task} policy from {task} bags)"
        )


def policy_task(policy: FlowPolicy, task: str | None) -> str:
    """`task` when given, else the task the policy was trained on.

    Raises ValueError when neither is known, or when `task` is not the policy's (check_task).
    """
    if task is not None:
        check_task(policy, task)
        return task
    if not policy.config.task:
        raise ValueError(
            "the policy does not say which task it was trained on (its bags carried no task, or "
            "it predates task tags): pass --task"
        )
    return policy.config.task


def make_env(
    policy: FlowPolicy,
    task: str,
    horizon: int | None = None,
    also: ObservationSpec | None = None,
) -> FrankaSimEnv:
    """A simulator of `task` with the cameras the policy sees, rendered at its image size.

    also: what another reader of the same observations (a success detector) needs: its cameras
    are rendered too, at the same size (the simulator renders one).
    Raises ValueError when the policy was trained on another task's demonstrations, or when
    the two readers want images of different sizes.
    """
    check_task(policy, task)
    readers = [("the policy", policy.config.observation)]
    if also is not None:
        readers.append(("the success detector", also))
    keys: tuple[str, ...] = ()
    sizes = {}
    for name, spec in readers:
        if not spec.image_keys:
            continue
        size = spec.image_size
        if size is None or size[0] != size[1]:
            raise ValueError(
                f"{name}'s images are {size} (height, width); the simulator renders square "
                f"images, so use {name.removeprefix('the ')} trained on square images"
            )
        keys += tuple(key for key in spec.image_keys if key not in keys)
        sizes[name] = size[0]
    if len(set(sizes.values())) > 1:
        raise ValueError(
            "the simulator renders one image size, but "
            + " and ".join(f"{name} reads {side} px" for name, side in sizes.items())
            + ": train them at one size"
        )
    side = next(iter(sizes.values())) if sizes else DEFAULT_IMAGE_SIZE
    return FrankaSimEnv(task, cameras=keys, image_size=side, horizon=horizon)


def rollout(
    env: NoiseSpaceEnv, reset_seed: int, noise_rng: np.random.Generator
) -> tuple[bool, int]:
    """One episode of the base policy with start noises from `noise_rng`; returns (success,
    control ticks). `env` wraps a FrankaSimEnv and decodes at its guidance weight."""
    env.reset(seed=reset_seed)
    done = False
    while not done:
        noise = noise_rng.standard_normal(env.noise_space.shape).astype(np.float32)
        _, _, terminated, truncated, _ = env.step_noise(noise)
        done = terminated or truncated
    return env.env.success, env.env.steps


def evaluate(
    policy: FlowPolicy,
    task: str,
    episodes: int,
    guidance_weights: Sequence[float],
    seed: int = 0,
    exec_horizon: int = 4,
    flow_steps: int | None = None,
    horizon: int | None = None,
    report: Callable[[float, int, bool], None] | None = None,
) -> EvalResult:
    """Success rate of `policy` on `task` at each guidance weight, over `episodes` episodes.

    `report(w, episode, success)` is called after every episode (progress display).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if not guidance_weights:
        raise ValueError("give at least one guidance weight")
    if not 1 <= exec_horizon <= policy.config.horizon:
        raise ValueError(
            f"exec_horizon must be 1..{policy.config.horizon} (the policy's chunk length), "
            f"got {exec_horizon}"
        )
    if policy.config.condition == "goal" and any(w != 0 for w in guidance_weights):
        raise ValueError(
            "this policy is goal-conditioned: the simulator evaluation has no goal state to give "
            "it; evaluate it at w = 0 only"
        )
    sim = make_env(policy, task, horizon)
    success: dict[float, float] = {}
    mean_length: dict[float, float] = {}
    try:
        for w in guidance_weights:
            env = NoiseSpaceEnv(sim, policy, w, exec_horizon=exec_horizon, decode_steps=flow_steps)
            outcomes, lengths = [], []
            for index in range(episodes):
                noise_rng = np.random.default_rng([seed, index])
                succeeded, length = rollout(env, seed + index, noise_rng)
                outcomes.append(succeeded)
                lengths.append(length)
                if report is not None:
                    report(w, index, succeeded)
            success[float(w)] = float(np.mean(outcomes))
            mean_length[float(w)] = float(np.mean(lengths))
    finally:
        sim.close()
    return EvalResult(task, episodes, seed, success, mean_length)


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (sound near 0% and 100%, unlike rate ± 2 SE)."""
    rate = successes / trials
    centre = (rate + z * z / (2 * trials)) / (1 + z * z / trials)
    spread = math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials**2))
    half = z * spread / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)
