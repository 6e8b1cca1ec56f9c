"""The policy node's decision loop without ROS: a fake clock, a fake arm, a fake policy."""

from __future__ import annotations

import numpy as np
import pytest

from cfgrl_ros.arm.command_adapter import ArmCommandAdapter
from cfgrl_ros.arm.safety import SafetyConfig, SafetyEnvelope
from cfgrl_ros.control.decision_loop import (
    Decided,
    DecisionLoop,
    EpisodeEnded,
    Log,
    LoopSettings,
    Phase,
    RequestNoise,
    SendCommand,
)
from cfgrl_ros.nodes.arm_interface import HomePose

PARTS = ("joint_states", "current_pose", "object_pose")
DOWN = np.array([1.0, 0.0, 0.0, 0.0])
HOME = np.array([0.45, 0.0, 0.25])
T0 = 1000.0  # the fake clock's start, seconds


class FakePolicy:
    """Features: the end-effector position; chunk: a tenth of the noise (so it shows)."""

    noise_shape = (8, 7)
    feature_dim = 3

    def __init__(self) -> None:
        self.decoded: list[tuple[np.ndarray, float]] = []

    def encode(self, observation):
        return np.asarray(observation["eef_pos"], dtype=np.float32)

    def decode(self, features, noise, guidance_weight):
        self.decoded.append((noise, guidance_weight))
        return np.clip(0.1 * noise, -1.0, 1.0)


class FakeArm:
    """Observation parts with stamps; the arm goes wherever the last command sent it."""

    def __init__(self, position=(0.5, 0.05, 0.2)) -> None:
        self.position = np.asarray(position, dtype=float)
        self.stamps: dict[str, float] = {}

    def publish(self, loop: DecisionLoop, now: float, parts=PARTS) -> list:
        outputs = []
        for part in parts:
            self.stamps[part] = now
            outputs += loop.observed(part, now)
        return outputs

    def follow(self, outputs: list) -> None:
        for output in outputs:
            if isinstance(output, SendCommand):
                self.position = np.asarray(output.command.target_pos, dtype=float)

    def __call__(self, with_images: bool, arm_only: bool = False):
        parts = PARTS[:2] if arm_only else PARTS
        if any(part not in self.stamps for part in parts):
            return None
        observation = {
            "joint_pos": np.zeros(7),
            "gripper_width": np.array([0.04]),
            "eef_pos": self.position.copy(),
            "eef_quat": DOWN.copy(),
            "object_pos": np.array([0.5, 0.0, -0.08]),
            "object_quat": np.array([0.0, 0.0, 0.0, 1.0]),
        }
        return observation, min(self.stamps[part] for part in parts)


def make_loop(arm: FakeArm, listening: bool = True, blocked: str = "", **settings) -> DecisionLoop:
    home = HomePose(
        position=HOME,
        orientation=DOWN,
        tolerance=0.01,
        rotation_tolerance=0.05,
        timeout=5.0,
        speed_scale=0.5,
    )
    return DecisionLoop(
        LoopSettings(**{"exec_horizon": 4, **settings}),
        FakePolicy(),
        arm,
        PARTS,
        ArmCommandAdapter(),
        SafetyEnvelope(SafetyConfig()),
        home,
        noise_actor_listening=lambda: listening,
        blocked=lambda now: blocked,
    )


def of(kind, outputs: list) -> list:
    return [output for output in outputs if isinstance(output, kind)]


def started(loop: DecisionLoop, now: float = T0) -> list:
    reply, outputs = loop.start_episode(now)
    assert reply.success
    return outputs


