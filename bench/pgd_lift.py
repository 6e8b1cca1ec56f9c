"""PGD on Lift: offline-to-online DSRL-NA with and without synthetic experience, and how far
the synthetic transitions are from the real dynamics.

    nice python bench/pgd_lift.py --out runs/pgd_lift --seeds 0 --episodes 60

1. Recorded data: `cfgrl-ros collect` records --demos noisy-expert Lift episodes (OUT/demos,
   reset seeds 0, 1, ...) and --held-out more from other reset seeds (OUT/held_out), which
   only the dynamics evaluator sees.
2. The frozen policy: `cfgrl-ros pretrain` (flow BC, --policy-steps) on OUT/demos.
3. Synthetic experience: `cfgrl-ros synthesize` on OUT/demos with the frozen policy as target
   (zero start noise, the centre of its noise distribution), once with lambda = 0 (behaviour
   distribution) and once per --guidance value: OUT/synthetic_l<lambda>. The trajectory model
   is trained once (OUT/pgd_model.pt) and reused.
4. Dynamics error (cfgrl_ros.pgd.dynamics): a one-step model fitted on OUT/held_out scores the
   real demos (the reference), each synthetic bag, and the world-model baseline: a one-step
   model fitted on OUT/demos, rolled out --horizon ticks from demo states under the target.
5. The base policy's success (w0 ~ N(0, I), --base-episodes), then `cfgrl-ros adapt
   --offline-bag` per seed with OUT/demos alone and with OUT/demos plus the synthetic bag of
   the first --guidance value: episodes until the 10-episode rolling success reaches 90%, and
   the final deterministic evaluation.
Prints markdown tables and writes OUT/results.json. Every stage is cached in OUT.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dsrl import base_successes, first_episode_at

ENVIRONMENT = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
HELD_OUT_SEED = 100_000  # reset seeds of the evaluator's episodes, disjoint from the demos'


def cli(*arguments: str) -> None:
    """One `cfgrl-ros` command in its own process with one torch thread."""
    print("$ cfgrl-ros " + " ".join(arguments), flush=True)
    subprocess.run(
        [sys.executable, "-m", "cfgrl_ros.cli.main", *arguments], check=True, env=ENVIRONMENT
    )


def prepare(args: argparse.Namespace) -> dict[str, Path]:
    """Stages 1-3: demos, held-out episodes, the frozen policy, the synthetic bags."""
    out = args.out
    paths = {"demos": out / "demos", "held_out": out / "held_out", "policy": out / "policy.pt"}
    if not paths["demos"].exists():
        cli(
            "collect",
            "--episodes",
            str(args.demos),
            "--noise",
            str(args.noise),
            "--seed",
            "0",
            "--out",
            str(paths["demos"]),
        )
    if not paths["held_out"].exists():
        cli(
            "collect",
            "--episodes",
            str(args.held_out),
            "--noise",
            str(args.noise),
            "--seed",
            str(HELD_OUT_SEED),
            "--out",
            str(paths["held_out"]),
        )
    if not paths["policy"].exists():
        cli(
            "pretrain",
            "--bag",
            str(paths["demos"]),
            "--out",
            str(paths["policy"]),
            "--method",
            "bc",
            "--steps",
            str(args.policy_steps),
            "--device",
            "cpu",
        )
    for guidance in [0.0, *args.guidance]:
        path = out / f"synthetic_l{guidance:g}"
        paths[f"synthetic_l{guidance:g}"] = path
        if not path.exists():
            cli(
                "synthesize",
                "--bag",
                str(paths["demos"]),
                "--policy",
                str(paths["policy"]),
                "--guidance",
                str(guidance),
                "--trajectories",
                str(args.trajectories),
                "--horizon",
                str(args.horizon),
                "--train-steps",
                str(args.pgd_steps),
                "--policy-guidance-weight",
                str(args.w),
                "--model",
                str(out / "pgd_model.pt"),
                "--out",
                str(path),
            )
    return paths


def dynamics_errors(args: argparse.Namespace, paths: dict[str, Path]) -> dict[str, dict]:
    """Stage 4: dynamics error and target-action distance of real and synthetic transitions."""
    from cfgrl_ros.data.bag_reader import read_bag
    from cfgrl_ros.pgd.dynamics import DynamicsModel, episode_transitions, world_model_rollouts
    from cfgrl_ros.pgd.target import flow_policy_action
    from cfgrl_ros.policy.flow_policy import FlowPolicy

    cache = args.out / "dynamics.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    demos = read_bag(paths["demos"])
    real = episode_transitions(demos)
    evaluator = DynamicsModel.fit(
        episode_transitions(read_bag(paths["held_out"])), steps=args.dynamics_steps
    )
    policy = FlowPolicy.load(paths["policy"], device="cpu")
    target_action = flow_policy_action(policy, guidance_weight=args.w)

    def scores(transitions) -> dict:
        states = torch.as_tensor(transitions.states)
        gap = (torch.as_tensor(transitions.actions) - target_action(states)).abs().mean()
        return {
            "transitions": len(transitions),
            "dynamics_error": evaluator.error(transitions),
            "one_step_change": _field_rms(transitions.next_states - transitions.states),
            "target_action_distance": float(gap),
        }

    results = {"real demos (reference)": scores(real)}
    for name, path in paths.items():
        if name.startswith("synthetic_l"):
            episodes = read_bag(path)
            results[f"PGD lambda={name.removeprefix('synthetic_l')}"] = scores(
                episode_transitions(episodes)
            )
    world_model = DynamicsModel.fit(real, steps=args.dynamics_steps, seed=1)
    starts = np.random.default_rng(0).choice(len(real), size=args.trajectories, replace=False)
    rollouts = world_model_rollouts(world_model, real.states[starts], target_action, args.horizon)
    results[f"world model, {args.horizon}-tick rollouts"] = scores(rollouts)
    cache.write_text(json.dumps(results, indent=1))
    return results


def _field_rms(values: np.ndarray) -> dict[str, float]:
    """sqrt(mean |v_field|^2) per observation field of state-vector rows [N, STATE_DIM]."""
    from cfgrl_ros.observation import OBSERVATION_FIELDS

    result, start = {}, 0
    for name, size in OBSERVATION_FIELDS.items():
        result[name] = float(np.sqrt((values[:, start : start + size] ** 2).sum(-1).mean()))
        start += size
    return result


def adapt(args: argparse.Namespace, paths: dict[str, Path], name: str, seed: int) -> dict:
    """Stage 5: one offline-to-online DSRL-NA run; its summary.json (cached)."""
    out = args.out / f"{name}_seed{seed}"
    summary = out / "summary.json"
    if summary.is_file() and json.loads(summary.read_text())["episodes"] >= args.episodes:
        return json.loads(summary.read_text())
    bags = [paths["demos"]]
    mix = []
    if name == "with_synthetic":
        bags.append(paths[f"synthetic_l{args.guidance[0]:g}"])
        mix = ["--synthetic-ratio", str(args.synthetic_ratio)]
    cli(
        "adapt",
        "--policy",
        str(paths["policy"]),
        "--algo",
        "dsrl_na",
        "--offline-bag",
        *map(str, bags),
        *mix,
        "--offline-updates",
        str(args.offline_updates),
        "--exec-horizon",
        str(args.exec_horizon),
        "--gamma",
        str(args.gamma),
        "--hidden",
        *map(str, args.hidden),
        "--noise-prior-weight",
        str(args.noise_prior_weight),
        "--utd",
        str(args.utd),
        "--batch-size",
        str(args.batch_size),
        "--prefill",
        str(args.prefill),
        "--episodes",
        str(args.episodes),
        "--eval-episodes",
        str(args.eval_episodes),
        "--w",
        str(args.w),
        "--seed",
        str(seed),
        "--out",
        str(out),
        "--no-progress",
    )
    return json.loads(summary.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/pgd_lift"))
    parser.add_argument("--demos", type=int, default=20, help="noisy-expert demonstrations")
    parser.add_argument("--noise", type=float, default=0.3, help="expert noise of the demos")
    parser.add_argument(
        "--held-out", type=int, default=100, help="episodes the dynamics evaluator is fitted on"
    )
    parser.add_argument("--policy-steps", type=int, default=3000)
    parser.add_argument("--w", type=float, default=1.0, help="guidance weight of the policy")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 4.0], help="PGD lambdas")
    parser.add_argument("--trajectories", type=int, default=256, help="synthetic windows")
    parser.add_argument("--horizon", type=int, default=16, help="ticks per synthetic window")
    parser.add_argument("--pgd-steps", type=int, default=4000, help="trajectory model steps")
    parser.add_argument("--dynamics-steps", type=int, default=3000)
    parser.add_argument(
        "--base-episodes", type=int, default=40, help="episodes of the base policy, w0 ~ N(0, I)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--episodes", type=int, default=60, help="online episodes per run")
    parser.add_argument("--offline-updates", type=int, default=2000)
    parser.add_argument("--utd", type=int, default=10, help="DSRL-NA updates per decision")
    parser.add_argument(
        "--prefill", type=int, default=100, help="base-policy decisions before DSRL-NA acts"
    )
    parser.add_argument("--batch-size", type=int, default=256, help="DSRL-NA batch size")
    parser.add_argument("--exec-horizon", type=int, default=8, help="actions run per decision")
    parser.add_argument(
        "--gamma", type=float, default=0.92, help="discount per decision (0.99 per tick ** 8)"
    )
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256], help="MLP widths")
    parser.add_argument(
        "--noise-prior-weight", type=float, default=0.1, help="DSRL-NA's noise prior b (0: off)"
    )
    parser.add_argument(
        "--synthetic-ratio",
        type=float,
        default=1.0,
        help="synthetic ticks per recorded tick in the with_synthetic runs",
    )
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument(
        "--stop-after", choices=["data", "dynamics"], help="stop after a stage (for tuning)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()

    paths = prepare(args)
    if args.stop_after == "data":
        return
    errors = dynamics_errors(args, paths)
    print(
        "\n| data | transitions | dynamics error: eef pos (mm) | object pos (mm) | joints (rad) "
        "| gripper (mm) | typical one-step eef move (mm) | mean abs(a - target action) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, row in errors.items():
        error = row["dynamics_error"]
        print(
            f"| {name} | {row['transitions']} | {1000 * error['eef_pos']:.2f} | "
            f"{1000 * error['object_pos']:.2f} | {error['joint_pos']:.4f} | "
            f"{1000 * error['gripper_width']:.2f} | "
            f"{1000 * row['one_step_change']['eef_pos']:.2f} | "
            f"{row['target_action_distance']:.3f} |"
        )
    if args.stop_after == "dynamics":
        return

    base = base_successes(args, paths["policy"], "lift")
    print(f"\nbase policy: {np.mean(base):.0%} success over {len(base)} episodes", flush=True)
    runs = {
        name: [adapt(args, paths, name, seed) for seed in args.seeds]
        for name in ("demos_only", "with_synthetic")
    }
    (args.out / "results.json").write_text(
        json.dumps({"dynamics": errors, "base_success": base, "runs": runs}, indent=1)
    )
    print("\n| offline data | seed | first ep at 10-ep rolling >= 90% | final eval | train time |")
    print("|---|---|---|---|---|")
    for name, results in runs.items():
        for seed, run in zip(args.seeds, results, strict=True):
            reached = first_episode_at(run["success_curve"])
            print(
                f"| {name} | {seed} | {reached or 'not reached'} | {run['final_success']:.0%} "
                f"| {run['train_seconds'] / 60:.0f} min |"
            )
    print(f"\ntotal {(time.monotonic() - began) / 60:.0f} min")


if __name__ == "__main__":
    main()
