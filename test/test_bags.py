"""Rosbag writing and reading: round trips, other recordings, and every bad input."""

from __future__ import annotations

import logging
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Writer
from rosbags.rosbag2.enums import StoragePlugin

from cfgrl_ros.arm.command_adapter import ArmCommandAdapter
from cfgrl_ros.data.bag_reader import BagError, read_bag, read_bags
from cfgrl_ros.data.bag_writer import TYPESTORE, BagWriteError, EpisodeBagWriter
from cfgrl_ros.data.episode import Episode
from cfgrl_ros.data.episode_recorder import EpisodeRecorder, episode_bags
from cfgrl_ros.data.topic_map import load_topic_map
from cfgrl_ros.msg_arrays import image_array
from cfgrl_ros.observation import PROPRIOCEPTION, ObservationSpec

CAMERA = ObservationSpec(image_keys=("image",))  # the scene camera as recorded, and the state

T = TYPESTORE.types
PERIOD_NS = 50_000_000  # 20 Hz
START_NS = 1_700_000_000 * 10**9


def make_episode(rng: np.random.Generator, length: int, success: bool, image=(16, 20)) -> Episode:
    """A plausible random episode: the gripper wanders inside the workspace box."""
    adapter = ArmCommandAdapter()
    actions = rng.uniform(-0.9, 0.9, (length, 7))
    actions[:, 6] = np.where(rng.random(length) < 0.5, 1.0, -1.0)
    eef_pos = np.empty((length, 3))
    eef_quat = np.empty((length, 4))
    pos, quat = np.array([0.5, 0.0, 0.1]), np.array([1.0, 0.0, 0.0, 0.0])
    for t in range(length):
        eef_pos[t], eef_quat[t] = pos, quat
        command = adapter.command(actions[t], pos, quat)
        pos, quat = command.target_pos, command.target_quat  # a perfect tracker
    obs = {
        "joint_pos": rng.normal(size=(length, 7)),
        "gripper_width": rng.uniform(0.0, 0.08, (length, 1)),
        "eef_pos": eef_pos,
        "eef_quat": eef_quat,
        "object_pos": rng.uniform(-0.1, 0.1, (length, 3)) + np.array([0.5, 0.0, 0.0]),
        "object_quat": np.tile([0.0, 0.0, 0.0, 1.0], (length, 1)),
    }
    if image:
        obs["image"] = rng.integers(0, 256, (length, *image, 3), dtype=np.uint8)
    rewards = np.zeros(length)
    rewards[-1] = float(success)
    return Episode(obs, actions, rewards, success)


@pytest.fixture(scope="module")
def episodes():
    rng = np.random.default_rng(0)
    return [make_episode(rng, n, s) for n, s in ((12, True), (9, False), (15, True))]


def write(path: Path, episodes, **kwargs) -> Path:
    with EpisodeBagWriter(path, start_time_ns=START_NS, **kwargs) as writer:
        for episode in episodes:
            writer.write(episode)
    return path


def assert_same(read: list[Episode], written: list[Episode]) -> None:
    """Episodes, actions and every field that was read are as written."""
    assert len(read) == len(written)
    for got, want in zip(read, written, strict=True):
        assert len(got) == len(want)
        assert got.success == want.success
        np.testing.assert_array_equal(got.rewards, want.rewards)
        assert set(PROPRIOCEPTION) <= set(got.observations) <= set(want.observations)
        for name in got.observations:
            values = want.observations[name]
            if name == "image":
                np.testing.assert_array_equal(got.observations[name], values)
            else:
                np.testing.assert_allclose(got.observations[name], values, atol=1e-6)
        np.testing.assert_allclose(got.actions, want.actions, atol=1e-4)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_round_trip(tmp_path, episodes, storage):
    bag = write(tmp_path / "demo", episodes, storage=storage)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # no temp dir left behind
    read = read_bag(bag, observation=CAMERA)
    assert_same(read, episodes)
    assert "image" in read[0].observations and "object_pos" in read[0].observations
    assert not read[0].synthetic
    assert read[0].metadata["start_time_ns"] == START_NS
    resized = ObservationSpec(image_keys=("image",), image_size=(8, 10))
    assert read_bag(bag, observation=resized)[0].observations["image"].shape == (12, 8, 10, 3)
    state_only = read_bag(bag)[0]
    assert "image" not in state_only.observations and "object_pos" in state_only.observations


