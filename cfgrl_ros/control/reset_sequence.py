"""The reward/reset node's episode state without ROS: success signals -> events, rewards, resets.

The node (cfgrl_ros.nodes.reward_reset_node) turns messages, service calls and answers into
calls of ``ResetSequence`` and carries out what they return: events and rewards to publish,
services to call (the simulator's reset, the policy node's ``~/start_episode`` and ``~/home``)
or to give up on, log lines. Every input takes ``now``, the node's clock in seconds.

States: WAITING_FOR_READY (the operator's ``~/ready``), HOMING (the policy node moves the arm
home; the measured pose must arrive there), RESETTING (the simulator's reset), STARTING (the
policy node's ``~/start_episode``: "start" is announced only after its answer, so whoever hears
it knows the policy node runs the episode), RUNNING, AWAITING_LABEL (a learned success
detector was unsure when the episode ran out of decisions: the operator labels it),
STOPPING (until the policy node's episode-end record, at most ``stop_timeout``), FINISHED
(``episodes`` reached).

With a success detector (cfgrl_ros.nodes.success_detector_node) the operator labels only what
it is unsure of: its confident ``success`` ends an episode in success, and an episode that runs
out of decisions fails with no one asked, unless the detector's highest score in the episode
reached ``unsure_score`` (below its own threshold: it did not fire). Then the episode waits in
AWAITING_LABEL for ``~/mark_success`` or ``~/mark_failure`` (or a later confident success).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

import numpy as np

from cfgrl_ros.arm.safety import SafetyConfig
from cfgrl_ros.control.messages import Log, Reply

if TYPE_CHECKING:
    from cfgrl_ros.nodes.arm_interface import HomePose

RESET_MODES = ("sim", "real")
SUCCESS_REWARD = 1.0  # sparse success: 1 at success, 0 otherwise
WAIT_LOG_PERIOD = 5.0  # seconds between "waiting for ..." lines
POSE_LOG_PERIOD = 2.0  # seconds between "no pose" warnings while homing


class State(Enum):
    WAITING_FOR_READY = "waiting for the operator's ~/ready"
    HOMING = "the policy node moves the arm to the home pose"
    RESETTING = "resetting the simulator"
    STARTING = "the policy node starts the episode"
    RUNNING = "episode running"
    AWAITING_LABEL = (
        "the success detector is unsure: waiting for the operator's ~/mark_success or "
        "~/mark_failure"
    )
    STOPPING = "waiting for the policy node to stop"
    FINISHED = "finished all episodes"


class Service(Enum):
    RESET = "the simulator's reset"
    START = "the policy node's ~/start_episode"
    HOME = "the policy node's ~/home"


@dataclass(frozen=True)
class SequenceSettings:
    """How episodes run; the reward/reset node's parameters take these defaults."""

    reset_mode: str = "sim"
    max_decisions: int = 13  # 0: no timeout; 13 x 8 actions per decision = Lift's 100 ticks
    episode_limit: int = 0  # 0: no limit
    stop_timeout: float = 3.0
    service_timeout: float = 30.0
    max_pose_age: float = SafetyConfig.max_observation_age
    statistics_window: int = 10
    unsure_score: float = 1.0  # a detector's score from which a timeout asks (1: never asks)


# ---------------------------------------------------------------------------------- outputs
@dataclass(frozen=True)
class PublishEvent:
    event: str  # "start", "success", "failure"


@dataclass(frozen=True)
class PublishReward:
    reward: float


@dataclass(frozen=True)
class Call:
    service: Service


@dataclass(frozen=True)
class Cancel:
    """Give up on the call's answer (it is no longer wanted or came too late)."""

    service: Service


@dataclass(frozen=True)
class EpisodeCounted:
    """An episode ended and was counted: the node publishes its statistics."""


Output = PublishEvent | PublishReward | Call | Cancel | EpisodeCounted | Log


