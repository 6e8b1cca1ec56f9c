"""Online DSRL adaptation of a frozen policy in the simulator, without ROS: a noise agent (DSRL-NA
or DSRL-SAC) learns which start noise to give the policy, one decision at a time, exactly as the
ROS noise actor does. OUT receives a checkpoint after every episode (run the same command again
to resume an interrupted run or add episodes; other settings are refused), the learning curve as
learning_curve.png and summary.json. The final success rate comes from a separate evaluation
with the deterministic noise actor on initial states not seen in training. With --json the last
line of the output is one JSON object:
{"algo": ..., "task": ..., "episodes": N, "success_curve": [...], "final_success": x, ...}.

With --operator scripted a simulated operator (cfgrl_ros.sim.scripted_operator) watches the
training episodes, takes over when one goes badly and hands back, as a person would on a real
arm; the agent learns from what it drove (DSRL-NA; DSRL-SAC leaves those decisions out). The
summary then counts the interventions of every episode; the final evaluation runs without the
operator.

With --success-detector a learned success detector (`cfgrl-ros train-success`) ends the
training episodes instead of the simulator's own success signal, as success_detector_node does
in the graph: the agent learns from the detector's verdicts. The summary then holds the true
success of every training episode next to what the detector said, and counts each kind of
mistake; the final evaluation counts true successes.

The agent's defaults are the settings of the DSRL benchmark in docs/benchmarks.md (8 actions
per decision, UTD 10, 256x256, ...): `--policy P --w 2 --eval-episodes 50 --out O` runs one
of its rows (seed 0).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cfgrl_ros.cli.arguments import add_topic_map_arguments, finite_number, integer_at_least
from cfgrl_ros.paths import file_in_the_way
from cfgrl_ros.settings import add_setting_flag
from cfgrl_ros.sim.tasks import TASKS

AGENT_DIR = "agent"
EVAL_SEED_OFFSET = 1_000_000  # evaluation episodes reset from seeds no training episode uses
ROLLING_WINDOW = 10


# DsrlConfig setting -> its flag; type, default, help and bounds come from the setting.
AGENT_FLAGS = {
    "algo": "--algo",
    "utd": "--utd",
    "gamma": "--gamma",
    "prefill_decisions": "--prefill",
    "magnitude": "--magnitude",
    "noise_mode": "--noise-mode",
    "exec_horizon": "--exec-horizon",
    "noise_prior_weight": "--noise-prior-weight",
    "batch_size": "--batch-size",
    "hidden_sizes": "--hidden",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cfgrl_ros.dsrl.agent import DsrlConfig
    from cfgrl_ros.sim.scripted_operator import OperatorConfig
    from cfgrl_ros.success.training import SuccessTrainConfig

    parser.add_argument("--policy", required=True, help="policy checkpoint (cfgrl-ros pretrain)")
    parser.add_argument(
        "--task",
        choices=sorted(TASKS),
        help="simulated task (default: the one the policy was trained on; another is refused)",
    )
    parser.add_argument(
        "--episodes", type=integer_at_least(0), default=100, help="online training episodes"
    )
    parser.add_argument(
        "--seed",
        type=integer_at_least(0),
        default=0,
        help="agent seed; episode i resets with seed+i",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder, resumed if present")
    parser.add_argument(
        "--offline-bag",
        type=Path,
        nargs="+",
        help="rosbag(s) whose episodes fill DSRL-NA's replay buffer first (offline-to-online)",
    )
    add_topic_map_arguments(parser, "of the --offline-bag bags")
    parser.add_argument(
        "--synthetic-ratio",
        type=float,
        metavar="R",
        help="with --offline-bag: synthetic episodes (cfgrl-ros synthesize) up to R control "
        "ticks per recorded tick, drawn at random; 0 ignores them (default: all of them)",
    )
    parser.add_argument(
        "--offline-updates",
        type=integer_at_least(0),
        default=2000,
        help="updates on offline data before going online",
    )
    parser.add_argument(
        "--w",
        type=finite_number(0.0),
        default=1.0,
        help="guidance weight the policy decodes at (0: behaviour cloning, 1: conditioned, "
        ">1: further)",
    )
    parser.add_argument(
        "--eval-episodes",
        type=integer_at_least(20),
        default=20,
        help="final evaluation episodes (at least 20 for a meaningful rate)",
    )
    for name, flag in AGENT_FLAGS.items():
        add_setting_flag(parser, DsrlConfig, name, flag)
    parser.add_argument(
        "--operator",
        choices=["none", "scripted"],
        default="none",
        help="scripted: a simulated operator takes over training episodes that go badly "
        "(no progress for --operator-patience decisions, or the object dropped) and hands back",
    )
    for name, flag in OPERATOR_FLAGS.items():
        add_setting_flag(parser, OperatorConfig, name, flag)
    parser.add_argument(
        "--success-detector",
        type=Path,
        help="a success detector (cfgrl-ros train-success) that ends the training episodes in "
        "place of the simulator's success signal; the simulator renders its cameras",
    )
    for name, flag in DETECTOR_FLAGS.items():
        add_setting_flag(parser, SuccessTrainConfig, name, flag)
    parser.add_argument("--horizon", type=int, help="control ticks per episode (default: task's)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (agent and policy)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of results")


def _config(args: argparse.Namespace):
    from cfgrl_ros.dsrl.agent import DsrlConfig

    values = {name: getattr(args, name) for name in AGENT_FLAGS}
    values["hidden_sizes"] = tuple(values["hidden_sizes"])
    return DsrlConfig(**values, seed=args.seed, device=args.device)


# OperatorConfig setting -> its flag (with --operator scripted).
OPERATOR_FLAGS = {
    "patience": "--operator-patience",
    "drive_decisions": "--operator-drive",
    "max_takeovers": "--operator-max-takeovers",
}


# SuccessTrainConfig setting -> its flag (the detection rule, with --success-detector).
DETECTOR_FLAGS = {"threshold": "--detector-threshold", "hold_ticks": "--detector-hold"}


# The flag that sets each compared setting (the others are not flags of this command).
FLAGS = {
    "policy_sha256": "--policy",
    "task": "--task",
    "horizon": "--horizon",
    "offline_bag": "--offline-bag",
    "topics": "--topics",
    "topic": "--topic",
    "synthetic_ratio": "--synthetic-ratio",
    "offline_updates": "--offline-updates",
    "seed": "--seed",
    "operator": "--operator",
    "success_detector_sha256": "--success-detector",
    **AGENT_FLAGS,
    **OPERATOR_FLAGS,
    **DETECTOR_FLAGS,
}


def _run_settings(args: argparse.Namespace) -> dict:
    """What a resumed run must share with the run it continues, besides the agent's config.

    --episodes, --w, --eval-episodes and --device may change between sessions; the policy is
    compared by the hash of its file (the same weights under another path resume).
    """
    from cfgrl_ros.dsrl.agent import POLICY_HASH, file_sha256

    offline = args.offline_bag or []
    return {
        POLICY_HASH: file_sha256(args.policy),
        "task": args.task,
        "horizon": args.horizon,
        "offline_bag": [str(path.resolve()) for path in offline],
        "topics": str(Path(args.topics).resolve()) if args.topics else None,
        "topic": list(args.topic),
        "synthetic_ratio": args.synthetic_ratio,
        "offline_updates": args.offline_updates if offline else None,
        # Only with an operator or a detector, so that runs from before them resume.
        **(_operator_settings(args) if args.operator != "none" else {}),
        **(_detector_settings(args) if args.success_detector else {}),
    }


def _detector_settings(args: argparse.Namespace) -> dict:
    from cfgrl_ros.dsrl.agent import file_sha256

    return {
        "success_detector_sha256": file_sha256(args.success_detector),
        **{name: getattr(args, name) for name in DETECTOR_FLAGS},
    }


def _operator_settings(args: argparse.Namespace) -> dict:
    return {"operator": args.operator, **{name: getattr(args, name) for name in OPERATOR_FLAGS}}


def _fail(message: str) -> int:
    print(f"cfgrl-ros adapt: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.out.is_dir():
        return _fail(f"--out {args.out} is a file: give a folder for the run")
    blocking = file_in_the_way(args.out)
    if blocking is not None:
        return _fail(f"--out {args.out} cannot be made: {blocking} is a file, not a folder")
    if (args.out / "metadata.yaml").is_file():
        return _fail(f"--out {args.out} is a rosbag: give the run a folder of its own")
    if (args.topics or args.topic) and not args.offline_bag:
        return _fail("--topics and --topic map the topics of --offline-bag: give the bags too")
    if args.synthetic_ratio is not None and not args.offline_bag:
        return _fail("--synthetic-ratio mixes the episodes of --offline-bag: give the bags too")
    if args.offline_bag and args.algo != "dsrl_na":
        return _fail(
            "--offline-bag needs --algo dsrl_na (recorded episodes hold actions, not noise)"
        )

    from cfgrl_ros.data.topic_map import load_topic_map, parse_overrides
    from cfgrl_ros.dsrl.agent import (
        NoiseAgent,
        comparable_settings,
        make_noise_agent,
        make_noise_env,
        setting_differences,
    )
    from cfgrl_ros.evaluation import make_env, policy_task
    from cfgrl_ros.policy.flow_policy import FlowPolicy
    from cfgrl_ros.sim.scripted_operator import OperatorConfig, ScriptedOperator
    from cfgrl_ros.success.detected_env import DetectedSuccessEnv
    from cfgrl_ros.success.detector import SuccessDetector

    detector = None
    try:
        topic_map = load_topic_map(args.topics, parse_overrides(args.topic))
        policy = FlowPolicy.load(args.policy, device=args.device)
        args.task = policy_task(policy, args.task)
        if args.success_detector:
            detector = SuccessDetector.load(args.success_detector)
            if detector.config.task and detector.config.task != args.task:
                raise ValueError(
                    f"--success-detector {args.success_detector} was trained on "
                    f"{detector.config.task!r} episodes; this run is {args.task!r}"
                )
        config = _config(args)
        config.noise_space(policy)  # checks exec_horizon against the policy's chunks
    except (FileNotFoundError, ValueError) as error:
        return _fail(str(error))

    agent_dir = args.out / AGENT_DIR
    settings = _run_settings(args)
    start = time.monotonic()
    if (agent_dir / "latest.json").is_file():
        try:
            agent = NoiseAgent.load(agent_dir, policy, device=args.device)
        except (FileNotFoundError, ValueError) as error:
            return _fail(
                f"cannot resume from {agent_dir}: {error}. Delete {args.out} or use another "
                "--out to start afresh"
            )
        # Runs from before the settings were recorded are checked on their agent's config.
        differences = setting_differences(
            agent.metadata.get("run", settings), settings, FLAGS, "command gives"
        ) + setting_differences(
            comparable_settings(agent.config), comparable_settings(config), FLAGS, "command gives"
        )
        if differences:
            return _fail(
                f"{args.out} holds a run started with other settings ("
                + "; ".join(differences)
                + "). Run the same command to resume it, or use another --out"
            )
        agent.set_guidance_weight(args.w)
        progress = _Progress.from_metadata(agent.metadata)
        print(f"resuming {args.out}: {len(progress.success_curve)} episodes done", file=sys.stderr)
    else:
        agent = make_noise_agent(policy, args.w, config)
        progress = _Progress()
        if args.offline_bag:
            error = _learn_offline(agent, policy, topic_map, args)
            if error:
                return _fail(error)
        agent.save(agent_dir, {"run": settings, **progress.metadata()})

    try:
        also = detector.config.observation if detector is not None else None
        sim = make_env(policy, args.task, args.horizon, also=also)
    except ValueError as error:
        return _fail(str(error))
    detected = None
    if detector is not None:
        detected = DetectedSuccessEnv(sim, detector, args.threshold, args.hold_ticks)
    env = make_noise_env(detected or sim, policy, args.w, agent.config)
    try:
        if args.operator == "scripted":
            config = OperatorConfig(**{name: getattr(args, name) for name in OPERATOR_FLAGS})
            env.operator = ScriptedOperator(sim.task, sim.goal_pos, config)
        _train(agent, env, sim, args, settings, progress)
        env.operator = None  # the final evaluation: the policy and its noise actor alone
        if detected is not None:
            detected.detecting = False  # ... judged by the simulator's ground truth
        final_success = _evaluate(agent, env, args)
    except KeyboardInterrupt:
        print(
            f"cfgrl-ros adapt: interrupted; {args.out} holds a checkpoint after every finished "
            "episode: run the same command to resume",
            file=sys.stderr,
        )
        return 130
    finally:
        env.close()

    summary = {
        "algo": agent.config.algo,
        "task": args.task,
        "guidance_weight": args.w,
        "episodes": len(progress.success_curve),
        "success_curve": [int(s) for s in progress.success_curve],
        "final_success": final_success,
        "eval_episodes": args.eval_episodes,
        "train_seconds": round(progress.train_seconds, 1),
        "learner_seconds": round(progress.learner_seconds, 3),
        "episode_ticks": progress.episode_ticks,
        "operator": args.operator,
        "interventions": {
            "total": sum(progress.interventions),
            "per_episode": progress.interventions,
            "operator_ticks": progress.operator_ticks,
        },
        "wall_seconds": round(time.monotonic() - start, 1),
        "config": agent.config.to_dict(),
        "counters": agent.counters(),
    }
    if detector is not None:
        summary["success_detector"] = _detector_summary(args, progress)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    curve = progress.success_curve
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
                        "task",
                        "episodes",
                        "success_curve",
                        "final_success",
                        "eval_episodes",
                        "train_seconds",
                        "interventions",
                        *(["success_detector"] if detector is not None else []),
                    )
                }
            )
        )
    return 0


def _learn_offline(agent, policy, topic_map, args: argparse.Namespace) -> str | None:
    """Fill DSRL-NA's buffer from bags and train on them; an error message or None."""
    from cfgrl_ros.data.bag_reader import BagError, read_bags
    from cfgrl_ros.data.episode import mix_synthetic

    try:
        episodes = read_bags(args.offline_bag, topic_map, observation=policy.config.observation)
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