def test_a_recording_without_object_pose_reads_for_a_policy_that_does_not_use_it(
    tmp_path, episodes
):
    """A real cell records no /object_pose: a vision policy's inputs read, a state one's fail."""
    cell = load_topic_map(overrides={"object_pose": ""})
    bag = write(tmp_path / "cell", episodes, topic_map=cell)
    vision = ObservationSpec(PROPRIOCEPTION, ("image",), (16, 20))
    read = read_bag(bag, observation=vision)
    assert_same(read, episodes)
    assert "object_pos" not in read[0].observations
    with pytest.raises(BagError) as error:
        read_bag(bag)
    message = str(error.value)
    assert "lacks topics ['object_pose=/object_pose']" in message
    assert "or train a policy that does not read the object pose (pretrain" in message
    with pytest.raises(BagError, match="the topic map switches object_pose off"):
        read_bag(bag, topic_map=cell)
    with pytest.raises(BagError) as error:  # only the camera is missing: no object pose advice
        read_bag(bag, cell, observation=ObservationSpec(PROPRIOCEPTION, ("wrist_image",)))
    assert "wrist_image=" in str(error.value) and "object pose" not in str(error.value)


@pytest.mark.parametrize(
    ("storage", "compression", "version"),
    [("sqlite3", "file", 9), ("mcap", "message", 9), ("sqlite3", "message", 8)],
)
def test_compressed_and_older_bags(tmp_path, episodes, storage, compression, version):
    bag = write(
        tmp_path / "bag",
        episodes,
        storage=storage,
        compression=compression,
        version=version,
        synthetic=True,
    )
    read = read_bag(bag)
    assert_same(read, episodes)
    assert all(e.synthetic for e in read)


def test_bag_written_at_another_rate_warns(tmp_path, episodes, caplog):
    bag = write(tmp_path / "bag", episodes[:1], control_rate=10.0)
    with caplog.at_level(logging.WARNING):
        (slow,) = read_bag(bag, topic_map=load_topic_map(overrides={"control_rate": 10}))
    assert not caplog.text
    assert_same([slow], episodes[:1])
    read_bag(bag)
    assert "written at 10 Hz, but the topic map's control_rate is 20 Hz" in caplog.text


def test_interrupted_write_leaves_nothing(tmp_path, episodes):
    with pytest.raises(RuntimeError, match="crash"), EpisodeBagWriter(tmp_path / "bag") as writer:
        writer.write(episodes[0])
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    write(tmp_path / "bag", episodes[:1])
    with pytest.raises(BagWriteError, match="exists already"):
        EpisodeBagWriter(tmp_path / "bag")
    with pytest.raises(BagWriteError, match="version 7 cannot be written"):
        EpisodeBagWriter(tmp_path / "v7", version=7)
    bad = make_episode(np.random.default_rng(1), 5, False)
    bad.observations["eef_pos"] = bad.observations["eef_pos"][:, :2]
    with pytest.raises(BagWriteError, match=r"'eef_pos' has shape \(5, 2\)"):
        write(tmp_path / "bad", [bad])
    assert not (tmp_path / "bad").exists()
    no_camera = load_topic_map(overrides={"image": None})
    with pytest.raises(BagWriteError, match=r"camera images \['image'\] but the topic map"):
        write(tmp_path / "blind", episodes[:1], topic_map=no_camera)
    assert not (tmp_path / "blind").exists()