class ResetSequence:
    """Episode state, rewards and the reset sequence; see the module docstring.

    `service_ready(service)` says whether a service can be called now; `policy_present()`
    whether a policy node publishes decision records (a lockstep simulator publishes only when
    reset or commanded, so the policy node must listen before the reset). `service_names`
    name the services in log lines.
    """

    def __init__(
        self,
        settings: SequenceSettings,
        home: HomePose,
        service_ready: Callable[[Service], bool],
        policy_present: Callable[[], bool],
        service_names: dict[Service, str],
        now: float,
    ) -> None:
        if settings.reset_mode not in RESET_MODES:
            raise ValueError(
                f"parameter reset is {settings.reset_mode!r}; use one of {RESET_MODES}"
            )
        self.settings = settings
        self.home = home
        self.service_ready = service_ready
        self.policy_present = policy_present
        self.service_names = service_names
        self.episodes = 0
        self.successes = 0
        self.recent: deque[bool] = deque(maxlen=settings.statistics_window)
        self.decisions = 0
        self.highest_score = 0.0  # the success detector's, this episode
        self._homed = False
        self._operator_ready = False
        self._calls: dict[Service, float] = {}  # in flight: when called
        self._home_accepted = False  # the policy node is homing the arm
        self._pose: tuple[np.ndarray, np.ndarray, float] | None = None  # pos, quat, stamp
        self._episode_started = 0.0
        self._logged_at: dict[str, float] = {}
        self.state = State.RESETTING if settings.reset_mode == "sim" else State.WAITING_FOR_READY
        self._state_since = now

    def _enter(self, state: State, now: float) -> list[Output]:
        out: list[Output] = [Cancel(service) for service in self._calls]  # no longer wanted
        self._calls.clear()
        self._home_accepted = False
        self.state = state
        self._state_since = now
        episode = "" if state == State.FINISHED else f"episode {self.episodes + 1}: "
        out.append(Log("info", episode + state.value))
        return out

    # ----------------------------------------------------------------------------- episodes
    def _start_episode(self, now: float) -> list[Output]:
        self._operator_ready = False
        self.decisions = 0
        self.highest_score = 0.0
        return self._enter(State.STARTING, now) + self._call(Service.START, now)

    def _end_episode(self, success: bool, why: str, now: float) -> list[Output]:
        self.episodes += 1
        self.successes += int(success)
        self.recent.append(success)
        out: list[Output] = [
            PublishEvent("success" if success else "failure"),
            PublishReward(SUCCESS_REWARD if success else 0.0),
            Log(
                "info",
                f"episode {self.episodes}: {'success' if success else 'failure'} ({why}) after "
                f"{self.decisions} decisions in {now - self._episode_started:.1f} s; "
                f"success rate {self.successes}/{self.episodes}, "
                f"last {len(self.recent)}: {sum(self.recent)}/{len(self.recent)}",
            ),
        ]
        self._homed = False
        return out + self._enter(State.STOPPING, now) + [EpisodeCounted()]

    def _after_stop(self, now: float) -> list[Output]:
        limit = self.settings.episode_limit
        if limit and self.episodes >= limit:
            return self._enter(State.FINISHED, now)
        if self.settings.reset_mode == "sim":
            return self._enter(State.RESETTING, now)
        return self._enter(State.HOMING, now)  # an episode ran: the operator allowed motion

    def _advance_real(self, now: float) -> list[Output]:
        """Real arm: home first, then wait for the operator, then start."""
        if not self._homed:
            return self._enter(State.HOMING, now)
        if self._operator_ready:
            return self._start_episode(now)
        return self._enter(State.WAITING_FOR_READY, now)

    # ------------------------------------------------------------------------------- inputs
    def record(self, end: bool, now: float) -> list[Output]:
        """A decision record (`end` False) or an episode-end record of the policy node."""
        if end:
            return self._after_stop(now) if self.state == State.STOPPING else []
        if self.state not in (State.STARTING, State.RUNNING):
            return []
        # The policy node may decide before its answer to ~/start_episode arrives here: those
        # decisions count, and the limit is checked once "start" has been announced.
        self.decisions += 1
        return self._check_decision_limit(now) if self.state == State.RUNNING else []

    def _check_decision_limit(self, now: float) -> list[Output]:
        limit = self.settings.max_decisions
        if not limit or self.decisions < limit:
            return []
        unsure = self.settings.unsure_score
        if unsure < 1.0 and self.highest_score >= unsure:
            return [
                *self._enter(State.AWAITING_LABEL, now),
                Log(
                    "warning",
                    f"episode {self.episodes + 1}: {limit} decisions made, and the success "
                    f"detector is unsure (highest score {self.highest_score:.2f} >= "
                    f"unsure_score {unsure}): label it with ~/mark_success or ~/mark_failure",
                ),
            ]
        return self._end_episode(False, f"timeout: {limit} decisions", now)

    def score(self, value: float) -> None:
        """The success detector's score of the latest frame."""
        if self.state == State.RUNNING and math.isfinite(value):
            self.highest_score = max(self.highest_score, value)

    def success_signal(self, now: float) -> list[Output]:
        """The success topic turned true."""
        if self.state in (State.RUNNING, State.AWAITING_LABEL):
            return self._end_episode(True, "success topic", now)
        return []

    def mark(self, success: bool, now: float) -> tuple[Reply, list[Output]]:
        """The operator's ~/mark_success or ~/mark_failure."""
        if self.state not in (State.RUNNING, State.AWAITING_LABEL):
            return Reply(False, f"no episode is running ({self.state.value}); nothing to mark"), []
        out = self._end_episode(success, "operator", now)
        outcome = "success" if success else "failure"
        return Reply(True, f"episode {self.episodes} marked {outcome}"), out

    def ready(self, now: float) -> tuple[Reply, list[Output]]:
        """The operator's ~/ready."""
        if self.state != State.WAITING_FOR_READY:
            return Reply(False, f"not waiting for the operator ({self.state.value})"), []
        self._operator_ready = True
        message = f"episode {self.episodes + 1} starts" + ("" if self._homed else " after homing")
        return Reply(True, message), self._advance_real(now)

    def pose(self, position: np.ndarray, quaternion: np.ndarray, stamp: float) -> None:
        """The measured end-effector pose (real arm)."""
        self._pose = (position, quaternion, stamp)

    def answered(self, service: Service, success: bool, message: str, now: float) -> list[Output]:
        """A called service answered (`success` False also when there was no answer)."""
        if self._calls.pop(service, None) is None:
            return []  # given up on already
        name = self.service_names[service]
        if service == Service.RESET:
            if success:
                return self._start_episode(now)
            return [Log("error", f"{name} failed: {message}; calling it again")]
        if service == Service.START:
            if not success:
                again = "resetting again" if self.settings.reset_mode == "sim" else "call ~/ready"
                out: list[Output] = [Log("error", f"{name} refused: {message}; {again}")]
                if self.settings.reset_mode == "sim":
                    return out + self._enter(State.RESETTING, now)
                return out + self._enter(State.WAITING_FOR_READY, now)
            self._episode_started = now
            out = [*self._enter(State.RUNNING, now), PublishEvent("start")]
            return out + self._check_decision_limit(now)
        if success:  # homing accepted: the pose must now arrive home
            self._home_accepted = True
            return [Log("info", f"{name}: {message}")]
        self._operator_ready = False
        return [
            Log("error", f"{name} refused: {message}; call ~/ready to try again"),
            *self._enter(State.WAITING_FOR_READY, now),
        ]

    def tick(self, now: float) -> list[Output]:
        """Timeouts and the steps of the reset that wait for something."""
        elapsed = now - self._state_since
        if self.state == State.STOPPING and elapsed > self.settings.stop_timeout:
            return [
                Log(
                    "warning",
                    f"no episode-end record from the policy node within "
                    f"{self.settings.stop_timeout}s; resetting anyway",
                ),
                *self._after_stop(now),
            ]
        if self.state == State.RESETTING:
            if Service.RESET not in self._calls and not self.policy_present():
                return self._waiting("the policy node", now)
            return self._call(Service.RESET, now)
        if self.state == State.STARTING:
            return self._call(Service.START, now)
        if self.state == State.HOMING:
            return self._home(elapsed, now)
        if self.state == State.AWAITING_LABEL:  # the policy acts on meanwhile
            return self._waiting("the operator's label: ~/mark_success or ~/mark_failure", now)
        return []

    # ---------------------------------------------------------------------------- services
    def _call(self, service: Service, now: float) -> list[Output]:
        """Call `service` unless its call is in flight; call again after service_timeout."""
        name = self.service_names[service]
        called = self._calls.get(service)
        if called is not None:
            timeout = self.settings.service_timeout
            if service == Service.HOME or now - called <= timeout:
                return []  # homing has its own timeout
            del self._calls[service]
            return [
                Cancel(service),
                Log("error", f"{name} did not answer within {timeout}s; calling it again"),
            ]
        if not self.service_ready(service):
            return self._waiting(name, now)
        self._calls[service] = now
        return [Call(service)]

    def _home(self, elapsed: float, now: float) -> list[Output]:
        """Ask the policy node to home the arm (once), then wait for the pose to arrive."""
        if elapsed > self.home.timeout:
            self._operator_ready = False
            return [
                Log(
                    "error",
                    f"the arm did not reach the home pose {self.home.position.tolist()} within "
                    f"{self.home.timeout}s; move it there by hand, then call ~/ready (the policy "
                    "node homes to its own home_position: set it for both nodes, under /**)",
                ),
                *self._enter(State.WAITING_FOR_READY, now),
            ]
        if not self._home_accepted:
            return self._call(Service.HOME, now)
        if self._pose is None or now - self._pose[2] > self.settings.max_pose_age:
            return self._throttled(
                "warning",
                f"homing: no pose newer than {self.settings.max_pose_age}s",
                POSE_LOG_PERIOD,
                now,
            )
        position, quaternion, _ = self._pose
        if not self.home.reached(position, quaternion):
            return []
        self._homed = True
        return [Log("info", "at the home pose"), *self._advance_real(now)]

    def _waiting(self, what: str, now: float) -> list[Output]:
        return self._throttled("info", f"waiting for {what}", WAIT_LOG_PERIOD, now, key="wait")

    def _throttled(
        self, level: str, text: str, period: float, now: float, key: str = ""
    ) -> list[Output]:
        key = key or text
        if now - self._logged_at.get(key, -math.inf) < period:
            return []
        self._logged_at[key] = now
        return [Log(level, text)]
