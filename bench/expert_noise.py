"""Success rate of the scripted expert per noise level (what `cfgrl-ros collect --noise` gives).

    MUJOCO_GL=egl python bench/expert_noise.py --task lift --episodes 50 \
        --noise 0 0.1 0.2 0.3 0.4 0.5 0.6 0.8 1.0

Prints a markdown table: noise, success rate (with a 95% Wilson interval), mean episode length.
Reset seeds are the same for every noise level, so the levels see the same object placements.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from cfgrl_ros.evaluation import wilson_interval
from cfgrl_ros.sim.env import FrankaSimEnv
from cfgrl_ros.sim.expert import ScriptedExpert
from cfgrl_ros.sim.rollout import expert_episodes
from cfgrl_ros.sim.tasks import TASKS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="lift", choices=sorted(TASKS))
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--noise", type=float, nargs="+", default=[0, 0.1, 0.2, 0.3, 0.5, 1.0])
    parser.add_argument("--seed", type=int, default=0, help="first reset seed")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    env = FrankaSimEnv(args.task)
    print(f"task {args.task}, {args.episodes} episodes per level, horizon {env.horizon}")
    print("| noise | success | 95% interval | mean length | seconds |")
    print("|---|---|---|---|---|")
    for noise in args.noise:
        expert = ScriptedExpert(args.task, noise, seed=args.seed)
        start = time.perf_counter()
        episodes = list(expert_episodes(env, expert, args.episodes, seed=args.seed))
        seconds = time.perf_counter() - start
        successes = sum(episode.success for episode in episodes)
        low, high = wilson_interval(successes, args.episodes)
        length = np.mean([len(episode) for episode in episodes])
        print(
            f"| {noise:g} | {successes}/{args.episodes} ({successes / args.episodes:.0%}) "
            f"| {low:.0%}-{high:.0%} | {length:.1f} | {seconds:.0f} |",
            flush=True,
        )
    env.close()


if __name__ == "__main__":
    main()