def test_a_decision_waits_for_its_noise_then_executes_the_chunk_and_decides_again():
    arm = FakeArm()
    loop = make_loop(arm)
    arm.publish(loop, T0)
    started(loop)
    (request,) = loop.control_step(T0)
    assert isinstance(request, RequestNoise)
    assert request.timeout == 30.0  # first decision: the actor may be training
    assert loop.phase == Phase.AWAITING_NOISE
    assert loop.control_step(T0 + 0.05) == []  # the arm keeps its target meanwhile

    noise = np.full((8, 7), 2.0, dtype=np.float32)
    outputs = loop.on_noise(request.stamp_ns, noise, T0 + 0.1)
    (command,) = of(SendCommand, outputs)  # the chunk's first action; the record when it is over
    assert not of(Decided, outputs)
    np.testing.assert_allclose(command.command.target_pos - arm.position, 0.2 * 0.03)
    assert loop.phase == Phase.EXECUTING

    for step in range(1, 4):  # exec_horizon 4: three more actions of the chunk
        arm.publish(loop, T0 + 0.1 + 0.05 * step)
        outputs = loop.control_step(T0 + 0.1 + 0.05 * step)
        assert len(of(SendCommand, outputs)) == 1 and not of(RequestNoise, outputs)
    arm.publish(loop, T0 + 0.3)
    decided, request = loop.control_step(T0 + 0.3)
    assert isinstance(decided, Decided)  # the last decision's record, then the next decision
    assert decided.from_actor and decided.index == 0
    np.testing.assert_array_equal(decided.noise, noise)
    np.testing.assert_allclose(decided.chunk, 0.2)
    assert not decided.operator.any()
    assert request.timeout == 0.05  # later decisions wait noise_timeout
    assert loop.counts["actor_noise"] == 1


def test_without_an_answer_in_time_the_base_policy_decides_and_late_answers_are_counted():
    arm = FakeArm()
    loop = make_loop(arm, first_noise_timeout=2.0)
    arm.publish(loop, T0)
    started(loop)
    (request,) = loop.control_step(T0)
    assert loop.on_noise(request.stamp_ns + 1, np.zeros((8, 7)), T0 + 0.5) == []  # not ours
    assert loop.counts["late_answers"] == 1
    assert loop.check_deadlines(T0 + 1.99) == []
    arm.publish(loop, T0 + 2.0)
    outputs = loop.check_deadlines(T0 + 2.0)
    assert any("base policy" in log.text for log in of(Log, outputs))
    assert len(of(SendCommand, outputs)) == 1
    assert loop.counts["fallbacks"] == 1

    assert loop.on_noise(request.stamp_ns, np.zeros((8, 7)), T0 + 2.1) == []  # too late
    assert loop.counts["late_answers"] == 2 and loop.counts["actor_noise"] == 0
    outputs = loop.end_episode(False, T0 + 2.2)  # the record once the decision is over
    (decided,), (end,) = of(Decided, outputs), of(EpisodeEnded, outputs)
    assert outputs.index(decided) < outputs.index(end) and not decided.from_actor
    assert decided.noise.shape == (8, 7) and decided.noise.std() > 0.5  # w0 ~ N(0, I)


def test_without_a_listening_noise_actor_the_base_policy_decides_at_once():
    arm = FakeArm()
    loop = make_loop(arm, listening=False)
    arm.publish(loop, T0)
    started(loop)
    outputs = loop.control_step(T0)
    assert not of(RequestNoise, outputs) and of(SendCommand, outputs)
    assert not loop.decision.from_actor


def test_stale_observations_hold_the_arm_and_consume_no_action():
    arm = FakeArm()
    loop = make_loop(arm, listening=False)
    arm.publish(loop, T0)
    started(loop)
    arm.follow(loop.control_step(T0))
    held_at = arm.position.copy()  # the target sent after the last accepted pose
    stale = T0 + 0.05 + SafetyConfig().max_observation_age  # no observation since T0 + 0.05
    arm.publish(loop, T0 + 0.05)
    outputs = loop.control_step(stale + 0.01)
    (hold,) = of(SendCommand, outputs)
    np.testing.assert_array_equal(hold.command.target_pos, held_at)  # no step back
    assert loop.decision.step == 1  # the chunk waits for a fresh observation
    assert any("stale_observation" in log.text for log in of(Log, outputs))


def test_pause_holds_the_arm_until_resume():
    arm = FakeArm()
    loop = make_loop(arm, listening=False)
    arm.publish(loop, T0)
    started(loop)
    arm.follow(loop.control_step(T0))
    assert loop.pause().success
    for tick in range(1, 4):
        arm.publish(loop, T0 + 0.05 * tick)
        before = arm.position.copy()
        arm.follow(loop.control_step(T0 + 0.05 * tick))
        np.testing.assert_array_equal(arm.position, before)
    assert loop.resume().success
    arm.publish(loop, T0 + 0.2)
    before = arm.position.copy()
    arm.follow(loop.control_step(T0 + 0.2))
    assert not np.array_equal(arm.position, before)


