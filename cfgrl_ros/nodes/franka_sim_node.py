"""The simulated Franka as a ROS 2 node, speaking the real arm's topics.

    ros2 run cfgrl_ros franka_sim_node --ros-args -p mode:=lockstep -p use_camera:=true

Publishes ``joint_states`` (7 arm joints and two fingers, each half the opening),
``franka_robot_state_broadcaster/current_pose`` and ``object_pose`` (PoseStamped in
``base_frame``), the camera image (rgb8) when ``use_camera`` is true, ``success`` (Bool) and,
for pick_place_can, its ``goal_pose`` (latched);
follows ``target_pose`` (PoseStamped, an absolute end-effector target) and ``gripper_command``
(Float64, finger opening in metres). ``~/reset`` (std_srvs/Trigger) starts a new episode.

Modes: ``realtime`` steps at 20 Hz of wall-clock time, holding the last target, like the real
arm. ``lockstep`` steps once per received target pose and publishes the new observation, so a
controller runs as fast as it answers (publish the gripper command before the target pose: the
target pose triggers the step). All simulation logic lives in cfgrl_ros.sim.
"""

from __future__ import annotations

import time

from geometry_msgs.msg import PoseStamped
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64
from std_srvs.srv import Trigger

from cfgrl_ros.msg_arrays import pose_arrays
from cfgrl_ros.nodes.arm_interface import ARM_JOINTS, FINGER_JOINTS, pose_message
from cfgrl_ros.nodes.node_support import declare, run_node
from cfgrl_ros.nodes.realsense_camera_node import image_message
from cfgrl_ros.sim.commanded_arm import ArmState, CommandedArm
from cfgrl_ros.sim.env import CAMERAS, CONTROL_RATE, FrankaSimEnv
from cfgrl_ros.sim.tasks import TASKS

RCLError = rclpy_implementation.RCLError
MODES = ("realtime", "lockstep")
LOCKSTEP_IDLE_REPUBLISH = 0.5  # s without a command after which lockstep re-publishes
# parameter -> (default, what it carries); relative names follow the node's namespace.
TOPICS = {
    "joint_states_topic": ("joint_states", "JointState published: arm joints and fingers"),
    "current_pose_topic": (
        "franka_robot_state_broadcaster/current_pose",
        "PoseStamped published: the end-effector pose",
    ),
    "object_pose_topic": ("object_pose", "PoseStamped published: the object's pose"),
    "image_topic": ("camera/camera/color/image_raw", "Image published: the scene camera"),
    "wrist_image_topic": (
        "wrist_camera/camera/color/image_raw",
        "Image published: the wrist camera",
    ),
    "success_topic": ("success", "Bool published: the task is done"),
    "goal_pose_topic": (
        "goal_pose",
        "PoseStamped published (latched) by tasks with a goal: where pick_place_can's object "
        "goes (what a person sees; the scripted operator reads it)",
    ),
    "target_pose_topic": ("target_pose", "PoseStamped followed: the end-effector target"),
    "gripper_command_topic": ("gripper_command", "Float64 followed: finger opening (m)"),
}