@dataclass
class _Progress:
    """What the online episodes so far did; kept in every checkpoint so a resumed run goes on."""

    success_curve: list[bool] = field(default_factory=list)  # the simulator's ground truth
    detected_curve: list[bool] = field(default_factory=list)  # with a detector: its verdicts
    train_seconds: float = 0.0  # wall clock of the online episodes, simulation included
    learner_seconds: float = 0.0  # of which the agent's updates
    episode_ticks: list[int] = field(default_factory=list)
    interventions: list[int] = field(default_factory=list)  # operator takeovers per episode
    operator_ticks: list[int] = field(default_factory=list)  # ticks the operator drove

    @classmethod
    def from_metadata(cls, metadata: dict) -> _Progress:
        return cls(
            success_curve=[bool(s) for s in metadata.get("success_curve", [])],
            detected_curve=[bool(s) for s in metadata.get("detected_curve", [])],
            train_seconds=float(metadata.get("train_seconds", 0.0)),
            learner_seconds=float(metadata.get("learner_seconds", 0.0)),
            episode_ticks=[int(t) for t in metadata.get("episode_ticks", [])],
            interventions=[int(n) for n in metadata.get("interventions", [])],
            operator_ticks=[int(n) for n in metadata.get("operator_ticks", [])],
        )

    def metadata(self) -> dict:
        return dataclasses.asdict(self)


