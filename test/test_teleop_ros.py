"""The operator in the loop through the real graph: a probe plays the SpaceMouse driver.

It publishes geometry_msgs/Twist on spacenav/twist and sensor_msgs/Joy on spacenav/joy, as the
``spacenav`` driver does; teleop_node, the policy node, the noise actor, the simulator (in
realtime: a person's pace) and the bag recorder run as processes of `cfgrl-ros launch`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from test_nodes_ros import (
    SMALL_AGENT,
    STARTUP,
    Recorder,
    agent_counters,
    launch_graph,
    tiny_checkpoint,
)

from cfgrl_ros.data.bag_reader import read_bags
from cfgrl_ros.data.topic_map import load_topic_map
from cfgrl_ros.paths import config_path
from cfgrl_ros.policy import FlowPolicy

pytestmark = [pytest.mark.ros, pytest.mark.sim]

GRIPPER, TAKEOVER, SUCCESS = 0, 1, 2  # the button map given to teleop_node below
# A process of the graph may stall for a moment on a loaded 2-core machine, leaving a gap in
# the recorded commands; the reader would skip that episode (a data-quality check this test is
# not about), so these recordings are read with a looser staleness limit.
LOOSE = {"max_staleness": 1.0}
SMALL_POLICY = """\
value_hidden_dims: [32]
value_folds: 1
batch_size: 16
policy:
  horizon: 4
  flow_steps: 2
  hidden_dims: [32, 32]
  state_hidden_dims: [32]
"""


class SpaceMouse:
    """Publishes a constant twist at 20 Hz while the probe spins, and button presses."""

    def __init__(self, probe, linear=(0.0, 0.0, 0.0)) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import Twist
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Joy

        self.probe = probe
        self.twist = Twist()
        self.twist.linear.x, self.twist.linear.y, self.twist.linear.z = linear
        self.twist_publisher = probe.create_publisher(Twist, "/spacenav/twist", 10)
        self.joy_publisher = probe.create_publisher(Joy, "/spacenav/joy", qos_profile_sensor_data)
        self.Joy = Joy
        self.timer = probe.create_timer(0.05, lambda: self.twist_publisher.publish(self.twist))
        self.teleop_driving: bool | None = None  # as teleop_node's diagnostics last said
        self.diagnostics = probe.create_subscription(
            DiagnosticArray, "/diagnostics", self._on_diagnostics, 10
        )

    def _on_diagnostics(self, message) -> None:
        for status in message.status:
            if status.name.startswith("teleop_node"):
                values = {pair.key: pair.value for pair in status.values}
                self.teleop_driving = values["operator_driving"] == "True"

    def toggle_takeover(self, recorder: Recorder, driving: bool) -> None:
        """Press the takeover button until teleop_node says the operator drives (or not):
        a press is lost while teleop_node has not yet discovered the policy node's service."""
        for _ in range(5):
            self.press(TAKEOVER)
            try:
                recorder.spin_until(lambda: self.teleop_driving == driving, 4.0, "")
                return
            except TimeoutError:
                continue
        raise TimeoutError(f"teleop_node never reported operator_driving {driving}")

    def press(self, button: int) -> None:
        for down in (True, False):
            buttons = [0, 0, 0]
            buttons[button] = int(down)
            self.joy_publisher.publish(self.Joy(buttons=buttons))

    def close(self) -> None:
        self.probe.destroy_timer(self.timer)
        self.probe.destroy_subscription(self.diagnostics)
        self.probe.destroy_publisher(self.twist_publisher)
        self.probe.destroy_publisher(self.joy_publisher)


def teleop_settings(tmp_path: Path, episodes: int) -> dict:
    settings = yaml.safe_load(config_path("dsrl_franka.yaml").read_text())
    settings["/**/noise_actor_node"]["ros__parameters"]["agent"].update(SMALL_AGENT)
    settings["/**/noise_actor_node"]["ros__parameters"]["run_dir"] = str(tmp_path / "run")
    settings["/**/reward_reset_node"]["ros__parameters"].update(episodes=episodes)
    settings["/**/teleop_node"] = {
        "ros__parameters": {
            "gripper_button": GRIPPER,
            "takeover_button": TAKEOVER,
            "success_button": SUCCESS,
        }
    }
    return settings