FR3 = {
    "joint_states": "/fr3/joint_states",
    "current_pose": "/fr3/ee_pose",
    "object_pose": "/mocap/cube",
    "image": "/cam/rgb",
    "target_pose": "/cartesian_controller/target",
    "gripper_command": "/fr3/gripper_width_cmd",
    "episode_event": None,
    "success": "/judge/success",
    "arm_joints": [f"fr3_joint{i}" for i in range(1, 8)],
    "finger_joints": ["fr3_finger_joint1"],
}


def test_recording_with_other_names_reads_with_a_topic_map(tmp_path, episodes):
    """Renamed topics and joints, one finger joint, no episode events (cut at pauses)."""
    fr3 = load_topic_map(overrides=FR3)
    bag = write(tmp_path / "fr3", episodes, topic_map=fr3)
    with pytest.raises(BagError) as error:
        read_bag(bag)
    message = str(error.value)
    assert "lacks topics" in message and "joint_states=/joint_states" in message
    assert "/fr3/joint_states (sensor_msgs/msg/JointState)" in message  # what the bag has
    assert "--topic KEY=/topic" in message

    user = tmp_path / "fr3.yaml"
    user.write_text("\n".join(f"{k}: {v if v is not None else ''}" for k, v in FR3.items()))
    assert_same(read_bag(bag, topic_map=load_topic_map(user)), episodes)


def write_messages(path: Path, messages, storage=StoragePlugin.SQLITE3) -> Path:
    """A bag of (topic, stamp_ns, message) as another recorder would write it."""
    with Writer(path, version=9, storage_plugin=storage) as writer:
        connections = {}
        for topic, stamp, msg in messages:
            if topic not in connections:
                connections[topic] = writer.add_connection(
                    topic, msg.__msgtype__, typestore=TYPESTORE
                )
            writer.write(connections[topic], stamp, TYPESTORE.serialize_cdr(msg, msg.__msgtype__))
    return path


def header(stamp: int):
    return T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9),
        frame_id="base",
    )


def pose(stamp: int, x: float, quat=(1.0, 0.0, 0.0, 0.0)):
    return T["geometry_msgs/msg/PoseStamped"](
        header=header(stamp),
        pose=T["geometry_msgs/msg/Pose"](
            position=T["geometry_msgs/msg/Point"](x=x, y=0.0, z=0.1),
            orientation=T["geometry_msgs/msg/Quaternion"](*quat),
        ),
    )


def joints(stamp: int, names=None):
    names = names or [f"panda_joint{i}" for i in range(1, 8)] + [
        "panda_finger_joint1",
        "panda_finger_joint2",
    ]
    return T["sensor_msgs/msg/JointState"](
        header=header(stamp),
        name=names,
        position=np.linspace(0, 1, len(names)),
        velocity=np.zeros(0),
        effort=np.zeros(0),
    )


def bgr_image(stamp: int, rgb: np.ndarray):
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    return T["sensor_msgs/msg/Image"](
        header=header(stamp),
        height=rgb.shape[0],
        width=rgb.shape[1],
        encoding="bgr8",
        is_bigendian=0,
        step=rgb.shape[1] * 3,
        data=bgr.reshape(-1),
    )


def png_image(stamp: int, rgb: np.ndarray):
    ok, encoded = cv2.imencode(".png", rgb[:, :, ::-1])
    assert ok
    return T["sensor_msgs/msg/CompressedImage"](
        header=header(stamp), format="rgb8; png compressed bgr8", data=encoded.reshape(-1)
    )


def event(stamp: int, text: str):
    return "/episode_event", stamp, T["std_msgs/msg/String"](data=text)


def tick_messages(stamp: int, x: float, command: bool = True, camera=None, rgb=None):
    """The observations of one tick at `stamp`, and the command answering them."""
    messages = [
        ("/joint_states", stamp, joints(stamp)),
        ("/franka_robot_state_broadcaster/current_pose", stamp, pose(stamp, x)),
        ("/object_pose", stamp, pose(stamp, 0.6)),
    ]
    if camera is not None:
        messages.append(("/camera/camera/color/image_raw", stamp, camera(stamp, rgb)))
    if command:
        later = stamp + 5_000_000
        messages += [
            ("/target_pose", later, pose(later, x + 0.01)),
            ("/gripper_command", later, T["std_msgs/msg/Float64"](data=0.0)),
        ]
    return messages


