"""Write episodes as the rosbag2 a recording of the real arm would be.

Each control tick gets the observation messages (joint states, end-effector pose; object pose
and camera images where the topic map names them) at the tick time, then, a tenth of a period
later (a policy answers its observation after a few milliseconds), the commanded target pose
and gripper opening computed from the episode's normalised action by the same
`ArmCommandAdapter` the arm uses. Episodes are framed by /episode_event markers ("start" at
the first tick, "success"/"failure" one period after the last) and a /success Bool when the
task was done (at the end, unless the episode's metadata names an earlier `success_tick`),
and separated by twice the topic map's episode gap. Messages are serialised with the
`rosbags` CDR serialiser (no rclpy).

The bag is written into a hidden temporary directory beside `out_dir` and renamed to `out_dir`
only when it is complete, so an interrupted write never leaves a bag that looks whole.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
from rosbags.rosbag2 import Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin
from rosbags.typesys import Stores, get_typestore

from cfgrl_ros.arm.command_adapter import ArmCommandAdapter
from cfgrl_ros.data.episode import Episode
from cfgrl_ros.data.topic_map import TopicMap, load_topic_map
from cfgrl_ros.observation import IMAGE_KEYS, OBJECT_POSE, OBSERVATION_FIELDS
from cfgrl_ros.paths import file_in_the_way

# Bag metadata custom_data keys written by this package.
SYNTHETIC_KEY = "cfgrl_ros.synthetic"  # "true" for generated (not recorded) experience
CONTROL_RATE_KEY = "cfgrl_ros.control_rate"
TASK_KEY = "cfgrl_ros.task"  # the simulated task the episodes come from (absent: a real arm)
BASE_FRAME = "panda_link0"  # the frame franka_sim_node and a Panda publish poses in

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
_STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
_COMPRESSION = {
    "none": CompressionMode.NONE,
    "file": CompressionMode.FILE,
    "message": CompressionMode.MESSAGE,
}

_Time = TYPESTORE.types["builtin_interfaces/msg/Time"]
_Header = TYPESTORE.types["std_msgs/msg/Header"]
_Point = TYPESTORE.types["geometry_msgs/msg/Point"]
_Quaternion = TYPESTORE.types["geometry_msgs/msg/Quaternion"]
_Pose = TYPESTORE.types["geometry_msgs/msg/Pose"]
_PoseStamped = TYPESTORE.types["geometry_msgs/msg/PoseStamped"]
_JointState = TYPESTORE.types["sensor_msgs/msg/JointState"]
_Image = TYPESTORE.types["sensor_msgs/msg/Image"]
_Float64 = TYPESTORE.types["std_msgs/msg/Float64"]
_String = TYPESTORE.types["std_msgs/msg/String"]
_Bool = TYPESTORE.types["std_msgs/msg/Bool"]


class BagWriteError(ValueError):
    """An episode or an output directory that cannot be written as a bag."""


def check_new_bag_dir(out_dir: str | Path) -> None:
    """Raise BagWriteError unless `out_dir` can be created as a new bag directory: callers
    check before long work, so a bad path fails before anything is recorded or trained."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise BagWriteError(f"{out_dir} exists already; choose a new bag directory or delete it")
    blocking = file_in_the_way(out_dir)
    if blocking is not None:
        raise BagWriteError(
            f"cannot create the bag directory {out_dir}: {blocking} is a file, not a directory; "
            "choose another path"
        )


def _header(stamp_ns: int, frame_id: str) -> Any:
    return _Header(stamp=_Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id)


def _pose_stamped(stamp_ns: int, position: np.ndarray, quat: np.ndarray) -> Any:
    pose = _Pose(
        position=_Point(x=float(position[0]), y=float(position[1]), z=float(position[2])),
        orientation=_Quaternion(
            x=float(quat[0]), y=float(quat[1]), z=float(quat[2]), w=float(quat[3])
        ),
    )
    return _PoseStamped(header=_header(stamp_ns, BASE_FRAME), pose=pose)


def _image(stamp_ns: int, pixels: np.ndarray, frame_id: str) -> Any:
    height, width, _ = pixels.shape
    return _Image(
        header=_header(stamp_ns, frame_id),
        height=height,
        width=width,
        encoding="rgb8",
        is_bigendian=0,
        step=width * 3,
        data=np.ascontiguousarray(pixels, dtype=np.uint8).reshape(-1),
    )


