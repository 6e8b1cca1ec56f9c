"""The reward/reset node's episode state without ROS: a fake clock and stand-in services."""

from __future__ import annotations

import numpy as np
import pytest

from cfgrl_ros.control.reset_sequence import (
    Call,
    Cancel,
    EpisodeCounted,
    Log,
    PublishEvent,
    PublishReward,
    ResetSequence,
    SequenceSettings,
    Service,
    State,
)
from cfgrl_ros.nodes.arm_interface import HomePose

T0 = 1000.0
DOWN = np.array([1.0, 0.0, 0.0, 0.0])
HOME = np.array([0.45, 0.0, 0.25])


def make_sequence(ready=(), policy_present=True, **settings) -> ResetSequence:
    home = HomePose(HOME, DOWN, 0.01, 0.05, timeout=10.0, speed_scale=0.5)
    ready_services = set(ready)
    return ResetSequence(
        SequenceSettings(**settings),
        home,
        service_ready=lambda service: service in ready_services,
        policy_present=lambda: policy_present,
        service_names={service: service.name.lower() for service in Service},
        now=T0,
    )


def of(kind, outputs: list) -> list:
    return [output for output in outputs if isinstance(output, kind)]


def events(outputs: list) -> list[str]:
    return [output.event for output in of(PublishEvent, outputs)]


def test_sim_reset_then_start_is_announced_only_after_the_policy_node_answered():
    sequence = make_sequence(ready=set(Service))
    assert of(Call, sequence.tick(T0)) == [Call(Service.RESET)]
    assert sequence.tick(T0 + 0.05) == []  # the call is in flight
    outputs = sequence.answered(Service.RESET, True, "reset", T0 + 0.1)
    assert of(Call, outputs) == [Call(Service.START)] and events(outputs) == []
    assert sequence.state == State.STARTING
    outputs = sequence.answered(Service.START, True, "episode started", T0 + 0.2)
    assert events(outputs) == ["start"] and sequence.state == State.RUNNING


def test_a_refused_start_announces_nothing_and_resets_again():
    sequence = make_sequence(ready=set(Service))
    sequence.tick(T0)
    sequence.answered(Service.RESET, True, "", T0)
    outputs = sequence.answered(Service.START, False, "shut down", T0 + 0.1)
    assert events(outputs) == [] and sequence.state == State.RESETTING
    assert "refused: shut down" in of(Log, outputs)[0].text
    assert of(Call, sequence.tick(T0 + 0.2)) == [Call(Service.RESET)]


def test_an_unanswered_call_is_given_up_and_made_again_after_service_timeout():
    sequence = make_sequence(ready=set(Service), service_timeout=2.0)
    sequence.tick(T0)
    assert sequence.tick(T0 + 1.9) == []
    outputs = sequence.tick(T0 + 2.1)
    assert of(Cancel, outputs) == [Cancel(Service.RESET)]
    assert of(Call, sequence.tick(T0 + 2.2)) == [Call(Service.RESET)]
    assert sequence.answered(Service.RESET, True, "", T0 + 2.3)  # the new call's answer
    # An answer with no call in flight (e.g. one given up on) changes nothing.
    assert sequence.answered(Service.RESET, True, "late", T0 + 2.4) == []


def test_the_reset_waits_for_the_policy_node_and_the_service():
    sequence = make_sequence(ready=(), policy_present=False)
    outputs = sequence.tick(T0)
    assert of(Log, outputs)[0].text == "waiting for the policy node" and not of(Call, outputs)
    assert sequence.tick(T0 + 1.0) == []  # "waiting" lines at most every 5 s
    present = make_sequence(ready=())
    assert of(Log, present.tick(T0))[0].text == "waiting for reset"


def running(sequence: ResetSequence, now: float = T0) -> None:
    sequence.tick(now)
    sequence.answered(Service.RESET, True, "", now)
    sequence.answered(Service.START, True, "", now)
    assert sequence.state == State.RUNNING


def test_decisions_time_out_an_episode_then_the_end_record_starts_the_reset():
    sequence = make_sequence(ready=set(Service), max_decisions=3)
    running(sequence)
    assert sequence.record(False, T0 + 1) == [] and sequence.record(False, T0 + 2) == []
    outputs = sequence.record(False, T0 + 3)
    assert events(outputs) == ["failure"] and of(PublishReward, outputs)[0].reward == 0.0
    assert of(EpisodeCounted, outputs) and sequence.state == State.STOPPING
    assert sequence.record(False, T0 + 3.1) == []  # decisions after the end are not counted
    sequence.record(True, T0 + 3.2)
    assert sequence.state == State.RESETTING
    assert (sequence.episodes, sequence.successes) == (1, 0)


def test_success_topic_and_operator_marks_end_only_a_running_episode():
    sequence = make_sequence(ready=set(Service))
    reply, outputs = sequence.mark(True, T0)
    assert not reply.success and "no episode is running" in reply.message and outputs == []
    assert sequence.success_signal(T0) == []
    running(sequence)
    outputs = sequence.success_signal(T0 + 1)
    assert events(outputs) == ["success"] and of(PublishReward, outputs)[0].reward == 1.0
    reply, _ = sequence.mark(False, T0 + 1.1)
    assert not reply.success  # stopping: already ended


def test_without_the_end_record_the_reset_goes_on_after_stop_timeout():
    sequence = make_sequence(ready=set(Service), stop_timeout=3.0)
    running(sequence)
    sequence.mark(True, T0)
    assert sequence.tick(T0 + 2.9) == []
    outputs = sequence.tick(T0 + 3.1)
    assert "resetting anyway" in of(Log, outputs)[0].text and sequence.state == State.RESETTING


