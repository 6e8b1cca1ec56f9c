"""Fleet benchmark: DSRL-NA with 1, 2, 4 simulated arms sharing one noise actor over ROS 2.

    nice python bench/fleet.py --policy runs/ppc35/policy.pt --task pick_place_can \\
        --arms 1 2 4 --out runs/fleet

For each arm count N and each of --repeats repeats r, `cfgrl-ros launch dsrl_fleet arms:=N`
runs (a fresh run folder OUT/arms<N>/repeat<r>; the package's parameter file with the
simulators, the policy nodes and the agent seeded by r; the agent at its defaults) while a
probe in this process listens to every arm: its decision records (success of each episode,
whether the actor's noise came in time) and its noise requests and answers (the actor's
latency, measured here between the request and the answer, both as this process receives
them). It stops when the fleet's rolling success over its last --window episodes (in the
order they end, whichever arm) reaches --target, or after --max-episodes or --max-minutes.
It reports per run: wall-clock minutes and total episodes to the target, noise-request
latency p50/p99 and fallbacks once learning has started, the learner's updates per second
and per stored decision (its effective update-to-data ratio; the agent asks for `utd`), and
CPU seconds by role (the noise actor, each arm's three nodes) from /proc, from which the
cost of one arm per episode follows.

Writes OUT/arms<N>/repeat<r>/result.json (a finished run is not run again), OUT/results.json,
OUT/fleet.png (rolling success against wall-clock time) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np

from cfgrl_ros.nodes import decision_messages as contract
from cfgrl_ros.policy.flow_policy import FlowPolicy

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", type=Path, required=True, help="FlowPolicy checkpoint")
    parser.add_argument("--task", default="pick_place_can", help="simulated task")
    parser.add_argument("--arms", type=int, nargs="+", default=[1, 2, 4], help="arm counts")
    parser.add_argument("--repeats", type=int, default=1, help="runs per arm count, seeded apart")
    parser.add_argument("--out", type=Path, default=Path("runs/fleet"), help="output folder")
    parser.add_argument("--window", type=int, default=10, help="episodes in the rolling success")
    parser.add_argument("--target", type=float, default=0.9, help="rolling success to reach")
    parser.add_argument("--max-episodes", type=int, default=150, help="stop after (fleet total)")
    parser.add_argument("--max-minutes", type=float, default=40.0, help="stop after (per N)")
    parser.add_argument(
        "--launch-arg",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="one more launch argument of dsrl_fleet (repeatable)",
    )
    return parser.parse_args()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND  # utime, stime


class FleetProbe:
    """Listens to every arm: episode outcomes, decisions, noise requests and answers, and the
    noise actor's diagnostics."""

    def __init__(self, node, arms: list[str], policy: FlowPolicy) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import JointState
        from trajectory_msgs.msg import JointTrajectory

        self.node = node
        self.feature_dim = policy.feature_dim
        self.horizon = policy.noise_shape[0]
        self.start = time.monotonic()
        self.outcomes: list[tuple[float, str, bool]] = []  # (seconds, arm, success)
        self.decisions: list[tuple[float, bool]] = []  # (seconds, noise from the actor)
        self.deciding: set[str] = set()  # arms heard deciding
        self.latencies: list[tuple[float, float]] = []  # (seconds, latency s)
        self.updates: list[tuple[float, int]] = []  # (seconds, the actor's update count)
        self.transitions = 0  # stored, as the actor's diagnostics last said
        self.learning_since: float | None = None
        self._requests: dict[tuple[str, int], float] = {}
        for arm in arms:
            prefix = f"{arm}/"
            node.create_subscription(
                JointState,
                prefix + contract.DECISION_TOPIC,
                lambda message, arm=arm: self._record(arm, message),
                contract.record_qos(100),
            )
            node.create_subscription(
                JointState,
                prefix + contract.NOISE_REQUEST_TOPIC,
                lambda message, arm=arm: self._request(arm, message),
                contract.exchange_qos(),
            )
            node.create_subscription(
                JointTrajectory,
                prefix + contract.NOISE_TOPIC,
                lambda message, arm=arm: self._answer(arm, message),
                contract.exchange_qos(),
            )
        node.create_subscription(DiagnosticArray, "/diagnostics", self._diagnostics, 50)

    def now(self) -> float:
        return time.monotonic() - self.start

    def _record(self, arm: str, message) -> None:
        record = contract.parse_record(message, self.feature_dim, self.horizon)
        if isinstance(record, contract.EpisodeEnd):
            self.outcomes.append((self.now(), arm, record.success))
        else:
            self.decisions.append((self.now(), record.noise_from_actor))
            self.deciding.add(arm)

    def _request(self, arm: str, message) -> None:
        self._requests[(arm, contract.stamp_to_ns(message.header.stamp))] = time.monotonic()

    def _answer(self, arm: str, message) -> None:
        asked = self._requests.pop((arm, contract.stamp_to_ns(message.header.stamp)), None)
        if asked is not None:
            self.latencies.append((self.now(), time.monotonic() - asked))

    def _diagnostics(self, message) -> None:
        for status in message.status:
            if status.name != "noise_actor_node: learner":
                continue
            values = {pair.key: pair.value for pair in status.values}
            self.updates.append((self.now(), int(values["updates"])))
            self.transitions = int(values["transitions"])
            if self.learning_since is None and values["learning_started"] == "True":
                self.learning_since = self.now()

    def rolling(self, window: int) -> list[float]:
        """The fleet's rolling success after each episode end (nan until `window` ends)."""
        recent: deque[bool] = deque(maxlen=window)
        values = []
        for _, _, success in self.outcomes:
            recent.append(success)
            values.append(sum(recent) / window if len(recent) == window else float("nan"))
        return values


