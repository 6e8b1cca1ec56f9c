"""CFGRL at several guidance weights vs AWR at several temperatures, on demos of mixed quality.

    nice python bench/cfgrl_vs_awr.py --task lift --noise 0.6 --demos 100 --steps 10000 \
        --value-steps 5000 --episodes 50 --w 0,1,1.5,2,3 --awr-beta 1,3,10 --out runs/cfgrl_vs_awr

1. The noisy scripted expert records --demos episodes of --task (reset seeds 0, 1, ...) into a
   rosbag with EpisodeBagWriter, read back with read_bag: the path real demonstrations take.
   --bag reads an existing bag instead (e.g. one `cfgrl-ros collect` wrote).
2. CFGRL: Monte-Carlo value function, optimality labels o = [A >= 0], one flow policy; evaluated
   at every w (w = 0 is flow BC on all the data).
3. AWR: the same value function recipe, flow BC weighted by min(exp(A / beta), 100), one policy
   per beta (docs/algorithms.md; beta is the temperature, larger is closer to BC).
Every policy is evaluated on the same --episodes initial states (reset seeds 10000, 10001, ...),
with the same start noises. Prints a markdown table and writes results.json under --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import torch

from cfgrl_ros.arm.command_adapter import ArmCommandAdapter
from cfgrl_ros.data.bag_reader import read_bag
from cfgrl_ros.data.bag_writer import EpisodeBagWriter
from cfgrl_ros.evaluation import evaluate, weight_key
from cfgrl_ros.policy.training import TrainConfig, train_policy
from cfgrl_ros.sim.env import FrankaSimEnv
from cfgrl_ros.sim.expert import ScriptedExpert
from cfgrl_ros.sim.rollout import expert_episodes
from cfgrl_ros.sim.tasks import TASKS, task_adapter_config

EVAL_SEED = 10_000  # far from the demonstrations' reset seeds


def _floats(text: str) -> list[float]:
    """Comma-separated numbers; an empty text is none (e.g. --awr-beta "" runs CFGRL alone)."""
    return [float(part) for part in text.split(",") if part.strip()]


def collect(out: Path, task: str, noise: float, demos: int) -> Path:
    """Noisy-expert demonstrations, recorded as a bag (reused when already there)."""
    bag = out / f"{task}_noise{noise:g}_{demos}"
    if bag.exists():
        return bag
    env = FrankaSimEnv(task)
    adapter = ArmCommandAdapter(task_adapter_config(task))
    try:
        with EpisodeBagWriter(bag, adapter=adapter, task=task) as writer:
            for episode in expert_episodes(env, ScriptedExpert(task, noise, seed=0), demos):
                writer.write(episode)
    finally:
        env.close()
    return bag


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="lift", choices=sorted(TASKS))
    parser.add_argument("--noise", type=float, default=0.6, help="expert noise of the demos")
    parser.add_argument("--bag", type=Path, help="read these demos instead of recording them")
    parser.add_argument("--demos", type=int, default=100)
    parser.add_argument("--steps", type=int, default=10_000, help="policy gradient steps")
    parser.add_argument("--value-steps", type=int, default=5_000)
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes per setting")
    parser.add_argument("--w", type=_floats, default=[0.0, 1.0, 1.5, 2.0, 3.0])
    parser.add_argument("--awr-beta", type=_floats, default=[1.0, 3.0, 10.0])
    parser.add_argument(
        "--advantage",
        default="mc",
        choices=["mc", "iql"],
        help="how A(s, a) is estimated for the labels and weights: Monte-Carlo returns or IQL",
    )
    parser.add_argument(
        "--discount", type=float, default=0.99, help="discount per control tick of the values"
    )
    parser.add_argument(
        "--exec-horizon", type=int, default=4, help="actions of each chunk executed per decision"
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--out", type=Path, default=Path("runs/cfgrl_vs_awr"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    bag = args.bag or collect(args.out, args.task, args.noise, args.demos)
    episodes = read_bag(bag)
    data_success = sum(e.success for e in episodes) / len(episodes)
    print(f"{len(episodes)} demos from {bag}, {data_success:.0%} successful", flush=True)

    base = TrainConfig(
        advantage=args.advantage,
        discount=args.discount,
        steps=args.steps,
        value_steps=args.value_steps,
        seed=args.seed,
        device="cpu",
    )
    rows: list[tuple[str, str, float, dict]] = []

    cfgrl = train_policy(episodes, dataclasses.replace(base, method="cfgrl"), args.out / "cfgrl.pt")
    optimal = cfgrl.info["optimal_fraction"]
    print(f"CFGRL labels: {optimal:.0%} of the samples optimal", flush=True)
    common = {"seed": EVAL_SEED, "exec_horizon": args.exec_horizon}
    result = evaluate(cfgrl.policy, args.task, args.episodes, args.w, **common)
    for w, rate in result.success.items():
        rows.append(("CFGRL", f"w = {weight_key(w)}", rate, cfgrl.info))
        print(f"CFGRL w={weight_key(w)}: {rate:.0%}", flush=True)

    for beta in args.awr_beta:
        config = dataclasses.replace(base, method="awr", awr_temperature=beta)
        awr = train_policy(episodes, config, args.out / f"awr_beta{beta:g}.pt")
        rate = evaluate(awr.policy, args.task, args.episodes, [0.0], **common).success[0.0]
        rows.append(("AWR", f"beta = {beta:g}", rate, awr.info))
        print(f"AWR beta={beta:g}: {rate:.0%}", flush=True)

    minutes = (time.perf_counter() - started) / 60
    source = f"from {bag}" if args.bag else f"at expert noise {args.noise:g}"
    print(
        f"\n{args.task}, demos: {len(episodes)} {source} ({data_success:.0%} "
        f"successful); {args.advantage} advantages, discount {args.discount:g}; "
        f"{args.value_steps} value + {args.steps} policy steps; {args.exec_horizon} actions per "
        "decision; "
        f"{args.episodes} evaluation episodes per row; {minutes:.0f} min in all\n"
    )
    print("| method | setting | success |")
    print("|---|---|---|")
    for method, setting, rate, _ in rows:
        print(f"| {method} | {setting} | {rate:.0%} |")
    summary = {
        "task": args.task,
        "noise": None if args.bag else args.noise,
        "bag": str(bag),
        "demos": len(episodes),
        "demo_success": data_success,
        "steps": args.steps,
        "value_steps": args.value_steps,
        "advantage": args.advantage,
        "discount": args.discount,
        "exec_horizon": args.exec_horizon,
        "episodes": args.episodes,
        "results": [
            {"method": m, "setting": s, "success": r, "info": info} for m, s, r, info in rows
        ],
    }
    (args.out / "results.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
