"""`cfgrl-ros collect`: expert episodes recorded as rosbag2 bags that read back."""

from __future__ import annotations

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from cfgrl_ros.arm.command_adapter import ArmCommandAdapter
from cfgrl_ros.cli.main import main
from cfgrl_ros.data.bag_reader import read_bag
from cfgrl_ros.sim.env import FrankaSimEnv
from cfgrl_ros.sim.expert import ScriptedExpert
from cfgrl_ros.sim.rollout import expert_episodes
from cfgrl_ros.sim.tasks import task_adapter_config

EPISODES = 2
TOPICS = {
    "/joint_states": "sensor_msgs/msg/JointState",
    "/franka_robot_state_broadcaster/current_pose": "geometry_msgs/msg/PoseStamped",
    "/object_pose": "geometry_msgs/msg/PoseStamped",
    "/target_pose": "geometry_msgs/msg/PoseStamped",
    "/gripper_command": "std_msgs/msg/Float64",
    "/episode_event": "std_msgs/msg/String",
    "/success": "std_msgs/msg/Bool",
}
IMAGE_TOPIC = "/camera/camera/color/image_raw"
WRIST_TOPIC = "/wrist_camera/camera/color/image_raw"


@pytest.fixture(scope="module")
def expected_episodes():
    """What collect records: the same expert, noise, seeds and simulator."""
    env = FrankaSimEnv("lift")
    try:
        expert = ScriptedExpert("lift", noise=0.1, seed=3)
        return list(expert_episodes(env, expert, EPISODES, seed=3))
    finally:
        env.close()


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.sim
def test_collect_writes_a_bag_that_reads_back(tmp_path, capsys, storage, expected_episodes):
    out = tmp_path / f"demos_{storage}"
    argv = ["collect", "--episodes", str(EPISODES), "--noise", "0.1", "--seed", "3"]
    status = main([*argv, "--out", str(out), "--storage", storage])
    assert status == 0
    successes = sum(episode.success for episode in expected_episodes)
    assert f"success rate {successes / EPISODES:.1%} ({successes}/{EPISODES})" in (
        capsys.readouterr().out
    )

    ticks = sum(len(episode) for episode in expected_episodes)
    with AnyReader([out]) as reader:
        found = {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
        assert {topic: kind for topic, (kind, _) in found.items()} == TOPICS
        assert found["/joint_states"][1] == found["/target_pose"][1] == ticks
        assert found["/success"][1] == EPISODES and found["/episode_event"][1] == 2 * EPISODES
        decoded = {}
        for connection, _, raw in reader.messages():
            decoded.setdefault(connection.topic, []).append(
                reader.deserialize(raw, connection.msgtype)
            )
    assert [m.data for m in decoded["/success"]] == [e.success for e in expected_episodes]
    assert [m.data for m in decoded["/episode_event"]][:2] == [
        "start",
        "success" if expected_episodes[0].success else "failure",
    ]
    first = decoded["/franka_robot_state_broadcaster/current_pose"][0].pose.position
    np.testing.assert_allclose(
        [first.x, first.y, first.z], expected_episodes[0].observations["eef_pos"][0], atol=1e-9
    )

    # The package's reader recovers the expert's episodes and the actions as executed (a
    # target clipped to the workspace reads back as the shorter move it was).
    episodes = read_bag(out)
    assert [e.success for e in episodes] == [e.success for e in expected_episodes]
    adapter = ArmCommandAdapter(task_adapter_config("lift"))
    for read, recorded in zip(episodes, expected_episodes, strict=True):
        assert len(read) == len(recorded)
        obs = recorded.observations
        executed = [
            adapter.action(pos, quat, adapter.command(action, pos, quat))
            for action, pos, quat in zip(
                recorded.actions, obs["eef_pos"], obs["eef_quat"], strict=True
            )
        ]
        np.testing.assert_allclose(read.actions, executed, atol=1e-5)


@pytest.mark.sim
def test_collect_with_camera_records_both_cameras(tmp_path):
    out = tmp_path / "camera"
    argv = ["collect", "--episodes", "1", "--horizon", "5", "--camera", "--image-size", "32"]
    assert main([*argv, "--out", str(out)]) == 0
    with AnyReader([out]) as reader:
        for topic in (IMAGE_TOPIC, WRIST_TOPIC):
            (images,) = [c for c in reader.connections if c.topic == topic]
            assert images.msgcount == 5
            _, _, raw = next(reader.messages(connections=[images]))
            image = reader.deserialize(raw, images.msgtype)
            assert (image.height, image.width, image.encoding) == (32, 32, "rgb8")


def test_collect_refuses_cameras_it_cannot_record(tmp_path, capsys):
    out = str(tmp_path / "demos")
    argv = ["collect", "--episodes", "1", "--cameras", "wrist_image", "--topic", "wrist_image="]
    assert main([*argv, "--out", out]) == 2
    assert "switches camera wrist_image off: give it a topic with --topic" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        main(["collect", "--cameras", "image,fisheye", "--out", out])
    assert "expected distinct cameras of image, wrist_image" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_collect_refuses_an_existing_bag_directory(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    assert main(["collect", "--episodes", "1", "--out", str(out)]) == 2
    assert "exists already" in capsys.readouterr().err


def test_collect_refuses_bad_arguments_before_simulating(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "demos"
    assert main(["collect", "--episodes", "1", "--out", str(out)]) == 2
    assert "file is a file, not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_code:
        main(["collect", "--seed", "-1", "--out", str(tmp_path / "demos")])
    assert exit_code.value.code == 2
    assert "argument --seed: must be >= 0, got -1" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file"]