class EpisodeBagWriter:
    """Context manager writing episodes to the rosbag2 directory `out_dir`.

    storage: "sqlite3" or "mcap"; compression: "none", "file" or "message" (zstd);
    version: rosbag2 format version (8 or 9). `topic_map` names the topics (default: the
    package's config/topics.yaml); `adapter` turns actions into commands (default settings);
    `control_rate` (default: the topic map's) spaces the ticks; `synthetic` marks the bag as
    generated experience in its metadata (custom_data["cfgrl_ros.synthetic"] = "true");
    `task` names the simulated task the episodes come from (custom_data["cfgrl_ros.task"]), so
    a policy trained from the bag knows it;
    `start_time_ns` is the time of the first tick (default: now).
    """

    def __init__(
        self,
        out_dir: str | Path,
        storage: Literal["sqlite3", "mcap"] = "sqlite3",
        topic_map: TopicMap | None = None,
        adapter: ArmCommandAdapter | None = None,
        control_rate: float | None = None,
        synthetic: bool = False,
        task: str | None = None,
        compression: Literal["none", "file", "message"] = "none",
        version: Literal[8, 9] = 9,
        start_time_ns: int | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        if storage not in _STORAGES:
            raise BagWriteError(f"storage {storage!r} is not one of {sorted(_STORAGES)}")
        if compression not in _COMPRESSION:
            raise BagWriteError(f"compression {compression!r} is not one of {list(_COMPRESSION)}")
        if version not in (8, 9):
            raise BagWriteError(f"rosbag2 version {version} cannot be written; use 8 or 9")
        check_new_bag_dir(self.out_dir)
        self.storage = storage
        self.compression = compression
        self.version = version
        self.topic_map = topic_map or load_topic_map()
        self.adapter = adapter or ArmCommandAdapter()
        self.control_rate = float(control_rate or self.topic_map.control_rate)
        if self.control_rate <= 0:
            raise BagWriteError(f"control_rate must be > 0 Hz, got {control_rate}")
        self.synthetic = synthetic
        self.task = task
        self.period_ns = round(1e9 / self.control_rate)
        self.next_start_ns = time.time_ns() if start_time_ns is None else int(start_time_ns)
        self.episodes_written = 0
        self._writer: Writer | None = None
        self._tmp_root: Path | None = None
        self._connections: dict[str, Any] = {}

    def __enter__(self) -> EpisodeBagWriter:
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        # Same file system as out_dir, so the final rename is atomic.
        self._tmp_root = Path(
            tempfile.mkdtemp(prefix=f".{self.out_dir.name}.partial-", dir=self.out_dir.parent)
        )
        try:
            self._open()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def _open(self) -> None:
        writer = Writer(
            self._tmp_root / self.out_dir.name,
            version=self.version,
            storage_plugin=_STORAGES[self.storage],
        )
        writer.set_compression(_COMPRESSION[self.compression], CompressionFormat.ZSTD)
        writer.set_custom_data(SYNTHETIC_KEY, "true" if self.synthetic else "false")
        writer.set_custom_data(CONTROL_RATE_KEY, repr(self.control_rate))
        if self.task:
            writer.set_custom_data(TASK_KEY, self.task)
        writer.open()
        self._writer = writer
        topics = self.topic_map
        for topic, msgtype in (
            (topics.joint_states, "sensor_msgs/msg/JointState"),
            (topics.current_pose, "geometry_msgs/msg/PoseStamped"),
            (topics.object_pose, "geometry_msgs/msg/PoseStamped"),
            (topics.target_pose, "geometry_msgs/msg/PoseStamped"),
            (topics.gripper_command, "std_msgs/msg/Float64"),
            (topics.episode_event, "std_msgs/msg/String"),
            (topics.success, "std_msgs/msg/Bool"),
        ):
            if topic:
                self._connections[topic] = writer.add_connection(
                    topic, msgtype, typestore=TYPESTORE
                )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                if exc_type is None:
                    writer.close()
                    (self._tmp_root / self.out_dir.name).rename(self.out_dir)
                else:
                    writer.abort()
        finally:
            if self._tmp_root is not None:
                shutil.rmtree(self._tmp_root, ignore_errors=True)
                self._tmp_root = None

    def _write(self, topic: str, stamp_ns: int, msg: Any) -> None:
        self._writer.write(
            self._connections[topic], stamp_ns, TYPESTORE.serialize_cdr(msg, msg.__msgtype__)
        )

    def _check(self, episode: Episode) -> None:
        for name, size in OBSERVATION_FIELDS.items():
            if name in OBJECT_POSE and self.topic_map.object_pose is None:
                continue  # not recorded
            values = episode.observations.get(name)
            if values is None:
                raise BagWriteError(f"episode has no observation {name!r}; it cannot be recorded")
            if np.shape(values)[1:] != (size,):
                raise BagWriteError(
                    f"observation {name!r} has shape {np.shape(values)}, expected (T, {size})"
                )
            if not np.all(np.isfinite(values)):
                raise BagWriteError(f"observation {name!r} has non-finite values")
        image_topics = self.topic_map.image_topics()
        unrecorded = [
            key for key in IMAGE_KEYS if key in episode.observations and key not in image_topics
        ]
        if unrecorded:  # writing the rest would lose these images without a word
            raise BagWriteError(
                f"episode has camera images {unrecorded} but the topic map switches their topic "
                "off; name a topic for each (e.g. --topic image=/camera/color/image_raw) or leave "
                "those images out of the episode"
            )
        for key in image_topics:
            pixels = episode.observations.get(key)
            if pixels is not None and (np.ndim(pixels) != 4 or np.shape(pixels)[3] != 3):
                raise BagWriteError(
                    f"observation {key!r} has shape {np.shape(pixels)}, expected (T, H, W, 3) RGB"
                )

    def write(self, episode: Episode) -> None:
        """Append one episode, starting an episode gap after the previous one."""
        if self._writer is None:
            raise BagWriteError("EpisodeBagWriter.write called outside its `with` block")
        self._check(episode)
        topics = self.topic_map
        obs = episode.observations
        start_ns = self.next_start_ns
        command_delay_ns = self.period_ns // 10
        joint_names = [*topics.arm_joints, *topics.finger_joints]
        images = {key: topic for key, topic in topics.image_topics().items() if key in obs}
        for topic in images.values():
            if topic not in self._connections:
                self._connections[topic] = self._writer.add_connection(
                    topic, "sensor_msgs/msg/Image", typestore=TYPESTORE
                )

        if topics.episode_event:
            self._write(topics.episode_event, start_ns, _String(data="start"))
        for tick in range(len(episode)):
            stamp = start_ns + tick * self.period_ns
            # The fingers share the opening equally.
            fingers = np.full(
                len(topics.finger_joints), obs["gripper_width"][tick][0] / len(topics.finger_joints)
            )
            positions = np.concatenate([obs["joint_pos"][tick], fingers]).astype(np.float64)
            self._write(
                topics.joint_states,
                stamp,
                _JointState(
                    header=_header(stamp, BASE_FRAME),
                    name=joint_names,
                    position=positions,
                    velocity=np.zeros(0),
                    effort=np.zeros(0),
                ),
            )
            eef_pos, eef_quat = obs["eef_pos"][tick], obs["eef_quat"][tick]
            self._write(topics.current_pose, stamp, _pose_stamped(stamp, eef_pos, eef_quat))
            if topics.object_pose:
                self._write(
                    topics.object_pose,
                    stamp,
                    _pose_stamped(stamp, obs["object_pos"][tick], obs["object_quat"][tick]),
                )
            for key, topic in images.items():
                self._write(topic, stamp, _image(stamp, obs[key][tick], f"{key}_optical_frame"))

            command = self.adapter.command(episode.actions[tick], eef_pos, eef_quat)
            stamp_command = stamp + command_delay_ns
            self._write(
                topics.target_pose,
                stamp_command,
                _pose_stamped(stamp_command, command.target_pos, command.target_quat),
            )
            self._write(
                topics.gripper_command, stamp_command, _Float64(data=float(command.gripper_width))
            )

        end_ns = start_ns + len(episode) * self.period_ns
        if topics.episode_event:
            outcome = "success" if episode.success else "failure"
            self._write(topics.episode_event, end_ns, _String(data=outcome))
        if topics.success:  # when the task was done: at the end, or where the metadata says
            done_tick = episode.metadata.get("success_tick")
            done_ns = end_ns if done_tick is None else start_ns + (done_tick + 1) * self.period_ns
            self._write(topics.success, done_ns, _Bool(data=bool(episode.success)))
        gap_ns = round(2 * topics.episode_gap * 1e9)
        self.next_start_ns = end_ns + max(gap_ns, self.period_ns)
        self.episodes_written += 1
