"""Is an adapted noise actor's gain state-dependent steering, or a better fixed noise? And is
it better than zero noise?

    nice python bench/dsrl_fixed_noise.py --policy runs/heldout/policy.pt \
        runs/dsrl_lift_heldout/dsrl_na_seed0 runs/dsrl_lift_heldout/dsrl_na_seed1

For each finished `cfgrl-ros adapt` run (a folder with agent/ and summary.json): its
deterministic noise actor plays the run's own evaluation episodes (same initial states, same
guidance weight; --episodes plays more, from the following seeds) while every noise it gives is
recorded; then zero noise (the policy's deterministic mode, which needs no learning) and the
mean of the actor's noises are fed at every decision of the same episodes. If the fixed mean
noise does as well as the actor, the actor has found a better noise than the policy's mode,
not a state-dependent one. Rates come with 95% Wilson intervals.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


class FixedNoise:
    """In place of a noise agent: the same start noise at every decision."""

    def __init__(self, noise: np.ndarray, guidance_weight: float) -> None:
        self.fixed = noise.astype(np.float32)
        self.guidance_weight = guidance_weight

    def noise(self, features: np.ndarray, deterministic: bool = False) -> np.ndarray:
        return self.fixed


class RecordedActor:
    """The agent's deterministic noise actor, keeping every noise it gives."""

    def __init__(self, agent) -> None:
        self.agent = agent
        self.guidance_weight = agent.guidance_weight
        self.noises: list[np.ndarray] = []

    def noise(self, features: np.ndarray, deterministic: bool = False) -> np.ndarray:
        noise = self.agent.noise(features, deterministic=True)
        self.noises.append(noise)
        return noise


def rate(successes: list[bool]) -> str:
    """ "90% [85-93%]": a success rate and its 95% Wilson interval."""
    from cfgrl_ros.evaluation import wilson_interval

    low, high = wilson_interval(sum(successes), len(successes))
    return f"{np.mean(successes):.0%} [{low:.0%}-{high:.0%}]"


def compare(run: Path, policy_path: Path, episodes: int | None) -> str:
    from cfgrl_ros.cli.adapt import AGENT_DIR, EVAL_SEED_OFFSET
    from cfgrl_ros.dsrl import ZeroNoise
    from cfgrl_ros.dsrl.agent import NoiseAgent, make_noise_env
    from cfgrl_ros.dsrl.rollout import run_episode
    from cfgrl_ros.evaluation import make_env
    from cfgrl_ros.policy.flow_policy import FlowPolicy

    summary = json.loads((run / "summary.json").read_text())
    policy = FlowPolicy.load(policy_path, device="cpu")
    agent = NoiseAgent.load(run / AGENT_DIR, policy, device="cpu")
    agent.set_guidance_weight(summary["guidance_weight"])
    env = make_noise_env(
        make_env(policy, summary["task"], None), policy, agent.guidance_weight, agent.config
    )
    count = episodes or summary["eval_episodes"]
    seeds = [agent.config.seed + EVAL_SEED_OFFSET + index for index in range(count)]
    try:
        actor = RecordedActor(agent)
        by_actor = [run_episode(env, actor, seed=seed).success for seed in seeds]
        noises = np.stack(actor.noises)
        mean = noises.mean(axis=0)
        fixed = FixedNoise(mean, agent.guidance_weight)
        by_mean = [run_episode(env, fixed, seed=seed).success for seed in seeds]
        zero = ZeroNoise(policy.noise_shape, agent.guidance_weight)
        by_zero = [run_episode(env, zero, seed=seed).success for seed in seeds]
    finally:
        env.close()
    spread = np.linalg.norm(noises - mean, axis=(1, 2)).mean()
    return (
        f"| {run.name} | {len(seeds)} | {rate(by_actor)} | {rate(by_zero)} | {rate(by_mean)} | "
        f"{np.linalg.norm(mean):.2f} | {spread:.2f} | {len(noises)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="finished `cfgrl-ros adapt` folders")
    parser.add_argument("--policy", type=Path, required=True, help="the runs' frozen policy")
    parser.add_argument(
        "--episodes", type=int, help="episodes per actor (default: the run's evaluation's)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        "| run | episodes | actor | zero noise | actor's mean noise, fixed | mean noise norm | "
        "actor's mean distance from it | decisions |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        print(compare(run, args.policy, args.episodes), flush=True)


if __name__ == "__main__":
    main()