@pytest.mark.parametrize("camera", [bgr_image, png_image])
def test_bgr8_and_compressed_images_come_out_rgb(tmp_path, camera):
    rgb = np.zeros((6, 8, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # red
    rgb[2:4, 2:4, 2] = 90  # a bluish square
    messages = [event(START_NS, "start")]
    for t in range(5):
        messages += tick_messages(START_NS + t * PERIOD_NS, 0.5, camera=camera, rgb=rgb)
    messages.append(event(START_NS + 5 * PERIOD_NS, "failure"))
    (episode,) = read_bag(write_messages(tmp_path / "cam", messages), observation=CAMERA)
    np.testing.assert_array_equal(episode.observations["image"][0], rgb)
    # the target is 1 cm ahead of the pose; the gripper is commanded closed
    step = ArmCommandAdapter().config.max_translation
    np.testing.assert_allclose(episode.actions[:, :3], [[0.01 / step, 0.0, 0.0]] * 5, atol=1e-5)
    assert np.all(episode.actions[:, 6] == 1.0)
    assert not episode.success and not episode.rewards.any()


def raw_image(encoding: str, pixels: np.ndarray, padding: int = 0):
    """An Image whose rows are `padding` bytes longer than the pixels (as some drivers send)."""
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1)
    padded = np.concatenate([rows, np.full((height, padding), 7, np.uint8)], axis=1)
    return T["sensor_msgs/msg/Image"](
        header=header(0),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=padded.shape[1],
        data=padded.reshape(-1),
    )


def test_every_raw_encoding_becomes_rgb():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (3, 5, 3), dtype=np.uint8)
    alpha = np.full((3, 5, 1), 255, np.uint8)
    gray = rgb[..., :1]
    cases = {
        "rgb8": (rgb, rgb),
        "bgr8": (rgb[..., ::-1], rgb),
        "rgba8": (np.concatenate([rgb, alpha], axis=2), rgb),
        "bgra8": (np.concatenate([rgb[..., ::-1], alpha], axis=2), rgb),
        "mono8": (gray, np.repeat(gray, 3, axis=2)),
    }
    for encoding, (pixels, expected) in cases.items():
        converted = image_array(raw_image(encoding, np.ascontiguousarray(pixels), padding=3))
        assert converted.shape == (3, 5, 3) and converted.dtype == np.uint8, encoding
        np.testing.assert_array_equal(converted, expected, err_msg=encoding)
    resized = image_array(raw_image("rgb8", rgb), size=(10, 6))  # (width, height)
    assert resized.shape == (6, 10, 3)
    with pytest.raises(ValueError, match="'yuv422' is not supported"):
        image_array(raw_image("yuv422", rgb))
    short = raw_image("rgb8", rgb)
    short.data = short.data[:-1]
    with pytest.raises(ValueError, match="expected 45"):
        image_array(short)


def test_stale_camera_skips_that_episode_with_a_warning(tmp_path, caplog):
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    messages = []
    for episode in range(2):
        start = START_NS + episode * 100 * PERIOD_NS
        messages.append(event(start, "start"))
        for t in range(10):
            # The camera of the first episode dies after tick 3.
            camera = bgr_image if episode == 1 or t < 3 else None
            messages += tick_messages(start + t * PERIOD_NS, 0.5, camera=camera, rgb=rgb)
        messages.append(event(start + 10 * PERIOD_NS, "success"))
    bag = write_messages(tmp_path / "stale", sorted(messages, key=lambda m: m[1]))
    with caplog.at_level(logging.WARNING):
        read = read_bag(bag, observation=CAMERA)
    assert len(read) == 1 and read[0].success and len(read[0]) == 10
    assert "episode 0" in caplog.text and "older than max_staleness" in caplog.text
    assert "/camera/camera/color/image_raw" in caplog.text
    assert len(read_bag(bag)) == 2  # the state topics were fine


