"""Train a CFGRL flow policy (and the value function its optimality labels need) from rosbags.

Reads the episodes of every --bag with the topic map (config/topics.yaml, --topics FILE,
--topic KEY=VALUE), trains, and writes the policy checkpoint --out (atomically: an error never
leaves a partial one) and a PNG of the training curves beside it (policy.pt ->
policy.curves.png). The training state is saved beside it too (policy.train_state.pt): an
interrupted run continues with --resume. Settings come from --config YAML (the fields of
cfgrl_ros.policy.training.TrainConfig, with the policy's under `policy:`), then the flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cfgrl_ros.cli.arguments import add_topic_map_arguments, integer_at_least
from cfgrl_ros.observation import DEFAULT_IMAGE_SIZE, OBSERVATIONS

if TYPE_CHECKING:  # torch is imported only when training runs: `pretrain --help` stays fast
    from cfgrl_ros.policy.training import TrainConfig

# --labels -> the advantage estimator of the value function (none: no value function)
LABELS = ("mc", "iql", "none")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Flags without a value of their own fall back to --config (default=SUPPRESS keeps them out
    # of `args` when absent, and the help free of "(default: None)").
    unset = argparse.SUPPRESS
    parser.add_argument(
        "--bag",
        action="append",
        required=True,
        default=unset,
        metavar="DIR",
        help="rosbag2 bag (repeatable)",
    )
    parser.add_argument(
        "--out", required=True, default=unset, metavar="CKPT", help="policy checkpoint to write"
    )
    parser.add_argument(
        "--method",
        choices=("cfgrl", "cfgrl_goal", "bc", "awr"),
        default=unset,
        help="cfgrl: guidance on optimality labels; cfgrl_goal: goal-conditioned; bc: flow "
        "behaviour cloning; awr: advantage-weighted flow BC (default: the config's, else cfgrl)",
    )
    parser.add_argument(
        "--labels",
        choices=LABELS,
        default=unset,
        help="how advantages are estimated: mc (Monte-Carlo return minus V), iql (expectile V, "
        "TD Q), or none for bc and cfgrl_goal (default: the config's, else mc)",
    )
    parser.add_argument("--steps", type=int, default=unset, help="policy gradient steps")
    parser.add_argument("--value-steps", type=int, default=unset, help="value-function steps")
    parser.add_argument(
        "--batch-size",
        type=integer_at_least(1),
        default=unset,
        help="samples per gradient step (default: the config's, else 256; a vision policy "
        "trains about 4x faster per step at 64)",
    )
    parser.add_argument(
        "--config", default=unset, metavar="YAML", help="training settings (TrainConfig fields)"
    )
    parser.add_argument("--device", default=unset, help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--seed", type=int, default=unset, help="random seed (default: 0)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the interrupted run that wrote --out"
    )
    parser.add_argument(
        "--synthetic-ratio",
        type=float,
        default=unset,
        metavar="R",
        help="use synthetic episodes (cfgrl-ros synthesize) up to R control ticks per recorded "
        "tick, drawn at random; 0 ignores them (default: all of them)",
    )
    add_topic_map_arguments(parser, "of the bags")
    parser.add_argument(
        "--observation",
        choices=sorted(OBSERVATIONS),
        default=unset,
        help="what the policy sees. state: joint positions, gripper width, end-effector pose "
        "and the object pose (the simulator's ground truth); vision: the same proprioception "
        "with the scene and wrist cameras and no object pose (what a real cell has). Finer "
        "choices: `observation:` under `policy:` in --config (state_fields, image_keys, "
        "image_size). Default: the config's, else state",
    )
    parser.add_argument(
        "--image-size",
        type=integer_at_least(1),
        default=unset,
        help="side (pixels) of the square images cameras are resized to, when the policy uses "
        f"cameras (default: the config's image_size, else {DEFAULT_IMAGE_SIZE})",
    )


def load_train_config(
    path: str | Path | None, observation: str | None = None, image_size: int | None = None
) -> TrainConfig:
    """TrainConfig from a YAML file of its fields (the policy's under `policy:`; none: the
    defaults), with the policy's observation replaced by OBSERVATIONS[`observation`] if given.

    A policy with cameras gets square images of side `image_size` (when given, or when its
    observation sets none: DEFAULT_IMAGE_SIZE).
    """
    from cfgrl_ros.data.topic_map import read_yaml_mapping
    from cfgrl_ros.policy.training import TrainConfig

    values = {} if path is None else read_yaml_mapping(path, "training config")
    policy = values.pop("policy", None) or {}
    if not isinstance(policy, Mapping):
        raise ValueError(
            f"training config {path}: policy is {policy!r} ({type(policy).__name__}), expected a "
            "mapping of PolicyConfig fields such as `horizon: 8`"
        )
    policy = dict(policy)
    if observation is not None:
        policy["observation"] = dataclasses.asdict(OBSERVATIONS[observation])
    spec = policy.get("observation")
    cameras = isinstance(spec, Mapping) and spec.get("image_keys")
    if cameras and (image_size is not None or not spec.get("image_size")):
        side = DEFAULT_IMAGE_SIZE if image_size is None else image_size
        policy["observation"] = {**spec, "image_size": (side, side)}
    try:
        return TrainConfig.from_dict({**values, "policy": policy})
    except ValueError as error:
        raise ValueError(f"training config {path or '(defaults)'}: {error}") from None


def _config_from_args(flags: dict[str, Any]) -> TrainConfig:
    config = load_train_config(
        flags.get("config"), flags.get("observation"), flags.get("image_size")
    )
    changes = {
        name: flags[name]
        for name in ("method", "steps", "value_steps", "batch_size", "device", "seed")
        if name in flags
    }
    labels = flags.get("labels")
    if labels is None:
        labels = config.advantage if dataclasses.replace(config, **changes).uses_value else "none"
    if labels != "none":
        changes["advantage"] = labels
    config = dataclasses.replace(config, **changes)
    if config.uses_value and labels == "none":
        raise ValueError(
            f"--method {config.method} needs advantages from a value function: use --labels mc "
            "or --labels iql (or --method bc / cfgrl_goal, which need no labels)"
        )
    if not config.uses_value and labels != "none":
        raise ValueError(
            f"--method {config.method} trains no value function, so --labels {labels} has no "
            "effect; leave --labels out"
        )
    return config


def plot_training_curves(history: dict[str, list[float]], path: Path) -> None:
    """One panel per loss (log scale, with a moving average), written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from cfgrl_ros.policy.checkpoint import atomic_write

    curves = {name: values for name, values in history.items() if values}
    figure, axes = plt.subplots(1, max(len(curves), 1), figsize=(5 * max(len(curves), 1), 3.5))
    for axis, (name, values) in zip(np.atleast_1d(axes), curves.items(), strict=False):
        values = np.asarray(values, dtype=float)
        window = len(values) // 50
        if window > 1:
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            axis.plot(values, alpha=0.3, linewidth=0.5, label="per step")
            axis.plot(np.arange(window - 1, len(values)), smooth, label=f"mean of {window} steps")
            axis.legend()
        else:
            axis.plot(values)
        axis.set_title(name)
        axis.set_xlabel("step")
        if np.all(values > 0):
            axis.set_yscale("log")
    figure.tight_layout()
    try:
        atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=100))
    finally:
        plt.close(figure)


