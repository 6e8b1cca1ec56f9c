"""Arm-side parameters and messages shared by the nodes that command or watch the arm.

The policy node is the only node that publishes ``target_pose`` and ``gripper_command`` (a
Cartesian controller such as crisp_controllers' ignores a target topic with two publishers):
it executes the policy's actions and, on request, homes the arm, both through the arm command
adapter and the safety envelope. The reward/reset node asks it to home the arm and watches the
pose arrive. Both declare the home pose with the same parameter names (`declare_home`), so one
``/**`` section of the parameter file configures both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from std_msgs.msg import Float64

from cfgrl_ros.arm.command_adapter import AdapterConfig, ArmCommand, ArmCommandAdapter
from cfgrl_ros.arm.gripper import (
    FrankaGripperClient,
    GripperCommandClient,
    GripperSettings,
    make_gripper_client,
    select_gripper_backend,
)
from cfgrl_ros.arm.robot_mode import RobotStateSubscriber, attach_robot_mode_guard
from cfgrl_ros.arm.safety import SafetyEnvelope, rotation_angle
from cfgrl_ros.nodes.node_support import declare, require_positive

TARGET_POSE_TOPIC = "target_pose"
GRIPPER_COMMAND_TOPIC = "gripper_command"
# A Panda's joint names in joint_states (franka_ros2 and the simulator).
ARM_JOINTS = [f"panda_joint{i}" for i in range(1, 8)]
FINGER_JOINTS = ["panda_finger_joint1", "panda_finger_joint2"]
# The cameras' image topics (the realsense2_camera driver's names; the wrist camera in its own
# camera namespace), by observation image key.
IMAGE_TOPICS = {
    "image": "camera/camera/color/image_raw",
    "wrist_image": "wrist_camera/camera/color/image_raw",
}
CURRENT_POSE_TOPIC = "franka_robot_state_broadcaster/current_pose"

_ADAPTER_PARAMETERS: dict[str, str] = {
    "max_translation": "metres per control step for a translation action of 1",
    "max_rotation": "radians per control step for a rotation action of 1",
    "workspace_low": "lower corner (x, y, z) of the box targets are clipped to, base frame, m",
    "workspace_high": "upper corner (x, y, z) of the box targets are clipped to, base frame, m",
    "gripper_open_width": "finger opening commanded for grip <= 0 (m)",
    "gripper_closed_width": "finger opening commanded for grip > 0 (m)",
}


def declare_adapter(node: Any) -> ArmCommandAdapter:
    """Declare the adapter's parameters on `node` and build the adapter from their values.

    Raises ValueError (from AdapterConfig) naming the bad setting.
    """
    defaults = AdapterConfig()
    values = {}
    for name, description in _ADAPTER_PARAMETERS.items():
        default = getattr(defaults, name)
        default = [float(v) for v in default] if isinstance(default, tuple) else float(default)
        values[name] = declare(node, name, default, description)
    values["workspace_low"] = tuple(values["workspace_low"])
    values["workspace_high"] = tuple(values["workspace_high"])
    return ArmCommandAdapter(AdapterConfig(**values))


def declare_joint_names(node: Any) -> tuple[list[str], list[str]]:
    """The ``arm_joints`` (7, in order) and ``finger_joints`` (summed into the gripper width)
    parameters: the names in joint_states (an FR3's are fr3_joint1..., config/franka_real.yaml)."""
    arm = declare(node, "arm_joints", ARM_JOINTS, "the 7 arm joints, in order")
    fingers = declare(node, "finger_joints", FINGER_JOINTS, "finger joints (summed into the width)")
    return arm, fingers


def declare_gripper_midpoint(node: Any) -> float:
    """The commanded finger opening below which the gripper counts as closed: halfway between
    the adapter's ``gripper_open_width`` and ``gripper_closed_width`` (declared here with the
    adapter's defaults, so the files' shared values apply), as ArmCommandAdapter.action reads
    a recorded command."""
    defaults = AdapterConfig()
    widths = [
        declare(node, name, float(getattr(defaults, name)), _ADAPTER_PARAMETERS[name])
        for name in ("gripper_open_width", "gripper_closed_width")
    ]
    return sum(widths) / 2


def pose_message(
    position: np.ndarray, quaternion: np.ndarray, frame_id: str, stamp: Any
) -> PoseStamped:
    """A PoseStamped from a position (3,) and an (x, y, z, w) quaternion (4,)."""
    message = PoseStamped()
    message.header.stamp = stamp
    message.header.frame_id = frame_id
    message.pose.position.x, message.pose.position.y, message.pose.position.z = (
        float(v) for v in position
    )
    orientation = message.pose.orientation
    orientation.x, orientation.y, orientation.z, orientation.w = (float(v) for v in quaternion)
    return message


def command_messages(command: ArmCommand, frame_id: str, stamp: Any) -> tuple[PoseStamped, Float64]:
    """The /target_pose and /gripper_command messages of an arm command."""
    target = pose_message(command.target_pos, command.target_quat, frame_id, stamp)
    return target, Float64(data=float(command.gripper_width))


def declare_gripper_settings(
    node: Any, adapter_config: AdapterConfig, envelope: SafetyEnvelope
) -> GripperSettings:
    """The gripper goals' settings: the adapter's widths, ``gripper_speed`` and ``grasp_force``.

    A grasp force above the envelope's ``safety.max_grasp_force`` is lowered to it (counted by
    the envelope, and logged).
    """
    requested_force = declare(
        node,
        "grasp_force",
        GripperSettings.grasp_force,
        "grasp force (N); lowered to safety.max_grasp_force if above it",
    )
    grasp_force = envelope.limit_grasp_force(requested_force)
    if grasp_force != requested_force:
        node.get_logger().warning(
            f"grasp_force {requested_force} N is above safety.max_grasp_force: grasping with "
            f"{grasp_force} N"
        )
    return GripperSettings(
        open_width=adapter_config.gripper_open_width,
        closed_width=adapter_config.gripper_closed_width,
        speed=declare(node, "gripper_speed", GripperSettings.speed, "finger speed (m/s)"),
        grasp_force=grasp_force,
    )


def declare_gripper(
    node: Any, settings: GripperSettings
) -> FrankaGripperClient | GripperCommandClient | None:
    """The real gripper's action client chosen by parameter ``gripper_backend`` (None: topic).

    Raises GripperBackendError naming the package to install.
    """
    requested = declare(
        node,
        "gripper_backend",
        "topic",
        "how gripper commands reach the gripper: topic (gripper_command only, the simulator), "
        "franka (franka_gripper actions), gripper_command (control_msgs), auto (first available)",
    )
    backend = select_gripper_backend(requested)
    return make_gripper_client(node, backend, settings, namespace=node.get_namespace())


@dataclass(frozen=True)
class HomePose:
    """Where the real arm's reset moves the arm, and when it counts as there (base frame)."""

    position: np.ndarray  # (3,) m
    orientation: np.ndarray  # (4,) unit (x, y, z, w)
    tolerance: float  # m
    rotation_tolerance: float  # rad
    timeout: float  # s allowed for homing
    speed_scale: float  # fraction of the adapter's maximum step per control step

    def reached(self, position: np.ndarray, quaternion: np.ndarray) -> bool:
        """Whether the pose (position, quaternion) is within the tolerances of home."""
        quaternion = np.asarray(quaternion, dtype=np.float64)
        angle = rotation_angle(self.orientation, quaternion / np.linalg.norm(quaternion))
        distance = float(np.linalg.norm(self.position - np.asarray(position)))
        return distance <= self.tolerance and angle <= self.rotation_tolerance

    def action(
        self, adapter: ArmCommandAdapter, position: np.ndarray, quaternion: np.ndarray
    ) -> np.ndarray:
        """The normalised action from the pose towards home, gripper open, at most speed_scale."""
        home = ArmCommand(self.position, self.orientation, adapter.config.gripper_open_width)
        action = adapter.action(position, quaternion, home)
        action[:6] = np.clip(action[:6], -self.speed_scale, self.speed_scale)
        return action


def declare_home(node: Any) -> HomePose:
    """Declare the home pose's parameters on `node` (the same names on every node).

    Raises ValueError naming the bad setting.
    """
    position = np.asarray(
        declare(node, "home_position", [0.45, 0.0, 0.25], "home position, base frame (m)")
    )
    orientation = np.asarray(
        declare(node, "home_orientation", [1.0, 0.0, 0.0, 0.0], "home orientation (x, y, z, w)")
    )
    if (
        position.shape != (3,)
        or orientation.shape != (4,)
        or not np.all(np.isfinite(position))
        or not np.all(np.isfinite(orientation))
        or np.linalg.norm(orientation) < 1e-6
    ):
        raise ValueError(
            "home_position needs 3 numbers (m) and home_orientation 4 (x, y, z, w) of non-zero "
            f"length, got {position.tolist()} and {orientation.tolist()}"
        )
    home = HomePose(
        position=position,
        orientation=orientation / np.linalg.norm(orientation),
        tolerance=declare(
            node, "home_tolerance", 0.01, "metres from the home position that count as home"
        ),
        rotation_tolerance=declare(
            node, "home_rotation_tolerance", 0.05, "radians from the home orientation that count"
        ),
        timeout=declare(node, "home_timeout", 30.0, "seconds allowed for homing"),
        speed_scale=declare(
            node,
            "home_speed_scale",
            0.5,
            "homing moves at most this fraction of the adapter's maximum step per control step",
            float_range=(0.0, 1.0),
        ),
    )
    require_positive(
        {
            "home_tolerance": home.tolerance,
            "home_rotation_tolerance": home.rotation_tolerance,
            "home_timeout": home.timeout,
            "home_speed_scale": home.speed_scale,
        }
    )
    return home


def declare_robot_mode_guard(node: Any) -> RobotStateSubscriber | None:
    """franka_ros2's robot mode guard when parameter ``robot_mode_guard`` is true, else None."""
    enabled = declare(
        node,
        "robot_mode_guard",
        False,
        "command the arm only while franka_ros2 reports robot mode MOVE (needs franka_msgs)",
    )
    timeout = declare(
        node, "robot_state_timeout", 0.5, "seconds without a robot state that block the arm"
    )
    if not enabled:
        return None
    return attach_robot_mode_guard(node, namespace=node.get_namespace(), timeout=timeout)
