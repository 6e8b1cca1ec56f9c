"""The teleop node: a SpaceMouse or joystick becomes the operator's action for the policy node.

    ros2 run cfgrl_ros teleop_node --ros-args -p twist_topic:=spacenav/twist

Reads geometry_msgs/Twist on ``twist_topic`` and sensor_msgs/Joy on ``joy_topic`` (the
``spacenav`` driver's by default; ``teleop_twist_joy``'s ``cmd_vel`` and ``joy`` work the same)
and publishes, at ``publish_rate``, the normalised action they make on ``teleop/action`` (the
contract is in cfgrl_ros.nodes.decision_messages; the mapping and its parameters in
cfgrl_ros.teleop.twist_input). It publishes nothing while the twist is older than
``input_timeout`` or the dead-man button is not held: the policy node then holds the arm.

Buttons: the gripper button toggles the gripper; the takeover button calls the policy node's
``~/takeover`` (``takeover_service``) with true, and with false at the next press, so the
operator takes the arm from the policy and hands it back (at a takeover the gripper stays as
the policy last commanded it on ``gripper_command``, closed below the midpoint of the adapter's
``gripper_open_width`` and ``gripper_closed_width``, so a held object is not dropped; an
episode starts with it open, as homing and the simulator's reset leave it); the success and
failure buttons call the reward/reset node's ``~/mark_success`` and ``~/mark_failure``. Every
refusal is logged with its reason. The node never commands the arm itself: the policy node
does, through the adapter and the safety envelope. Diagnostics: twists accepted, refused (NaN,
infinite, beyond ``max_input``) and clipped.
"""

from __future__ import annotations

from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Twist
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Float64, String
from std_srvs.srv import SetBool, Trigger

from cfgrl_ros.nodes.arm_interface import GRIPPER_COMMAND_TOPIC, declare_gripper_midpoint
from cfgrl_ros.nodes.decision_messages import (
    EPISODE_EVENT_TOPIC,
    OPERATOR_ACTION_TOPIC,
    TAKEOVER_SERVICE,
    event_qos,
    exchange_qos,
    operator_action_message,
)
from cfgrl_ros.nodes.node_support import (
    declare,
    declare_settings,
    diagnostic_status,
    now_seconds,
    publish_diagnostics,
    require_positive,
    run_node,
)
from cfgrl_ros.teleop.twist_input import TeleopConfig, TeleopInput