def test_lockstep_steps_only_when_every_part_arrived_after_the_last_command():
    arm = FakeArm()
    loop = make_loop(arm, listening=False, lockstep=True)
    arm.publish(loop, 5.0)  # the simulator's reset observation, before the start
    outputs = started(loop, T0)
    assert len(of(SendCommand, outputs)) == 1  # the fresh reset observation made the first step
    assert loop.decision.step == 1
    assert not loop.fresh()
    # Two parts of the answer: no step yet; a repeated part does not make it fresh.
    assert arm.publish(loop, 5.05, parts=PARTS[:2]) == []
    assert arm.publish(loop, 5.05, parts=PARTS[:1]) == []
    outputs = arm.publish(loop, 5.05, parts=PARTS[2:])
    assert len(of(SendCommand, outputs)) == 1 and loop.decision.step == 2
    # Time is the simulator's stamp: a wall clock far ahead does not make it stale.
    assert not any("stale" in log.text for log in of(Log, outputs))


def test_lockstep_resends_an_unanswered_command():
    arm = FakeArm()
    loop = make_loop(arm, listening=False, lockstep=True)
    arm.publish(loop, 5.0)
    (command,) = of(SendCommand, started(loop, T0))
    assert loop.check_deadlines(T0 + 0.9) == []
    outputs = loop.check_deadlines(T0 + 1.1)
    (again,) = of(SendCommand, outputs)
    assert again.command is command.command


def test_lockstep_end_waits_for_the_answer_to_the_last_command():
    arm = FakeArm()
    loop = make_loop(arm, listening=False, lockstep=True)
    arm.publish(loop, 5.0)
    started(loop, T0)
    (decided,) = loop.end_episode(True, T0 + 0.1)  # the record now, the end after the answer
    assert isinstance(decided, Decided) and decided.index == 0
    assert loop.phase == Phase.STOPPING
    arm.position = np.array([0.6, 0.0, 0.1])  # where the last command led
    outputs = arm.publish(loop, 5.05)
    (end,) = of(EpisodeEnded, outputs)
    assert end.success and end.decisions == 1
    np.testing.assert_allclose(end.features, [0.6, 0.0, 0.1])
    assert loop.phase == Phase.IDLE
    # After the end, the next episode's first step needs parts newer than the end.
    reply, outputs = loop.start_episode(T0 + 1.0)
    assert reply.success and outputs == [of(Log, outputs)[0]]


def test_lockstep_end_without_an_answer_comes_after_stop_wait():
    arm = FakeArm()
    loop = make_loop(arm, listening=False, lockstep=True)
    arm.publish(loop, 5.0)
    started(loop, T0)
    loop.end_episode(False, T0)
    assert loop.check_deadlines(T0 + 0.4) == []
    (end,) = of(EpisodeEnded, loop.check_deadlines(T0 + 0.6))
    assert not end.success


def test_lockstep_start_without_a_fresh_reset_observation_sends_a_hold_after_resend():
    arm = FakeArm()
    loop = make_loop(arm, listening=False, lockstep=True)
    arm.publish(loop, 5.0)
    arm.follow(started(loop, T0))
    arm.publish(loop, 5.05)  # the answer to the last command
    loop.end_episode(True, T0 + 0.1)
    arm.position = np.array([0.45, 0.0, 0.25])  # the simulator reset; its object pose was lost
    assert arm.publish(loop, 6.0, parts=PARTS[:2]) == []
    reply, outputs = loop.start_episode(T0 + 1.0)
    assert reply.success and not of(SendCommand, outputs)
    assert loop.check_deadlines(T0 + 1.9) == []
    outputs = loop.check_deadlines(T0 + 2.1)
    (hold,) = of(SendCommand, outputs)  # the simulator steps and publishes a full observation
    np.testing.assert_array_equal(hold.command.target_pos, arm.position)  # where it was measured
    assert not of(Decided, outputs) and loop.decision is None  # no action was consumed
    outputs = arm.publish(loop, 6.05)
    assert len(of(SendCommand, outputs)) == 1 and loop.decision.index == 0


def test_lockstep_reset_observation_during_stopping_cannot_hang_the_next_episode():
    arm = FakeArm()
    loop = make_loop(arm, listening=False, lockstep=True)
    arm.publish(loop, 5.0)
    started(loop, T0)
    loop.end_episode(False, T0 + 0.1)
    # The simulator's reset observation comes before the answer to the last command: taken as
    # that answer (it cannot be told apart), it ends the episode and is no step of the next.
    assert len(of(EpisodeEnded, arm.publish(loop, 6.0))) == 1
    reply, outputs = loop.start_episode(T0 + 0.2)
    assert reply.success and not of(SendCommand, outputs)
    assert len(of(SendCommand, loop.check_deadlines(T0 + 1.3))) == 1
    assert len(of(SendCommand, arm.publish(loop, 6.05))) == 1 and loop.decision.index == 0


