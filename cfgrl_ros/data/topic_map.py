"""Which topics carry the observation and the command, and the tick alignment settings.

The defaults live in ``config/topics.yaml``; a user file holding only the keys that differ and
``key=value`` overrides (from the command line) are applied on top of them, so a recording with
other topic names is read by configuration alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from cfgrl_ros.observation import OBSERVATION_FIELDS
from cfgrl_ros.paths import config_path

DEFAULT_FILE = "topics.yaml"
# Keys naming a topic that may be switched off with "" or null.
OPTIONAL_TOPICS = ("object_pose", "image", "wrist_image", "episode_event", "success")
TOPIC_KEYS = (
    "joint_states",
    "current_pose",
    "object_pose",
    "image",
    "wrist_image",
    "target_pose",
    "gripper_command",
    "episode_event",
    "success",
)


@dataclass(frozen=True)
class TopicMap:
    """Topic names (None: an optional topic not in use), joint names and alignment settings."""

    joint_states: str
    current_pose: str
    object_pose: str | None
    image: str | None
    wrist_image: str | None
    target_pose: str
    gripper_command: str
    episode_event: str | None
    success: str | None
    arm_joints: tuple[str, ...]
    finger_joints: tuple[str, ...]
    control_rate: float  # ticks per second
    max_staleness: float  # seconds
    episode_gap: float  # seconds

    @property
    def period(self) -> float:
        """Seconds between two control ticks."""
        return 1.0 / self.control_rate

    def image_topics(self) -> dict[str, str]:
        """Observation image key ('image', 'wrist_image') -> topic, for the cameras in use."""
        return {
            key: topic
            for key, topic in (("image", self.image), ("wrist_image", self.wrist_image))
            if topic
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists, not tuples), as in the YAML file."""
        values = asdict(self)
        values["arm_joints"] = list(self.arm_joints)
        values["finger_joints"] = list(self.finger_joints)
        return values


def _validated(values: dict[str, Any], source: str) -> TopicMap:
    known = {f.name for f in fields(TopicMap)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{source}: unknown topic map keys {unknown}; valid keys: {sorted(known)}")
    missing = sorted(known - set(values))
    if missing:
        raise ValueError(f"{source}: topic map lacks keys {missing}")
    checked: dict[str, Any] = {}
    for key in TOPIC_KEYS:
        topic = values[key]
        if topic in ("", None) and key in OPTIONAL_TOPICS:
            checked[key] = None
            continue
        if not isinstance(topic, str) or not topic.startswith("/"):
            raise ValueError(
                f"{source}: topic {key!r} is {topic!r}; expected an absolute topic name like "
                f"'/joint_states'" + (' (or "" to switch it off)' if key in OPTIONAL_TOPICS else "")
            )
        checked[key] = topic
    for key in ("arm_joints", "finger_joints"):
        names = values[key]
        if isinstance(names, str) or not all(isinstance(n, str) for n in names or ()):
            raise ValueError(f"{source}: {key!r} must be a list of joint names, got {names!r}")
        checked[key] = tuple(names)
    arm_size = OBSERVATION_FIELDS["joint_pos"]
    if len(checked["arm_joints"]) != arm_size:
        raise ValueError(
            f"{source}: arm_joints names {len(checked['arm_joints'])} joints, but the observation "
            f"has {arm_size} arm joint positions; list the {arm_size} arm joints in order"
        )
    if not checked["finger_joints"]:
        raise ValueError(f"{source}: finger_joints is empty; name the finger joint(s)")
    for key in ("control_rate", "max_staleness", "episode_gap"):
        value = values[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(
                f"{source}: {key!r} must be a positive number of seconds/Hz, got {value!r}"
            )
        checked[key] = float(value)
    return TopicMap(**checked)


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping a YAML file holds ({} when it is empty); `what` names the file in errors
    ("topic map file"). Raises FileNotFoundError, or ValueError for invalid YAML or a file that
    holds something other than a mapping."""
    try:
        values = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{what} {path} is not valid YAML: {error}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"{what} {path} must hold a mapping of keys, not {type(values)}")
    return values


def load_topic_map(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> TopicMap:
    """The default topic map, updated by the keys in `path` and then by `overrides`.

    Raises ValueError naming the key for unknown keys and invalid values.
    """
    values = read_yaml_mapping(config_path(DEFAULT_FILE), "topic map file")
    source = str(config_path(DEFAULT_FILE))
    if path is not None:
        user = read_yaml_mapping(path, "topic map file")
        _validated({**values, **user}, str(path))  # report errors against the user's file
        values.update(user)
        source = str(path)
    if overrides:
        values.update(overrides)
        source = f"{source} with overrides {dict(overrides)}"
    return _validated(values, source)


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["key=value", ...]`` (command-line overrides) -> {key: value}; values parsed as YAML.

    ``wrist_image=`` switches an optional topic off; ``control_rate=10`` gives a number.
    """
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"topic override {item!r} is not of the form key=value")
        overrides[key.strip()] = yaml.safe_load(text) if text.strip() else ""
    return overrides
