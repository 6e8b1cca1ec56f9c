"""DSRL benchmark: online success per episode of the base policy, DSRL-SAC and DSRL-NA.

    nice python bench/dsrl.py --policy runs/demo/policy.pt --out runs/dsrl --seeds 0 1 2

1. The frozen policy: --policy, or else a weak one trained here: the noisy scripted expert
   records --demos episodes of --task (reset seeds 0, 1, ...; noise --noise), and a flow policy
   is trained on them (--method, default flow BC, --policy-steps steps; kept in OUT/policy.pt).
2. The base policy (w0 ~ N(0, I)) and zero noise (w0 = 0) are rolled out for --base-episodes
   episodes each: the references every curve starts from.
3. `cfgrl-ros adapt` runs once per algorithm and seed (OUT/<algo>_seed<s>, resumable; --jobs
   at a time), each in its own process with one torch thread; its summary gives the success of
   every training episode, the final deterministic evaluation, the training wall-clock time and
   the learner's share of it.
With --operator scripted every adapt run has the simulated operator of `adapt --operator`
(it takes over training episodes that go badly); training successes then include the ones the
operator helped, and the table also gives its takeovers per episode in each quarter of the run
and when the successes without any takeover reach 90% rolling. The final evaluation is
without the operator.
Prints a markdown table and writes OUT/results.json and OUT/curves.png (rolling means).
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

from cfgrl_ros.evaluation import policy_task
from cfgrl_ros.policy.flow_policy import FlowPolicy
from cfgrl_ros.sim.env import CONTROL_RATE
from cfgrl_ros.sim.tasks import TASKS

ROLLING_WINDOW = 10
BASE_SEED = 500_000  # base-policy episodes reset from seeds no adapt run uses


def train_weak_policy(args: argparse.Namespace, path: Path) -> None:
    """Noisy-expert demonstrations -> a flow policy (the frozen policy DSRL will steer)."""
    from cfgrl_ros.policy.flow_policy import PolicyConfig
    from cfgrl_ros.policy.training import TrainConfig, train_policy
    from cfgrl_ros.sim.env import FrankaSimEnv
    from cfgrl_ros.sim.expert import ScriptedExpert
    from cfgrl_ros.sim.rollout import expert_episodes

    env = FrankaSimEnv(args.task)
    try:
        expert = ScriptedExpert(args.task, args.noise, seed=0)
        demos = list(expert_episodes(env, expert, args.demos))
    finally:
        env.close()
    print(
        f"{len(demos)} demos, {sum(d.success for d in demos)} successful; training "
        f"{args.method} for {args.policy_steps} steps",
        flush=True,
    )
    config = TrainConfig(
        method=args.method,
        advantage="mc",
        steps=args.policy_steps,
        value_steps=args.policy_steps // 2,
        device="cpu",
        seed=0,
        policy=PolicyConfig(task=args.task),
    )
    train_policy(demos, config, checkpoint_path=path)


def base_successes(
    args: argparse.Namespace, policy_path: Path, task: str, noise: str = "sampled"
) -> list[bool]:
    """Success of --base-episodes episodes of the frozen policy without a learner (cached in
    OUT/base_<noise>.json). noise "sampled": the base policy, w0 ~ N(0, I); "zero": w0 = 0 at
    every decision, a deterministic policy that needs no learning (the reference a deterministic
    noise actor has to beat)."""
    from cfgrl_ros.dsrl import DsrlConfig, ZeroNoise, make_noise_env, run_episode
    from cfgrl_ros.evaluation import make_env

    cache = args.out / f"base_{noise}.json"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if (cached["episodes"], cached["w"], cached["exec_horizon"]) == (
            args.base_episodes,
            args.w,
            args.exec_horizon,
        ):
            return cached["successes"]
    policy = FlowPolicy.load(policy_path, device="cpu")
    config = DsrlConfig(exec_horizon=args.exec_horizon)  # executed as the adapted runs are
    env = make_noise_env(make_env(policy, task), policy, args.w, config)
    actor = ZeroNoise(policy.noise_shape, args.w) if noise == "zero" else None
    began = time.monotonic()
    successes = [
        run_episode(env, actor, seed=BASE_SEED + i).success for i in range(args.base_episodes)
    ]
    env.close()
    cache.write_text(
        json.dumps(
            {
                "episodes": args.base_episodes,
                "w": args.w,
                "exec_horizon": args.exec_horizon,
                "successes": successes,
                "seconds": round(time.monotonic() - began, 1),
            }
        )
    )
    return successes


def adapt_command(args: argparse.Namespace, policy_path: Path, algo: str, seed: int) -> list[str]:
    """The `cfgrl-ros adapt` command of one algorithm and seed (output in OUT/<algo>_seed<s>)."""
    out = args.out / f"{algo}_seed{seed}"
    command = [
        sys.executable,
        "-m",
        "cfgrl_ros.cli.main",
        "adapt",
        "--policy",
        str(policy_path),
        "--task",
        args.task,
        "--algo",
        algo,
        "--episodes",
        str(args.episodes),
        "--seed",
        str(seed),
        "--out",
        str(out),
        "--w",
        str(args.w),
        "--utd",
        str(args.utd),
        "--gamma",
        str(args.gamma),
        "--hidden",
        *map(str, args.hidden),
        "--prefill",
        str(args.prefill),
        "--magnitude",
        str(args.magnitude),
        "--noise-mode",
        args.noise_mode,
        "--exec-horizon",
        str(args.exec_horizon),
        "--eval-episodes",
        str(args.eval_episodes),
        "--operator",
        args.operator,
        "--no-progress",
        "--json",
    ]
    if algo == "dsrl_na":  # DSRL-SAC is stock SAC: no prior
        command += ["--noise-prior-weight", str(args.noise_prior_weight)]
    return command


def learner_time(run: dict) -> str:
    """The learner's mean seconds per episode ("n/a" for runs from before it was recorded)."""
    if len(run.get("episode_ticks", [])) != run["episodes"]:
        return "n/a"
    return f"{run['learner_seconds'] / run['episodes']:.1f} s"