def test_restarting_a_running_episode_ends_it_as_a_failure_first():
    arm = FakeArm()
    loop = make_loop(arm, listening=False)
    arm.publish(loop, T0)
    started(loop)
    loop.control_step(T0)
    outputs = started(loop, T0 + 0.05)
    (end,) = of(EpisodeEnded, outputs)  # the noise actor's pending decision gets its end
    assert not end.success and end.decisions == 1
    assert loop.phase == Phase.EXECUTING and loop.decision is None and loop.decision_index == 0


def test_lockstep_restart_ends_at_once_and_never_resends_the_last_episodes_target():
    arm = FakeArm()
    loop = make_loop(arm, listening=False, lockstep=True)
    arm.publish(loop, 5.0)
    assert of(SendCommand, started(loop, T0))  # unanswered: the simulator is reset next
    outputs = started(loop, T0 + 0.5)
    (end,) = of(EpisodeEnded, outputs)
    assert not end.success and end.decisions == 1 and loop.phase == Phase.EXECUTING
    outputs = loop.check_deadlines(T0 + 1.2)  # past the old command's resend time
    assert not of(SendCommand, outputs)


def test_timer_tick_sends_at_most_one_command_when_the_noise_deadline_passes():
    arm = FakeArm()
    loop = make_loop(arm, first_noise_timeout=0.05)
    arm.publish(loop, T0)
    started(loop)
    assert of(RequestNoise, loop.tick(T0))
    arm.publish(loop, T0 + 0.05)
    outputs = loop.tick(T0 + 0.05)
    (command,) = of(SendCommand, outputs)  # the chunk's first action is not overwritten
    expected = arm.position + 0.03 * loop.decision.chunk[0][:3]
    np.testing.assert_allclose(command.command.target_pos, expected)
    assert loop.decision.step == 1
    arm.follow(outputs)
    arm.publish(loop, T0 + 0.1)
    assert len(of(SendCommand, loop.tick(T0 + 0.1))) == 1 and loop.decision.step == 2


def test_timer_mode_end_is_published_at_once():
    arm = FakeArm()
    loop = make_loop(arm, listening=False)
    arm.publish(loop, T0)
    started(loop)
    loop.control_step(T0)
    (end,) = of(EpisodeEnded, loop.end_episode(False, T0 + 0.05))
    assert end.decisions == 1 and loop.phase == Phase.IDLE
    assert loop.end_episode(True, T0 + 0.1) == []  # nothing runs: nothing to end


def test_homing_moves_in_bounded_steps_with_the_gripper_open_until_home():
    arm = FakeArm()
    loop = make_loop(arm)
    arm.publish(loop, T0)
    reply, outputs = loop.request_home(T0)
    assert reply.success and reply.message.startswith("moving to the home pose")
    assert loop.phase == Phase.HOMING
    arm.follow(outputs)
    steps = 1
    now = T0
    while loop.phase == Phase.HOMING:
        now += 0.05
        before = arm.position.copy()
        arm.publish(loop, now)
        outputs = loop.control_step(now)
        (command,) = of(SendCommand, outputs)
        assert command.command.gripper_width == 0.08
        assert np.abs(command.command.target_pos - before).max() <= 0.5 * 0.03 + 1e-9
        arm.follow(outputs)
        steps += 1
        assert steps < 30
    assert np.linalg.norm(arm.position - HOME) <= 0.01
    assert any("at the home pose" in log.text for log in of(Log, outputs))


def test_homing_stops_at_its_timeout():
    arm = FakeArm()
    loop = make_loop(arm)
    arm.publish(loop, T0)
    loop.request_home(T0)  # the arm does not follow
    arm.publish(loop, T0 + 4.9)
    assert of(SendCommand, loop.control_step(T0 + 4.9))
    outputs = loop.control_step(T0 + 5.1)
    assert loop.phase == Phase.IDLE and not of(SendCommand, outputs)
    assert "did not reach the home pose" in of(Log, outputs)[0].text


