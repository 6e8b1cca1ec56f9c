"""Teleoperation input and the simulated operator, without ROS."""

from __future__ import annotations

import numpy as np
import pytest

from cfgrl_ros.teleop.twist_input import TeleopConfig, TeleopInput


def test_a_twist_becomes_the_policys_action_in_the_base_frame():
    teleop = TeleopInput(TeleopConfig(axes=(2, -1, 3), linear_scale=2.0, angular_scale=0.5))
    assert teleop.action(0.0) is None and teleop.holding_reason(0.0) == "no twist received yet"
    teleop.twist((0.1, 0.2, -0.3), (0.0, 1.0, 0.0), now=1.0)
    action = teleop.action(1.1)
    # base x = input y, base y = -input x; linear doubled, angular halved; the gripper open.
    np.testing.assert_allclose(action, [0.4, -0.2, -0.6, 0.5, 0.0, 0.0, -1.0], atol=1e-6)
    assert teleop.action(1.3) is None  # older than input_timeout: the arm holds
    assert "0.30 s old" in teleop.holding_reason(1.3)
    wanted = np.array([0.2, -0.4, 0.6, 0.1, 0.0, -0.3, -1.0])
    teleop.twist(*teleop.twist_for(wanted), now=2.0)  # a scripted operator's way in
    np.testing.assert_allclose(teleop.action(2.0), wanted, atol=1e-6)


def test_broken_input_is_refused_and_counted_and_large_input_clipped():
    teleop = TeleopInput()
    for linear in ((np.nan, 0, 0), (0, np.inf, 0), (0, 0, 11.0)):
        with pytest.raises(ValueError, match=r"not 6 finite numbers|beyond max_input"):
            teleop.twist(linear, (0, 0, 0), now=0.0)
    assert teleop.action(0.0) is None and teleop.counts["refused"] == 3
    teleop.twist((3.0, 0, 0), (0, 0, -2.0), now=0.0)
    np.testing.assert_allclose(teleop.action(0.0)[[0, 5]], [1.0, -1.0])
    assert teleop.counts["clipped"] == 1 and teleop.counts["twists"] == 1


def test_buttons_act_on_presses_and_the_dead_man_button_gates_motion():
    teleop = TeleopInput(TeleopConfig(success_button=2, deadman_button=3))
    teleop.twist((0.5, 0, 0), (0, 0, 0), now=0.0)
    assert teleop.joy([1, 0, 0, 1]) == ["gripper"] and teleop.grip == 1.0
    assert teleop.joy([1, 0, 0, 1]) == []  # held, not pressed again
    assert teleop.action(0.0)[6] == 1.0
    assert teleop.joy([0, 1, 1, 0]) == ["takeover", "success"]
    assert teleop.action(0.0) is None and "dead-man button 3" in teleop.holding_reason(0.0)
    with pytest.raises(ValueError, match="has 2 buttons, so success_button 2, deadman_button 3"):
        teleop.joy([0, 0])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"axes": (1, 1, 3)}, "axes \\[1, 1, 3\\] must name input axes 1, 2 and 3"),
        ({"success_button": 0}, "must differ"),
        ({"linear_scale": 0.0}, "linear_scale"),
    ],
)
def test_config_names_what_is_wrong(settings, message):
    with pytest.raises(ValueError, match=message):
        TeleopConfig(**settings)


@pytest.mark.sim
def test_the_scripted_operator_takes_over_a_stalled_episode_and_finishes_the_task():
    from cfgrl_ros.sim.env import FrankaSimEnv
    from cfgrl_ros.sim.scripted_operator import OperatorConfig, ScriptedOperator

    env = FrankaSimEnv("lift", horizon=150)
    try:
        config = OperatorConfig(patience=4, drive_decisions=20)
        operator = ScriptedOperator(env.task, env.goal_pos, config)
        obs, _ = env.reset(seed=0)
        operator.reset(obs)
        driven = []
        while not env.success and env.steps < env.horizon:
            drives = operator.drives(obs)
            driven.append(drives)
            for _ in range(8):  # a stalled policy sends zero motion, the gripper open
                action = operator.act(obs) if drives else np.array([0, 0, 0, 0, 0, 0, -1.0])
                obs, _, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    break
    finally:
        env.close()
    # The first decision sets the mark; at the fourth without progress the operator drives.
    assert driven[:4] == [False] * 4 and all(driven[4:])
    assert env.success and operator.takeovers == 1


def test_the_scripted_operator_takes_over_at_most_max_takeovers_times():
    from cfgrl_ros.sim.scripted_operator import OperatorConfig, ScriptedOperator

    config = OperatorConfig(patience=1, drive_decisions=2, max_takeovers=2)
    operator = ScriptedOperator("lift", None, config)
    still = {
        "eef_pos": np.array([0.5, 0.0, 0.1]),
        "object_pos": np.array([0.5, 0.2, -0.08]),
        "gripper_width": np.array([0.08]),
        "eef_quat": np.array([1.0, 0, 0, 0]),
        "object_quat": np.array([0, 0, 0, 1.0]),
    }
    operator.reset(still)
    driven = [operator.drives(still) for _ in range(10)]
    # mark, stall: drive 2; hand back (a new mark), stall: drive 2; then never again
    assert driven == [False, True, True, False, True, True, False, False, False, False]
    assert operator.takeovers == 2
    operator.reset(still)
    assert operator.takeovers == 0
