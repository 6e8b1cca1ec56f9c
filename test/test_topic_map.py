"""The topic map: defaults from config/topics.yaml, partial user files, overrides, errors."""

from __future__ import annotations

import pytest

from cfgrl_ros.data.topic_map import load_topic_map, parse_overrides


def test_defaults_are_the_franka_ros2_topics():
    topics = load_topic_map()
    assert topics.joint_states == "/joint_states"
    assert topics.current_pose == "/franka_robot_state_broadcaster/current_pose"
    assert topics.image == "/camera/camera/color/image_raw"
    assert topics.wrist_image == "/wrist_camera/camera/color/image_raw"
    assert topics.object_pose == "/object_pose"
    assert topics.target_pose == "/target_pose"
    assert topics.gripper_command == "/gripper_command"
    assert topics.episode_event == "/episode_event"
    assert topics.arm_joints == tuple(f"panda_joint{i}" for i in range(1, 8))
    assert topics.finger_joints == ("panda_finger_joint1", "panda_finger_joint2")
    assert topics.control_rate == 20.0
    assert topics.period == pytest.approx(0.05)
    assert topics.image_topics() == {
        "image": "/camera/camera/color/image_raw",
        "wrist_image": "/wrist_camera/camera/color/image_raw",
    }


def test_user_file_changes_only_its_keys_and_overrides_win(tmp_path):
    user = tmp_path / "fr3.yaml"
    user.write_text(
        "joint_states: /robot/joint_states\n"
        "arm_joints: [fr3_joint1, fr3_joint2, fr3_joint3, fr3_joint4, fr3_joint5, fr3_joint6,"
        " fr3_joint7]\n"
        "wrist_image: /wrist/color/image_raw\n"
    )
    overrides = parse_overrides(["control_rate=10", "wrist_image=", "episode_event=null"])
    topics = load_topic_map(user, overrides)
    assert topics.joint_states == "/robot/joint_states"
    assert topics.arm_joints[0] == "fr3_joint1"
    assert topics.object_pose == "/object_pose"  # untouched default
    assert topics.control_rate == 10.0
    assert topics.wrist_image is None and topics.episode_event is None
    assert load_topic_map(user).wrist_image == "/wrist/color/image_raw"
    assert topics.to_dict()["arm_joints"] == list(topics.arm_joints)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"joint_state": "/x"}, "unknown topic map keys ['joint_state']"),
        ({"target_pose": "target"}, "expected an absolute topic name"),
        ({"target_pose": ""}, "'target_pose' is ''"),
        ({"arm_joints": ["a", "b"]}, "arm_joints names 2 joints"),
        ({"finger_joints": []}, "finger_joints is empty"),
        ({"control_rate": 0}, "'control_rate' must be a positive"),
        ({"max_staleness": "soon"}, "'max_staleness' must be a positive"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_topic_map(overrides=overrides)


def test_bad_files_and_override_syntax(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_topic_map(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("joint_states: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_topic_map(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- /joint_states\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_topic_map(listing)
    with pytest.raises(ValueError, match="not of the form key=value"):
        parse_overrides(["joint_states"])
