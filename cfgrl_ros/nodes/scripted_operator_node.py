"""A simulated operator at the SpaceMouse: the scripted expert's hands on the teleop topics.

    ros2 run cfgrl_ros scripted_operator_node --ros-args -p task:=pick_place_can

For the simulated cell only (the graph's ``teleop:=scripted``): it watches the simulator's
observation (object pose and, for pick_place_can, ``goal_pose`` included: what a person at the
cell sees) and, where a person would, drives the arm through exactly the path a person's input
takes: geometry_msgs/Twist on ``twist_topic`` and sensor_msgs/Joy presses on ``joy_topic``,
read by teleop_node. At every ``exec_horizon`` ticks of an episode it asks
cfgrl_ros.sim.scripted_operator whether to drive (no progress for ``operator.patience``
decisions, or the object dropped; at most ``operator.max_takeovers`` times an episode), presses
the takeover button to take the arm, drives ``operator.drive_decisions`` decisions and presses
it again to hand back. With ``drive_every_episode`` (a graph without a policy: recording
demonstrations) it drives every episode from its start. Its twist is the inverse of
teleop_node's mapping, so it takes teleop_node's settings (``axes``, scales, buttons; the graph
copies them from teleop_node's parameter file section).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped, Twist
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Float64, String

from cfgrl_ros.dsrl.agent import DsrlConfig
from cfgrl_ros.msg_arrays import arm_observation, pose_arrays
from cfgrl_ros.nodes.arm_interface import (
    CURRENT_POSE_TOPIC,
    GRIPPER_COMMAND_TOPIC,
    declare_gripper_midpoint,
    declare_joint_names,
)
from cfgrl_ros.nodes.decision_messages import EPISODE_EVENT_TOPIC, event_qos
from cfgrl_ros.nodes.node_support import declare, declare_setting, declare_settings, run_node
from cfgrl_ros.sim.scripted_operator import OperatorConfig, ScriptedOperator
from cfgrl_ros.sim.tasks import TASKS
from cfgrl_ros.teleop.twist_input import BUTTON_ACTIONS, TeleopConfig, TeleopInput

CONTROL_RATE = 20.0  # Hz: the simulator's realtime rate
OBSERVED = ("joint_states", "current_pose", "object_pose")


class ScriptedOperatorNode(Node):
    def __init__(self, **node_options: Any) -> None:
        super().__init__("scripted_operator_node", **node_options)
        self.task = declare(self, "task", "lift", f"simulated task: {', '.join(sorted(TASKS))}")
        if self.task not in TASKS:
            raise ValueError(f"parameter task must be one of {sorted(TASKS)}, got {self.task!r}")
        self.exec_horizon = declare_setting(self, DsrlConfig, "exec_horizon")
        self.operator_config = declare_settings(self, OperatorConfig, "operator.")
        self.teleop = TeleopInput(declare_settings(self, TeleopConfig))
        self.drive_every_episode = declare(
            self,
            "drive_every_episode",
            False,
            "drive every episode from its start (no policy: recording demonstrations)",
        )
        self.gripper_closed_below = declare_gripper_midpoint(self)
        self.arm_joints, self.finger_joints = declare_joint_names(self)
        twist_topic = declare(self, "twist_topic", "spacenav/twist", "Twist published")
        joy_topic = declare(self, "joy_topic", "spacenav/joy", "Joy published")

        self.latest: dict[str, Any] = {}
        self.goal_pos: np.ndarray | None = None
        self.commanded_width: float | None = None
        self.operator: ScriptedOperator | None = None
        self.running = False
        self.ticks = 0
        self.driving = False
        self.grip = -1.0  # teleop_node's gripper, as this node's presses leave it

        for part, message_type, topic in (
            ("joint_states", JointState, "joint_states"),
            ("current_pose", PoseStamped, CURRENT_POSE_TOPIC),
            ("object_pose", PoseStamped, "object_pose"),
        ):
            self.create_subscription(
                message_type,
                topic,
                lambda message, part=part: self.latest.__setitem__(part, message),
                qos_profile_sensor_data,
            )
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self.create_subscription(PoseStamped, "goal_pose", self._on_goal, latched)
        self.create_subscription(
            Float64,
            GRIPPER_COMMAND_TOPIC,
            lambda message: setattr(self, "commanded_width", float(message.data)),
            qos_profile_sensor_data,
        )
        self.create_subscription(String, EPISODE_EVENT_TOPIC, self._on_event, event_qos(10))
        self.twist_publisher = self.create_publisher(Twist, twist_topic, 10)
        self.joy_publisher = self.create_publisher(Joy, joy_topic, 10)
        self.create_timer(1.0 / CONTROL_RATE, self._tick)
        self.get_logger().info(
            f"scripted operator for {self.task}: "
            + ("drives every episode" if self.drive_every_episode else "takes over when stuck")
        )

    def _on_goal(self, message: PoseStamped) -> None:
        self.goal_pos, _ = pose_arrays(message)

    def _on_event(self, message: String) -> None:
        if message.data == "start":
            self.running, self.ticks, self.driving, self.grip = True, 0, False, -1.0
        elif message.data in ("success", "failure"):
            self.running = self.driving = False  # the policy node hands back by itself

    def _observation(self) -> dict[str, np.ndarray] | None:
        if any(part not in self.latest for part in OBSERVED):
            return None
        latest = self.latest
        return arm_observation(
            latest["joint_states"],
            latest["current_pose"],
            self.arm_joints,
            self.finger_joints,
            latest["object_pose"],
        )

    def _tick(self) -> None:
        obs = self._observation() if self.running else None
        if obs is None:
            return
        if self.ticks == 0 and not self._start_episode(obs):
            self.running = False
            return
        if self.ticks % self.exec_horizon == 0 and not self.drive_every_episode:
            drives = self.operator.drives(obs)
            if drives != self.driving:
                if drives and self.commanded_width is not None:  # teleop_node does the same
                    self.grip = 1.0 if self.commanded_width < self.gripper_closed_below else -1.0
                self._press(self.teleop.config.takeover_button)
                self.get_logger().info("taking over" if drives else "handing back")
            self.driving = drives
        self.ticks += 1
        if not self.driving:
            return
        action = self.operator.act(obs)
        grip = 1.0 if action[6] > 0 else -1.0
        if grip != self.grip:
            self._press(self.teleop.config.gripper_button)
            self.grip = grip
        linear, angular = self.teleop.twist_for(action)
        twist = Twist()
        twist.linear.x, twist.linear.y, twist.linear.z = (float(v) for v in linear)
        twist.angular.x, twist.angular.y, twist.angular.z = (float(v) for v in angular)
        self.twist_publisher.publish(twist)

    def _start_episode(self, obs: dict[str, np.ndarray]) -> bool:
        if self.task == "pick_place_can" and self.goal_pos is None:
            self.get_logger().error("no goal_pose from the simulator: cannot drive this episode")
            return False
        self.operator = ScriptedOperator(self.task, self.goal_pos, self.operator_config)
        self.operator.reset(obs)
        if self.drive_every_episode:
            self.operator.take_over(obs)
            self.driving = True
        return True

    def _press(self, button: int) -> None:
        """Press and release `button` on a device with every button teleop_node maps."""
        if button < 0:
            return
        mapped = (*BUTTON_ACTIONS, "deadman")
        count = max(self.teleop.config.button(name) for name in mapped) + 1
        for down in (1, 0):
            buttons = [0] * count
            buttons[button] = down
            self.joy_publisher.publish(Joy(buttons=buttons))


def main(args: list[str] | None = None) -> None:
    run_node(ScriptedOperatorNode, "scripted_operator_node", args)


if __name__ == "__main__":
    main()