def curves_path(checkpoint: Path) -> Path:
    """policy.pt -> policy.curves.png."""
    return checkpoint.with_name(checkpoint.stem + ".curves.png")


def run(args: argparse.Namespace) -> int:
    from cfgrl_ros.data.bag_reader import BagError, read_bags
    from cfgrl_ros.data.episode import episodes_task, mix_synthetic
    from cfgrl_ros.data.topic_map import load_topic_map, parse_overrides
    from cfgrl_ros.policy.checkpoint import resolve_device
    from cfgrl_ros.policy.training import check_checkpoint_path, train_policy, training_state_path

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    flags = vars(args)
    out = Path(args.out)
    state_path = training_state_path(out)
    try:
        config = _config_from_args(flags)
        # Refused now rather than after reading the bags, or (--out) after training.
        resolve_device(config.device)
        check_checkpoint_path(out, args.resume)
        if not args.resume and (out.exists() or state_path.exists()):
            # without its training state a run cannot be continued: no --resume to suggest
            resume = "pass --resume to continue that run, or " if state_path.exists() else ""
            raise ValueError(
                f"{out if out.exists() else state_path} exists: {resume}choose another --out"
            )
        topic_map = load_topic_map(flags.get("topics"), parse_overrides(flags["topic"]))
        episodes = read_bags(args.bag, topic_map, observation=config.policy.observation)
        episodes = mix_synthetic(episodes, flags.get("synthetic_ratio"), config.seed)
        task = episodes_task(episodes)
        config = dataclasses.replace(config, policy=dataclasses.replace(config.policy, task=task))
    except (BagError, ValueError, FileNotFoundError) as error:
        print(f"cfgrl-ros pretrain: {error}", file=sys.stderr)
        return 1
    successes = sum(episode.success for episode in episodes)
    ticks = sum(len(episode) for episode in episodes)
    synthetic = sum(episode.synthetic for episode in episodes)
    print(
        f"{len(episodes)} episodes ({successes} successful, {successes / len(episodes):.0%}; "
        f"{synthetic} synthetic), {ticks} control ticks from {len(args.bag)} bag(s)"
        + (f" of {task}" if task else " (no task recorded: a real arm's)"),
        file=sys.stderr,
    )
    labels = config.advantage if config.uses_value else "none"
    print(
        f"training {config.method} (labels: {labels}, value steps: "
        f"{config.value_steps if config.uses_value else 0}, policy steps: {config.steps})"
        + (f", resuming from {state_path}" if args.resume and state_path.exists() else ""),
        file=sys.stderr,
    )
    try:
        result = train_policy(
            episodes, config, checkpoint_path=out, resume=args.resume, progress=True
        )
    except KeyboardInterrupt:
        saved = f"; continue with --resume (state in {state_path})" if state_path.exists() else ""
        print(f"cfgrl-ros pretrain: interrupted, no checkpoint written{saved}", file=sys.stderr)
        return 130
    except ValueError as error:
        print(f"cfgrl-ros pretrain: {error}", file=sys.stderr)
        return 1
    plot_training_curves(result.history, curves_path(out))
    info = ", ".join(f"{key} {value:.3g}" for key, value in result.info.items())
    print(f"wrote {out} and {curves_path(out)} ({info})")
    return 0
