"""Online DSRL adaptation of a frozen policy in the simulator, without ROS: a noise agent (DSRL-NA
or DSRL-SAC) learns which start noise to give the policy, one decision at a time, exactly as the
ROS noise actor does. OUT receives a checkpoint after every episode (run the same command again
to resume an interrupted run; it keeps its saved settings), the learning curve as
learning_curve.png and summary.json. The final success rate comes from a separate evaluation
with the deterministic noise actor on initial states not seen in training. With --json the last
line of the output is one JSON object:
{"algo": ..., "episodes": N, "success_curve": [...], "final_success": x, ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from cfgrl_ros.sim.env import TASKS

AGENT_DIR = "agent"
EVAL_SEED_OFFSET = 1_000_000  # evaluation episodes reset from seeds no training episode uses
ROLLING_WINDOW = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cfgrl_ros.dsrl.agent import DsrlConfig

    defaults = DsrlConfig()
    parser.add_argument("--policy", required=True, help="policy checkpoint (cfgrl-ros pretrain)")
    parser.add_argument("--task", default="lift", choices=sorted(TASKS), help="simulated task")
    parser.add_argument("--algo", default="dsrl_na", choices=["dsrl_na", "dsrl_sac"])
    parser.add_argument("--episodes", type=int, default=100, help="online training episodes")
    parser.add_argument(
        "--seed", type=int, default=0, help="agent seed; episode i resets with seed+i"
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder, resumed if present")
    parser.add_argument(
        "--offline-bag",
        type=Path,
        nargs="+",
        help="rosbag(s) whose episodes fill DSRL-NA's replay buffer first (offline-to-online)",
    )
    parser.add_argument(
        "--synthetic-ratio",
        type=float,
        metavar="R",
        help="with --offline-bag: synthetic episodes (cfgrl-ros synthesize) up to R control "
        "ticks per recorded tick, drawn at random; 0 ignores them (default: all of them)",
    )
    parser.add_argument(
        "--offline-updates",
        type=int,
        default=2000,
        help="updates on offline data before going online",
    )
    parser.add_argument(
        "--w", type=float, default=1.0, help="guidance weight the policy decodes at"
    )
    parser.add_argument(
        "--eval-episodes", type=int, default=20, help="final evaluation episodes, >= 20"
    )
    parser.add_argument("--utd", type=int, default=defaults.utd, help="updates per decision")
    parser.add_argument(
        "--gamma",
        type=float,
        default=defaults.gamma,
        help="discount per decision (a per-tick discount g gives g ** exec_horizon)",
    )
    parser.add_argument(
        "--prefill",
        type=int,
        default=defaults.prefill_decisions,
        help="base-policy decisions before learning (0 with --offline-bag: act with the "
        "offline-trained actor from the start)",
    )
    parser.add_argument("--magnitude", type=float, default=defaults.magnitude, help="noise bound")
    parser.add_argument("--noise-mode", choices=["full", "shared"], default=defaults.noise_mode)
    parser.add_argument(
        "--exec-horizon", type=int, default=defaults.exec_horizon, help="actions run per decision"
    )
    parser.add_argument(
        "--noise-prior-weight",
        type=float,
        default=defaults.noise_prior_weight,
        help="DSRL-NA: weight b of the prior log N(w0; 0, I) in the actor's objective; it keeps "
        "the noise near the frozen policy's most likely noise until the critic finds better. "
        "In units of the reward per decision (0: DSRL-NA as published; DSRL-SAC is stock SAC "
        "and has no prior)",
    )
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument(
        "--hidden", type=int, nargs="+", default=list(defaults.hidden_sizes), help="MLP widths"
    )
    parser.add_argument("--horizon", type=int, help="control ticks per episode (default: task's)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (agent and policy)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of results")


def _config(args: argparse.Namespace):
    from cfgrl_ros.dsrl.agent import DsrlConfig

    return DsrlConfig(
        algo=args.algo,
        seed=args.seed,
        device=args.device,
        utd=args.utd,
        gamma=args.gamma,
        prefill_decisions=args.prefill,
        magnitude=args.magnitude,
        noise_mode=args.noise_mode,
        exec_horizon=args.exec_horizon,
        noise_prior_weight=args.noise_prior_weight,
        batch_size=args.batch_size,
        hidden_sizes=tuple(args.hidden),
    )


def _fail(message: str) -> int:
    print(f"cfgrl-ros adapt: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    if args.episodes < 0:
        return _fail(f"--episodes must be >= 0, got {args.episodes}")
    if args.eval_episodes < 20:
        return _fail(
            f"--eval-episodes must be >= 20 for a meaningful rate, got {args.eval_episodes}"
        )
    if args.synthetic_ratio is not None and not args.offline_bag:
        return _fail("--synthetic-ratio mixes the episodes of --offline-bag: give the bags too")
    if args.offline_bag and args.algo != "dsrl_na":
        return _fail(
            "--offline-bag needs --algo dsrl_na (recorded episodes hold actions, not noise)"
        )

    from cfgrl_ros.dsrl.agent import NoiseAgent, make_noise_agent, make_noise_env
    from cfgrl_ros.evaluation import make_env
    from cfgrl_ros.policy.flow_policy import FlowPolicy

    try:
        policy = FlowPolicy.load(args.policy, device=args.device)
        config = _config(args)
    except (FileNotFoundError, ValueError) as error:
        return _fail(str(error))

    agent_dir = args.out / AGENT_DIR
    start = time.monotonic()
    if (agent_dir / "latest.json").is_file():
        try:
            agent = NoiseAgent.load(agent_dir, policy, device=args.device)
        except (FileNotFoundError, ValueError) as error:
            return _fail(f"cannot resume from {agent_dir}: {error}")
        if agent.config.algo != args.algo:
            return _fail(
                f"{args.out} holds a {agent.config.algo} run; use another --out for {args.algo}"
            )
        agent.set_guidance_weight(args.w)
        curve = [bool(s) for s in agent.metadata.get("success_curve", [])]
        elapsed = float(agent.metadata.get("train_seconds", 0.0))
        print(f"resuming {args.out}: {len(curve)} episodes done", file=sys.stderr)
    else:
        agent = make_noise_agent(policy, args.w, config)
        curve, elapsed = [], 0.0
        if args.offline_bag:
            error = _learn_offline(agent, policy, args)
            if error:
                return _fail(error)
        agent.save(agent_dir, {"success_curve": curve, "train_seconds": elapsed})

    try:
        sim = make_env(policy, args.task, args.horizon)
    except ValueError as error:
        return _fail(str(error))
    env = make_noise_env(sim, policy, args.w, agent.config)
    try:
        curve, elapsed = _train(agent, env, args, curve, elapsed)
        final_success = _evaluate(agent, env, args)
    finally:
        env.close()

    summary = {
        "algo": agent.config.algo,
        "task": args.task,
        "guidance_weight": args.w,
        "episodes": len(curve),
        "success_curve": [int(s) for s in curve],
        "final_success": final_success,
        "eval_episodes": args.eval_episodes,
        "train_seconds": round(elapsed, 1),
        "wall_seconds": round(time.monotonic() - start, 1),
        "config": agent.config.to_dict(),
        "counters": agent.counters(),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    _plot(curve, final_success, args.out / "learning_curve.png", agent.config.algo)
    print(
        f"{agent.config.algo}: {len(curve)} episodes, last-{ROLLING_WINDOW} success "
        f"{_rolling(curve)[-1] if curve else 0:.0%}, evaluation success {final_success:.0%} "
        f"({args.eval_episodes} episodes); results in {args.out}"
    )
    if args.json:
        print(
            json.dumps(
                {
                    key: summary[key]
                    for key in (
                        "algo",
                        "episodes",
                        "success_curve",
                        "final_success",
                        "eval_episodes",
                        "train_seconds",
                    )
                }
            )
        )
    return 0


def _learn_offline(agent, policy, args: argparse.Namespace) -> str | None:
    """Fill DSRL-NA's buffer from bags and train on them; an error message or None."""
    from cfgrl_ros.data.bag_reader import BagError, read_bags
    from cfgrl_ros.data.episode import mix_synthetic

    image_keys = policy.config.image_keys
    size = policy.config.image_size
    try:
        episodes = read_bags(
            args.offline_bag,
            image_keys=image_keys,
            image_size=(size[1], size[0]) if image_keys else None,
        )
        episodes = mix_synthetic(episodes, args.synthetic_ratio, args.seed)
    except (BagError, ValueError) as error:
        return str(error)
    added = agent.add_offline_episodes(episodes)
    synthetic = sum(episode.synthetic for episode in episodes)
    print(
        f"offline: {added} decisions from {len(episodes)} episodes ({synthetic} synthetic); "
        f"{args.offline_updates} updates",
        file=sys.stderr,
    )
    agent.train(args.offline_updates)
    return None