def test_late_policy_start_trims_leading_ticks(tmp_path):
    messages = [event(START_NS, "start")]
    for t in range(8):
        messages += tick_messages(START_NS + t * PERIOD_NS, 0.5, command=t >= 3)
    messages.append(event(START_NS + 8 * PERIOD_NS, "success"))
    (episode,) = read_bag(write_messages(tmp_path / "late", messages))
    assert len(episode) == 5 and episode.rewards[-1] == 1.0


def test_episode_without_actions(tmp_path):
    messages = [event(START_NS, "start")]
    for t in range(4):
        messages += tick_messages(START_NS + t * PERIOD_NS, 0.5)
    messages.append(event(START_NS + 4 * PERIOD_NS, "success"))
    second = START_NS + 100 * PERIOD_NS
    messages.append(event(second, "start"))
    for t in range(4):
        messages += tick_messages(second + t * PERIOD_NS, 0.5, command=False)
    messages.append(event(second + 4 * PERIOD_NS, "failure"))
    bag = write_messages(tmp_path / "no_actions", messages)
    with pytest.raises(BagError, match=r"episode 1 .* has no actions: no /target_pose messages"):
        read_bag(bag)


def bad_joints(stamp: int):
    msg = joints(stamp)
    msg.position[3] = np.nan
    return msg


# topic, message with a bad value at a stamp, what the warning says is wrong
BAD_VALUES = {
    "nan_joint": ("/joint_states", bad_joints, "non-finite values"),
    "nan_target": ("/target_pose", lambda stamp: pose(stamp, np.nan), "non-finite values"),
    "inf_gripper": (
        "/gripper_command",
        lambda stamp: T["std_msgs/msg/Float64"](data=np.inf),
        "non-finite values",
    ),
    "zero_quat_pose": (
        "/franka_robot_state_broadcaster/current_pose",
        lambda stamp: pose(stamp, 0.5, quat=(0.0, 0.0, 0.0, 0.0)),
        "a zero-norm quaternion",
    ),
}


def episodes_with_a_bad_value(bad: str, count: int):
    """`count` episodes of 6 ticks; the first has `bad` at its tick 2."""
    topic, make, _ = BAD_VALUES[bad]
    messages = []
    for episode in range(count):
        start = START_NS + episode * 100 * PERIOD_NS
        messages.append(event(start, "start"))
        for t in range(6):
            ticks = tick_messages(start + t * PERIOD_NS, 0.5)
            if episode == 0 and t == 2:
                ticks = [(name, at, make(at) if name == topic else m) for name, at, m in ticks]
            messages += ticks
        messages.append(event(start + 6 * PERIOD_NS, "success"))
    return messages


@pytest.mark.parametrize("bad", sorted(BAD_VALUES))
def test_a_bad_value_skips_only_its_episode(tmp_path, caplog, bad):
    topic, _, what = BAD_VALUES[bad]
    bag = write_messages(tmp_path / "bad", episodes_with_a_bad_value(bad, 2))
    with caplog.at_level(logging.WARNING):
        (kept,) = read_bag(bag)
    assert kept.metadata["index"] == 1 and len(kept) == 6
    warning = caplog.text
    assert str(bag) in warning and "episode 0" in warning and "skipped" in warning
    assert f"the {topic} message in force at tick 2" in warning and what in warning

    lone = write_messages(tmp_path / "lone", episodes_with_a_bad_value(bad, 1))
    with pytest.raises(BagError, match="every episode was skipped"):
        read_bag(lone)


def test_episode_events_without_a_complete_episode(tmp_path):
    messages = [event(START_NS, "start")]
    for t in range(4):
        messages += tick_messages(START_NS + t * PERIOD_NS, 0.5)
    bag = write_messages(tmp_path / "unfinished", messages)
    with pytest.raises(BagError) as error:
        read_bag(bag)
    message = str(error.value)
    assert "its 1 /episode_event messages hold no 'start' followed by" in message
    assert "/target_pose" not in message  # it has commands: they are not what is missing