def test_after_the_episode_limit_no_episode_starts():
    sequence = make_sequence(ready=set(Service), episode_limit=1)
    running(sequence)
    sequence.mark(False, T0)
    sequence.record(True, T0 + 0.1)
    assert sequence.state == State.FINISHED
    assert sequence.tick(T0 + 10) == []


def test_real_arm_nothing_moves_before_ready_then_homing_then_start():
    sequence = make_sequence(ready=set(Service), reset_mode="real")
    assert sequence.state == State.WAITING_FOR_READY
    assert sequence.tick(T0) == [] and sequence.tick(T0 + 5) == []
    reply, outputs = sequence.ready(T0 + 6)
    assert reply.success and reply.message == "episode 1 starts after homing"
    assert sequence.state == State.HOMING
    assert of(Call, sequence.tick(T0 + 6.05)) == [Call(Service.HOME)]
    sequence.answered(Service.HOME, True, "moving", T0 + 6.1)
    sequence.pose(np.array([0.6, 0.0, 0.25]), DOWN, T0 + 6.2)
    assert sequence.tick(T0 + 6.2) == []  # not home yet
    sequence.pose(HOME + 0.005, DOWN, T0 + 6.3)
    outputs = sequence.tick(T0 + 6.3)
    assert of(Call, outputs) == [Call(Service.START)] and events(outputs) == []
    assert events(sequence.answered(Service.START, True, "", T0 + 6.4)) == ["start"]

    # Later episodes: homing right after the stop, then the operator's ready starts at once.
    sequence.mark(True, T0 + 7)
    sequence.record(True, T0 + 7.1)
    assert sequence.state == State.HOMING
    sequence.tick(T0 + 7.2)
    sequence.answered(Service.HOME, True, "moving", T0 + 7.2)
    sequence.pose(HOME, DOWN, T0 + 7.3)
    sequence.tick(T0 + 7.3)
    assert sequence.state == State.WAITING_FOR_READY
    reply, outputs = sequence.ready(T0 + 8)
    assert reply.message == "episode 2 starts" and of(Call, outputs) == [Call(Service.START)]


def test_real_arm_homing_needs_a_recent_pose_and_gives_up_at_its_timeout():
    sequence = make_sequence(ready=set(Service), reset_mode="real")
    sequence.ready(T0)
    sequence.tick(T0)
    sequence.answered(Service.HOME, True, "moving", T0)
    sequence.pose(HOME, DOWN, T0 - 1.0)  # at home, but too old to tell
    outputs = sequence.tick(T0 + 0.1)
    assert "no pose newer than" in of(Log, outputs)[0].text and sequence.state == State.HOMING
    outputs = sequence.tick(T0 + 10.1)
    assert sequence.state == State.WAITING_FOR_READY
    assert "did not reach the home pose" in of(Log, outputs)[0].text


@pytest.mark.parametrize("answer", [False, None])
def test_real_arm_refused_homing_goes_back_to_the_operator(answer):
    sequence = make_sequence(ready=set(Service), reset_mode="real")
    sequence.ready(T0)
    sequence.tick(T0)
    if answer is None:  # homing timed out while the call was unanswered: it is given up
        outputs = sequence.tick(T0 + 10.1)
        assert of(Cancel, outputs) == [Cancel(Service.HOME)]
    else:
        outputs = sequence.answered(Service.HOME, False, "an episode is running", T0 + 0.1)
        assert "refused: an episode is running" in of(Log, outputs)[0].text
    assert sequence.state == State.WAITING_FOR_READY


def test_an_unknown_reset_mode_is_named():
    with pytest.raises(ValueError, match="parameter reset is 'both'"):
        make_sequence(reset_mode="both")


def test_decisions_made_before_the_start_answer_arrived_count():
    """The policy node decides as soon as it starts the episode (lockstep: at once), so its
    first records may arrive before its answer; the limit applies after "start"."""
    sequence = make_sequence(ready=set(Service), max_decisions=2)
    sequence.tick(T0)
    sequence.answered(Service.RESET, True, "", T0)
    assert sequence.record(False, T0 + 0.1) == [] and sequence.record(False, T0 + 0.2) == []
    outputs = sequence.answered(Service.START, True, "", T0 + 0.3)
    assert events(outputs) == ["start", "failure"]
    assert sequence.state == State.STOPPING


def test_a_timeout_asks_the_operator_only_when_the_success_detector_was_unsure():
    sequence = make_sequence(ready=set(Service), max_decisions=2, unsure_score=0.3)
    running(sequence)
    sequence.score(0.1)
    sequence.record(False, T0 + 1)
    assert events(sequence.record(False, T0 + 2)) == ["failure"]  # sure: no one is asked
    sequence.record(True, T0 + 2.1)
    sequence.tick(T0 + 3)
    sequence.answered(Service.RESET, True, "", T0 + 3)
    sequence.answered(Service.START, True, "", T0 + 3.1)
    assert sequence.highest_score == 0.0  # a new episode
    sequence.score(0.45)
    sequence.record(False, T0 + 4)
    outputs = sequence.record(False, T0 + 5)
    assert not events(outputs) and sequence.state == State.AWAITING_LABEL
    assert "highest score 0.45 >= unsure_score 0.3" in of(Log, outputs)[-1].text
    assert sequence.record(False, T0 + 6) == []  # decisions no longer count
    reply, outputs = sequence.mark(True, T0 + 7)
    assert reply.success and events(outputs) == ["success"]


def test_without_unsure_score_a_timeout_never_waits():
    sequence = make_sequence(ready=set(Service), max_decisions=1)
    running(sequence)
    sequence.score(0.99)
    assert events(sequence.record(False, T0 + 1)) == ["failure"]