class TeleopNode(Node):
    def __init__(self, **node_options: Any) -> None:
        super().__init__("teleop_node", **node_options)
        self.input = TeleopInput(declare_settings(self, TeleopConfig))
        twist_topic = declare(self, "twist_topic", "spacenav/twist", "geometry_msgs/Twist input")
        joy_topic = declare(self, "joy_topic", "spacenav/joy", "sensor_msgs/Joy buttons")
        publish_rate = declare(
            self, "publish_rate", 20.0, "operator actions per second (the control rate)"
        )
        takeover_service = declare(
            self, "takeover_service", TAKEOVER_SERVICE, "the policy node's takeover service"
        )
        success_service = declare(
            self,
            "mark_success_service",
            "reward_reset_node/mark_success",
            "the reward/reset node's service that ends an episode in success",
        )
        failure_service = declare(
            self,
            "mark_failure_service",
            "reward_reset_node/mark_failure",
            "the reward/reset node's service that ends an episode in failure",
        )
        self.gripper_closed_below = declare_gripper_midpoint(self)
        require_positive({"publish_rate": publish_rate})
        self.commanded_width: float | None = None

        self.operator_driving = False  # as the policy node last answered
        self.calls = {
            "takeover": self.create_client(SetBool, takeover_service),
            "success": self.create_client(Trigger, success_service),
            "failure": self.create_client(Trigger, failure_service),
        }
        # Drivers publish reliably or not; a best-effort subscription takes either.
        self.create_subscription(Twist, twist_topic, self._on_twist, qos_profile_sensor_data)
        self.create_subscription(Joy, joy_topic, self._on_joy, qos_profile_sensor_data)
        self.create_subscription(
            Float64, GRIPPER_COMMAND_TOPIC, self._on_gripper_command, qos_profile_sensor_data
        )
        self.create_subscription(String, EPISODE_EVENT_TOPIC, self._on_event, event_qos(10))
        self.action_publisher = self.create_publisher(
            JointState, OPERATOR_ACTION_TOPIC, exchange_qos(1)
        )
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0 / publish_rate, self._publish_action)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(
            f"operator input from {self.resolve_topic_name(twist_topic)} and "
            f"{self.resolve_topic_name(joy_topic)}; actions on "
            f"{self.resolve_topic_name(OPERATOR_ACTION_TOPIC)}"
        )

    def _on_twist(self, message: Twist) -> None:
        linear, angular = message.linear, message.angular
        try:
            self.input.twist(
                (linear.x, linear.y, linear.z), (angular.x, angular.y, angular.z), now_seconds(self)
            )
        except ValueError as error:
            self.get_logger().error(str(error), throttle_duration_sec=2.0)

    def _on_gripper_command(self, message: Float64) -> None:
        self.commanded_width = float(message.data)

    def _on_event(self, message: String) -> None:
        if message.data == "start":
            self.input.grip = -1.0
        elif message.data in ("success", "failure"):
            self.operator_driving = False  # the policy node hands back at an episode's end

    def _on_joy(self, message: Joy) -> None:
        try:
            pressed = self.input.joy(message.buttons)
        except ValueError as error:
            self.get_logger().error(str(error), throttle_duration_sec=5.0)
            return
        for button in pressed:
            if button == "gripper":
                state = "closed" if self.input.grip > 0 else "open"
                self.get_logger().info(f"gripper {state}")
            elif button == "takeover":
                take = not self.operator_driving
                if take and self.commanded_width is not None:  # before the first action goes
                    closed = self.commanded_width < self.gripper_closed_below
                    self.input.grip = 1.0 if closed else -1.0
                self._call("takeover", SetBool.Request(data=take))
            else:
                self._call(button, Trigger.Request())

    def _call(self, name: str, request: Any) -> None:
        client = self.calls[name]
        if not client.service_is_ready():
            self.get_logger().error(f"{client.srv_name} is not available: is its node running?")
            return
        future = client.call_async(request)
        future.add_done_callback(lambda done: self._answered(name, request, done.result()))

    def _answered(self, name: str, request: Any, response: Any) -> None:
        if response is None:
            return
        if name == "takeover" and response.success:
            self.operator_driving = request.data
        log = self.get_logger().info if response.success else self.get_logger().warning
        log(f"{self.calls[name].srv_name}: {response.message}")

    def _publish_action(self) -> None:
        now = now_seconds(self)
        action = self.input.action(now)
        if action is None:
            if self.operator_driving:
                reason = self.input.holding_reason(now)
                self.get_logger().warning(f"the arm holds: {reason}", throttle_duration_sec=2.0)
            return
        stamp = self.get_clock().now().nanoseconds
        self.action_publisher.publish(operator_action_message(stamp, action))

    def _publish_diagnostics(self) -> None:
        counts = self.input.counts
        values = {
            **counts,
            "operator_driving": self.operator_driving,
            "gripper": "closed" if self.input.grip > 0 else "open",
            "holding": self.input.holding_reason(now_seconds(self)) or "no",
        }
        level = DiagnosticStatus.WARN if counts["refused"] else DiagnosticStatus.OK
        message = f"{counts['twists']} twists, {counts['refused']} refused"
        status = diagnostic_status(self, "input", message, values, level)
        publish_diagnostics(self, self.diagnostics_publisher, status)


def main(args: list[str] | None = None) -> None:
    run_node(TeleopNode, "teleop_node", args)


if __name__ == "__main__":
    main()