def episode_time(run: dict) -> str:
    """The mean episode's duration on an arm at the control rate."""
    if len(run.get("episode_ticks", [])) != run["episodes"]:
        return "n/a"
    return f"{np.mean(run['episode_ticks']) / CONTROL_RATE:.1f} s"


def takeovers_by_quarter(run: dict, quarter: int) -> str:
    """The operator's mean takeovers per episode in each quarter of the run."""
    per_episode = run["interventions"]["per_episode"]
    return " / ".join(
        f"{np.mean(per_episode[i * quarter : (i + 1) * quarter]):.2f}" for i in range(4)
    )


def unassisted(run: dict) -> list[bool]:
    """Per episode: a success in which the operator never took over."""
    per_episode = run["interventions"]["per_episode"]
    return [bool(s) and n == 0 for s, n in zip(run["success_curve"], per_episode, strict=True)]


def summary_path(args: argparse.Namespace, algo: str, seed: int) -> Path:
    return args.out / f"{algo}_seed{seed}" / "summary.json"


def run_adapt(args: argparse.Namespace, policy_path: Path, runs: list[tuple[str, int]]) -> None:
    """Every (algo, seed) run without a complete summary, --jobs at a time."""
    environment = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    pending = [
        (algo, seed)
        for algo, seed in runs
        if not summary_path(args, algo, seed).is_file()
        or json.loads(summary_path(args, algo, seed).read_text())["episodes"] < args.episodes
    ]
    active: list[tuple[subprocess.Popen, str]] = []
    while pending or active:
        while pending and len(active) < args.jobs:
            algo, seed = pending.pop(0)
            log = args.out / f"{algo}_seed{seed}.log"
            print(f"running {algo} seed {seed} (log {log})", flush=True)
            with open(log, "w") as output:
                process = subprocess.Popen(
                    adapt_command(args, policy_path, algo, seed),
                    env=environment,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            active.append((process, f"{algo} seed {seed}"))
        time.sleep(5)
        for process, name in list(active):
            if process.poll() is not None:
                active.remove((process, name))
                if process.returncode != 0:
                    raise RuntimeError(f"{name} failed (exit {process.returncode}); see its log")


def rolling(values: list[int] | list[bool], window: int = ROLLING_WINDOW) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def first_episode_at(curve: list[int], level: float = 0.9) -> int | None:
    """First episode (1-based) at which the rolling mean over a full window reaches `level`."""
    means = rolling(curve)
    for index in range(ROLLING_WINDOW - 1, len(curve)):
        if means[index] >= level:
            return index + 1
    return None


def plot(results: dict, base_rate: float, zero_rate: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5))
    colours = {"dsrl_na": "tab:blue", "dsrl_sac": "tab:orange"}
    for algo, runs in results.items():
        for index, run in enumerate(runs):
            curve = run["success_curve"]
            label = algo if index == 0 else None
            axis.plot(
                np.arange(1, len(curve) + 1), rolling(curve), color=colours[algo], label=label
            )
    axis.axhline(base_rate, color="k", linestyle="--", label="base policy")
    axis.axhline(zero_rate, color="gray", linestyle=":", label="zero noise (no learning)")
    axis.set_xlabel("online episode")
    axis.set_ylabel(f"success (rolling mean of {ROLLING_WINDOW})")
    axis.set_ylim(-0.05, 1.05)
    axis.legend(loc="lower right")
    axis.set_title(f"DSRL on {title}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/dsrl"))
    parser.add_argument("--policy", type=Path, help="pretrained policy (default: train one)")
    parser.add_argument(
        "--task",
        choices=sorted(TASKS),
        help="simulated task (default: the policy's; lift when the benchmark trains its own)",
    )
    parser.add_argument("--demos", type=int, default=20, help="noisy-expert demonstrations")
    parser.add_argument("--noise", type=float, default=0.5, help="expert noise of the demos")
    parser.add_argument("--method", default="bc", choices=["bc", "cfgrl", "awr"])
    parser.add_argument("--policy-steps", type=int, default=3000)
    parser.add_argument("--w", type=float, default=1.0, help="guidance weight (cfgrl policies)")
    parser.add_argument("--base-episodes", type=int, default=100)
    parser.add_argument(
        "--algos", nargs="+", default=["dsrl_na", "dsrl_sac"], choices=["dsrl_na", "dsrl_sac"]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--utd", type=int, default=20)
    parser.add_argument(
        "--gamma", type=float, default=0.92, help="discount per decision (0.99 per tick ** 8)"
    )
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--prefill", type=int, default=130, help="about 10 base episodes")
    parser.add_argument("--magnitude", type=float, default=1.5)
    parser.add_argument("--noise-mode", default="full", choices=["full", "shared"])
    parser.add_argument("--exec-horizon", type=int, default=8)
    parser.add_argument(
        "--noise-prior-weight", type=float, default=0.1, help="DSRL-NA's noise prior b (0: off)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="adapt runs at the same time")
    parser.add_argument(
        "--operator",
        default="none",
        choices=["none", "scripted"],
        help="scripted: a simulated operator takes over training episodes that go badly",
    )
    parser.add_argument(
        "--stop-after", choices=["policy", "base"], help="stop after a stage (for tuning)"
    )
    args = parser.parse_args()
    if args.policy and not args.policy.is_file():
        parser.error(f"--policy {args.policy} does not exist (leave --policy out to train one)")
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)

    policy_path = args.policy or args.out / "policy.pt"
    if policy_path.is_file():
        args.task = policy_task(FlowPolicy.load(policy_path, device="cpu"), args.task)
    else:
        args.task = args.task or "lift"
        began = time.monotonic()
        train_weak_policy(args, policy_path)
        print(f"policy trained in {time.monotonic() - began:.0f} s", flush=True)
    if args.stop_after == "policy":
        return
    base = base_successes(args, policy_path, args.task)
    base_rate = float(np.mean(base))
    print(f"base policy: {base_rate:.0%} success over {len(base)} episodes", flush=True)
    zero = base_successes(args, policy_path, args.task, noise="zero")
    print(f"zero noise: {np.mean(zero):.0%} success over {len(zero)} episodes", flush=True)
    if args.stop_after == "base":
        return

    run_adapt(args, policy_path, [(algo, seed) for seed in args.seeds for algo in args.algos])
    results = {
        algo: [json.loads(summary_path(args, algo, seed).read_text()) for seed in args.seeds]
        for algo in args.algos
    }
    (args.out / "results.json").write_text(
        json.dumps({"base_success": base, "zero_noise_success": zero, "runs": results}, indent=1)
    )
    title = TASKS[args.task].robosuite_env
    plot(results, base_rate, float(np.mean(zero)), args.out / "curves.png", title)

    quarter = args.episodes // 4
    takeovers = (
        " takeovers per episode by quarter | first ep at rolling >= 90% of unassisted successes |"
        if args.operator != "none"
        else ""
    )
    print(
        f"\n| algo | seed | success ep 1-{quarter} | {quarter + 1}-{2 * quarter} | "
        f"{2 * quarter + 1}-{3 * quarter} | {3 * quarter + 1}-{args.episodes} | "
        f"first ep at {ROLLING_WINDOW}-ep rolling >= 90% | final eval | train time | "
        f"learner s per episode | episode at 20 Hz |{takeovers}"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if takeovers else ""))
    for name, successes in (("base policy", base), ("zero noise", zero)):
        print(
            f"| {name} | - | {np.mean(successes):.0%} | | | | - | - | "
            f"({len(successes)} episodes) | | |"
        )
    for algo, runs in results.items():
        for seed, run in zip(args.seeds, runs, strict=True):
            curve = run["success_curve"]
            parts = [np.mean(curve[i * quarter : (i + 1) * quarter]) for i in range(4)]
            reached = first_episode_at(curve)
            print(
                f"| {algo} | {seed} | "
                + " | ".join(f"{part:.0%}" for part in parts)
                + f" | {reached or 'not reached'} | {run['final_success']:.0%} | "
                f"{run['train_seconds'] / 60:.0f} min | "
                f"{learner_time(run)} | {episode_time(run)} |"
                + (
                    f" {takeovers_by_quarter(run, quarter)} | "
                    f"{first_episode_at(unassisted(run)) or 'not reached'} |"
                    if takeovers
                    else ""
                )
            )


if __name__ == "__main__":
    main()
