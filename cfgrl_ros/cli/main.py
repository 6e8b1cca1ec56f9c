"""Entry point of ``cfgrl-ros``.

Subcommand modules are imported only when their subcommand runs, so ``cfgrl-ros --help`` is
instant and does not import torch or rclpy. Each module ``cfgrl_ros.cli.<name>`` provides
``add_arguments(parser)`` and ``run(args) -> int`` (a dash in the command is an underscore
in the module's name).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> one-line summary; the order is the order of a typical session.
SUBCOMMANDS: dict[str, str] = {
    "collect": "run the scripted expert in the simulator and record demonstrations to a rosbag",
    "record": "record teleoperated demonstrations, one rosbag per episode (sim or real arm)",
    "pretrain": "train a CFGRL flow policy (and its value function) from rosbags",
    "train-success": "train a success detector (task done, from the cameras) on labelled bags",
    "eval": "roll out a policy in the simulator at several guidance weights",
    "adapt": "online DSRL adaptation of a frozen policy in the simulator, without ROS",
    "synthesize": "policy-guided diffusion: synthetic trajectories from bags, written as a bag",
    "launch": "start a ROS 2 node graph (dsrl_franka, dsrl_fleet) as processes (pip mode, where "
    "`ros2 launch` is absent)",
    "param": "get or set a parameter of a running node (like `ros2 param get|set`)",
    "bench": "run a benchmark (decision latency, simulator speed, bag reading)",
    "demo": "the whole pipeline in simulation: record, pretrain, evaluate, adapt online, report",
}


def _module(command: str) -> str:
    """The module of a subcommand: train-success -> cfgrl_ros.cli.train_success."""
    return f"cfgrl_ros.cli.{command.replace('-', '_')}"


def _available() -> dict[str, str]:
    """Subcommands whose module is present in this install."""
    found = {}
    for name, summary in SUBCOMMANDS.items():
        if importlib.util.find_spec(_module(name)) is not None:
            found[name] = summary
    return found


def build_parser(commands: dict[str, str]) -> argparse.ArgumentParser:
    """The top-level parser: the subcommands (name -> summary) for --help and name checks."""
    parser = argparse.ArgumentParser(
        prog="cfgrl-ros",
        description="Improve a frozen flow policy on a Franka arm (real or simulated) with "
        "CFGRL guidance and DSRL noise steering. Run `cfgrl-ros <command> --help` for the "
        "flags of each command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, summary in commands.items():
        sub.add_parser(name, help=summary, description=summary, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The networks are small: one CPU thread is as fast, and several processes (the node graph,
    # a benchmark beside a training run) oversubscribing the cores slows torch down 10-50x.
    # Inherited by every process a command starts; set OMP_NUM_THREADS to choose otherwise.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    commands = _available()
    if not argv or argv[0] not in commands:
        parser = build_parser(commands)
        if not argv:
            parser.print_help()
            return 0
        parser.parse_args(argv)  # prints help or names the unknown command, then exits
        return 2
    name = argv[0]
    module = importlib.import_module(_module(name))
    parser = argparse.ArgumentParser(
        prog=f"cfgrl-ros {name}",
        description=(module.__doc__ or commands[name]).strip(),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:  # commands that keep partial work say so themselves
        print(f"cfgrl-ros {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
