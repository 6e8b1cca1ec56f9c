"""Reward and reset: sparse success signals -> episode events, rewards and the reset sequence.

    ros2 run cfgrl_ros reward_reset_node --ros-args -p reset:=sim

An episode ends in success when the simulator's ``success`` topic turns true
(``use_success_topic``) or the operator calls ``~/mark_success``; in failure when the operator
calls ``~/mark_failure`` or the policy has made ``max_decisions`` decisions (counted from the
``dsrl/decision`` records). At the end the node publishes ``episode_event`` ("success" or
"failure") and ``reward`` (1.0 or 0.0), waits until the policy node has stopped (its
episode-end record, at most ``stop_timeout``), then resets:

- ``reset: sim``: calls the simulator's reset service (``sim_reset_service``), then starts the
  episode;
- ``reset: real``: asks the policy node to home the arm (its ``~/home`` service,
  ``home_service``: the policy node alone commands the arm, through the safety envelope; it
  opens the gripper and moves to the home pose), watches the measured pose until it is within
  ``home_tolerance`` / ``home_rotation_tolerance`` of ``home_position`` / ``home_orientation``
  (at most ``home_timeout``), waits for the operator's ``~/ready``, then starts the episode.
  Before the first episode the order is ``~/ready`` first, then homing: nothing moves the arm
  before the operator says so.

An episode starts with a call of the policy node's ``~/start_episode`` (``start_service``), and
``episode_event`` "start" is published only once it has answered: this node is the authority
on episode state, and whoever hears "start" may rely on the policy node knowing it too (its
``~/home`` refuses during an episode). A refusal goes back to the reset (sim) or the operator
(real).

After ``episodes`` episodes (0: no limit) it stops starting new ones. Success statistics are
logged after each episode and published on ``/diagnostics``.
"""

from __future__ import annotations

import math
from collections import deque
from enum import Enum

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import Trigger

from cfgrl_ros.msg_arrays import pose_arrays, stamp_seconds
from cfgrl_ros.nodes.arm_interface import CURRENT_POSE_TOPIC, declare_home
from cfgrl_ros.nodes.decision_messages import (
    DECISION_TOPIC,
    EPISODE_EVENT_TOPIC,
    REWARD_TOPIC,
    event_qos,
    exchange_qos,
    is_episode_end,
)
from cfgrl_ros.nodes.node_support import (
    declare,
    declare_statistics_window,
    now_seconds,
    require_positive,
    run_node,
)

RESET_MODES = ("sim", "real")
SUCCESS_REWARD = 1.0  # sparse success: 1 at success, 0 otherwise


class State(Enum):
    WAITING_FOR_READY = "waiting for the operator's ~/ready"
    HOMING = "the policy node moves the arm to the home pose"
    RESETTING = "resetting the simulator"
    STARTING = "the policy node starts the episode"
    RUNNING = "episode running"
    STOPPING = "waiting for the policy node to stop"
    FINISHED = "finished all episodes"