def test_homing_while_paused_holds_until_resume():
    arm = FakeArm()
    loop = make_loop(arm)
    arm.publish(loop, T0)
    loop.pause()
    reply, outputs = loop.request_home(T0)
    assert reply.success and reply.message == "paused: homing starts after ~/resume"
    np.testing.assert_array_equal(of(SendCommand, outputs)[0].command.target_pos, arm.position)


def test_homing_is_refused_during_an_episode_in_lockstep_and_after_shutdown():
    arm = FakeArm()
    loop = make_loop(arm)
    arm.publish(loop, T0)
    started(loop)
    reply, outputs = loop.request_home(T0)  # the episode was started: no delivery race
    assert not reply.success and "an episode is running" in reply.message and outputs == []
    loop.end_episode(True, T0)
    assert loop.request_home(T0)[0].success

    lockstep = make_loop(FakeArm(), lockstep=True)
    assert "lockstep simulator" in lockstep.request_home(T0)[0].message

    stopped = make_loop(arm)
    stopped.shutdown(T0, can_publish=True)
    reply, _ = stopped.request_home(T0)
    assert not reply.success and "shut down" in reply.message
    assert not stopped.start_episode(T0)[0].success
    assert not stopped.resume().success


def test_a_start_ends_homing():
    arm = FakeArm()
    loop = make_loop(arm)
    arm.publish(loop, T0)
    loop.request_home(T0)
    outputs = started(loop)
    assert loop.phase == Phase.EXECUTING
    assert "episode started before the arm was home" in [log.text for log in of(Log, outputs)]


@pytest.mark.parametrize(
    ("lockstep", "blocked", "can_publish", "holds"),
    [
        (False, "", True, True),
        (True, "", True, False),  # a target would step the simulator
        (False, "robot_mode_reflex", True, False),
        (False, "", False, False),  # the context is gone
    ],
)
def test_shutdown_sends_a_last_hold_only_when_it_may(lockstep, blocked, can_publish, holds):
    arm = FakeArm()
    loop = make_loop(arm, blocked=blocked, lockstep=lockstep)
    arm.publish(loop, T0)
    loop.envelope.check_observation(*arm(with_images=False), T0)
    outputs = loop.shutdown(T0 + 0.01, can_publish)
    assert len(of(SendCommand, outputs)) == int(holds)
    if holds:
        np.testing.assert_array_equal(outputs[0].command.target_pos, arm.position)
    assert loop.envelope.shut_down


def step(arm: FakeArm, loop: DecisionLoop, now: float) -> list:
    """One timer-mode control step on a fresh observation; the arm follows."""
    arm.publish(loop, now)
    outputs = loop.control_step(now)
    arm.follow(outputs)
    return outputs


def test_takeover_is_refused_with_the_reason_when_the_operator_cannot_drive():
    arm = FakeArm()
    loop = make_loop(arm, listening=False)
    reply, _ = loop.takeover(True, T0)
    assert not reply.success and "no episode is running" in reply.message
    arm.publish(loop, T0)
    reply, _ = loop.request_home(T0)
    assert reply.success and loop.phase == Phase.HOMING
    assert "homing" in loop.takeover(True, T0)[0].message
    started(loop)
    loop.pause()
    assert "paused" in loop.takeover(True, T0)[0].message
    loop.resume()
    assert "not driving" in loop.takeover(False, T0)[0].message
    assert loop.takeover(True, T0)[0].success and loop.operator_driving


