"""The simulated Franka environment, its scripted expert and the commanded-arm wrapper."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cfgrl_ros.arm.command_adapter import ArmCommand
from cfgrl_ros.observation import OBSERVATION_FIELDS, OBSERVATIONS, STATE_DIM
from cfgrl_ros.sim.commanded_arm import CommandedArm
from cfgrl_ros.sim.env import FrankaSimEnv
from cfgrl_ros.sim.expert import ScriptedExpert
from cfgrl_ros.sim.rollout import expert_episode, expert_episodes
from cfgrl_ros.sim.tasks import task_adapter_config

pytestmark = pytest.mark.sim

TABLE_Z = -0.112  # table surface in the robot base frame


@pytest.fixture(scope="module")
def lift_env():
    env = FrankaSimEnv("lift")
    env.reset(seed=0)  # the first episode compiles robosuite's numba functions
    yield env
    env.close()


@pytest.fixture(scope="module")
def camera_env():
    env = FrankaSimEnv("lift", cameras=("image", "wrist_image"), image_size=64)
    yield env
    env.close()


def test_observation_has_the_real_arm_fields_in_the_base_frame(lift_env):
    obs, info = lift_env.reset(seed=1)
    assert set(obs) == set(OBSERVATION_FIELDS)
    for name, size in OBSERVATION_FIELDS.items():
        assert obs[name].shape == (size,), name
        assert lift_env.observation_space[name].contains(obs[name]), name
    assert OBSERVATIONS["state"].state_vector(obs).shape == (STATE_DIM,)
    # The hand starts above the table, pointing down; the cube rests on the table in front.
    assert 0.35 < obs["eef_pos"][0] < 0.6 and 0.0 < obs["eef_pos"][2] < 0.2
    assert abs(obs["eef_quat"][0]) > 0.95  # ~180 degrees about x: pointing down
    assert TABLE_Z + 0.015 < obs["object_pos"][2] < TABLE_Z + 0.04  # a 4 cm cube on the table
    assert 0.0 < obs["gripper_width"][0] < 0.08
    assert info == {"success": False, "command": lift_env.command, "steps": 0}


def test_reset_is_seeded_and_fast(lift_env):
    first, _ = lift_env.reset(seed=7)
    lift_env.step(np.array([1.0, 0, 0, 0, 0, 0, 1]))
    start = time.perf_counter()
    again, _ = lift_env.reset(seed=7)
    reset_seconds = time.perf_counter() - start
    other, _ = lift_env.reset(seed=8)
    for name in OBSERVATION_FIELDS:
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.allclose(first["object_pos"], other["object_pos"])
    assert reset_seconds < 0.1  # ~2 ms: the model is not reloaded


def test_hold_command_keeps_the_arm_still_and_actions_move_it(lift_env):
    obs, _ = lift_env.reset(seed=2)
    for _ in range(10):
        held, reward, terminated, truncated, _ = lift_env.step_command(lift_env.hold_command())
    assert np.linalg.norm(held["eef_pos"] - obs["eef_pos"]) < 0.005
    assert (reward, terminated, truncated) == (0.0, False, False)
    for _ in range(10):
        moved, *_ = lift_env.step(np.array([0, 1.0, 0, 0, 0, 0, -1]))
    assert moved["eef_pos"][1] - held["eef_pos"][1] > 0.07  # up to ~0.2 m/s at full action
    assert moved["gripper_width"][0] > 0.07  # opened
    command = lift_env.command
    assert isinstance(command, ArmCommand)
    assert command.gripper_width == lift_env.adapter.config.gripper_open_width


def test_absolute_target_is_tracked(lift_env):
    obs, _ = lift_env.reset(seed=3)
    target = obs["eef_pos"] + [0.05, -0.05, -0.05]
    for _ in range(30):
        obs, *_ = lift_env.step_command(ArmCommand(target, obs["eef_quat"], 0.08))
    assert np.linalg.norm(obs["eef_pos"] - target) < 0.01


def test_horizon_truncates(lift_env):
    env = FrankaSimEnv("lift", horizon=3)
    try:
        env.reset(seed=0)
        flags = [env.step(np.zeros(7))[2:4] for _ in range(3)]
    finally:
        env.close()
    assert flags == [(False, False), (False, False), (False, True)]


def test_expert_without_noise_lifts_the_cube(lift_env):
    expert = ScriptedExpert("lift", noise=0.0, seed=0)
    episodes = list(expert_episodes(lift_env, expert, 20, seed=100))
    assert sum(episode.success for episode in episodes) >= 19
    for episode in episodes:
        if episode.success:  # sparse: 1.0 at the tick that reached success, which ends it
            assert episode.rewards.sum() == 1.0 and episode.rewards[-1] == 1.0
            assert len(episode) < lift_env.horizon
        assert set(OBSERVATION_FIELDS) <= set(episode.observations)
        assert np.all(np.abs(episode.actions) <= 1.0)


def test_noise_lowers_success(lift_env):
    # docs/benchmarks.md: noise 1.0 succeeds ~5% of the time (50 episodes).
    expert = ScriptedExpert("lift", noise=1.0, seed=0)
    episodes = list(expert_episodes(lift_env, expert, 8, seed=200))
    assert sum(episode.success for episode in episodes) <= 3
    assert np.mean([len(episode) for episode in episodes]) > 60


def test_expert_places_the_can():
    env = FrankaSimEnv("pick_place_can")
    try:
        episode = expert_episode(env, ScriptedExpert("pick_place_can", seed=0), seed=0)
        goal = env.goal_pos
    finally:
        env.close()
    assert episode.success and episode.rewards[-1] == 1.0
    np.testing.assert_allclose(episode.observations["object_pos"][-1][:2], goal[:2], atol=0.04)


def test_images_have_the_configured_size_and_are_right_way_up(camera_env):
    obs, _ = camera_env.reset(seed=0)
    for key in ("image", "wrist_image"):
        assert obs[key].shape == (64, 64, 3) and obs[key].dtype == np.uint8
        assert camera_env.observation_space[key].contains(obs[key])
    brightness = obs["image"].mean(axis=(1, 2))
    # agentview looks across the table at the robot: the bright table fills the bottom rows.
    assert brightness[-16:].mean() > brightness[:16].mean() + 20
    red = (obs["image"][..., 0] > 120) & (obs["image"][..., 1:].max(axis=-1) < 80)
    rows = np.nonzero(red)[0]
    assert rows.size > 0 and rows.mean() > 32  # the cube is on the table, below the middle
    np.testing.assert_array_equal(camera_env.render(), obs["image"])
    # The wrist camera looks down past the fingers: they darken its bottom rows, not its top.
    assert dark_bottom(obs["wrist_image"])
    # Any camera at any size, beside the policy's images (the demo films 256 px).
    view = camera_env.render("wrist_image", 100)
    assert view.shape == (100, 100, 3) and dark_bottom(view)
    with pytest.raises(ValueError, match="unknown camera 'fisheye'"):
        camera_env.render("fisheye")


def dark_bottom(image: np.ndarray) -> bool:
    dark = image.max(axis=-1) < 60
    rows = len(image) // 10
    return dark[-rows:].mean() > 0.5 and dark[:rows].mean() < 0.05


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="unknown task 'stack'"):
        FrankaSimEnv("stack")
    with pytest.raises(ValueError, match="unknown cameras"):
        FrankaSimEnv("lift", cameras=("frontview",))
    with pytest.raises(ValueError, match="noise"):
        ScriptedExpert("lift", noise=-0.1)
    with pytest.raises(ValueError, match="goal_pos"):
        ScriptedExpert("pick_place_can").reset()


def test_step_rejects_bad_actions(lift_env):
    lift_env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        lift_env.step(np.zeros(6))


def test_task_adapter_config_has_the_task_workspace():
    config = task_adapter_config("pick_place_can", max_translation=0.01)
    assert config.max_translation == 0.01
    assert config.workspace_high[1] > 0.6  # the goal bin lies to the robot's left


def test_commanded_arm_holds_the_last_command(lift_env):
    arm = CommandedArm(lift_env, seed=5)
    start = arm.state.observation["eef_pos"]
    start_object = arm.state.observation["object_pos"]
    arm.set_target(start + np.array([0, 0, 0.05]), np.array([1.0, 0, 0, 0]))
    arm.set_gripper(0.5)  # clipped to the gripper's range
    assert arm.command.gripper_width == lift_env.adapter.config.gripper_open_width
    for _ in range(20):
        state = arm.step()
    assert state.steps == 20 and not state.success
    assert state.observation["eef_pos"][2] == pytest.approx(start[2] + 0.05, abs=0.01)
    assert arm.reset().steps == 0 and arm.next_seed == 6  # the first reset repeats seed 5
    np.testing.assert_array_equal(arm.state.observation["object_pos"], start_object)
    with pytest.raises(ValueError, match="unit quaternion"):
        arm.set_target(start, np.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        arm.set_target(np.array([np.nan, 0, 0]), np.array([1.0, 0, 0, 0]))
    with pytest.raises(ValueError, match="gripper width"):
        arm.set_gripper(float("nan"))
