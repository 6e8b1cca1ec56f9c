"""franka_sim_node as a real process over DDS: topics, commands, reset, lockstep, cameras."""

from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Bool, Float64  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from cfgrl_ros.arm.command_adapter import ArmCommandAdapter  # noqa: E402
from cfgrl_ros.msg_arrays import image_array, joint_arrays, pose_arrays  # noqa: E402
from cfgrl_ros.sim.expert import ScriptedExpert  # noqa: E402
from cfgrl_ros.sim.tasks import task_adapter_config  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.sim]  # the simulated arm is a node process

ARM_JOINTS = [f"panda_joint{i}" for i in range(1, 8)]
FINGER_JOINTS = ["panda_finger_joint1", "panda_finger_joint2"]
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


class ArmProbe:
    """Subscribes to the simulated arm's topics through the test's probe node."""

    def __init__(self, node, image: bool = False) -> None:
        self.node = node
        self.latest: dict[str, object] = {}
        self.counts: dict[str, int] = {}
        topics = {
            "joint_states": (JointState, "/joint_states"),
            "current_pose": (PoseStamped, "/franka_robot_state_broadcaster/current_pose"),
            "object_pose": (PoseStamped, "/object_pose"),
            "success": (Bool, "/success"),
        }
        if image:
            topics["image"] = (Image, "/camera/camera/color/image_raw")
        self.subscriptions = [
            node.create_subscription(
                kind, topic, lambda m, key=key: self._store(key, m), qos_profile_sensor_data
            )
            for key, (kind, topic) in topics.items()
        ]
        self.target_publisher = node.create_publisher(PoseStamped, "/target_pose", RELIABLE)
        self.gripper_publisher = node.create_publisher(Float64, "/gripper_command", RELIABLE)
        self.reset_client = node.create_client(Trigger, "/franka_sim_node/reset")

    def _store(self, key: str, message: object) -> None:
        self.latest[key] = message
        self.counts[key] = self.counts.get(key, 0) + 1

    def spin_until(self, condition, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out; received {self.counts}"
            rclpy.spin_once(self.node, timeout_sec=0.05)

    def spin_until_quiet(self, quiet: float, timeout: float = 20.0) -> None:
        """Until no message has arrived for `quiet` seconds."""
        counts, changed = dict(self.counts), time.monotonic()

        def quiet_now() -> bool:
            nonlocal counts, changed
            if self.counts != counts:
                counts, changed = dict(self.counts), time.monotonic()
            return time.monotonic() - changed >= quiet

        self.spin_until(quiet_now, timeout)

    def wait_for_all(self, since: dict[str, int] | None = None, timeout: float = 20.0) -> None:
        """Until every topic has a message newer than the counts in `since`."""
        since = since or {}
        keys = [s.topic_name for s in self.subscriptions]
        self.spin_until(
            lambda: (
                len(self.counts) == len(keys)
                and all(self.counts[key] > since.get(key, 0) for key in self.counts)
            ),
            timeout,
        )

    def observation(self) -> dict[str, np.ndarray]:
        joint_pos, width = joint_arrays(self.latest["joint_states"], ARM_JOINTS, FINGER_JOINTS)
        eef_pos, eef_quat = pose_arrays(self.latest["current_pose"])
        object_pos, object_quat = pose_arrays(self.latest["object_pose"])
        return {
            "joint_pos": joint_pos,
            "gripper_width": width,
            "eef_pos": eef_pos,
            "eef_quat": eef_quat,
            "object_pos": object_pos,
            "object_quat": object_quat,
        }

    def command(self, position, quaternion, width: float, frame: str = "panda_link0") -> None:
        self.gripper_publisher.publish(Float64(data=float(width)))  # before the target
        target = PoseStamped()
        target.header.frame_id = frame
        target.pose.position.x, target.pose.position.y, target.pose.position.z = map(
            float, position
        )
        q = target.pose.orientation
        q.x, q.y, q.z, q.w = map(float, quaternion)
        self.target_publisher.publish(target)

    def reset(self) -> Trigger.Response:
        assert self.reset_client.wait_for_service(timeout_sec=20.0)
        future = self.reset_client.call_async(Trigger.Request())
        self.spin_until(future.done)
        return future.result()

    def close(self) -> None:
        for subscription in self.subscriptions:
            self.node.destroy_subscription(subscription)
        self.node.destroy_publisher(self.target_publisher)
        self.node.destroy_publisher(self.gripper_publisher)
        self.node.destroy_client(self.reset_client)


@pytest.fixture
def probe(ros_probe, request):
    arm = ArmProbe(ros_probe, image=getattr(request, "param", False))
    yield arm
    arm.close()


def test_lockstep_expert_over_dds_reaches_success(ros_nodes, probe):
    ros_nodes.start("franka_sim_node", parameters={"mode": "lockstep", "seed": 11})
    response = probe.reset()
    assert response.success and "seed 11" in response.message
    probe.wait_for_all()
    joints = probe.latest["joint_states"]
    assert list(joints.name) == ARM_JOINTS + FINGER_JOINTS
    assert joints.position[7] == pytest.approx(joints.position[8])  # each finger half the width
    assert probe.latest["current_pose"].header.frame_id == "panda_link0"
    assert probe.latest["success"].data is False

    adapter = ArmCommandAdapter(task_adapter_config("lift"))
    expert = ScriptedExpert("lift", noise=0.0, seed=0)
    obs = probe.observation()
    expert.reset()
    for _ in range(80):
        command = adapter.command(expert.act(obs), obs["eef_pos"], obs["eef_quat"])
        before = dict(probe.counts)
        probe.command(command.target_pos, command.target_quat, command.gripper_width)
        probe.wait_for_all(before, timeout=10.0)  # lockstep: one new observation per target
        obs = probe.observation()
        if probe.latest["success"].data:
            break
    assert probe.latest["success"].data, f"not lifted; object at {obs['object_pos']}"
    assert obs["object_pos"][2] > -0.075  # lifted off the table (base frame)

    # Lockstep: without commands the world stands still. The node only re-publishes the same
    # state every LOCKSTEP_IDLE_REPUBLISH seconds (so a lost message cannot deadlock a policy).
    # First the answer to the last target, should a stalled probe have taken such a re-publish
    # for it and fallen one step behind.
    probe.spin_until_quiet(0.3)
    obs = probe.observation()
    counts = dict(probe.counts)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        rclpy.spin_once(probe.node, timeout_sec=0.05)
    assert all(probe.counts[key] - counts[key] <= 2 for key in counts), (counts, probe.counts)
    for key, value in probe.observation().items():
        np.testing.assert_array_equal(value, obs[key], err_msg=key)


def test_realtime_tracks_a_target_pose_and_resets(ros_nodes, probe):
    node = ros_nodes.start("franka_sim_node", parameters={"mode": "realtime", "seed": 3})
    probe.wait_for_all()
    start = probe.observation()
    target = start["eef_pos"] + [0.05, 0.08, -0.05]
    probe.command(target, start["eef_quat"], 0.08)
    # 20 Hz on the wall clock, holding the last target: it gets there without more commands.
    probe.spin_until(lambda: np.linalg.norm(probe.observation()["eef_pos"] - target) < 0.01)
    assert probe.observation()["gripper_width"][0] > 0.07

    wrong_frame = probe.observation()["eef_pos"] + [0, 0, 0.1]
    probe.command(wrong_frame, start["eef_quat"], 0.08, frame="world")  # rejected: not the base
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        rclpy.spin_once(probe.node, timeout_sec=0.05)
    assert np.linalg.norm(probe.observation()["eef_pos"] - target) < 0.02
    assert "ignoring a target pose in frame 'world'" in node.log()

    assert probe.reset().success
    probe.spin_until(
        lambda: np.linalg.norm(probe.observation()["eef_pos"] - start["eef_pos"]) < 0.03
    )


@pytest.mark.parametrize("probe", [True], indirect=True)
def test_camera_images_have_the_configured_size_and_orientation(ros_nodes, probe):
    ros_nodes.start(
        "franka_sim_node",
        parameters={"mode": "lockstep", "use_camera": True, "image_size": 64},
    )
    probe.reset()
    probe.wait_for_all()
    message = probe.latest["image"]
    assert (message.height, message.width, message.encoding) == (64, 64, "rgb8")
    pixels = image_array(message)
    brightness = pixels.mean(axis=(1, 2))
    assert brightness[-16:].mean() > brightness[:16].mean() + 20  # the table is at the bottom


def test_bad_mode_is_refused_with_a_clear_message(ros_nodes):
    node = ros_nodes.start("franka_sim_node", parameters={"mode": "fast"}, wait=0)
    assert node.process.wait(60) == 1
    assert "parameter mode must be one of" in node.log()