class RewardResetNode(Node):
    def __init__(self) -> None:
        super().__init__("reward_reset_node")
        self.reset_mode = declare(
            self,
            "reset",
            "sim",
            "reset sequence: sim (the simulator's reset service) or real "
            "(home pose, open gripper, operator's ~/ready)",
        )
        if self.reset_mode not in RESET_MODES:
            raise ValueError(f"parameter reset is {self.reset_mode!r}; use one of {RESET_MODES}")
        use_success_topic = declare(
            self, "use_success_topic", True, "end an episode in success when `success` is true"
        )
        self.max_decisions = declare(
            self,
            "max_decisions",
            30,
            "decisions after which an episode fails (0: no timeout)",
            integer_range=(0, 1_000_000),
        )
        self.episode_limit = declare(
            self,
            "episodes",
            0,
            "episodes to run, then stop starting new ones (0: no limit)",
            integer_range=(0, 1_000_000_000),
        )
        self.sim_reset_service = declare(
            self,
            "sim_reset_service",
            "franka_sim_node/reset",
            "std_srvs/Trigger service that resets the simulator",
        )
        self.stop_timeout = declare(
            self, "stop_timeout", 3.0, "seconds to wait for the policy node's episode-end record"
        )
        self.service_timeout = declare(
            self,
            "service_timeout",
            30.0,
            "seconds to wait for the answer of the simulator's reset or the policy node's start",
        )
        self.start_service = declare(
            self,
            "start_service",
            "policy_node/start_episode",
            "std_srvs/Trigger service of the policy node that starts an episode",
        )
        window = declare_statistics_window(self)
        control_rate = declare(self, "control_rate", 20.0, "checks per second (Hz)")
        require_positive(
            {
                "control_rate": control_rate,
                "stop_timeout": self.stop_timeout,
                "service_timeout": self.service_timeout,
            }
        )

        self.event_publisher = self.create_publisher(String, EPISODE_EVENT_TOPIC, event_qos())
        self.reward_publisher = self.create_publisher(Float64, REWARD_TOPIC, 10)
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(JointState, DECISION_TOPIC, self._on_record, exchange_qos())
        if use_success_topic:
            self.create_subscription(Bool, "success", self._on_success, qos_profile_sensor_data)
        self.create_service(Trigger, "~/mark_success", self._on_mark_success)
        self.create_service(Trigger, "~/mark_failure", self._on_mark_failure)
        self.create_service(Trigger, "~/ready", self._on_ready)
        self._declare_homing()
        self.start_client = self.create_client(Trigger, self.start_service)
        if self.reset_mode == "sim":
            self.reset_client = self.create_client(Trigger, self.sim_reset_service)
        else:
            self.home_client = self.create_client(Trigger, self.home_service)
            self.create_subscription(
                PoseStamped, CURRENT_POSE_TOPIC, self._on_pose, qos_profile_sensor_data
            )

        self.episodes = 0
        self.successes = 0
        self.recent: deque[bool] = deque(maxlen=window)
        self.decisions = 0
        self._homed = False
        self._operator_ready = False
        self._reset_future = None
        self._reset_called = 0.0
        self._start_future = None  # the policy node's answer to ~/start_episode, while awaited
        self._start_called = 0.0
        self._home_future = None  # the policy node's answer to ~/home, while awaited
        self._home_accepted = False  # the policy node is homing the arm
        self._pose: tuple[np.ndarray, np.ndarray, float] | None = None  # pos, quat, stamp
        self._episode_started = 0.0
        self._last_wait_log = -math.inf
        self.state = State.RESETTING if self.reset_mode == "sim" else State.WAITING_FOR_READY
        self._state_since = now_seconds(self)
        self.create_timer(1.0 / control_rate, self._tick)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(
            f"reset mode {self.reset_mode}; episodes fail after "
            f"{self.max_decisions or 'unlimited'} decisions; {self.state.value}"
        )

    def _declare_homing(self) -> None:
        """Parameters of the real arm's reset (declared in every mode, so they can be listed)."""
        self.home = declare_home(self)
        self.home_service = declare(
            self,
            "home_service",
            "policy_node/home",
            "std_srvs/Trigger service of the policy node that moves the arm home",
        )
        self.max_pose_age = declare(
            self, "safety.max_observation_age", 0.25, "seconds after which a pose is too old"
        )
        require_positive({"safety.max_observation_age": self.max_pose_age})

    def _enter(self, state: State) -> None:
        if self._home_future is not None:  # leaving HOMING before the answer came
            self.home_client.remove_pending_request(self._home_future)
        self._home_future = None
        if self._start_future is not None:  # leaving STARTING before the answer came
            self.start_client.remove_pending_request(self._start_future)
        self._start_future = None
        self._home_accepted = False
        self.state = state
        self._state_since = now_seconds(self)
        episode = "" if state == State.FINISHED else f"episode {self.episodes + 1}: "
        self.get_logger().info(episode + state.value)

    # ------------------------------------------------------------------------------ episodes
    def _start_episode(self) -> None:
        self._operator_ready = False
        self._enter(State.STARTING)
        self._request_start()

    def _request_start(self) -> None:
        """Call the policy node's ~/start_episode; announce the episode once it has answered."""
        if self._start_future is None:
            if self.start_client.service_is_ready():
                self._start_future = self.start_client.call_async(Trigger.Request())
                self._start_called = now_seconds(self)
            else:
                self._log_waiting(f"the policy node's start service {self.start_service}")
            return
        if not self._start_future.done():
            if now_seconds(self) - self._start_called > self.service_timeout:
                self.get_logger().error(
                    f"{self.start_service} did not answer within {self.service_timeout}s; "
                    "calling it again"
                )
                self.start_client.remove_pending_request(self._start_future)
                self._start_future = None
            return
        result = self._start_future.result()
        self._start_future = None
        if result is None or not result.success:
            self.get_logger().error(
                f"{self.start_service} refused: {getattr(result, 'message', 'no answer')}"
                + ("; resetting again" if self.reset_mode == "sim" else "; call ~/ready again")
            )
            self._enter(State.RESETTING if self.reset_mode == "sim" else State.WAITING_FOR_READY)
            return
        self.decisions = 0
        self._episode_started = now_seconds(self)
        self._enter(State.RUNNING)
        self.event_publisher.publish(String(data="start"))

    def _end_episode(self, success: bool, why: str) -> None:
        self.episodes += 1
        self.successes += int(success)
        self.recent.append(success)
        self.event_publisher.publish(String(data="success" if success else "failure"))
        self.reward_publisher.publish(Float64(data=SUCCESS_REWARD if success else 0.0))
        self.get_logger().info(
            f"episode {self.episodes}: {'success' if success else 'failure'} ({why}) after "
            f"{self.decisions} decisions in {now_seconds(self) - self._episode_started:.1f} s; "
            f"success rate {self.successes}/{self.episodes}, "
            f"last {len(self.recent)}: {sum(self.recent)}/{len(self.recent)}"
        )
        self._homed = False
        self._enter(State.STOPPING)
        self._publish_diagnostics()

    def _after_stop(self) -> None:
        if self.episode_limit and self.episodes >= self.episode_limit:
            self._enter(State.FINISHED)
        elif self.reset_mode == "sim":
            self._enter(State.RESETTING)
        else:
            self._enter(State.HOMING)  # an episode ran: the operator allowed motion before

    def _advance_real(self) -> None:
        """Real arm: home first, then wait for the operator, then start."""
        if not self._homed:
            self._enter(State.HOMING)
        elif self._operator_ready:
            self._start_episode()
        else:
            self._enter(State.WAITING_FOR_READY)

    # ------------------------------------------------------------------------------- inputs
    def _on_record(self, message: JointState) -> None:
        try:
            end = is_episode_end(message)
        except ValueError as error:
            self.get_logger().error(str(error), throttle_duration_sec=10.0)
            return
        if end:
            if self.state == State.STOPPING:
                self._after_stop()
            return
        if self.state != State.RUNNING:
            return
        self.decisions += 1
        if self.max_decisions and self.decisions >= self.max_decisions:
            self._end_episode(False, f"timeout: {self.max_decisions} decisions")

    def _on_success(self, message: Bool) -> None:
        if message.data and self.state == State.RUNNING:
            self._end_episode(True, "success topic")

    def _on_mark_success(self, request, response):
        return self._mark(response, True)

    def _on_mark_failure(self, request, response):
        return self._mark(response, False)

    def _mark(self, response, success: bool):
        outcome = "success" if success else "failure"
        if self.state != State.RUNNING:
            response.success = False
            response.message = f"no episode is running ({self.state.value}); nothing to mark"
            return response
        self._end_episode(success, "operator")
        response.success = True
        response.message = f"episode {self.episodes} marked {outcome}"
        return response

    def _on_ready(self, request, response):
        if self.state != State.WAITING_FOR_READY:
            response.success = False
            response.message = f"not waiting for the operator ({self.state.value})"
            return response
        self._operator_ready = True
        response.success = True
        response.message = f"episode {self.episodes + 1} starts" + (
            "" if self._homed else " after homing"
        )
        self._advance_real()
        return response

    def _on_pose(self, message: PoseStamped) -> None:
        position, quaternion = pose_arrays(message)
        self._pose = (position, quaternion, stamp_seconds(message.header.stamp))

    # -------------------------------------------------------------------------------- ticks
    def _tick(self) -> None:
        elapsed = now_seconds(self) - self._state_since
        if self.state == State.STOPPING and elapsed > self.stop_timeout:
            self.get_logger().warning(
                f"no episode-end record from the policy node within {self.stop_timeout}s; "
                "resetting anyway"
            )
            self._after_stop()
        elif self.state == State.RESETTING:
            self._reset_sim(elapsed)
        elif self.state == State.STARTING:
            self._request_start()
        elif self.state == State.HOMING:
            self._home(elapsed)

    def _reset_sim(self, elapsed: float) -> None:
        if self._reset_future is None:
            # A lockstep simulator publishes an observation only when reset or commanded: the
            # policy node must be listening before the reset, or it would wait for ever.
            if self.count_publishers(DECISION_TOPIC) == 0:
                self._log_waiting("the policy node")
            elif not self.reset_client.service_is_ready():
                self._log_waiting(f"the reset service {self.sim_reset_service}")
            else:
                self._reset_future = self.reset_client.call_async(Trigger.Request())
                self._reset_called = now_seconds(self)
            return
        if not self._reset_future.done():
            if now_seconds(self) - self._reset_called > self.service_timeout:
                self.get_logger().error(
                    f"{self.sim_reset_service} did not answer within {self.service_timeout}s; "
                    "calling it again"
                )
                self.reset_client.remove_pending_request(self._reset_future)
                self._reset_future = None
            return
        result = self._reset_future.result()
        self._reset_future = None
        if result is None or not result.success:
            self.get_logger().error(
                f"{self.sim_reset_service} failed: {getattr(result, 'message', 'no answer')}; "
                "calling it again"
            )
            return
        self._start_episode()

    def _log_waiting(self, what: str) -> None:
        if now_seconds(self) - self._last_wait_log > 5.0:
            self._last_wait_log = now_seconds(self)
            self.get_logger().info(f"waiting for {what}")

    def _home(self, elapsed: float) -> None:
        """Ask the policy node to home the arm (once), then wait for the pose to arrive."""
        if elapsed > self.home.timeout:
            self.get_logger().error(
                f"the arm did not reach the home pose {self.home.position.tolist()} within "
                f"{self.home.timeout}s; move it there by hand, then call ~/ready (the policy "
                "node homes to its own home_position: set it for both nodes, under /**)"
            )
            self._operator_ready = False
            self._enter(State.WAITING_FOR_READY)
            return
        if not self._home_accepted:
            self._request_homing()
            return
        now = now_seconds(self)
        if self._pose is None or now - self._pose[2] > self.max_pose_age:
            self.get_logger().warning(
                f"homing: no pose newer than {self.max_pose_age}s on {CURRENT_POSE_TOPIC}",
                throttle_duration_sec=2.0,
            )
            return
        position, quaternion, _ = self._pose
        if self.home.reached(position, quaternion):
            self._homed = True
            self.get_logger().info("at the home pose")
            self._advance_real()

    def _request_homing(self) -> None:
        """Call the policy node's ~/home without waiting; a refusal goes back to the operator."""
        if self._home_future is None:
            if self.home_client.service_is_ready():
                self._home_future = self.home_client.call_async(Trigger.Request())
            else:
                self._log_waiting(f"the policy node's home service {self.home_service}")
            return
        if not self._home_future.done():
            return
        result = self._home_future.result()
        self._home_future = None
        if result is not None and result.success:
            self._home_accepted = True
            self.get_logger().info(f"{self.home_service}: {result.message}")
            return
        self.get_logger().error(
            f"{self.home_service} refused: {getattr(result, 'message', 'no answer')}; "
            "call ~/ready to try again"
        )
        self._operator_ready = False
        self._enter(State.WAITING_FOR_READY)

    def _publish_diagnostics(self) -> None:
        rate = self.successes / self.episodes if self.episodes else 0.0
        recent = sum(self.recent) / len(self.recent) if self.recent else 0.0
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK,
            name=f"{self.get_name()}: episodes",
            message=self.state.value,
            values=[
                KeyValue(key=key, value=str(value))
                for key, value in (
                    ("episodes", self.episodes),
                    ("successes", self.successes),
                    ("success_rate", f"{rate:.3f}"),
                    (f"success_rate_last_{self.recent.maxlen}", f"{recent:.3f}"),
                    ("decisions_this_episode", self.decisions),
                )
            ],
        )
        message = DiagnosticArray(status=[status])
        message.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_publisher.publish(message)


def main(args: list[str] | None = None) -> None:
    run_node(RewardResetNode, "reward_reset_node", args)


if __name__ == "__main__":
    main()