def seeded_config(repeat: int, path: Path) -> Path:
    """The package's parameter file with simulators, policy nodes and agent seeded by
    `repeat` (the launch seeds arm i of a repeat ARM_SEED_STRIDE further on)."""
    import yaml

    from cfgrl_ros.graph import ARM_SEED_STRIDE, MAX_ARMS
    from cfgrl_ros.paths import config_path

    settings = yaml.safe_load(config_path("dsrl_franka.yaml").read_text())
    seed = repeat * MAX_ARMS * ARM_SEED_STRIDE
    for node in ("franka_sim_node", "policy_node"):
        settings[f"/**/{node}"]["ros__parameters"]["seed"] = seed
    settings["/**/noise_actor_node"]["ros__parameters"]["agent"]["seed"] = repeat
    path.write_text(yaml.safe_dump(settings))
    return path


def run_fleet(args: argparse.Namespace, arms: int, repeat: int, policy: FlowPolicy) -> dict:
    import rclpy

    folder = args.out / f"arms{arms}" / f"repeat{repeat}"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"arm{index}" for index in range(arms)]
    log_path = folder / "launch.log"
    command = [
        sys.executable,
        "-m",
        "cfgrl_ros.cli.main",
        "launch",
        "dsrl_fleet",
        f"policy:={args.policy.resolve()}",
        f"task:={args.task}",
        f"arms:={arms}",
        f"run_dir:={(folder / 'run').resolve()}",
        f"config:={seeded_config(repeat, folder / 'config.yaml').resolve()}",
        *args.launch_arg,
    ]
    rclpy.init()
    node = rclpy.create_node("fleet_benchmark_probe")
    probe = FleetProbe(node, names, policy)
    reached: tuple[float, int] | None = None
    reported = 0
    cpu_start: dict[str, float] | None = None  # once every arm decides: start-up left out
    with log_path.open("w") as log:
        launcher = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def cpu_now() -> dict[str, float]:
        started = re.findall(r"\[launch\] started (\S+) \(pid (\d+)\)", log_path.read_text())
        return {label: cpu_seconds(int(pid)) for label, pid in started}

    try:
        deadline = time.monotonic() + 60 * args.max_minutes
        while time.monotonic() < deadline and len(probe.outcomes) < args.max_episodes:
            rclpy.spin_once(node, timeout_sec=0.1)
            if cpu_start is None and len(probe.deciding) == arms:
                cpu_start, cpu_since = cpu_now(), probe.now()
            rolling = probe.rolling(args.window)
            if reached is None and rolling and rolling[-1] >= args.target:
                reached = (probe.outcomes[-1][0], len(probe.outcomes))
                break
            if launcher.poll() is not None:
                raise RuntimeError(f"the fleet stopped early; see {log_path}")
            if len(probe.outcomes) >= reported + 10:
                reported = len(probe.outcomes)
                print(
                    f"  {arms} arms: {reported} episodes, {probe.now() / 60:.1f} min, "
                    f"rolling {rolling[-1]:.2f}",
                    flush=True,
                )
        elapsed = probe.now()
        cpu_end = cpu_now()
        if cpu_start is None:
            cpu_start, cpu_since = dict.fromkeys(cpu_end, 0.0), 0.0
        cpu = {label: cpu_end[label] - cpu_start.get(label, 0.0) for label in cpu_end}
        measured = elapsed - cpu_since
    finally:
        launcher.send_signal(signal.SIGINT)
        launcher.wait(120)
        node.destroy_node()
        rclpy.shutdown()
    learning = probe.learning_since if probe.learning_since is not None else elapsed
    latencies = np.array([latency for at, latency in probe.latencies if at >= learning])
    after = [from_actor for at, from_actor in probe.decisions if at >= learning]
    updates = [(at, count) for at, count in probe.updates if at >= learning]
    update_rate = (
        (updates[-1][1] - updates[0][1]) / (updates[-1][0] - updates[0][0])
        if len(updates) > 1 and updates[-1][0] > updates[0][0]
        else 0.0
    )
    actor_cpu = cpu.get("noise_actor_node", 0.0)
    arm_cpu = {name: sum(v for k, v in cpu.items() if k.startswith(f"{name}/")) for name in names}
    episodes = len(probe.outcomes)
    # CPU per episode over the measured span: the episodes that ended in it.
    measured_episodes = sum(at >= cpu_since for at, _, _ in probe.outcomes) or episodes
    result = {
        "arms": arms,
        "repeat": repeat,
        "reached_target": reached is not None,
        "minutes_to_target": reached[0] / 60 if reached else None,
        "episodes_to_target": reached[1] if reached else None,
        "episodes": episodes,
        "minutes": elapsed / 60,
        "episodes_per_arm": {
            name: sum(arm == name for _, arm, _ in probe.outcomes) for name in names
        },
        "success_rate": float(np.mean([s for _, _, s in probe.outcomes])) if episodes else 0.0,
        "latency_p50_ms": float(np.percentile(latencies, 50) * 1e3) if len(latencies) else None,
        "latency_p99_ms": float(np.percentile(latencies, 99) * 1e3) if len(latencies) else None,
        "requests_after_learning": len(latencies),
        "fallback_share_after_learning": (1 - float(np.mean(after))) if after else None,
        "updates_per_second": update_rate,
        "updates_per_transition": (
            updates[-1][1] / probe.transitions if updates and probe.transitions else 0.0
        ),
        "cpu_seconds": {"noise_actor": actor_cpu, **arm_cpu},
        "cpu_share_of_two_cores": (sum(cpu.values()) / measured / 2) if measured else 0.0,
        "cpu_measured_minutes": measured / 60,
        "arm_cpu_seconds_per_episode": (
            sum(arm_cpu.values()) / measured_episodes if episodes else None
        ),
        "actor_cpu_seconds_per_episode": actor_cpu / measured_episodes if episodes else None,
        "outcomes": probe.outcomes,
        "command": " ".join(command),
    }
    (folder / "result.json").write_text(json.dumps(result, indent=2))
    return result