def _train(agent, env, args: argparse.Namespace, curve: list[bool], elapsed: float):
    from tqdm import tqdm

    from cfgrl_ros.dsrl.rollout import run_episode

    progress = tqdm(
        total=args.episodes,
        initial=min(len(curve), args.episodes),
        desc=f"{agent.config.algo} episodes",
        unit="ep",
        disable=args.no_progress,
        file=sys.stderr,
    )
    with progress:
        while len(curve) < args.episodes:
            began = time.monotonic()
            result = run_episode(env, agent, learn=True, seed=args.seed + len(curve))
            curve.append(result.success)
            elapsed += time.monotonic() - began
            agent.save(args.out / AGENT_DIR, {"success_curve": curve, "train_seconds": elapsed})
            progress.update(1)
            progress.set_postfix(
                success=f"{_rolling(curve)[-1]:.0%}", updates=agent.updates, refresh=False
            )
    return curve, elapsed


def _evaluate(agent, env, args: argparse.Namespace) -> float:
    from cfgrl_ros.dsrl.rollout import run_episode

    successes = [
        run_episode(
            env, agent, deterministic=True, seed=args.seed + EVAL_SEED_OFFSET + index
        ).success
        for index in range(args.eval_episodes)
    ]
    return float(np.mean(successes))


def _rolling(curve: list[bool], window: int = ROLLING_WINDOW) -> list[float]:
    """Mean success over the last `window` episodes at each episode (fewer at the start)."""
    values = np.asarray(curve, dtype=float)
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return list((cumulative[ends] - cumulative[starts]) / (ends - starts))


def _plot(curve: list[bool], final_success: float, path: Path, algo: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    episodes = np.arange(1, len(curve) + 1)
    axis.plot(episodes, np.asarray(curve, dtype=float), ".", alpha=0.4, label="episode success")
    if curve:
        axis.plot(episodes, _rolling(curve), label=f"rolling mean ({ROLLING_WINDOW} episodes)")
    axis.axhline(final_success, color="k", linestyle="--", label="final evaluation")
    axis.set_xlabel("training episode")
    axis.set_ylabel("success")
    axis.set_ylim(-0.05, 1.05)
    axis.set_title(f"{algo} online adaptation")
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
