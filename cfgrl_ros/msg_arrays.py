"""Read ROS messages into numpy arrays.

Duck-typed on field names, so the same functions read rclpy messages (live nodes) and rosbags
messages (recordings): both carry the fields of the .msg definitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np


def stamp_seconds(stamp: Any) -> float:
    """builtin_interfaces/Time as float seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def pose_arrays(pose: Any) -> tuple[np.ndarray, np.ndarray]:
    """geometry_msgs/Pose (or PoseStamped) -> position (3,), quaternion (4,) as x, y, z, w."""
    pose = getattr(pose, "pose", pose)
    position = np.array([pose.position.x, pose.position.y, pose.position.z], dtype=np.float64)
    q = pose.orientation
    return position, np.array([q.x, q.y, q.z, q.w], dtype=np.float64)


def joint_arrays(
    msg: Any, arm_joints: Sequence[str], finger_joints: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """sensor_msgs/JointState -> arm joint positions (len(arm_joints),), gripper width (1,).

    The gripper width is the sum of the finger joint positions (each finger moves half of it).
    Raises ValueError naming the joints that are missing, so a wrong joint-name configuration
    is reported instead of producing garbage.
    """
    index = {name: i for i, name in enumerate(msg.name)}
    missing = [name for name in (*arm_joints, *finger_joints) if name not in index]
    if missing:
        raise ValueError(
            f"joint_states lacks joints {missing}; it has {list(msg.name)}. "
            "Set the arm_joints / finger_joints parameters to this robot's joint names."
        )
    position = np.asarray(msg.position, dtype=np.float64)
    arm = position[[index[name] for name in arm_joints]]
    width = position[[index[name] for name in finger_joints]].sum(keepdims=True)
    return arm, width


def arm_observation(
    joint_states: Any,
    current_pose: Any,
    arm_joints: Sequence[str],
    finger_joints: Sequence[str],
    object_pose: Any = None,
) -> dict[str, np.ndarray]:
    """The arm's observation fields (cfgrl_ros.observation) from its messages: joint positions,
    gripper width, end-effector pose, and the object pose when its message is given."""
    joint_pos, gripper_width = joint_arrays(joint_states, arm_joints, finger_joints)
    eef_pos, eef_quat = pose_arrays(current_pose)
    observation = {
        "joint_pos": joint_pos,
        "gripper_width": gripper_width,
        "eef_pos": eef_pos,
        "eef_quat": eef_quat,
    }
    if object_pose is not None:
        observation["object_pos"], observation["object_quat"] = pose_arrays(object_pose)
    return observation


def image_array(msg: Any, size: tuple[int, int] | None = None) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) or CompressedImage -> uint8 RGB.

    `size` is (width, height) to resize to, with area interpolation (images shrink).
    """
    if hasattr(msg, "format"):  # CompressedImage
        buffer = np.frombuffer(bytes(msg.data), dtype=np.uint8)
        bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot decode compressed image of format {msg.format!r}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    else:
        conversions = {
            "rgb8": (3, None),
            "bgr8": (3, cv2.COLOR_BGR2RGB),
            "rgba8": (4, cv2.COLOR_RGBA2RGB),
            "bgra8": (4, cv2.COLOR_BGRA2RGB),
            "mono8": (1, cv2.COLOR_GRAY2RGB),
        }
        if msg.encoding not in conversions:
            raise ValueError(
                f"image encoding {msg.encoding!r} is not supported; use one of {list(conversions)}"
            )
        channels, code = conversions[msg.encoding]
        data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
        expected = msg.height * msg.step
        if data.size < expected:
            raise ValueError(f"image data has {data.size} bytes, expected {expected}")
        rows = data[:expected].reshape(msg.height, msg.step)
        pixels = rows[:, : msg.width * channels].reshape(msg.height, msg.width, channels)
        rgb = pixels if code is None else cv2.cvtColor(pixels, code)
    if size is not None and (rgb.shape[1], rgb.shape[0]) != tuple(size):
        rgb = cv2.resize(rgb, tuple(size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb)
