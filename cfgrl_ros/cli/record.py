"""Record demonstrations: the operator drives the arm through teleop_node, every episode a bag.

    cfgrl-ros record --out runs/demos --episodes 30 task:=pick_place_can use_camera:=true

Starts the dsrl_franka graph with teleop:=true record:=true bag:=OUT (`cfgrl-ros launch
--show-args` lists the other name:=value arguments: sim:=false for the real arm, policy:=P to
record a policy's episodes with the operator's takeovers, teleop:=scripted for the simulated
operator, namespace, config files). Without a
policy the operator drives every episode: move with the SpaceMouse (its ROS driver publishes
spacenav/twist and spacenav/joy), close and open the gripper with button 0, and end an episode
with the reward/reset node's ~/mark_success or ~/mark_failure (or buttons mapped to them, see
docs/real_robot.md). Each finished episode is a bag OUT/episode_NNNNNN; `cfgrl-ros pretrain
--bag OUT` reads them all. Ends after --episodes episodes, or at Ctrl-C (the episode running
then is not kept: it has no outcome).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cfgrl_ros.cli.arguments import integer_at_least
from cfgrl_ros.cli.launch import launch, parse_launch_arguments
from cfgrl_ros.data.episode_recorder import episode_bags
from cfgrl_ros.graph import describe_graph

# Set by this command; the rest of the launch arguments are the user's.
FIXED = ("record", "bag")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.parse_args = parser.parse_intermixed_args
    parser.add_argument("--out", required=True, type=Path, help="folder of the episode bags")
    parser.add_argument(
        "--episodes",
        type=integer_at_least(0),
        default=0,
        help="stop after this many recorded episodes (0: at Ctrl-C)",
    )
    parser.add_argument(
        "arguments",
        nargs="*",
        metavar="name:=value",
        help="more launch arguments of dsrl_franka (see `cfgrl-ros launch --show-args`)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        arguments = parse_launch_arguments(args.arguments)
        fixed = sorted(set(arguments) & set(FIXED))
        if fixed:
            raise ValueError(f"{fixed} are set by `cfgrl-ros record` (--out is the bag folder)")
        if arguments.setdefault("teleop", "true") == "false":
            raise ValueError("teleop:=false leaves nobody to drive: give teleop:=true or scripted")
        nodes = describe_graph({**arguments, "record": "true", "bag": str(args.out)})
    except (ValueError, FileNotFoundError) as error:
        print(f"cfgrl-ros record: {error}", file=sys.stderr)
        return 2
    before = len(episode_bags(args.out))

    def recorded() -> int:
        return len(episode_bags(args.out)) - before

    done = (lambda: recorded() >= args.episodes) if args.episodes else None
    status = launch(nodes, until=done)
    print(f"cfgrl-ros record: {recorded()} episodes recorded into {args.out}", file=sys.stderr)
    return status
