"""Start the ROS 2 node graph as processes (pip mode, where `ros2 launch` is absent).

    cfgrl-ros launch dsrl_franka policy:=runs/policy.pt [sim:=true] [guidance_weight:=1.5] ...
    cfgrl-ros launch dsrl_fleet policy:=runs/policy.pt arms:=2 ...

Starts the nodes of launch/<graph>.launch.py, with the same parameters (both read
cfgrl_ros.graph), as child processes. Their output is interleaved, each line prefixed with the
node's name. Ctrl-C (SIGINT) or SIGTERM stops every node cleanly (SIGINT, then SIGTERM and
SIGKILL for a node that does not exit in time); a node that exits by itself is reported and the
others keep running, as with `ros2 launch`. Exits 0 when every node stopped cleanly, else 1.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from cfgrl_ros.graph import GRAPHS, Graph, NodeDescription, node_environment

SIGINT_GRACE = 10.0  # seconds a node gets to shut down after SIGINT before SIGTERM
SIGTERM_GRACE = 5.0  # ... and after SIGTERM before SIGKILL
_POLL = 0.1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Flags may stand anywhere among the name:=value arguments, as with `ros2 launch`: plain
    # parse_args ends the positionals at the first flag and calls the rest unrecognised.
    parser.parse_args = parser.parse_intermixed_args
    parser.add_argument(
        "graph",
        help=f"the graph to start: {' or '.join(GRAPHS)} (or <graph>.launch.py)",
    )
    parser.add_argument(
        "arguments",
        nargs="*",
        metavar="name:=value",
        help="launch arguments, as for `ros2 launch`; see --show-args",
    )
    parser.add_argument(
        "--show-args", action="store_true", help="list the graph's launch arguments and exit"
    )
    parser.add_argument(
        "--print",
        action="store_true",
        help="print the command line of every node and exit without starting anything",
    )


def parse_launch_arguments(items: Sequence[str]) -> dict[str, str]:
    """``["sim:=false", "policy:=p.pt"]`` -> {"sim": "false", "policy": "p.pt"}."""
    values = {}
    for item in items:
        name, separator, value = item.partition(":=")
        if not separator or not name:
            raise ValueError(f"launch argument {item!r} is not of the form name:=value")
        values[name] = value
    return values


def node_command(node: NodeDescription, override_file: Path) -> list[str]:
    """The command line that runs `node` (its module, as its console script would)."""
    return [
        sys.executable,
        "-m",
        f"cfgrl_ros.nodes.{node.executable}",
        *node.ros_arguments(override_file),
    ]


def write_overrides(nodes: Sequence[NodeDescription], folder: Path) -> dict[str, Path]:
    """Write each node's launch-argument parameters to `folder`; fully qualified name -> file."""
    files = {}
    for node in nodes:
        path = folder / f"{node.fully_qualified_name.strip('/').replace('/', '.')}.yaml"
        path.write_text(node.override_yaml())
        files[node.fully_qualified_name] = path
    return files


def _label(node: NodeDescription) -> str:
    """How output lines name a node: arm0/policy_node, or policy_node without a namespace."""
    return node.fully_qualified_name.lstrip("/")


def _show_arguments(graph: Graph) -> None:
    print(f"Arguments of {graph.name} (pass arguments as '<name>:=<value>'):\n")
    for argument in graph.arguments:
        choices = f" (one of {', '.join(argument.choices)})" if argument.choices else ""
        print(f"    '{argument.name}':\n        {argument.description}{choices}")
        print(f"        (default: '{argument.default}')\n")


class _Printer:
    """Copies each child's output line by line to stdout, prefixed with the node's name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def say(self, text: str) -> None:
        with self._lock:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def follow(self, name: str, stream: IO[bytes]) -> None:
        def copy() -> None:
            for raw in iter(stream.readline, b""):
                self.say(f"[{name}] {raw.decode(errors='replace').rstrip()}")
            stream.close()

        thread = threading.Thread(target=copy, name=f"output-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def drain(self, timeout: float = 2.0) -> None:
        for thread in self._threads:
            thread.join(timeout)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _stop(processes: dict[str, subprocess.Popen], printer: _Printer) -> None:
    """SIGINT every live node, then SIGTERM and SIGKILL the ones that outlive their grace."""
    for sig, grace in ((signal.SIGINT, SIGINT_GRACE), (signal.SIGTERM, SIGTERM_GRACE)):
        alive = {name: p for name, p in processes.items() if p.poll() is None}
        if not alive:
            return
        if sig == signal.SIGTERM:
            printer.say(f"[launch] {sorted(alive)} still running {SIGINT_GRACE:.0f}s after SIGINT")
        for process in alive.values():
            process.send_signal(sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(p.poll() is None for p in alive.values()):
            time.sleep(_POLL)
    for name, process in processes.items():
        if process.poll() is None:
            printer.say(f"[launch] killing {name}")
            process.kill()
            process.wait()


def launch(nodes: Sequence[NodeDescription], until: Callable[[], bool] | None = None) -> int:
    """Run `nodes` until all exit, SIGINT/SIGTERM arrives or `until()` is true (checked every
    0.1 s); 0 when all stopped cleanly."""
    printer = _Printer()
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    environment = {**os.environ, **node_environment(os.environ), "PYTHONUNBUFFERED": "1"}
    processes: dict[str, subprocess.Popen] = {}  # by label
    exits: dict[str, int] = {}
    folder = tempfile.TemporaryDirectory(prefix="cfgrl_ros_launch_")
    override_files = write_overrides(nodes, Path(folder.name))
    try:
        for node in nodes:
            # A session of its own: a terminal's Ctrl-C reaches the launcher only, which then
            # stops the nodes in order instead of every process getting it at once.
            process = subprocess.Popen(
                node_command(node, override_files[node.fully_qualified_name]),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**environment, **node.environment},
                start_new_session=True,
            )
            label = _label(node)
            processes[label] = process
            printer.say(f"[launch] started {label} (pid {process.pid})")
            printer.follow(label, process.stdout)
        while not stop.is_set() and len(exits) < len(processes):
            for name, process in processes.items():
                code = process.poll()
                if code is not None and name not in exits:
                    exits[name] = code
                    level = "finished cleanly" if code == 0 else "died"
                    printer.say(f"[launch] {name} {level} ({_describe_exit(code)})")
            stop.wait(_POLL)
            if until is not None and until():
                stop.set()
        if stop.is_set():
            printer.say("[launch] stopping all nodes")
    finally:
        _stop(processes, printer)
        printer.drain()
        folder.cleanup()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    failed = {name: code for name, code in exits.items() if code != 0}
    for name, process in processes.items():
        if name not in exits:
            code = process.returncode
            # A node stopped by us may exit 0 or, if it has no SIGINT handling, -SIGINT.
            if code not in (0, -signal.SIGINT):
                failed[name] = code
            printer.say(f"[launch] {name} stopped ({_describe_exit(code)})")
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    graph = GRAPHS.get(args.graph.removesuffix(".launch.py"))
    if graph is None:
        print(
            f"error: unknown graph {args.graph!r}; the package has {' and '.join(GRAPHS)}",
            file=sys.stderr,
        )
        return 2
    if args.show_args:
        _show_arguments(graph)
        return 0
    try:
        nodes = graph.describe(parse_launch_arguments(args.arguments))
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.print:
        for node in nodes:
            print(" ".join(node_command(node, Path(f"<{_label(node)} overrides>"))))
            print(f"    overrides: {node.parameters}")
        return 0
    return launch(nodes)