def test_the_same_bag_twice(tmp_path, episodes):
    bag = write(tmp_path / "bag", episodes[:1])
    with pytest.raises(BagError, match=r"bag .*bag/ is given twice \(also as .*bag\)"):
        read_bags([bag, f"{bag}/"])
    with pytest.raises(BagError, match=r"bag\.db3 is a storage file of the bag .*bag, which"):
        read_bags([bag, bag / "bag.db3"])
    # Checked before any bag is read.
    with pytest.raises(BagError, match="given twice"):
        read_bags([tmp_path / "nowhere", tmp_path / "nowhere"])


def test_joint_names_that_do_not_match(tmp_path):
    messages = [event(START_NS, "start")]
    messages += tick_messages(START_NS, 0.5)
    messages[1] = ("/joint_states", START_NS, joints(START_NS, ["a1", "a2"]))
    messages.append(event(START_NS + PERIOD_NS, "success"))
    bag = write_messages(tmp_path / "joints", messages)
    with pytest.raises(
        BagError, match=r"lacks joints \['panda_joint1'.*arm_joints / finger_joints parameters"
    ):
        read_bag(bag)


def test_wrong_message_type_on_a_topic(tmp_path):
    messages = [event(START_NS, "start"), *tick_messages(START_NS, 0.5)]
    messages[2] = ("/franka_robot_state_broadcaster/current_pose", START_NS, joints(START_NS))
    bag = write_messages(tmp_path / "types", messages)
    with pytest.raises(BagError, match="has type sensor_msgs/msg/JointState, expected"):
        read_bag(bag)


def test_images_of_different_sizes_across_bags(tmp_path):
    rng = np.random.default_rng(3)
    small = write(tmp_path / "small", [make_episode(rng, 4, True, image=(8, 8))])
    large = write(tmp_path / "large", [make_episode(rng, 4, True, image=(12, 8))])
    with pytest.raises(BagError, match=r"\(12, 8, 3\) in .*large but \(8, 8, 3\)"):
        read_bags([small, large], observation=CAMERA)
    resized = ObservationSpec(image_keys=("image",), image_size=(8, 8))
    assert len(read_bags([small, large], observation=resized)) == 2


def test_paths_that_are_not_bags(tmp_path):
    with pytest.raises(BagError, match="does not exist"):
        read_bag(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match=r"no metadata\.yaml"):
        read_bag(tmp_path / "empty")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(BagError, match="is not a rosbag2 bag"):
        read_bag(notes)
    with pytest.raises(BagError, match="no bags given"):
        read_bags([])