def _train(agent, env, sim, args: argparse.Namespace, settings: dict, progress: _Progress) -> None:
    from tqdm import tqdm

    from cfgrl_ros.dsrl.rollout import run_episode

    curve = progress.success_curve
    bar = tqdm(
        total=args.episodes,
        initial=min(len(curve), args.episodes),
        desc=f"{agent.config.algo} episodes",
        unit="ep",
        disable=args.no_progress,
        file=sys.stderr,
    )
    with bar:
        while len(curve) < args.episodes:
            began = time.monotonic()
            result = run_episode(env, agent, learn=True, seed=args.seed + len(curve))
            curve.append(sim.success)  # result.success is the detector's, with one
            if args.success_detector:
                progress.detected_curve.append(result.success)
            progress.train_seconds += time.monotonic() - began
            progress.learner_seconds += result.learner_seconds
            progress.episode_ticks.append(result.ticks)
            progress.interventions.append(result.interventions)
            progress.operator_ticks.append(result.operator_ticks)
            agent.save(args.out / AGENT_DIR, {"run": settings, **progress.metadata()})
            bar.update(1)
            postfix = {"success": f"{_rolling(curve)[-1]:.0%}", "updates": agent.updates}
            if env.operator is not None:
                postfix["takeovers"] = sum(progress.interventions)
            bar.set_postfix(postfix, refresh=False)


def _detector_summary(args: argparse.Namespace, progress: _Progress) -> dict:
    """What the detector said of each training episode against the ground truth."""
    from cfgrl_ros.success.detected_env import VERDICTS, verdict

    verdicts = [
        verdict(detected, done)
        for detected, done in zip(progress.detected_curve, progress.success_curve, strict=True)
    ]
    return {
        "path": str(args.success_detector),
        "threshold": args.threshold,
        "hold_ticks": args.hold_ticks,
        "detected_curve": [int(s) for s in progress.detected_curve],
        "verdicts": {name: verdicts.count(name) for name in VERDICTS},
        "wrong": sum(name in ("false success", "missed") for name in verdicts),
    }


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
