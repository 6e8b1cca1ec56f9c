"""The safety envelope, rule by rule, with crafted observations and commands."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from cfgrl_ros.arm.command_adapter import AdapterConfig, ArmCommand, ArmCommandAdapter
from cfgrl_ros.arm.safety import (
    LEVEL_ERROR,
    LEVEL_OK,
    LEVEL_WARN,
    REASONS,
    SafetyConfig,
    SafetyEnvelope,
    rotation_angle,
)

IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])
HOME = np.array([0.5, 0.0, 0.2])
CONFIG = SafetyConfig(
    workspace_low=(0.3, -0.3, 0.0),
    workspace_high=(0.7, 0.3, 0.5),
    max_translation_step=0.05,
    max_rotation_step=0.2,
    gripper_min_width=0.0,
    gripper_max_width=0.08,
    max_grasp_force=40.0,
    max_observation_age=0.2,
    watchdog_timeout=0.5,
)


def observation(pos=HOME, quat=IDENTITY, width=0.08) -> dict[str, np.ndarray]:
    return {
        "joint_pos": np.zeros(7),
        "gripper_width": np.array([width]),
        "eef_pos": np.asarray(pos, dtype=float),
        "eef_quat": np.asarray(quat, dtype=float),
        "object_pos": np.array([0.5, 0.1, 0.0]),
        "object_quat": IDENTITY.copy(),
    }


def quat_about_z(angle: float) -> np.ndarray:
    return np.array([0.0, 0.0, np.sin(angle / 2), np.cos(angle / 2)])


def command(pos=HOME, quat=IDENTITY, width=0.08) -> ArmCommand:
    return ArmCommand(np.asarray(pos, dtype=float), np.asarray(quat, dtype=float), width)


def accepted_envelope(now: float = 10.0, **obs) -> SafetyEnvelope:
    envelope = SafetyEnvelope(CONFIG)
    assert envelope.check_observation(observation(**obs), now, now).ok
    return envelope


def test_a_safe_command_passes_unchanged():
    envelope = accepted_envelope()
    target = HOME + np.array([0.01, -0.01, 0.02])
    safe = envelope.filter_command(command(target, quat_about_z(0.1), 0.0), 10.0)
    assert safe.reasons == () and not safe.holding
    np.testing.assert_allclose(safe.command.target_pos, target)
    np.testing.assert_allclose(safe.command.target_quat, quat_about_z(0.1))
    assert safe.command.gripper_width == 0.0
    assert envelope.status().level == LEVEL_OK
    assert sum(envelope.counts.values()) == 0


def test_a_target_outside_the_box_is_clipped_to_it():
    envelope = accepted_envelope(pos=[0.68, 0.0, 0.02])
    safe = envelope.filter_command(command([0.72, 0.0, -0.01]), 10.0)
    np.testing.assert_allclose(safe.command.target_pos, [0.7, 0.0, 0.0])
    assert safe.reasons == ("outside_workspace",)
    assert envelope.counts["outside_workspace"] == 1
    assert envelope.status().level == LEVEL_WARN


def test_an_arm_outside_the_box_is_led_back_one_step_at_a_time():
    outside = np.array([0.9, 0.0, 0.2])  # 0.2 m beyond workspace_high x
    envelope = accepted_envelope(pos=outside)
    safe = envelope.filter_command(command(outside), 10.0)
    assert safe.reasons == ("outside_workspace", "max_translation_step")
    np.testing.assert_allclose(safe.command.target_pos, [0.85, 0.0, 0.2])


def test_a_too_large_step_is_limited_to_the_maximum_towards_the_target():
    envelope = accepted_envelope()
    target = HOME + np.array([0.06, 0.08, 0.0])  # 0.1 m away
    safe = envelope.filter_command(command(target), 10.0)
    assert safe.reasons == ("max_translation_step",)
    step = safe.command.target_pos - HOME
    assert np.linalg.norm(step) == pytest.approx(0.05)
    np.testing.assert_allclose(step / np.linalg.norm(step), [0.6, 0.8, 0.0])


def test_a_too_large_rotation_is_limited_to_the_maximum_towards_the_target():
    start = quat_about_z(0.3)
    envelope = accepted_envelope(quat=start)
    safe = envelope.filter_command(command(quat=quat_about_z(0.3 + 0.5)), 10.0)
    assert safe.reasons == ("max_rotation_step",)
    assert rotation_angle(safe.command.target_quat, start) == pytest.approx(0.2)
    np.testing.assert_allclose(safe.command.target_quat, quat_about_z(0.5), atol=1e-12)


def test_the_rotation_limit_takes_the_short_way_for_a_quaternion_of_the_other_sign():
    envelope = accepted_envelope()
    safe = envelope.filter_command(command(quat=-quat_about_z(1.0)), 10.0)  # same as +q
    assert rotation_angle(safe.command.target_quat, IDENTITY) == pytest.approx(0.2)
    assert rotation_angle(safe.command.target_quat, quat_about_z(1.0)) == pytest.approx(0.8)


def test_the_gripper_width_is_clipped_to_its_range():
    envelope = accepted_envelope()
    safe = envelope.filter_command(command(width=0.2), 10.0)
    assert safe.command.gripper_width == 0.08
    assert safe.reasons == ("gripper_width_clipped",)


def test_a_nan_observation_holds_the_target_sent_after_the_last_accepted_pose():
    envelope = accepted_envelope(now=10.0, width=0.03)
    moved = HOME + np.array([0.02, 0.0, 0.0])
    assert envelope.check_observation(observation(moved, width=0.03), 10.05, 10.05).ok
    assert envelope.filter_command(command(moved + 0.01, width=0.0), 10.05).reasons == ()

    broken = observation(moved + 0.03)
    broken["joint_pos"][3] = np.nan
    verdict = envelope.check_observation(broken, 10.1, 10.1)
    assert not verdict.ok and verdict.reasons == ("non_finite_observation",)
    safe = envelope.filter_command(None, 10.1)
    assert safe.holding and safe.reasons == ("non_finite_observation",)
    # Not the NaN tick's pose; the target sent after the accepted pose, where the arm is going
    # (holding the older measured pose would move it back by a step).
    np.testing.assert_allclose(safe.command.target_pos, moved + 0.01)
    assert safe.command.gripper_width == 0.0  # the closed gripper stays closed

    inf = observation(np.array([np.inf, 0.0, 0.2]))
    assert envelope.check_observation(inf, 10.15, 10.15).reasons == ("non_finite_observation",)
    again = envelope.filter_command(None, 10.15)
    assert again.command is safe.command  # latched while the hold lasts
    assert envelope.counts["non_finite_observation"] == 2  # counted once per tick


def test_a_hold_latches_the_measured_pose_when_nothing_was_sent_after_it():
    envelope = accepted_envelope(now=10.0)
    assert envelope.filter_command(command(HOME + 0.01), 10.0).reasons == ()
    moved = HOME + np.array([0.005, 0.0, 0.0])  # measured after that command
    assert envelope.check_observation(observation(moved), 10.05, 10.05).ok
    envelope.pause()
    np.testing.assert_allclose(envelope.filter_command(command(), 10.05).command.target_pos, moved)


def test_malformed_observations_and_bad_quaternions_are_rejected_without_crashing():
    envelope = SafetyEnvelope(CONFIG)
    missing = observation()
    del missing["eef_quat"]
    assert envelope.check_observation(missing, 1.0, 1.0).reasons == ("malformed_observation",)
    short = observation()
    short["eef_pos"] = np.zeros(2)
    assert envelope.check_observation(short, 1.0, 1.0).reasons == ("malformed_observation",)
    zero_quat = observation(quat=np.zeros(4))
    assert envelope.check_observation(zero_quat, 1.0, 1.0).reasons == ("invalid_eef_quat",)
    assert envelope.check_observation(None, None, 1.0).reasons == ("no_observation",)
    # Nothing was ever accepted: nothing is sent, and the tick reports the observation's fault.
    safe = envelope.filter_command(command(), 1.0)
    assert safe.command is None and safe.reasons == ("no_observation",)


def test_nothing_is_sent_before_the_first_observation():
    envelope = SafetyEnvelope(CONFIG)
    safe = envelope.filter_command(command(), 0.0)
    assert safe.command is None and safe.reasons == ("no_observation",)
    assert envelope.status().level == LEVEL_ERROR


def test_a_stale_observation_holds_and_the_watchdog_then_stops_the_targets():
    envelope = accepted_envelope(now=10.0)
    old = envelope.check_observation(observation(HOME + 0.01), 10.0, 10.3)
    assert old.reasons == ("stale_observation",)
    safe = envelope.filter_command(None, 10.3)
    assert safe.holding and safe.reasons == ("stale_observation",)
    np.testing.assert_allclose(safe.command.target_pos, HOME)

    assert envelope.check_observation(observation(), 10.0, 10.6).reasons == ("stale_observation",)
    stopped = envelope.filter_command(None, 10.6)
    assert stopped.command is None and stopped.reasons == ("watchdog",)

    # Fresh observations re-arm it, relative to where the arm is now.
    now_at = HOME + np.array([0.0, 0.1, 0.0])
    assert envelope.check_observation(observation(now_at), 10.7, 10.7).ok
    resumed = envelope.filter_command(command(now_at + 0.01), 10.7)
    assert resumed.reasons == () and not resumed.holding
    # Counted once per tick: by the checks; the hold that follows reports it uncounted.
    assert envelope.counts["stale_observation"] == 2
    assert envelope.counts["watchdog"] == 1


def test_the_watchdog_fires_when_observations_stop_arriving():
    envelope = accepted_envelope(now=10.0)
    assert envelope.filter_command(command(), 10.1).reasons == ()  # young enough
    held = envelope.filter_command(command(HOME + 0.01), 10.3)
    assert held.holding and held.reasons == ("stale_observation",)
    stopped = envelope.filter_command(command(HOME + 0.01), 10.51)
    assert stopped.command is None and stopped.reasons == ("watchdog",)


def test_observations_stamped_in_the_future_are_rejected():
    envelope = SafetyEnvelope(CONFIG)
    verdict = envelope.check_observation(observation(), 11.0, 10.0)
    assert verdict.reasons == ("future_observation",)


def test_pause_holds_and_resume_restarts():
    envelope = accepted_envelope(now=10.0)
    envelope.pause()
    assert envelope.paused
    envelope.check_observation(
        observation(HOME + np.array([0.0, 0.0, -0.01])), 10.05, 10.05
    )  # sagging
    first = envelope.filter_command(command(HOME + 0.02), 10.05)
    assert first.holding and first.reasons == ("paused",)
    np.testing.assert_allclose(first.command.target_pos, HOME + np.array([0.0, 0.0, -0.01]))
    envelope.check_observation(observation(HOME + np.array([0.0, 0.0, -0.02])), 10.1, 10.1)
    second = envelope.filter_command(command(HOME + 0.02), 10.1)
    np.testing.assert_allclose(second.command.target_pos, first.command.target_pos)  # latched

    assert envelope.resume() and not envelope.paused
    passed = envelope.filter_command(command(HOME), 10.1)
    assert passed.reasons == () and not passed.holding
    assert envelope.counts["paused"] == 2


def test_shutdown_holds_the_current_pose_for_good():
    envelope = accepted_envelope(now=10.0)
    here = HOME + np.array([0.01, 0.0, 0.0])
    envelope.check_observation(observation(here), 10.05, 10.05)
    envelope.filter_command(command(here + 0.01, width=0.0), 10.05)
    hold = envelope.shutdown(10.06)
    assert hold.holding and hold.reasons == ("shutdown",)
    np.testing.assert_allclose(hold.command.target_pos, here + 0.01)  # the last target sent
    assert hold.command.gripper_width == 0.0
    assert not envelope.resume()
    after = envelope.filter_command(command(here + 0.02), 10.07)
    assert after.holding and after.reasons == ("shutdown",)


def test_an_external_block_stops_the_targets_and_is_counted():
    envelope = accepted_envelope(now=10.0)
    envelope.pause()  # blocking wins over holding: nothing at all is sent
    blocked = envelope.filter_command(command(), 10.0, blocked="robot_mode_reflex")
    assert blocked.command is None and blocked.reasons == ("robot_mode_reflex",)
    assert envelope.counts["robot_mode_reflex"] == 1
    assert envelope.status().level == LEVEL_ERROR


def test_a_non_finite_command_holds():
    envelope = accepted_envelope()
    safe = envelope.filter_command(command([np.nan, 0.0, 0.2]), 10.0)
    assert safe.holding and safe.reasons == ("non_finite_command",)
    zero = envelope.filter_command(command(quat=np.zeros(4)), 10.0)
    assert zero.holding and zero.reasons == ("non_finite_command",)
    assert envelope.filter_command(None, 10.0).reasons == ("no_command",)


def test_grasp_force_is_limited():
    envelope = SafetyEnvelope(CONFIG)
    assert envelope.limit_grasp_force(20.0) == 20.0
    assert envelope.limit_grasp_force(70.0) == 40.0
    assert envelope.counts["grasp_force_limited"] == 1
    with pytest.raises(ValueError, match="grasp force"):
        envelope.limit_grasp_force(-1.0)


def test_counts_per_reason_and_status_report_them():
    envelope = accepted_envelope(now=10.0)
    envelope.filter_command(command(HOME + np.array([0.25, 0.0, 0.0])), 10.0)  # box, then max step
    envelope.filter_command(command(HOME + np.array([0.1, 0.0, 0.0])), 10.0)  # max step
    envelope.pause()
    envelope.filter_command(command(), 10.0)
    assert dict(envelope.counts) == {
        "outside_workspace": 1,
        "max_translation_step": 2,
        "paused": 1,
    }
    status = envelope.status()
    assert status.level == LEVEL_WARN
    assert status.values["state"] == "holding"
    assert status.values["count.max_translation_step"] == "2"
    assert REASONS["paused"] in status.message
    assert all(reason in REASONS for reason in envelope.counts)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"workspace_low": (0.8, -0.3, 0.0)}, "workspace_low"),
        ({"max_translation_step": 0.0}, "max_translation_step"),
        ({"max_rotation_step": float("nan")}, "max_rotation_step"),
        ({"gripper_min_width": 0.1}, "gripper_min_width"),
        ({"watchdog_timeout": 0.1}, "watchdog_timeout"),
    ],
)
def test_bad_configurations_are_refused_by_name(changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(CONFIG, **changes)


def test_adapter_commands_inside_the_box_pass_and_any_command_stays_within_the_limits():
    adapter = ArmCommandAdapter(
        AdapterConfig(
            max_translation=0.02,
            max_rotation=0.1,
            workspace_low=CONFIG.workspace_low,
            workspace_high=CONFIG.workspace_high,
        )
    )
    rng = np.random.default_rng(0)
    low, high = np.array(CONFIG.workspace_low), np.array(CONFIG.workspace_high)
    for tick in range(300):
        now = 10.0 + 0.05 * tick
        pos = rng.uniform(low, high)
        quat = rng.normal(size=4)
        quat /= np.linalg.norm(quat)
        envelope = SafetyEnvelope(CONFIG)
        assert envelope.check_observation(observation(pos, quat), now, now).ok
        # Adapter output (sqrt(3) x 0.02 m < 0.05 m, sqrt(3) x 0.1 rad < 0.2 rad) passes as is.
        adapted = adapter.command(rng.uniform(-1, 1, size=7), pos, quat)
        safe = envelope.filter_command(adapted, now)
        assert safe.reasons == ()
        np.testing.assert_allclose(safe.command.target_pos, adapted.target_pos)
        # An arbitrary wild command is brought inside every limit.
        wild = command(rng.uniform(-2, 2, size=3), rng.normal(size=4), rng.uniform(-1, 1))
        limited = envelope.filter_command(wild, now).command
        assert np.linalg.norm(limited.target_pos - pos) <= CONFIG.max_translation_step + 1e-9
        assert np.all(limited.target_pos >= low - 1e-9) and np.all(
            limited.target_pos <= high + 1e-9
        )
        assert rotation_angle(limited.target_quat, quat) <= CONFIG.max_rotation_step + 1e-9
        assert CONFIG.gripper_min_width <= limited.gripper_width <= CONFIG.gripper_max_width


def test_the_real_arm_configuration_is_consistent():
    """config/franka_real.yaml over dsrl_franka.yaml: the envelope only catches mistakes."""
    import yaml

    from cfgrl_ros.arm.gripper import GripperSettings

    config_dir = Path(__file__).resolve().parents[1] / "config"

    def merged(node: str) -> dict:
        values: dict = {}
        for name in ("dsrl_franka.yaml", "franka_real.yaml"):
            document = yaml.safe_load((config_dir / name).read_text())
            for section in ("/**", f"/**/{node}"):
                for key, value in document.get(section, {}).get("ros__parameters", {}).items():
                    if isinstance(value, dict):
                        values.setdefault(key, {}).update(value)
                    else:
                        values[key] = value
        return values

    policy = merged("policy_node")
    adapter = AdapterConfig(
        **{
            key: tuple(v) if isinstance(v, list) else v
            for key, v in policy.items()
            if key in AdapterConfig.__dataclass_fields__
        }
    )
    safety = SafetyConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in policy["safety"].items()}
    )
    assert np.all(np.array(safety.workspace_low) <= adapter.workspace_low)
    assert np.all(np.array(safety.workspace_high) >= adapter.workspace_high)
    assert safety.max_translation_step >= np.sqrt(3) * adapter.max_translation
    assert safety.max_rotation_step >= np.sqrt(3) * adapter.max_rotation
    assert safety.gripper_min_width <= adapter.gripper_closed_width
    assert safety.gripper_max_width >= adapter.gripper_open_width
    settings = GripperSettings(grasp_force=policy["grasp_force"], speed=policy["gripper_speed"])
    assert SafetyEnvelope(safety).limit_grasp_force(settings.grasp_force) == settings.grasp_force
    assert policy["arm_joints"] == [f"fr3_joint{i}" for i in range(1, 8)]
    assert policy["finger_joints"] == ["fr3_finger_joint1", "fr3_finger_joint2"]
    assert policy["gripper_backend"] == "auto" and policy["robot_mode_guard"] is True
    # The policy node homes the arm and the reward/reset node watches it arrive: one home pose.
    home = np.array(policy["home_position"])
    assert merged("reward_reset_node")["home_position"] == policy["home_position"]
    for box in (adapter, safety):
        assert np.all(home >= box.workspace_low) and np.all(home <= box.workspace_high)


def test_the_default_envelope_acts_only_on_mistakes_of_the_default_adapter():
    """SafetyConfig's own rule: step limits at or above sqrt(3) x the adapter's step sizes, so
    a full diagonal action of a correct adapter is never limited (0.05 m once broke it)."""
    adapter, safety = AdapterConfig(), SafetyConfig()
    assert safety.max_translation_step >= np.sqrt(3) * adapter.max_translation
    assert safety.max_rotation_step >= np.sqrt(3) * adapter.max_rotation
    assert np.all(np.array(safety.workspace_low) <= adapter.workspace_low)
    assert np.all(np.array(safety.workspace_high) >= adapter.workspace_high)