def test_camera_switched_off_in_the_topic_map(tmp_path, episodes):
    bag = write(tmp_path / "bag", episodes[:1])
    no_wrist = load_topic_map(overrides={"wrist_image": ""})
    with pytest.raises(BagError, match=r"camera \['wrist_image'\] is switched off"):
        read_bag(bag, no_wrist, observation=ObservationSpec(image_keys=("wrist_image",)))


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_without_metadata_is_recoverable(tmp_path, episodes, storage):
    """A recording cut off before ros2 bag record wrote metadata.yaml."""
    bag = write(tmp_path / "bag", episodes[:1], storage=storage)
    (bag / "metadata.yaml").unlink()
    (data,) = [p for p in bag.iterdir() if p.suffix in (".db3", ".mcap")]
    with pytest.raises(BagError) as error:
        read_bag(bag)
    message = str(error.value)
    assert f"`ros2 bag reindex {bag} -s {storage}` rebuilds metadata.yaml" in message
    assert f"or pass its storage file {data} itself" in message
    assert ("mcap recover" in message) == (storage == "mcap")
    assert_same(read_bag(data), episodes[:1])  # the advice works


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_truncated_bag(tmp_path, episodes, storage):
    bag = write(tmp_path / "bag", episodes, storage=storage)
    (data,) = [p for p in bag.iterdir() if p.suffix in (".db3", ".mcap")]
    content = data.read_bytes()
    data.write_bytes(content[: len(content) // 2])
    with pytest.raises(BagError, match="is truncated or corrupt") as error:
        read_bag(bag)
    message = str(error.value)
    salvage = {"mcap": f"`mcap recover {data} -o ", "sqlite3": f"`sqlite3 {data} .dump | "}
    assert f"salvage what was written with {salvage[storage]}" in message
    if storage == "sqlite3" and shutil.which("sqlite3") and shutil.which("sed"):
        (command,) = re.findall(r"`(sqlite3 .*?)`", message)
        subprocess.run(command, shell=True, check=False, capture_output=True)
        assert read_bag(bag / "bag_recovered.db3")  # the episodes before the cut


def test_corrupt_bag(tmp_path, episodes):
    bag = write(tmp_path / "bag", episodes)
    # A damaged message: garbage where a joint state was.
    with sqlite3.connect(bag / "bag.db3") as db:
        db.execute(
            "UPDATE messages SET data = ? WHERE id = (SELECT min(messages.id) FROM messages "
            "JOIN topics ON topics.id = topic_id WHERE topics.name = '/joint_states')",
            (b"\x07" * 9,),
        )
    with pytest.raises(BagError, match=r"JointState message on /joint_states .* cannot be decoded"):
        read_bag(bag)
    # Random bytes instead of a database.
    (bag / "bag.db3").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(BagError, match="is truncated or corrupt"):
        read_bag(bag)
    # A newer format than the reader knows.
    other = write(tmp_path / "other", episodes[:1])
    metadata = other / "metadata.yaml"
    metadata.write_text(metadata.read_text().replace("version: 9", "version: 10"))
    with pytest.raises(BagError, match="version 10 not supported"):
        read_bag(other)


def replay_into(recorder: EpisodeRecorder, bag: Path, stop_after_starts: int | None = None) -> None:
    """Feed a bag's messages to a recorder as the live recorder node would (receive order)."""
    starts = 0
    with AnyReader([bag]) as reader:
        for connection, stamp, data in reader.messages():
            if connection.topic != "/episode_event":
                recorder.message(connection.topic, stamp, bytes(data))
                continue
            text = reader.deserialize(data, connection.msgtype).data
            starts += text == "start"
            if stop_after_starts is not None and starts > stop_after_starts:
                return
            recorder.event(text, stamp, bytes(data))


def test_the_live_recorder_writes_one_bag_per_episode_in_the_layout_pretrain_reads(
    tmp_path, episodes
):
    bag = write(tmp_path / "source", episodes)
    with AnyReader([bag]) as reader:
        topics = {connection.topic: connection.msgtype for connection in reader.connections}
    folder = tmp_path / "recorded"
    recorder = EpisodeRecorder(folder, topics, "/episode_event", 20.0, task="lift")
    replay_into(recorder, bag, stop_after_starts=2)
    recorder.event("start", START_NS * 2, b"")  # a third episode, stopped mid-way
    recorder.close()
    assert [path.name for path in episode_bags(folder)] == ["episode_000001", "episode_000002"]
    assert recorder.discarded == 1 and [p.name for p in folder.iterdir()] == sorted(
        p.name for p in episode_bags(folder)
    )  # no partial episode left behind
    assert_same(read_bags([folder], observation=CAMERA), episodes[:2])

    again = EpisodeRecorder(folder, topics, "/episode_event", 20.0)  # a later session goes on
    replay_into(again, bag)
    assert [path.name for path in episode_bags(folder)][-1] == f"episode_{2 + len(episodes):06d}"
    with pytest.raises(ValueError, match="is a rosbag: record into a folder of its own"):
        EpisodeRecorder(bag, topics, "/episode_event", 20.0)
