"""Train a success detector (task done, from the cameras) on the labelled episodes of rosbags.

Reads every --bag (a bag, or a folder of episode bags from `cfgrl-ros record`) with the topic
map, holds out --holdout of the successful and of the failed episodes, trains on the frames of
the rest (labels: cfgrl_ros.success.training explains the windows) and evaluates on the
held-out episodes as the detector node uses it: per frame (precision, recall) and per episode
(success detected, when, false successes). Writes the detector --out, and beside it
<out>.eval.json (every held-out episode's scores and result), <out>.confusion.png and
<out>.scores.png (the score over time of a few held-out episodes). With --json the last line
of the output is one JSON object: {"precision", "recall", "episode_precision",
"episode_recall", "outcomes", "episodes": [{"success", "length", "detected_at", "result"}]}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cfgrl_ros.cli.arguments import (
    add_topic_map_arguments,
    camera_keys,
    finite_number,
    integer_at_least,
)
from cfgrl_ros.observation import DEFAULT_IMAGE_SIZE, IMAGE_KEYS
from cfgrl_ros.policy.networks import MIN_IMAGE_SIZE
from cfgrl_ros.settings import add_setting_flag

if TYPE_CHECKING:  # torch is imported only when training runs: `--help` stays fast
    from cfgrl_ros.success.training import SuccessTrainConfig

TRAIN_FLAGS = (
    "positive_ticks",
    "ignore_ticks",
    "steps",
    "batch_size",
    "shift_pad",
    "threshold",
    "hold_ticks",
    "seed",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cfgrl_ros.success.training import SuccessTrainConfig

    parser.add_argument(
        "--bag", action="append", required=True, metavar="DIR", help="rosbag2 bag (repeatable)"
    )
    parser.add_argument("--out", required=True, type=Path, help="detector checkpoint to write")
    parser.add_argument(
        "--cameras",
        type=camera_keys,
        default=IMAGE_KEYS,
        metavar="KEYS",
        help=f"the cameras it reads, of {', '.join(IMAGE_KEYS)} (with the arm's proprioception)",
    )
    parser.add_argument(
        "--image-size",
        type=integer_at_least(MIN_IMAGE_SIZE),
        default=DEFAULT_IMAGE_SIZE,
        help="side of the square images it reads (the bags' are resized)",
    )
    parser.add_argument(
        "--holdout",
        type=finite_number(0.0, above=True, maximum=0.9),
        default=0.2,
        help="share of the episodes held out for the evaluation",
    )
    for name in TRAIN_FLAGS:
        add_setting_flag(parser, SuccessTrainConfig, name)
    add_topic_map_arguments(parser, "of the bags")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of results")


def _fail(message: str) -> int:
    print(f"cfgrl-ros train-success: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cfgrl_ros.data.bag_reader import BagError, read_bags
    from cfgrl_ros.data.topic_map import load_topic_map, parse_overrides
    from cfgrl_ros.observation import PROPRIOCEPTION, ObservationSpec
    from cfgrl_ros.success.detector import DetectorConfig
    from cfgrl_ros.success.training import (
        SuccessTrainConfig,
        evaluate,
        split_episodes,
        train_detector,
    )

    observation = ObservationSpec(PROPRIOCEPTION, args.cameras, (args.image_size,) * 2)
    config = SuccessTrainConfig(**{name: getattr(args, name) for name in TRAIN_FLAGS})
    try:
        topic_map = load_topic_map(args.topics, parse_overrides(args.topic))
        episodes = read_bags(args.bag, topic_map, observation=observation)
    except (BagError, ValueError, FileNotFoundError) as error:
        return _fail(str(error))
    task = episodes[0].metadata.get("task", "") if episodes else ""
    train, held_out = split_episodes(episodes, args.holdout, config.seed)
    successes = sum(episodes[i].success for i in held_out)
    print(
        f"{len(episodes)} episodes ({sum(e.success for e in episodes)} successful); training on "
        f"{len(train)}, evaluating on {len(held_out)} ({successes} successful)",
        file=sys.stderr,
    )
    if not held_out or not successes:
        return _fail(
            "the held-out episodes need a successful one: record more episodes or raise --holdout"
        )
    with tqdm(total=config.steps, desc="detector steps", disable=args.no_progress) as bar:
        try:
            result = train_detector(
                [episodes[i] for i in train],
                DetectorConfig(observation=observation, task=task),
                config,
                progress=lambda step: bar.update(1),
            )
        except ValueError as error:
            return _fail(str(error))
    result.detector.save(args.out)
    evaluation = evaluate(result.detector, [episodes[i] for i in held_out], config)
    stem = args.out.with_suffix("")
    Path(f"{stem}.eval.json").write_text(json.dumps(evaluation, indent=1))
    _plot(evaluation, config, stem)
    outcomes = evaluation["outcomes"]
    print(
        f"held-out frames: precision {evaluation['precision']}, recall {evaluation['recall']}; "
        f"episodes: precision {evaluation['episode_precision']}, recall "
        f"{evaluation['episode_recall']} ({outcomes}); detector in {args.out}",
        file=sys.stderr,
    )
    if args.json:
        summary = {key: value for key, value in evaluation.items() if key != "episodes"}
        summary["episodes"] = [
            {key: value for key, value in episode.items() if key != "scores"}
            for episode in evaluation["episodes"]
        ]
        print(json.dumps(summary))
    return 0


def _plot(evaluation: dict, config: SuccessTrainConfig, stem: Path) -> None:
    """<stem>.confusion.png and <stem>.scores.png (up to three successful and three failed
    held-out episodes)."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(4, 3.5))
    confusion = np.asarray(evaluation["confusion"])
    axis.imshow(confusion, cmap="Blues")
    for (row, column), count in np.ndenumerate(confusion):
        axis.text(column, row, str(count), ha="center", va="center")
    axis.set_xticks([0, 1], ["not done", "done"])
    axis.set_yticks([0, 1], ["not done", "done"])
    axis.set_xlabel("detector")
    axis.set_ylabel("label")
    axis.set_title("held-out frames")
    figure.tight_layout()
    figure.savefig(f"{stem}.confusion.png", dpi=100)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(8, 4))
    shown = [e for e in evaluation["episodes"] if e["success"]][:3]
    shown += [e for e in evaluation["episodes"] if not e["success"]][:3]
    for episode in shown:
        style = "-" if episode["success"] else "--"
        label = f"{'success' if episode['success'] else 'failure'}: {episode['result']}"
        axis.plot(episode["scores"], style, label=label)
    axis.axhline(config.threshold, color="k", linewidth=0.8, label="threshold")
    axis.set_xlabel("tick")
    axis.set_ylabel("P(done)")
    axis.set_ylim(-0.05, 1.05)
    axis.legend(loc="upper left", fontsize=8)
    axis.set_title("detector score over held-out episodes")
    figure.tight_layout()
    figure.savefig(f"{stem}.scores.png", dpi=100)
    plt.close(figure)
