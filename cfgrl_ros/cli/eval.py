"""Roll out a trained policy in the simulator at several guidance weights w and report the
success rate at each. Every w sees the same initial states and the same start noises (episode i
resets with seed + i), so the rates differ only because of w. With --json the last line of the
output is one JSON object: {"task": ..., "episodes": N, "success": {"0": 0.35, "1": ...}, ...}.
"""

from __future__ import annotations

import argparse
import json
import sys

from cfgrl_ros.cli.arguments import integer_at_least
from cfgrl_ros.sim.tasks import TASKS


def _weights(text: str) -> list[float]:
    try:
        weights = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--w takes comma-separated numbers like 0,1,3; got {text!r}"
        ) from None
    if not weights:
        raise argparse.ArgumentTypeError("--w needs at least one guidance weight")
    return weights


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policy",
        required=True,
        default=argparse.SUPPRESS,
        help="policy checkpoint (cfgrl-ros pretrain)",
    )
    parser.add_argument(
        "--task",
        choices=sorted(TASKS),
        help="simulated task (default: the one the policy was trained on; another is refused)",
    )
    parser.add_argument(
        "--episodes", type=integer_at_least(1), default=20, help="episodes per guidance weight"
    )
    parser.add_argument(
        "--w", type=_weights, default="0,1,3", help="guidance weights, comma-separated"
    )
    parser.add_argument(
        "--seed", type=integer_at_least(0), default=0, help="episode i resets with seed + i"
    )
    parser.add_argument(
        "--exec-horizon",
        type=integer_at_least(1),
        default=4,
        help="actions executed from each sampled chunk (at most the policy's chunk length)",
    )
    parser.add_argument(
        "--flow-steps",
        type=integer_at_least(1),
        default=argparse.SUPPRESS,
        help="Euler steps per sample (default: the policy's)",
    )
    parser.add_argument(
        "--horizon",
        type=int,
        default=argparse.SUPPRESS,
        help="control ticks per episode (default: the task's)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--json", action="store_true", help="end with one JSON line holding the results"
    )


def run(args: argparse.Namespace) -> int:
    from cfgrl_ros.evaluation import evaluate, policy_task, weight_key
    from cfgrl_ros.policy.flow_policy import FlowPolicy

    try:
        policy = FlowPolicy.load(args.policy, device=args.device)
        args.task = policy_task(policy, args.task)
    except (FileNotFoundError, ValueError) as error:
        print(f"cfgrl-ros eval: {error}", file=sys.stderr)
        return 1
    print(
        f"evaluating {args.policy} on {args.task}: {args.episodes} episodes at w = "
        f"{', '.join(weight_key(w) for w in args.w)} (seed {args.seed})",
        file=sys.stderr,
    )

    outcomes: dict[float, list[bool]] = {}  # what an interrupted run can still report

    def report(w: float, episode: int, success: bool) -> None:
        outcomes.setdefault(w, []).append(success)
        print(
            f"  w={weight_key(w)} episode {episode + 1}/{args.episodes}: "
            f"{'success' if success else 'failure'}",
            file=sys.stderr,
        )

    try:
        result = evaluate(
            policy,
            args.task,
            args.episodes,
            args.w,
            seed=args.seed,
            exec_horizon=args.exec_horizon,
            flow_steps=getattr(args, "flow_steps", None),
            horizon=getattr(args, "horizon", None),
            report=report,
        )
    except ValueError as error:
        print(f"cfgrl-ros eval: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        done = sum(map(len, outcomes.values()))
        print(f"cfgrl-ros eval: interrupted after {done} episodes", file=sys.stderr)
        for w, successes in outcomes.items():
            print(
                f"w={weight_key(w):>5}  success {sum(successes) / len(successes):6.1%}  "
                f"PARTIAL: {len(successes)} of {args.episodes} episodes"
            )
        return 130
    for w, rate in result.success.items():
        print(
            f"w={weight_key(w):>5}  success {rate:6.1%}  "
            f"mean length {result.mean_length[w]:.1f} ticks"
        )
    if args.json:
        print(json.dumps(result.summary()))
    return 0