def plot(results: list[dict], window: int, target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for result in results:
        outcomes = result["outcomes"]
        recent: deque[bool] = deque(maxlen=window)
        times, values = [], []
        for at, _, success in outcomes:
            recent.append(success)
            if len(recent) == window:
                times.append(at / 60)
                values.append(sum(recent) / window)
        arms = f"{result['arms']} arm{'s' * (result['arms'] > 1)}"
        axis.plot(times, values, label=f"{arms}, repeat {result['repeat']}")
    axis.axhline(target, color="grey", linestyle="--", linewidth=0.8)
    axis.set_xlabel("wall-clock minutes")
    axis.set_ylabel(f"fleet success, last {window} episodes")
    axis.set_ylim(0, 1.02)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    args = parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
    os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="fleet_ros_log_"))
    args.out.mkdir(parents=True, exist_ok=True)
    policy = FlowPolicy.load(args.policy, "cpu")
    results = []
    for arms in args.arms:
        for repeat in range(args.repeats):
            done = args.out / f"arms{arms}" / f"repeat{repeat}" / "result.json"
            if done.is_file():
                print(f"{arms} arms, repeat {repeat}: done before ({done})")
                results.append(json.loads(done.read_text()))
                continue
            print(f"{arms} arms, repeat {repeat}: running", flush=True)
            results.append(run_fleet(args, arms, repeat, policy))
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, args.window, args.target, args.out / "fleet.png")
    print(
        "\n| arms | repeat | minutes to target | episodes to target | latency p50 / p99 ms "
        "| fallbacks | updates/s | updates per decision | CPU share of 2 cores "
        "| arm CPU s/episode | actor CPU s/episode |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        to_target = (
            (f"{r['minutes_to_target']:.1f}", str(r["episodes_to_target"]))
            if r["reached_target"]
            else (f"not in {r['minutes']:.1f}", f"not in {r['episodes']}")
        )
        fallbacks = r["fallback_share_after_learning"]
        latency = (
            f"{r['latency_p50_ms']:.1f} / {r['latency_p99_ms']:.1f}"
            if r["requests_after_learning"]
            else "-"
        )
        print(
            f"| {r['arms']} | {r['repeat']} | {to_target[0]} | {to_target[1]} | {latency} | "
            f"{100 * (fallbacks or 0):.1f}% | {r['updates_per_second']:.1f} | "
            f"{r['updates_per_transition']:.1f} | "
            f"{100 * r['cpu_share_of_two_cores']:.0f}% | {r['arm_cpu_seconds_per_episode']:.1f} | "
            f"{r['actor_cpu_seconds_per_episode']:.1f} |"
        )


if __name__ == "__main__":
    main()
