"""Read rosbag2 recordings of the arm into episodes at the control rate.

Bags are rosbag2 directories (sqlite3 or mcap storage, format versions up to 9, optionally
zstd-compressed), read with the `rosbags` library (no rclpy). Message times are the bag's
receive times, one clock for every topic.

Alignment onto control ticks (``period = 1 / control_rate``):
- the observation at tick t is the latest message of each observation topic at or before t;
- the action at tick t comes from the command in force just before the next tick: the latest
  target pose received before t + period (and after the episode started), turned back into the
  normalised delta the policy outputs by `ArmCommandAdapter.action` against the end-effector
  pose at tick t, with the latest gripper command (a gripper never commanded holds its
  measured width);
- a value older than the topic map's ``max_staleness`` does not count. Leading ticks before
  every topic has a fresh value are dropped; an episode with a stale tick later on is skipped
  with a warning (a camera or the arm stopped publishing), and so is one with a non-finite
  value or a zero-norm quaternion in force at any tick.

Episodes run from an ``episode_event`` "start" to the next "success" or "failure" (1.0 reward
at the last tick on success). Recordings without episode events are cut where the target
commands pause for longer than ``episode_gap``; the ``success`` Bool topic, if recorded,
labels them (success ends the episode at its first true value).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader

from cfgrl_ros.arm.command_adapter import MIN_QUAT_NORM, ArmCommand, ArmCommandAdapter
from cfgrl_ros.data.bag_writer import CONTROL_RATE_KEY, SYNTHETIC_KEY, TASK_KEY, TYPESTORE
from cfgrl_ros.data.episode import ACTION_DIM, Episode
from cfgrl_ros.data.episode_recorder import episode_bags
from cfgrl_ros.data.topic_map import TopicMap, load_topic_map
from cfgrl_ros.msg_arrays import image_array, joint_arrays, pose_arrays
from cfgrl_ros.observation import OBSERVATIONS, ObservationSpec

logger = logging.getLogger(__name__)

STORAGE_SUFFIXES = (".db3", ".mcap")
_POSE_TYPES = ("geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/Pose")
_IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
# topic map key -> message types accepted on it
_EXPECTED_TYPES: dict[str, tuple[str, ...]] = {
    "joint_states": ("sensor_msgs/msg/JointState",),
    "current_pose": _POSE_TYPES,
    "object_pose": _POSE_TYPES,
    "target_pose": _POSE_TYPES,
    "gripper_command": ("std_msgs/msg/Float64", "std_msgs/msg/Float32"),
    "episode_event": ("std_msgs/msg/String",),
    "success": ("std_msgs/msg/Bool",),
    "image": _IMAGE_TYPES,
    "wrist_image": _IMAGE_TYPES,
}
_EVENTS = ("start", "success", "failure")


class BagError(Exception):
    """A bag that cannot be turned into episodes; the message names the bag and the fix."""


@dataclass
class _Stream:
    """Receive times (ns, increasing) and values of one topic."""

    times: np.ndarray
    values: list[Any]

    def true_times(self, start: int, stop: int) -> np.ndarray:
        """Times in [start, stop) of the true values (a Bool topic's)."""
        times = self.times
        return times[np.asarray(self.values, dtype=bool) & (times >= start) & (times < stop)]

    def latest(self, at: np.ndarray, max_age_ns: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Index of the latest value at or before each time in `at` (-1: none), and validity."""
        index = np.searchsorted(self.times, at, side="right") - 1
        valid = index >= 0
        if max_age_ns is not None:
            age = at - self.times[np.maximum(index, 0)]
            valid &= age <= max_age_ns
        return index, valid


@dataclass
class _Window:
    """One episode's time span [start, end) in ns and its outcome."""

    start: int
    end: int
    success: bool


def _check_path(path: Path) -> None:
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    if path.is_dir():
        if not (path / "metadata.yaml").is_file():
            storage = _storage_files(path)
            if not storage:
                raise BagError(
                    f"{path} is not a rosbag2 directory: it has no metadata.yaml and no "
                    f"{STORAGE_SUFFIXES} storage file. Pass the directory that `ros2 bag record` "
                    "(or `cfgrl-ros collect`) created"
                )
            # ros2 bag record writes metadata.yaml when it stops: a crash or power loss leaves
            # the storage files without it, which is recoverable.
            plugin = "mcap" if storage[0].suffix == ".mcap" else "sqlite3"
            raise BagError(
                f"bag {path} has no metadata.yaml: its recording was probably cut off (a crash "
                f"or power loss). Recover it rather than re-record it: `ros2 bag reindex {path} "
                f"-s {plugin}` rebuilds metadata.yaml, or pass its storage file {storage[0]} "
                "itself"
                + (" (one --bag per file)" if len(storage) > 1 else "")
                + (
                    "; a .mcap file cut off mid-write first needs `mcap recover FILE -o "
                    "FIXED.mcap`, then pass FIXED.mcap"
                    if plugin == "mcap"
                    else ""
                )
                + ". Re-record it only if that fails"
            )
    elif path.suffix not in STORAGE_SUFFIXES:
        raise BagError(
            f"{path} is not a rosbag2 bag: expected a bag directory (or a {STORAGE_SUFFIXES} "
            "storage file); ROS 1 .bag files can be converted with `rosbags-convert`"
        )


def _storage_files(path: Path) -> list[Path]:
    """The uncompressed storage files of a bag (a directory, or the file itself)."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES)
    return [path] if path.suffix in STORAGE_SUFFIXES else []


def _salvage(storage: Path) -> str:
    """The command that copies what is readable of a cut-off storage file into a new one."""
    fixed = storage.with_name(f"{storage.stem}_recovered{storage.suffix}")
    if storage.suffix == ".mcap":
        return f"`mcap recover {storage} -o {fixed}`"
    # .dump ends in ROLLBACK when it meets damage; COMMIT keeps the rows read before it.
    return f"`sqlite3 {storage} .dump | sed 's/^ROLLBACK;/COMMIT;/' | sqlite3 {fixed}`"


def _corrupt(path: Path, error: BaseException) -> BagError:
    # Most damaged bags are recordings cut off by a crash or power loss, or incomplete
    # copies; demonstrations are expensive to re-record, so the salvage comes first.
    storage = _storage_files(path)
    salvage = (
        f"salvage what was written with {_salvage(storage[0])} and pass the new file instead"
        if len(storage) == 1
        else "salvage what was written with `mcap recover FILE -o FIXED.mcap` (MCAP) or "
        "`sqlite3 FILE .dump | sed 's/^ROLLBACK;/COMMIT;/' | sqlite3 FIXED.db3` (sqlite3) and "
        "pass the new files instead (one --bag each)"
    )
    return BagError(
        f"bag {path} is truncated or corrupt ({type(error).__name__}: {error}). If its "
        f"recording was cut off (a crash or power loss) or its copy is incomplete, {salvage}; "
        "else re-copy it. Re-record it or leave it out only as a last resort"
    )


def _messages(reader: AnyReader, connections: list, path: Path) -> Iterator[tuple[Any, int, Any]]:
    """The rosbags message iterator; storage errors become BagError."""
    iterator = reader.messages(connections=connections)
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except Exception as error:  # sqlite, mcap, zstd and I/O errors alike
            raise _corrupt(path, error) from error
        yield item


def _deserialize(reader: AnyReader, raw: Any, connection: Any, stamp: int, path: Path) -> Any:
    try:
        return reader.deserialize(raw, connection.msgtype)
    except Exception as error:  # a damaged message: bad lengths, bad encapsulation
        raise BagError(
            f"bag {path}: the {connection.msgtype} message on {connection.topic} at "
            f"{stamp * 1e-9:.3f} s cannot be decoded ({error}); the bag is corrupt"
        ) from error


class _BagEpisodes:
    """Reads one bag; `episodes()` does the work."""

    def __init__(
        self,
        path: Path,
        topic_map: TopicMap,
        adapter: ArmCommandAdapter,
        observation: ObservationSpec,
    ) -> None:
        self.path = path
        self.topics = topic_map
        self.adapter = adapter
        cameras = topic_map.image_topics()
        unused = [key for key in observation.image_keys if key not in cameras]
        if unused:
            raise BagError(
                f"camera {unused} is switched off in the topic map (its cameras: "
                f"{cameras}); set its topic with --topic {unused[0]}=/its/image_topic"
            )
        self.cameras = {key: cameras[key] for key in observation.image_keys}
        size = observation.image_size
        self.image_size = None if size is None else (size[1], size[0])  # OpenCV: (width, height)
        self.object_pose = observation.uses_object_pose
        if self.object_pose and topic_map.object_pose is None:
            raise BagError(
                "the observation reads the object pose but the topic map switches object_pose "
                "off: set it with --topic object_pose=/its/pose_topic, or read without it (a "
                "policy trained with --observation vision)"
            )
        self.period_ns = round(1e9 / topic_map.control_rate)
        self.max_age_ns = round(topic_map.max_staleness * 1e9)

    def _connections(self, reader: AnyReader) -> dict[str, list]:
        """Topic map key -> connections; BagError for missing topics and wrong types."""
        available = reader.topics
        wanted = {
            "joint_states": self.topics.joint_states,
            "current_pose": self.topics.current_pose,
            "target_pose": self.topics.target_pose,
            "gripper_command": self.topics.gripper_command,
        }
        if self.object_pose:
            wanted["object_pose"] = self.topics.object_pose
        wanted.update(self.cameras)
        optional = {"episode_event": self.topics.episode_event, "success": self.topics.success}
        listing = ", ".join(f"{name} ({info.msgtype})" for name, info in sorted(available.items()))
        missing = [f"{key}={topic}" for key, topic in wanted.items() if topic not in available]
        if missing:
            raise BagError(
                f"bag {self.path} lacks topics {missing} of the topic map. It has: {listing}. "
                "Map them with a topic map file (--topics FILE) or --topic KEY=/topic"
                + (", or read without cameras" if self.cameras else "")
                + (
                    ", or train a policy that does not read the object pose (pretrain "
                    "--observation vision)"
                    if self.object_pose and self.topics.object_pose not in available
                    else ""
                )
            )
        wanted.update({key: topic for key, topic in optional.items() if topic in available})
        connections = {}
        for key, topic in wanted.items():
            info = available[topic]
            if info.msgtype not in _EXPECTED_TYPES[key]:
                raise BagError(
                    f"bag {self.path}: topic {topic} ({key}) has type {info.msgtype}, expected "
                    f"{' or '.join(_EXPECTED_TYPES[key])}"
                )
            connections[key] = info.connections
        return connections

    def _parse(self, key: str, msg: Any, stamp: int) -> Any:
        if key == "joint_states":
            try:
                arm, width = joint_arrays(msg, self.topics.arm_joints, self.topics.finger_joints)
            except ValueError as error:  # names the missing joints and the fix
                raise BagError(
                    f"bag {self.path}: {self.topics.joint_states} at {stamp * 1e-9:.3f} s: {error}"
                ) from error
            except IndexError as error:
                raise BagError(
                    f"bag {self.path}: {self.topics.joint_states} at {stamp * 1e-9:.3f} s has "
                    f"{len(msg.position)} positions for {len(msg.name)} joint names"
                ) from error
            return np.concatenate([arm, width])
        if key in ("current_pose", "object_pose", "target_pose"):
            position, quat = pose_arrays(msg)
            return np.concatenate([position, quat])
        if key == "gripper_command":
            return float(msg.data)
        if key == "episode_event":
            return str(msg.data).strip().lower()
        return bool(msg.data)  # success

    def _read_streams(self, reader: AnyReader, connections: dict[str, list]) -> dict[str, _Stream]:
        """Every non-image topic, deserialised into arrays (they are small)."""
        key_of = {c.topic: key for key, conns in connections.items() for c in conns}
        scalar = [c for key, conns in connections.items() if "image" not in key for c in conns]
        times: dict[str, list[int]] = {key: [] for key in connections if "image" not in key}
        values: dict[str, list[Any]] = {key: [] for key in times}
        for connection, stamp, raw in _messages(reader, scalar, self.path):
            key = key_of[connection.topic]
            msg = _deserialize(reader, raw, connection, stamp, self.path)
            times[key].append(stamp)
            values[key].append(self._parse(key, msg, stamp))
        return {key: _Stream(np.asarray(times[key], dtype=np.int64), values[key]) for key in times}

    def _windows(self, streams: dict[str, _Stream]) -> list[_Window]:
        """The episodes' time spans; BagError when the bag holds no complete one."""
        events = streams.get("episode_event")
        if events is not None and len(events.times):
            windows = self._windows_from_events(events)
            if not windows:
                raise BagError(
                    f"bag {self.path} holds no complete episode: its {len(events.times)} "
                    f"{self.topics.episode_event} messages hold no 'start' followed by a "
                    "'success' or 'failure' (see the warnings above)"
                )
            return windows
        logger.info(
            "bag %s has no %s messages: cutting episodes at %.2f s pauses of %s",
            self.path,
            self.topics.episode_event,
            self.topics.episode_gap,
            self.topics.target_pose,
        )
        windows = self._windows_from_gaps(streams)
        if not windows:
            events_source = (
                f"no {self.topics.episode_event} messages"
                if self.topics.episode_event
                else "no episode events (episode_event is off in the topic map)"
            )
            raise BagError(
                f"bag {self.path} holds no complete episode: it has {events_source} and no "
                f"messages on {self.topics.target_pose} to cut episodes at their pauses. Check "
                "the target_pose and episode_event topics in the topic map"
            )
        return windows

    def _windows_from_events(self, events: _Stream) -> list[_Window]:
        windows = []
        start = None
        for stamp, event in zip(events.times.tolist(), events.values, strict=True):
            if event not in _EVENTS:
                logger.warning(
                    "bag %s: ignoring unknown episode event %r at %.3f s (expected %s)",
                    self.path,
                    event,
                    stamp * 1e-9,
                    _EVENTS,
                )
            elif event == "start":
                if start is not None:
                    logger.warning(
                        "bag %s: episode started at %.3f s has no end event; skipped",
                        self.path,
                        start * 1e-9,
                    )
                start = stamp
            elif start is None:
                logger.warning(
                    "bag %s: %r event at %.3f s without a start; ignored",
                    self.path,
                    event,
                    stamp * 1e-9,
                )
            else:
                windows.append(_Window(start, stamp, event == "success"))
                start = None
        if start is not None:
            logger.warning(
                "bag %s: the recording stops inside the episode started at %.3f s; skipped",
                self.path,
                start * 1e-9,
            )
        return windows

    def _windows_from_gaps(self, streams: dict[str, _Stream]) -> list[_Window]:
        commands = streams["target_pose"].times
        if not len(commands):
            return []
        gap_ns = round(self.topics.episode_gap * 1e9)
        breaks = np.flatnonzero(np.diff(commands) > gap_ns)
        firsts = np.concatenate([[0], breaks + 1])
        lasts = np.concatenate([breaks, [len(commands) - 1]])
        success = streams.get("success")
        if success is None:
            logger.warning(
                "bag %s has neither %s nor %s: every episode is labelled a failure",
                self.path,
                self.topics.episode_event,
                self.topics.success,
            )
        windows = []
        for first, last in zip(firsts, lasts, strict=True):
            start, end = int(commands[first]), int(commands[last]) + self.period_ns
            succeeded = False
            if success is not None:
                hits = success.true_times(start, end + gap_ns)
                if len(hits):
                    succeeded = True
                    end = min(end, int(hits[0]))
            windows.append(_Window(start, end, succeeded))
        return windows

    def _image_frames(
        self, reader: AnyReader, connections: list, ticks: np.ndarray
    ) -> tuple[list[np.ndarray | None], np.ndarray]:
        """Decoded frame (latest at or before each tick, None when stale) and validity per tick.

        One pass in time order; only frames that some tick uses are decoded.
        """
        frames: list[np.ndarray | None] = [None] * len(ticks)
        filled = 0  # ticks before this index are settled
        previous: tuple[int, Any, Any] | None = None

        def settle(upto: int) -> None:
            nonlocal filled
            if previous is not None and upto > filled:
                stamp, raw, connection = previous
                fresh = np.flatnonzero(ticks[filled:upto] - stamp <= self.max_age_ns) + filled
                if len(fresh):
                    msg = _deserialize(reader, raw, connection, stamp, self.path)
                    try:
                        frame = image_array(msg, self.image_size)
                    except ValueError as error:
                        raise BagError(
                            f"bag {self.path}: image on {connection.topic} at "
                            f"{stamp * 1e-9:.3f} s: {error}"
                        ) from error
                    for index in fresh:
                        frames[index] = frame
            filled = max(filled, upto)

        for connection, stamp, raw in _messages(reader, connections, self.path):
            settle(int(np.searchsorted(ticks, stamp, side="left")))  # ticks before this frame
            previous = (stamp, raw, connection)
        settle(len(ticks))
        valid = np.array([frame is not None for frame in frames], dtype=bool)
        return frames, valid

    def episodes(self) -> list[Episode]:
        try:
            reader = AnyReader([self.path], default_typestore=TYPESTORE)
            reader.open()
        except Exception as error:  # unreadable metadata or storage, unsupported version
            raise _corrupt(self.path, error) from error
        try:
            custom = reader.readers[0].storage.metadata.custom or {}
            synthetic = str(custom.get(SYNTHETIC_KEY, "false")).lower() == "true"
            task = str(custom.get(TASK_KEY, ""))
            self._check_control_rate(custom.get(CONTROL_RATE_KEY))
            connections = self._connections(reader)
            streams = self._read_streams(reader, connections)
            windows = self._windows(streams)
            tick_lists = [
                w.start + np.arange(math.ceil((w.end - w.start) / self.period_ns)) * self.period_ns
                for w in windows
            ]
            ticks = np.concatenate(tick_lists).astype(np.int64)
            images = {}
            for key in connections:
                if "image" in key:
                    images[key] = self._image_frames(reader, connections[key], ticks)
        finally:
            reader.close()

        episodes = []
        offset = 0
        for index, (window, window_ticks) in enumerate(zip(windows, tick_lists, strict=True)):
            rows = slice(offset, offset + len(window_ticks))
            offset += len(window_ticks)
            image_rows = {
                key: (frames[rows], valid[rows]) for key, (frames, valid) in images.items()
            }
            episode = self._episode(index, window, window_ticks, streams, image_rows, synthetic)
            if episode is not None:
                episode.metadata["task"] = task
                episodes.append(episode)
        if not episodes:
            raise BagError(
                f"bag {self.path}: every episode was skipped (see the warnings above); check "
                "max_staleness, that every topic was recorded throughout and that its values "
                "are valid"
            )
        return episodes

    def _check_control_rate(self, recorded: str | None) -> None:
        """Warn when the bag says it was written at another rate than the topic map's."""
        if recorded is None:
            return  # a recording from ros2 bag record: its rate is the topic map's to say
        try:
            rate = float(recorded)
        except ValueError:
            return
        if not math.isclose(rate, self.topics.control_rate, rel_tol=1e-6):
            logger.warning(
                "bag %s was written at %g Hz, but the topic map's control_rate is %g Hz: the "
                "recovered actions are for %g Hz ticks; set control_rate=%g to read it as written",
                self.path,
                rate,
                self.topics.control_rate,
                self.topics.control_rate,
                rate,
            )

    def _episode(
        self,
        index: int,
        window: _Window,
        ticks: np.ndarray,
        streams: dict[str, _Stream],
        images: dict[str, tuple[list, np.ndarray]],
        synthetic: bool,
    ) -> Episode | None:
        where = f"bag {self.path}, episode {index} (starting at {window.start * 1e-9:.3f} s)"
        valid = {}
        rows = {}
        observed = ["joint_states", "current_pose"] + (["object_pose"] if self.object_pose else [])
        for key in observed:
            rows[key], valid[key] = streams[key].latest(ticks, self.max_age_ns)
        command_at = ticks + self.period_ns - 1
        targets = streams["target_pose"]
        rows["target_pose"], valid["target_pose"] = targets.latest(command_at, self.max_age_ns)
        # A target from before the episode began answers an earlier episode's observation.
        valid["target_pose"] &= targets.times[np.maximum(rows["target_pose"], 0)] >= window.start
        if not np.any(valid["target_pose"]):
            raise BagError(
                f"{where} has no actions: no {self.topics.target_pose} messages between "
                f"{window.start * 1e-9:.3f} s and {window.end * 1e-9:.3f} s. Check the "
                "target_pose topic in the topic map"
            )
        for key, (_, image_valid) in images.items():
            valid[key] = image_valid
        all_valid = np.logical_and.reduce(list(valid.values()))
        if not np.any(all_valid):
            stale = [self._topic(key) for key, ok in valid.items() if not np.any(ok)]
            logger.warning("%s skipped: no tick has fresh values of %s", where, stale)
            return None
        first = int(np.argmax(all_valid))
        if not np.all(all_valid[first:]):
            bad = first + int(np.argmin(all_valid[first:]))
            stale = [self._topic(key) for key, ok in valid.items() if not ok[bad]]
            logger.warning(
                "%s skipped: at %.3f s the latest %s is older than max_staleness (%.3f s)",
                where,
                ticks[bad] * 1e-9,
                stale,
                self.topics.max_staleness,
            )
            return None
        keep = slice(first, len(ticks))

        joints = np.stack([streams["joint_states"].values[i] for i in rows["joint_states"][keep]])
        eef = np.stack([streams["current_pose"].values[i] for i in rows["current_pose"][keep]])
        observations: dict[str, np.ndarray] = {
            "joint_pos": joints[:, :-1],
            "gripper_width": joints[:, -1:],
            "eef_pos": eef[:, :3],
            "eef_quat": eef[:, 3:],
        }
        if self.object_pose:
            obj = np.stack([streams["object_pose"].values[i] for i in rows["object_pose"][keep]])
            observations |= {"object_pos": obj[:, :3], "object_quat": obj[:, 3:]}
        observations = {k: v.astype(np.float32) for k, v in observations.items()}
        targets_in_force = np.stack([targets.values[i] for i in rows["target_pose"][keep]])
        gripper = streams["gripper_command"]
        gripper_rows, has_gripper = gripper.latest(command_at[keep], None)
        # A gripper never commanded holds its measured width.
        widths = np.array(
            [
                gripper.values[row] if commanded else observations["gripper_width"][t, 0]
                for t, (row, commanded) in enumerate(zip(gripper_rows, has_gripper, strict=True))
            ],
            dtype=np.float64,
        )
        # Observation topics first: when two topics hold a bad value at the same tick, the
        # observation is named (its topic is the likelier culprit than the command's).
        values = {"joint_states": joints, "current_pose": eef}
        if self.object_pose:
            values["object_pose"] = obj
        values |= {"target_pose": targets_in_force, "gripper_command": widths[:, None]}
        problem = self._invalid_value(
            ticks[keep],
            values,
            {"current_pose": eef[:, 3:], "target_pose": targets_in_force[:, 3:]},
        )
        if problem is not None:
            # Like a stale topic, a bad value costs only its episode; it is never trained on.
            logger.warning("%s skipped: %s", where, problem)
            return None
        for key, (frames, _) in images.items():
            shapes = {frame.shape for frame in frames[keep]}
            if len(shapes) > 1:
                raise BagError(
                    f"{where}: {self._topic(key)} images change size within the episode "
                    f"({sorted(shapes)}); pass an image size to resize them"
                )
            observations[key] = np.stack(frames[keep])

        actions = np.empty((len(eef), ACTION_DIM), dtype=np.float32)
        for t, (target, width) in enumerate(zip(targets_in_force, widths, strict=True)):
            command = ArmCommand(target[:3], target[3:], float(width))
            actions[t] = self.adapter.action(eef[t, :3], eef[t, 3:], command)

        rewards = np.zeros(len(actions), dtype=np.float32)
        if window.success:
            rewards[-1] = 1.0
        metadata = {"bag": str(self.path), "index": index, "start_time_ns": int(ticks[first])}
        done_tick = self._success_tick(window, ticks[keep], streams.get("success"))
        if done_tick is not None:
            metadata["success_tick"] = done_tick
        return Episode(
            observations=observations,
            actions=actions,
            rewards=rewards,
            success=window.success,
            synthetic=synthetic,
            metadata=metadata,
        )

    def _success_tick(
        self, window: _Window, ticks: np.ndarray, success: _Stream | None
    ) -> int | None:
        """The row whose action completed the task, when a success Bool says so before the
        episode's end (an operator marked the success later, or a recording holds on after
        it); None when it says so only at the end, or not at all."""
        if not window.success or success is None:
            return None
        hits = success.true_times(window.start, window.end + 1)
        if not len(hits):
            return None
        done = int(np.searchsorted(ticks, hits[0]))  # the first row observed after it
        return done - 1 if 0 < done < len(ticks) else None

    def _topic(self, key: str) -> str:
        return getattr(self.topics, key)

    def _invalid_value(
        self, ticks: np.ndarray, values: dict[str, np.ndarray], quats: dict[str, np.ndarray]
    ) -> str | None:
        """The earliest non-finite value or zero-norm quaternion in an episode, in words.

        `values` and `quats` map topic map keys to one row per tick.
        """
        problems = [
            (key, rows, ~np.all(np.isfinite(rows), axis=1), "non-finite values")
            for key, rows in values.items()
        ]
        problems += [
            (key, rows, np.linalg.norm(rows, axis=1) < MIN_QUAT_NORM, "a zero-norm quaternion")
            for key, rows in quats.items()
        ]
        found = [(int(np.argmax(bad)), n) for n, (_, _, bad, _) in enumerate(problems) if bad.any()]
        if not found:
            return None
        tick, n = min(found)  # the earliest tick; ties go to the observation topics first
        key, rows, _, what = problems[n]
        return (
            f"the {self._topic(key)} message in force at tick {tick} ({ticks[tick] * 1e-9:.3f} s) "
            f"has {what}: {np.array2string(rows[tick], precision=4)}"
        )


def read_bag(
    path: str | Path,
    topic_map: TopicMap | None = None,
    adapter: ArmCommandAdapter | None = None,
    observation: ObservationSpec = OBSERVATIONS["state"],
) -> list[Episode]:
    """The episodes recorded in one rosbag2 bag (a directory, or its .db3/.mcap file).

    `topic_map` defaults to config/topics.yaml and `adapter` to the default adapter settings
    (its step sizes must be the arm's). `observation` names what is read (a policy's inputs;
    default: the arm and the object pose, no cameras): the arm's topics always, the object pose
    only when it is a state field, and its cameras, decoded to RGB and resized to its image
    size (kept as recorded when that is None). Topics it needs are required.
    Raises BagError.
    """
    path = Path(path)
    _check_path(path)
    reader = _BagEpisodes(
        path, topic_map or load_topic_map(), adapter or ArmCommandAdapter(), observation
    )
    return reader.episodes()


def _check_distinct(paths: Sequence[str | Path]) -> None:
    """BagError when a bag is given twice: its episodes would count double."""
    given: dict[Path, str] = {}
    for path in paths:
        resolved = Path(path).resolve()
        if resolved in given:
            raise BagError(
                f"bag {path} is given twice (also as {given[resolved]}): its episodes would "
                "count double. Give each bag once"
            )
        given[resolved] = str(path)
    for resolved, path in given.items():
        if resolved.suffix in STORAGE_SUFFIXES and resolved.parent in given:
            raise BagError(
                f"bag {path} is a storage file of the bag {given[resolved.parent]}, which is "
                "given too: its episodes would count double. Give each bag once"
            )


def read_bags(
    paths: Sequence[str | Path],
    topic_map: TopicMap | None = None,
    adapter: ArmCommandAdapter | None = None,
    observation: ObservationSpec = OBSERVATIONS["state"],
) -> list[Episode]:
    """The episodes of several bags (read as read_bag does), in order; BagError when their
    images differ in size. A folder of episode bags (`cfgrl-ros record`) stands for its bags."""
    if not paths:
        raise BagError("no bags given")
    paths = [bag for path in paths for bag in (episode_bags(path) or [path])]
    _check_distinct(paths)
    topic_map = topic_map or load_topic_map()
    adapter = adapter or ArmCommandAdapter()
    episodes: list[Episode] = []
    shapes: dict[str, tuple[tuple, str]] = {}
    for path in paths:
        for episode in read_bag(path, topic_map, adapter, observation):
            for key, frames in episode.observations.items():
                if "image" not in key:
                    continue
                seen = shapes.setdefault(key, (frames.shape[1:], str(path)))
                if seen[0] != frames.shape[1:]:
                    raise BagError(
                        f"{key} images are {frames.shape[1:]} in {path} but {seen[0]} in "
                        f"{seen[1]}; pass an image size to resize them"
                    )
            episodes.append(episode)
    return episodes