def stop(launcher: subprocess.Popen, log_path: Path) -> str:
    launcher.send_signal(signal.SIGINT)
    launcher.wait(60)
    log = log_path.read_text()
    assert launcher.returncode == 0, log
    return log


def record(tmp_path: Path, settings: dict, bag: Path, *arguments: str) -> subprocess.Popen:
    """`cfgrl-ros record --out BAG --episodes 1 ARGUMENTS` with `settings` as its config."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(settings))
    log = (tmp_path / "launch.log").open("w")
    command = ["record", "--out", str(bag), "--episodes", "1", f"config:={config}", *arguments]
    return subprocess.Popen(
        [sys.executable, "-m", "cfgrl_ros.cli.main", *command], stdout=log, stderr=log
    )


def test_an_operator_records_a_demonstration_that_pretrain_reads(tmp_path, ros_probe):
    """No policy: the operator drives, closes the gripper and presses success; the episode is
    a bag in the recording folder, `record` stops after it, and pretrain trains a policy from
    that folder."""
    bag = tmp_path / "demos"
    log_path = tmp_path / "launch.log"
    launcher = record(tmp_path, teleop_settings(tmp_path, episodes=0), bag)
    from geometry_msgs.msg import PoseStamped

    recorder = Recorder(ros_probe)
    recorder.policy = SimpleNamespace(feature_dim=0, noise_shape=(8, 7))  # end records only
    mouse = SpaceMouse(ros_probe, linear=(0.0, 0.0, 0.5))  # up at half speed
    targets: list = []  # the arm's commands: the operator drives once teleop_node hears it
    commands = ros_probe.create_subscription(PoseStamped, "/target_pose", targets.append, 10)
    try:
        recorder.spin_until(lambda: "start" in recorder.events, STARTUP, "an episode start")
        recorder.spin_until(lambda: bool(targets), STARTUP, "the operator's first command")
        _spin(recorder, 1.0)
        mouse.press(GRIPPER)  # close
        _spin(recorder, 1.0)
        mouse.press(SUCCESS)
        launcher.wait(60)  # after its one episode
    finally:
        ros_probe.destroy_subscription(commands)
        mouse.close()
        recorder.close()
        log = stop(launcher, log_path)
    assert "bag_recorder_node stopped (exit code 0)" in log
    assert "1 episodes recorded into" in log

    (episode,) = read_bags([bag], load_topic_map(overrides=LOOSE))
    assert episode.success and len(episode) >= 20  # about two seconds at 20 Hz
    actions = episode.actions
    # The operator's upward motion (a loaded machine may deliver the twist late: the arm holds
    # meanwhile, and those ticks record no motion).
    assert np.mean(actions[:, 2] > 0.2) > 0.5
    heights = episode.observations["eef_pos"][:, 2]
    assert heights[-1] - heights[0] > 0.03
    assert actions[0, 6] < 0 and actions[-1, 6] > 0  # the gripper toggled closed
    assert episode.metadata["task"] == "lift"

    out = tmp_path / "policy.pt"
    config = tmp_path / "small.yaml"
    config.write_text(SMALL_POLICY)
    topics = tmp_path / "topics.yaml"
    topics.write_text(yaml.safe_dump(LOOSE))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cfgrl_ros.cli.main",
            "pretrain",
            "--bag",
            str(bag),
            "--out",
            str(out),
            "--config",
            str(config),
            "--topics",
            str(topics),
            "--steps",
            "5",
            "--value-steps",
            "5",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert FlowPolicy.load(out).config.task == "lift"


def test_takeover_mid_episode_marks_the_operators_ticks_and_the_noise_actor_learns_them(
    tmp_path, ros_probe
):
    from std_srvs.srv import Trigger

    checkpoint = tiny_checkpoint(tmp_path / "policy.pt")
    log_path = tmp_path / "launch.log"
    settings = teleop_settings(tmp_path, episodes=1)
    settings["/**/reward_reset_node"]["ros__parameters"]["max_decisions"] = 0  # the test ends it
    launcher = launch_graph(tmp_path, settings, log_path, f"policy:={checkpoint}", "teleop:=true")
    recorder = Recorder(ros_probe)
    recorder.policy = FlowPolicy.load(checkpoint, "cpu")
    mouse = SpaceMouse(ros_probe, linear=(0.5, 0.0, 0.0))
    mark_failure = ros_probe.create_client(Trigger, "/reward_reset_node/mark_failure")
    try:
        recorder.spin_until(lambda: len(recorder.decisions) >= 2, STARTUP, "two decisions")
        mouse.toggle_takeover(recorder, driving=True)
        recorder.spin_until(
            lambda: any(d.operator.all() for d in recorder.decisions), 30, "an operator decision"
        )
        mouse.toggle_takeover(recorder, driving=False)  # hand back
        handed_back = len(recorder.decisions)
        recorder.spin_until(
            lambda: any(not d.operator.any() for d in recorder.decisions[handed_back + 1 :]),
            30,
            "a policy decision after the hand-back",
        )
        assert mark_failure.wait_for_service(timeout_sec=20)
        import rclpy

        rclpy.spin_until_future_complete(
            ros_probe, mark_failure.call_async(Trigger.Request()), timeout_sec=20
        )
        recorder.spin_until(lambda: recorder.ends, 30, "the episode's end")
        recorder.spin_until(
            lambda: agent_counters(tmp_path / "run").get("episodes") == 1,
            60,
            "the noise actor's checkpoint",
        )
    finally:
        ros_probe.destroy_client(mark_failure)
        mouse.close()
        recorder.close()
        stop(launcher, log_path)

    driven = [d for d in recorder.decisions if d.operator_ticks]
    assert driven and not recorder.decisions[0].operator.any()
    exec_horizon = recorder.decisions[0].exec_horizon
    for decision in driven:
        rows = decision.chunk[decision.operator]
        np.testing.assert_allclose(rows[:, 0], 0.5)  # the operator's dx, as published
        assert not decision.operator[exec_horizon:].any()
    # Decisions that started while the operator drove decoded nothing. (One the operator took
    # over while its noise was on the way was decoded, and is marked all the same.)
    started_by_operator = [d for d in driven if not d.noise.any()]
    assert started_by_operator
    for decision in started_by_operator:
        assert decision.operator[:exec_horizon].all() and not decision.noise_from_actor
    # DSRL-NA stored every decision, the operator's included.
    counters = agent_counters(tmp_path / "run")
    assert counters["transitions"] == len(recorder.decisions)
    assert counters["operator_transitions"] == len(driven)


def test_the_scripted_operator_records_successful_demonstrations_through_the_graph(
    tmp_path, ros_probe
):
    """teleop:=scripted without a policy: the simulated operator drives the lift task through
    teleop_node's twist and buttons, as a person with a SpaceMouse would, and succeeds."""
    bag = tmp_path / "demos"
    settings = teleop_settings(tmp_path, episodes=0)
    launcher = record(tmp_path, settings, bag, "teleop:=scripted")
    try:
        launcher.wait(STARTUP + 60)
    finally:
        log = stop(launcher, tmp_path / "launch.log")
    (episode,) = read_bags([bag], load_topic_map(overrides=LOOSE))
    assert episode.success, log
    assert episode.actions[:, 6].max() > 0  # the gripper closed on the cube


def _spin(recorder: Recorder, seconds: float) -> None:
    import time

    import rclpy

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rclpy.spin_once(recorder.probe, timeout_sec=0.05)