class FrankaSimNode(Node):
    def __init__(self) -> None:
        super().__init__("franka_sim_node")
        task = declare(self, "task", "lift", f"simulated task: {', '.join(sorted(TASKS))}")
        self.mode = declare(
            self,
            "mode",
            "realtime",
            "realtime: step at 20 Hz of wall-clock time, holding the last target; lockstep: "
            "one step per received target pose",
        )
        if self.mode not in MODES:
            raise ValueError(f"parameter mode must be one of {MODES}, got {self.mode!r}")
        use_camera = declare(self, "use_camera", False, "render and publish camera images")
        cameras = declare(
            self,
            "cameras",
            list(CAMERAS),
            f"cameras published when use_camera is true, of {list(CAMERAS)}: the scene camera "
            "on image_topic, the wrist camera on wrist_image_topic",
        )
        image_size = declare(self, "image_size", 84, "image side (pixels)", integer_range=(16, 512))
        seed = declare(
            self,
            "seed",
            0,
            "seed of the start-up episode and the first reset; each further reset adds one",
        )
        self.base_frame = declare(self, "base_frame", "panda_link0", "frame_id of poses")
        self.arm_joints = declare(self, "arm_joints", ARM_JOINTS, "names of the 7 arm joints")
        self.finger_joints = declare(
            self, "finger_joints", FINGER_JOINTS, "names of the 2 finger joints"
        )
        if len(self.arm_joints) != 7 or len(self.finger_joints) != 2:
            raise ValueError(
                f"arm_joints needs 7 names and finger_joints 2, got {self.arm_joints} and "
                f"{self.finger_joints}"
            )
        topics = {name: declare(self, name, *spec) for name, spec in TOPICS.items()}

        env = FrankaSimEnv(
            task, cameras=tuple(cameras) if use_camera else (), image_size=image_size
        )
        self.arm = CommandedArm(env, seed)

        observation_qos = qos_profile_sensor_data  # latest value matters, not every sample
        command_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.joint_publisher = self.create_publisher(
            JointState, topics["joint_states_topic"], observation_qos
        )
        self.pose_publisher = self.create_publisher(
            PoseStamped, topics["current_pose_topic"], observation_qos
        )
        self.object_publisher = self.create_publisher(
            PoseStamped, topics["object_pose_topic"], observation_qos
        )
        self.image_publishers = {
            key: self.create_publisher(Image, topics[f"{key}_topic"], observation_qos)
            for key in env.cameras
        }
        self.success_publisher = self.create_publisher(Bool, topics["success_topic"], command_qos)
        if env.goal_pos is not None:
            latched = QoSProfile(
                depth=1,
                reliability=ReliabilityPolicy.RELIABLE,
                durability=DurabilityPolicy.TRANSIENT_LOCAL,
            )
            goal_publisher = self.create_publisher(PoseStamped, topics["goal_pose_topic"], latched)
            goal_publisher.publish(
                pose_message(
                    env.goal_pos,
                    [0.0, 0.0, 0.0, 1.0],
                    self.base_frame,
                    self.get_clock().now().to_msg(),
                )
            )
        # Created before the target subscription: when both are waiting, rclpy takes them in
        # creation order, so a lockstep step sees the gripper command sent with its target.
        self.create_subscription(
            Float64, topics["gripper_command_topic"], self._on_gripper, command_qos
        )
        self.create_subscription(
            PoseStamped, topics["target_pose_topic"], self._on_target, command_qos
        )
        self.create_service(Trigger, "~/reset", self._on_reset)
        self._last_publish = time.monotonic()
        if self.mode == "realtime":
            self.create_timer(1.0 / CONTROL_RATE, self._on_tick)
        else:
            # Observations go out best-effort: one lost in lockstep would leave the sim
            # waiting for a command and the policy waiting for an observation. Re-publishing
            # the (unchanged) state when idle breaks that deadlock; it does not step the sim.
            self.create_timer(LOCKSTEP_IDLE_REPUBLISH / 2, self._on_idle)
        self._publish(self.arm.state)
        self.get_logger().info(
            f"simulating {task} in {self.mode} mode, cameras: {list(env.cameras) or 'none'}"
        )

    def _on_target(self, message: PoseStamped) -> None:
        frame = message.header.frame_id
        if frame and frame != self.base_frame:
            self.get_logger().error(
                f"ignoring a target pose in frame {frame!r}: targets must be in {self.base_frame!r}"
                " (set parameter base_frame of both nodes to the same frame)",
                throttle_duration_sec=5.0,
            )
            return
        try:
            self.arm.set_target(*pose_arrays(message))
        except ValueError as error:
            self.get_logger().error(f"ignoring target pose: {error}", throttle_duration_sec=5.0)
            return
        if self.mode == "lockstep":
            self._publish(self.arm.step())

    def _on_gripper(self, message: Float64) -> None:
        try:
            self.arm.set_gripper(message.data)
        except ValueError as error:
            self.get_logger().error(f"ignoring gripper command: {error}", throttle_duration_sec=5.0)

    def _on_tick(self) -> None:
        self._publish(self.arm.step())

    def _on_idle(self) -> None:
        if time.monotonic() - self._last_publish > LOCKSTEP_IDLE_REPUBLISH:
            self._publish(self.arm.state)

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        seed = self.arm.next_seed
        self._publish(self.arm.reset())
        response.success = True
        response.message = f"new episode (seed {seed})"
        return response

    def _publish(self, state: ArmState) -> None:
        self._last_publish = time.monotonic()
        try:
            self._publish_messages(state)
        except RCLError:
            if self.context.ok():
                raise
            # Ctrl-C shut the context down during this step: there is no one to publish to.

    def _publish_messages(self, state: ArmState) -> None:
        stamp = self.get_clock().now().to_msg()
        obs = state.observation
        joints = JointState()
        joints.header.stamp = stamp
        joints.header.frame_id = self.base_frame
        joints.name = [*self.arm_joints, *self.finger_joints]
        half_width = float(obs["gripper_width"][0]) / 2
        joints.position = [float(v) for v in obs["joint_pos"]] + [half_width, half_width]
        self.joint_publisher.publish(joints)
        self.pose_publisher.publish(
            pose_message(obs["eef_pos"], obs["eef_quat"], self.base_frame, stamp)
        )
        self.object_publisher.publish(
            pose_message(obs["object_pos"], obs["object_quat"], self.base_frame, stamp)
        )
        for key, publisher in self.image_publishers.items():
            image = image_message(obs[key], f"{key}_optical_frame")
            image.header.stamp = stamp
            publisher.publish(image)
        self.success_publisher.publish(Bool(data=state.success))

    def destroy_node(self) -> None:
        self.arm.env.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node(FrankaSimNode, "franka_sim_node", args)


if __name__ == "__main__":
    main()
