"""The bag recorder: live episodes -> one rosbag2 bag per episode, the layout `pretrain` reads.

    ros2 run cfgrl_ros bag_recorder_node --ros-args -p out:=runs/demos

Subscribes to the topics of the topic map (``topic_map``, default the package's
config/topics.yaml: joint states, end-effector pose, object pose, cameras, commanded target and
gripper, episode events, success), taken relative to the node's namespace, and hands every
message with its receive time to cfgrl_ros.data.episode_recorder, which writes each episode
(from ``episode_event`` "start" to "success" or "failure") into ``out/episode_NNNNNN`` under
the topic map's names. Teleoperated demonstrations and policy episodes with interventions are
recorded alike, on a real arm or in sim; ``cfgrl-ros pretrain --bag out`` reads them all. A
topic nobody publishes is simply absent from the bags (a real cell without an object pose).
Ctrl-C keeps every finished episode and drops the one running.
"""

from __future__ import annotations

from typing import Any

from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64, String

from cfgrl_ros.data.episode_recorder import EpisodeRecorder
from cfgrl_ros.data.topic_map import TOPIC_KEYS, load_topic_map
from cfgrl_ros.nodes.decision_messages import event_qos
from cfgrl_ros.nodes.node_support import declare, run_node

# Topic map key -> the message type recorded (what this package's nodes and franka_ros2 publish).
MESSAGE_TYPES: dict[str, type] = {
    "joint_states": JointState,
    "current_pose": PoseStamped,
    "object_pose": PoseStamped,
    "image": Image,
    "wrist_image": Image,
    "target_pose": PoseStamped,
    "gripper_command": Float64,
    "episode_event": String,
    "success": Bool,
}
assert set(MESSAGE_TYPES) == set(TOPIC_KEYS)


def type_name(message_type: type) -> str:
    """'sensor_msgs/msg/JointState' for sensor_msgs.msg.JointState."""
    return f"{message_type.__module__.split('.')[0]}/msg/{message_type.__name__}"


class BagRecorderNode(Node):
    def __init__(self, **node_options: Any) -> None:
        super().__init__("bag_recorder_node", **node_options)
        out = declare(self, "out", "", "folder of the episode bags (created; appended to)")
        topic_map_file = declare(
            self, "topic_map", "", "topic map YAML (empty: the package's config/topics.yaml)"
        )
        task = declare(self, "task", "", "the simulated task recorded (empty: a real arm)")
        if not out:
            raise ValueError("parameter out is empty: give the folder to record episodes into")
        topic_map = load_topic_map(topic_map_file or None)
        if not topic_map.episode_event:
            raise ValueError(
                "the topic map has no episode_event topic: the recorder cuts episodes at its "
                "events (set episode_event in the topic map)"
            )
        keys = [key for key in TOPIC_KEYS if getattr(topic_map, key)]
        topics = {getattr(topic_map, key): type_name(MESSAGE_TYPES[key]) for key in keys}
        self.recorder = EpisodeRecorder(
            out, topics, topic_map.episode_event, topic_map.control_rate, task or None
        )
        for key in keys:
            topic = getattr(topic_map, key)
            if key == "episode_event":
                continue
            # Sensor streams may be best effort; a best-effort reader takes reliable ones too.
            self.create_subscription(
                MESSAGE_TYPES[key],
                topic.lstrip("/"),
                lambda data, topic=topic: self.recorder.message(topic, self._now_ns(), data),
                qos_profile_sensor_data,
                raw=True,
            )
        self.create_subscription(
            String,
            topic_map.episode_event.lstrip("/"),
            self._on_event,
            event_qos(10),
        )
        self.get_logger().info(
            f"recording episodes into {out} from {len(topics)} topics ({sorted(topics)}, "
            "relative to this node's namespace)"
        )

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_event(self, message: String) -> None:
        bag = self.recorder.event(message.data, self._now_ns(), serialize_message(message))
        if bag is not None:
            self.get_logger().info(f"episode {message.data}: {bag}")

    def destroy_node(self) -> None:
        self.recorder.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node(BagRecorderNode, "bag_recorder_node", args)


if __name__ == "__main__":
    main()
