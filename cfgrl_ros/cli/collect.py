"""Run the scripted expert in the simulator and record its episodes as a rosbag2, with the
topics a recording of the real arm has (joint states, end-effector pose, object pose, the scene
and wrist cameras with --camera, commanded target pose and gripper opening, episode events,
success). The topic map (--topics, --topic) names the topics; `--topic object_pose=` records
no object pose, as a real cell without object tracking would.
--noise sets the demonstrations' quality: 0 is a near-perfect expert, 0.45 succeeds on ~40%
of lift episodes and 0.3 on ~44% of pick_place_can episodes (docs/benchmarks.md has the
measured tables).
Episode i resets the simulator with seed + i.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cfgrl_ros.cli.arguments import add_topic_map_arguments, camera_keys, integer_at_least
from cfgrl_ros.observation import DEFAULT_IMAGE_SIZE, IMAGE_KEYS
from cfgrl_ros.sim.tasks import TASKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="lift", choices=sorted(TASKS), help="simulated task")
    parser.add_argument(
        "--episodes", type=integer_at_least(1), default=50, help="episodes to record"
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=0.0,
        help="expert noise (0: near-perfect; 1: mostly fails)",
    )
    parser.add_argument(
        "--seed", type=integer_at_least(0), default=0, help="episode i resets with seed + i"
    )
    parser.add_argument("--out", required=True, type=Path, help="bag directory to create")
    parser.add_argument(
        "--storage", default="mcap", choices=["mcap", "sqlite3"], help="rosbag2 storage format"
    )
    cameras = parser.add_mutually_exclusive_group()
    cameras.add_argument(
        "--camera",
        action="store_const",
        const=IMAGE_KEYS,
        dest="cameras",
        default=(),
        help="record the scene and the wrist camera (= --cameras image,wrist_image)",
    )
    cameras.add_argument(
        "--cameras",
        type=camera_keys,
        metavar="KEYS",
        help=f"record these cameras, comma-separated, of {','.join(IMAGE_KEYS)}",
    )
    parser.add_argument(
        "--image-size",
        type=integer_at_least(16, 512),
        default=DEFAULT_IMAGE_SIZE,
        help="camera image side in pixels (a policy resizes them to its own size when reading)",
    )
    add_topic_map_arguments(parser, "of the recording")
    parser.add_argument(
        "--horizon", type=int, default=None, help="control ticks per episode (default: task's)"
    )
    parser.add_argument(
        "--success-delay",
        type=integer_at_least(0),
        default=0,
        metavar="TICKS",
        help="after a success the arm holds still this many ticks before the success is "
        "marked, as an operator marks it after the fact: frames of the done task for "
        "`train-success` (the success Bool is recorded at the tick the task was done)",
    )


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cfgrl_ros.data.bag_writer import BagWriteError, EpisodeBagWriter, check_new_bag_dir
    from cfgrl_ros.data.topic_map import load_topic_map, parse_overrides
    from cfgrl_ros.sim.env import CONTROL_RATE, FrankaSimEnv
    from cfgrl_ros.sim.expert import ScriptedExpert
    from cfgrl_ros.sim.rollout import expert_episode

    try:
        check_new_bag_dir(args.out)  # before starting the simulator
        topic_map = load_topic_map(args.topics, parse_overrides(args.topic))
        silent = [key for key in args.cameras if key not in topic_map.image_topics()]
        if silent:
            raise ValueError(
                f"the topic map switches camera {silent[0]} off: give it a topic with "
                f"--topic {silent[0]}=/its/image_topic"
            )
        env = FrankaSimEnv(
            args.task, cameras=args.cameras, image_size=args.image_size, horizon=args.horizon
        )
    except (BagWriteError, ValueError, FileNotFoundError) as error:
        print(f"cfgrl-ros collect: {error}", file=sys.stderr)
        return 2
    successes = 0
    try:
        try:
            expert = ScriptedExpert(args.task, args.noise, env.adapter.config, seed=args.seed)
            writer = EpisodeBagWriter(
                args.out,
                storage=args.storage,
                adapter=env.adapter,
                control_rate=CONTROL_RATE,
                task=args.task,
                topic_map=topic_map,
            )
        except (ValueError, BagWriteError) as error:
            print(f"cfgrl-ros collect: {error}", file=sys.stderr)
            return 2
        with writer, tqdm(total=args.episodes, unit="episode", desc=args.task) as progress:
            for index in range(args.episodes):
                episode = expert_episode(env, expert, args.seed + index, args.success_delay)
                writer.write(episode)
                successes += episode.success
                progress.update()
                progress.set_postfix(success=f"{successes / (index + 1):.0%}")
    except KeyboardInterrupt:
        # The writer removed its partial bag: a bag that exists is complete.
        print(f"cfgrl-ros collect: interrupted; {args.out} was not written", file=sys.stderr)
        return 130
    finally:
        env.close()
    rate = successes / args.episodes
    print(
        f"recorded {args.episodes} {args.task} episodes (noise {args.noise:g}) to {args.out}: "
        f"success rate {rate:.1%} ({successes}/{args.episodes})"
    )
    return 0
