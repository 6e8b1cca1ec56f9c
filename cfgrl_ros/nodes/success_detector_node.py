"""The success detector node: a learned detector watches the cameras, says when the task is done.

    ros2 run cfgrl_ros success_detector_node --ros-args -p detector:=detector.pt

Scores the latest observation (the camera frames and the arm's state the detector was trained
on, `cfgrl-ros train-success`) at ``rate`` while an episode runs, publishes the score on
``success_score`` (std_msgs/Float64) and ``success`` (std_msgs/Bool) true once the score has
stayed at or above ``threshold`` for ``hold_ticks`` scores in a row (false otherwise). The
reward/reset node ends the episode on it (``use_success_topic``), so the operator no longer
labels every episode. Between episodes nothing is scored. Frames older than ``max_age`` are not
scored (a silent camera is named in the log); images of another size are resized, and a
detector trained on cameras the node is not given, or a checkpoint that is not a detector,
stops the node at start with the reason. Diagnostics: scores, detections, the latest score.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64, String

from cfgrl_ros.msg_arrays import arm_observation, image_array, stamp_seconds
from cfgrl_ros.nodes.arm_interface import CURRENT_POSE_TOPIC, IMAGE_TOPICS, declare_joint_names
from cfgrl_ros.nodes.decision_messages import EPISODE_EVENT_TOPIC, event_qos
from cfgrl_ros.nodes.node_support import (
    declare,
    declare_setting,
    diagnostic_status,
    now_seconds,
    publish_diagnostics,
    require_positive,
    run_node,
)
from cfgrl_ros.success.detector import SuccessDetector
from cfgrl_ros.success.training import SuccessTrainConfig


class SuccessDetectorNode(Node):
    def __init__(self, **node_options: Any) -> None:
        super().__init__("success_detector_node", **node_options)
        path = declare(
            self, "detector", "", "success detector checkpoint (cfgrl-ros train-success)"
        )
        if not path:
            raise ValueError("parameter detector is empty: pass a `cfgrl-ros train-success` file")
        self.detector = SuccessDetector.load(path)
        # The detection rule `train-success` evaluated the detector with.
        self.threshold = declare_setting(self, SuccessTrainConfig, "threshold")
        self.hold_ticks = declare_setting(self, SuccessTrainConfig, "hold_ticks")
        self.arm_joints, self.finger_joints = declare_joint_names(self)
        rate = declare(self, "rate", 20.0, "scores per second while an episode runs")
        self.max_age = declare(
            self, "max_age", 0.25, "seconds: older frames and states are not scored"
        )
        require_positive({"rate": rate, "max_age": self.max_age})
        spec = self.detector.config.observation
        topics = {
            "joint_states": (JointState, "joint_states"),
            "current_pose": (PoseStamped, CURRENT_POSE_TOPIC),
        }
        for key in spec.image_keys:
            topic = declare(self, f"{key}_topic", IMAGE_TOPICS[key], f"camera topic of {key!r}")
            topics[key] = (Image, topic)
        self.latest: dict[str, Any] = {}
        self.topic_names = {
            part: self.create_subscription(
                message_type,
                topic,
                lambda message, part=part: self.latest.__setitem__(part, message),
                qos_profile_sensor_data,
            ).topic_name
            for part, (message_type, topic) in topics.items()
        }
        self.create_subscription(String, EPISODE_EVENT_TOPIC, self._on_event, event_qos(10))
        self.success_publisher = self.create_publisher(Bool, "success", 10)
        self.score_publisher = self.create_publisher(Float64, "success_score", 10)
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.running = False
        self.run = 0  # scores in a row at or above the threshold
        self.counts = {"scores": 0, "detections": 0}
        self.last_score = float("nan")
        self.create_timer(1.0 / rate, self._score)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(
            f"success detector {path}: reads {spec.describe()}; success after {self.hold_ticks} "
            f"scores >= {self.threshold}"
        )

    def _on_event(self, message: String) -> None:
        self.running = message.data == "start"
        self.run = 0

    def _observation(self) -> dict[str, np.ndarray] | None:
        """The latest observation, None (logged) when a part is missing or too old."""
        now = now_seconds(self)
        silent = [
            self.topic_names[part]
            for part in self.topic_names
            if part not in self.latest
            or now - stamp_seconds(self.latest[part].header.stamp) > self.max_age
        ]
        if silent:
            self.get_logger().warning(
                f"not scoring: nothing recent on {', '.join(silent)}", throttle_duration_sec=5.0
            )
            return None
        observation = arm_observation(
            self.latest["joint_states"],
            self.latest["current_pose"],
            self.arm_joints,
            self.finger_joints,
        )
        height, width = self.detector.config.observation.image_size
        for key in self.detector.config.observation.image_keys:
            observation[key] = image_array(self.latest[key], (width, height))
        return observation

    def _score(self) -> None:
        if not self.running:
            return
        try:
            observation = self._observation()
        except ValueError as error:  # an image encoding or joint names that do not fit
            self.get_logger().error(str(error), throttle_duration_sec=5.0)
            return
        if observation is None:
            return
        score = float(self.detector.scores(observation)[0])
        self.counts["scores"] += 1
        self.last_score = score
        self.run = self.run + 1 if score >= self.threshold else 0
        done = self.run >= self.hold_ticks
        if done and self.run == self.hold_ticks:
            self.counts["detections"] += 1
            self.get_logger().info(f"success detected (score {score:.2f})")
        self.score_publisher.publish(Float64(data=score))
        self.success_publisher.publish(Bool(data=done))

    def _publish_diagnostics(self) -> None:
        values = {**self.counts, "score": f"{self.last_score:.3f}", "episode_running": self.running}
        message = f"{self.counts['detections']} successes detected"
        status = diagnostic_status(self, "success", message, values)
        publish_diagnostics(self, self.diagnostics_publisher, status)


def main(args: list[str] | None = None) -> None:
    run_node(SuccessDetectorNode, "success_detector_node", args)


if __name__ == "__main__":
    main()