def test_the_operator_drives_from_the_next_tick_and_the_records_mark_its_ticks():
    arm = FakeArm()
    loop = make_loop(arm, listening=False)
    policy = loop.policy
    arm.publish(loop, T0)
    started(loop)
    step(arm, loop, T0)  # decision 0, row 0 from the policy
    loop.operator_action(np.array([1.0, 0, 0, 0, 0, 0, 1.0]), T0 + 0.04)
    assert loop.takeover(True, T0 + 0.04)[0].success
    before = arm.position.copy()
    (command,) = of(SendCommand, step(arm, loop, T0 + 0.05))  # row 1: the operator's
    np.testing.assert_allclose(command.command.target_pos - before, [0.03, 0.0, 0.0])
    assert command.command.gripper_width == 0.0  # grip > 0 closes

    # Input older than operator_timeout: hold, no row consumed, the operator keeps control.
    outputs = step(arm, loop, T0 + 0.5)
    (hold,) = of(SendCommand, outputs)
    np.testing.assert_array_equal(hold.command.target_pos, arm.position)
    assert loop.decision.step == 2 and loop.operator_driving
    assert any("operator's input is 0.46 s old" in log.text for log in of(Log, outputs))

    for tick in (0.55, 0.6):  # rows 2 and 3 from the operator
        loop.operator_action(np.array([0.0, 1.0, 0, 0, 0, 0, 1.0]), T0 + tick)
        step(arm, loop, T0 + tick)
    decoded = len(policy.decoded)
    loop.operator_action(np.array([0.0, 0, 1.0, 0, 0, 0, -1.0]), T0 + 0.65)
    outputs = step(arm, loop, T0 + 0.65)
    (decided,) = of(Decided, outputs)  # decision 0 is over: policy row 0, operator rows 1-3
    np.testing.assert_array_equal(decided.operator, [False, True, True, True] + [False] * 4)
    np.testing.assert_allclose(decided.chunk[1], [1.0, 0, 0, 0, 0, 0, 1.0])
    np.testing.assert_allclose(decided.chunk[4:], np.clip(0.1 * decided.noise[4:], -1, 1))
    assert len(policy.decoded) == decoded  # decision 1 is the operator's: nothing decoded
    assert loop.counts["operator_decisions"] == 1

    assert loop.takeover(False, T0 + 0.66)[0].success  # back at the next decision
    for tick in (0.7, 0.75, 0.8):
        loop.operator_action(np.array([0.0, 0, 1.0, 0, 0, 0, -1.0]), T0 + tick)
        step(arm, loop, T0 + tick)
    outputs = step(arm, loop, T0 + 0.85)
    (decided,) = of(Decided, outputs)
    assert decided.operator[:4].all() and not decided.from_actor and not decided.noise.any()
    np.testing.assert_allclose(decided.chunk, np.tile([0.0, 0, 1.0, 0, 0, 0, -1.0], (8, 1)))
    assert not loop.operator_driving and len(policy.decoded) == decoded + 1


def test_an_episode_end_hands_back_and_publishes_the_operators_record_first():
    arm = FakeArm()
    loop = make_loop(arm, listening=False)
    arm.publish(loop, T0)
    started(loop)
    loop.takeover(True, T0)
    loop.operator_action(np.array([0.0, 0, 0.5, 0, 0, 0, -1.0]), T0)
    step(arm, loop, T0)
    outputs = loop.end_episode(True, T0 + 0.05)
    decided, end = of(Decided, outputs)[0], of(EpisodeEnded, outputs)[0]
    assert outputs.index(decided) < outputs.index(end)
    assert decided.operator[0] and not decided.operator[1:].any()
    assert not loop.operator_driving


def test_without_a_policy_the_operator_drives_every_episode():
    arm = FakeArm()
    loop = DecisionLoop(
        LoopSettings(exec_horizon=4),
        None,
        arm,
        PARTS[:2],
        ArmCommandAdapter(),
        SafetyEnvelope(SafetyConfig()),
        make_loop(arm).home,
    )
    arm.publish(loop, T0)
    started(loop)
    assert loop.operator_driving
    assert "no policy" in loop.takeover(False, T0)[0].message
    with pytest.raises(ValueError, match="7 finite numbers"):
        loop.operator_action(np.array([np.nan] * 7), T0)
    loop.operator_action(np.array([0.0, -1.0, 0, 0, 0, 0, -1.0]), T0)
    before = arm.position.copy()
    outputs = loop.control_step(T0)
    (command,) = of(SendCommand, outputs)
    np.testing.assert_allclose(command.command.target_pos - before, [0.0, -0.03, 0.0])
    assert not of(Decided, outputs)
    (end,) = of(EpisodeEnded, loop.end_episode(True, T0 + 0.05))
    assert end.success and end.decisions == 0 and end.features.shape == (0,)


def test_a_decision_is_recorded_once_even_when_the_next_cannot_start():
    arm = FakeArm()
    loop = make_loop(arm, listening=False, exec_horizon=1)
    arm.publish(loop, T0)
    started(loop)
    step(arm, loop, T0)
    encode = loop.policy.encode
    loop.policy.encode = lambda observation: (_ for _ in ()).throw(ValueError("bad image"))
    outputs = step(arm, loop, T0 + 0.05)
    assert len(of(Decided, outputs)) == 1 and "bad image" in of(Log, outputs)[0].text
    assert not of(Decided, step(arm, loop, T0 + 0.1))
    loop.policy.encode = encode
    assert not of(Decided, step(arm, loop, T0 + 0.15)) and loop.decision.index == 1
