"""Record live episodes as rosbag2 bags, one bag per episode, in the layout `pretrain` reads.

`EpisodeRecorder` is given every message of the recorded topics as serialised CDR bytes with
its receive time, and the episode events. Between episodes it keeps only the latest message of
each topic. At "start" it opens a bag ``episode_NNNNNN`` in its folder, writes those latest
messages (the observation the episode starts from) and then everything that arrives, and at
"success" or "failure" it closes the bag. A bag is written in a hidden temporary directory and
renamed when its episode has ended, so the folder only ever holds whole episodes: a crash or a
stop mid-episode loses that episode alone, which has no outcome to learn from anyway.

`pretrain --bag FOLDER` reads every episode bag of such a folder (cfgrl_ros.data.bag_reader
expands it); a later recording session into the same folder goes on numbering. ROS-free: the
bag recorder node (cfgrl_ros.nodes.bag_recorder_node) feeds it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rosbags.rosbag2 import Writer
from rosbags.rosbag2.enums import StoragePlugin

from cfgrl_ros.data.bag_writer import CONTROL_RATE_KEY, SYNTHETIC_KEY, TASK_KEY, TYPESTORE
from cfgrl_ros.paths import file_in_the_way

logger = logging.getLogger(__name__)

EPISODE_PREFIX = "episode_"
END_EVENTS = ("success", "failure")


class EpisodeRecorder:
    """Episode bags in `folder`; `topics` maps each recorded topic to its message type
    ("sensor_msgs/msg/JointState"), the episode event topic included (`event_topic`)."""

    def __init__(
        self,
        folder: str | Path,
        topics: Mapping[str, str],
        event_topic: str,
        control_rate: float,
        task: str | None = None,
    ) -> None:
        self.folder = Path(folder)
        if (self.folder / "metadata.yaml").is_file():
            raise ValueError(
                f"{self.folder} is a rosbag: record into a folder of its own (it will hold one "
                "bag per episode)"
            )
        blocking = file_in_the_way(self.folder)
        if blocking is not None:
            raise ValueError(f"cannot record into {self.folder}: {blocking} is a file")
        if event_topic not in topics:
            raise ValueError(f"the episode event topic {event_topic} must be one of the topics")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.topics = dict(topics)
        self.event_topic = event_topic
        self.control_rate = float(control_rate)
        self.task = task
        existing = episode_bags(self.folder)
        self._number = int(existing[-1].name.removeprefix(EPISODE_PREFIX)) if existing else 0
        self.episodes_written = 0  # by this recorder
        self.discarded = 0  # episodes that ended without an outcome
        self._latest: dict[str, tuple[int, bytes]] = {}
        self._writer: Writer | None = None
        self._partial: Path | None = None
        self._connections: dict[str, Any] = {}

    @property
    def recording(self) -> bool:
        """An episode is being written."""
        return self._writer is not None

    def message(self, topic: str, stamp_ns: int, data: bytes) -> None:
        """A message of a recorded topic (not the event topic: see `event`)."""
        if self._writer is None:
            self._latest[topic] = (stamp_ns, data)
        else:
            self._write(topic, stamp_ns, data)

    def event(self, text: str, stamp_ns: int, data: bytes) -> Path | None:
        """An episode event; returns the bag of an episode that has just ended."""
        if text == "start":
            if self._writer is not None:
                self._discard("a new episode started before it ended")
            self._open()
            for topic, (stamp, latest) in sorted(self._latest.items(), key=lambda kv: kv[1][0]):
                self._write(topic, stamp, latest)
            self._latest.clear()
            self._write(self.event_topic, stamp_ns, data)
            return None
        if text in END_EVENTS and self._writer is not None:
            self._write(self.event_topic, stamp_ns, data)
            return self._close()
        return None

    def close(self) -> None:
        """Stop recording; an episode still running is not kept (it has no outcome)."""
        if self._writer is not None:
            self._discard("recording stopped before it ended")

    # ------------------------------------------------------------------------------ bags
    def _open(self) -> None:
        self._partial = Path(tempfile.mkdtemp(prefix=".episode.partial-", dir=self.folder))
        writer = Writer(self._partial / "bag", version=9, storage_plugin=StoragePlugin.SQLITE3)
        writer.set_custom_data(SYNTHETIC_KEY, "false")
        writer.set_custom_data(CONTROL_RATE_KEY, repr(self.control_rate))
        if self.task:
            writer.set_custom_data(TASK_KEY, self.task)
        writer.open()
        self._writer = writer
        self._connections = {}

    def _write(self, topic: str, stamp_ns: int, data: bytes) -> None:
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(
                topic, self.topics[topic], typestore=TYPESTORE
            )
        self._writer.write(self._connections[topic], stamp_ns, data)

    def _close(self) -> Path:
        writer, self._writer = self._writer, None
        writer.close()
        self.episodes_written += 1
        self._number += 1
        final = self.folder / f"{EPISODE_PREFIX}{self._number:06d}"
        (self._partial / "bag").rename(final)
        shutil.rmtree(self._partial, ignore_errors=True)
        self._partial = None
        return final

    def _discard(self, why: str) -> None:
        writer, self._writer = self._writer, None
        writer.close()
        shutil.rmtree(self._partial, ignore_errors=True)
        self._partial = None
        self.discarded += 1
        logger.warning("an episode was not kept: %s", why)


def episode_bags(folder: str | Path) -> list[Path]:
    """The episode bags of a recording folder, in order (none if it holds no such bags)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(
        path
        for path in folder.iterdir()
        if path.name.startswith(EPISODE_PREFIX)
        and path.name.removeprefix(EPISODE_PREFIX).isdigit()
        and (path / "metadata.yaml").is_file()
    )
