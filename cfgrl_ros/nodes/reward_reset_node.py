"""Reward and reset: sparse success signals -> episode events, rewards and the reset sequence.

    ros2 run cfgrl_ros reward_reset_node --ros-args -p reset:=sim

An episode ends in success when the simulator's ``success`` topic turns true
(``use_success_topic``) or the operator calls ``~/mark_success``; in failure when the operator
calls ``~/mark_failure`` or the policy has made ``max_decisions`` decisions (counted from the
``dsrl/decision`` records, which come when a decision is over: by the time the failure reaches
the policy node it may have begun the next one, which ends with the episode). At the end the
node publishes ``episode_event`` ("success" or "failure") and ``reward`` (1.0 or 0.0), waits
until the policy node has stopped (its episode-end record, at most ``stop_timeout``), then
resets:

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
logged after each episode and published on ``/diagnostics``. The states and their transitions
are cfgrl_ros.control.reset_sequence (no ROS); this node converts messages and calls services.
"""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import Trigger

from cfgrl_ros.arm.safety import SafetyConfig
from cfgrl_ros.control.reset_sequence import (
    Call,
    Cancel,
    EpisodeCounted,
    Log,
    Output,
    PublishEvent,
    PublishReward,
    Reply,
    ResetSequence,
    SequenceSettings,
    Service,
)
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
    declare_setting,
    declare_statistics_window,
    diagnostic_status,
    now_seconds,
    publish_diagnostics,
    require_positive,
    run_node,
    write_log,
)


class RewardResetNode(Node):
    def __init__(self) -> None:
        super().__init__("reward_reset_node")
        self._declare_parameters()
        services = {
            Service.RESET: self.sim_reset_service,
            Service.START: self.start_service,
            Service.HOME: self.home_service,
        }
        self.clients_by_service = {
            service: self.create_client(Trigger, name) for service, name in services.items()
        }
        self.sequence = ResetSequence(
            self.settings,
            self.home,
            service_ready=lambda service: self.clients_by_service[service].service_is_ready(),
            policy_present=lambda: self.count_publishers(DECISION_TOPIC) > 0,
            service_names={
                Service.RESET: f"the reset service {self.sim_reset_service}",
                Service.START: f"the policy node's start service {self.start_service}",
                Service.HOME: f"the policy node's home service {self.home_service}",
            },
            now=now_seconds(self),
        )
        self._futures: dict[Service, object] = {}  # calls in flight

        self.event_publisher = self.create_publisher(String, EPISODE_EVENT_TOPIC, event_qos())
        self.reward_publisher = self.create_publisher(Float64, REWARD_TOPIC, 10)
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(JointState, DECISION_TOPIC, self._on_record, exchange_qos())
        if self.use_success_topic:
            self.create_subscription(Bool, "success", self._on_success, qos_profile_sensor_data)
            self.create_subscription(
                Float64,
                "success_score",
                lambda message: self.sequence.score(message.data),
                qos_profile_sensor_data,
            )
        self.create_service(Trigger, "~/mark_success", self._on_mark_success)
        self.create_service(Trigger, "~/mark_failure", self._on_mark_failure)
        self.create_service(Trigger, "~/ready", self._on_ready)
        if self.settings.reset_mode == "real":
            self.create_subscription(
                PoseStamped, CURRENT_POSE_TOPIC, self._on_pose, qos_profile_sensor_data
            )
        self.create_timer(1.0 / self.control_rate, self._tick)
        self.create_timer(1.0, self._publish_diagnostics)
        max_decisions = self.settings.max_decisions
        self.get_logger().info(
            f"reset mode {self.settings.reset_mode}; episodes fail after "
            f"{max_decisions or 'unlimited'} decisions; {self.sequence.state.value}"
        )

    def _declare_parameters(self) -> None:
        """Every parameter of the node, in one place (the homing ones in every reset mode, so
        they can be listed)."""
        reset_mode = declare(
            self,
            "reset",
            SequenceSettings.reset_mode,
            "reset sequence: sim (the simulator's reset service) or real "
            "(home pose, open gripper, operator's ~/ready)",
        )
        self.use_success_topic = declare(
            self, "use_success_topic", True, "end an episode in success when `success` is true"
        )
        max_decisions = declare(
            self,
            "max_decisions",
            SequenceSettings.max_decisions,
            "decisions after which an episode fails (0: no timeout); the default 13 x 8 actions "
            "per decision = Lift's 100 ticks",
            integer_range=(0, 1_000_000),
        )
        episode_limit = declare(
            self,
            "episodes",
            SequenceSettings.episode_limit,
            "episodes to run, then stop starting new ones (0: no limit)",
            integer_range=(0, 1_000_000_000),
        )
        self.sim_reset_service = declare(
            self,
            "sim_reset_service",
            "franka_sim_node/reset",
            "std_srvs/Trigger service that resets the simulator",
        )
        stop_timeout = declare(
            self,
            "stop_timeout",
            SequenceSettings.stop_timeout,
            "seconds to wait for the policy node's episode-end record",
        )
        service_timeout = declare(
            self,
            "service_timeout",
            SequenceSettings.service_timeout,
            "seconds to wait for the answer of the simulator's reset or the policy node's start",
        )
        self.start_service = declare(
            self,
            "start_service",
            "policy_node/start_episode",
            "std_srvs/Trigger service of the policy node that starts an episode",
        )
        window = declare_statistics_window(self)
        unsure_score = declare(
            self,
            "unsure_score",
            SequenceSettings.unsure_score,
            "with a success detector: an episode that runs out of decisions after its score "
            "reached this (without firing) waits for the operator's label; 1: never asks",
            float_range=(0.0, 1.0),
        )
        self.control_rate = declare(self, "control_rate", 20.0, "checks per second (Hz)")
        self.home = declare_home(self)
        self.home_service = declare(
            self,
            "home_service",
            "policy_node/home",
            "std_srvs/Trigger service of the policy node that moves the arm home",
        )
        max_pose_age = declare_setting(
            self, SafetyConfig, "max_observation_age", "safety.max_observation_age"
        )
        require_positive(
            {
                "control_rate": self.control_rate,
                "stop_timeout": stop_timeout,
                "service_timeout": service_timeout,
                "safety.max_observation_age": max_pose_age,
            }
        )
        self.settings = SequenceSettings(
            reset_mode=reset_mode,
            max_decisions=max_decisions,
            episode_limit=episode_limit,
            stop_timeout=stop_timeout,
            service_timeout=service_timeout,
            max_pose_age=max_pose_age,
            statistics_window=window,
            unsure_score=unsure_score,
        )

    # ------------------------------------------------------------------------------- inputs
    def _on_record(self, message: JointState) -> None:
        try:
            end = is_episode_end(message)
        except ValueError as error:
            self.get_logger().error(str(error), throttle_duration_sec=10.0)
            return
        self._carry_out(self.sequence.record(end, now_seconds(self)))

    def _on_success(self, message: Bool) -> None:
        if message.data:
            self._carry_out(self.sequence.success_signal(now_seconds(self)))

    def _on_mark_success(self, request, response):
        return self._answer(response, *self.sequence.mark(True, now_seconds(self)))

    def _on_mark_failure(self, request, response):
        return self._answer(response, *self.sequence.mark(False, now_seconds(self)))

    def _on_ready(self, request, response):
        return self._answer(response, *self.sequence.ready(now_seconds(self)))

    def _answer(self, response, reply: Reply, outputs: list[Output]):
        self._carry_out(outputs)
        response.success = reply.success
        response.message = reply.message
        return response

    def _on_pose(self, message: PoseStamped) -> None:
        position, quaternion = pose_arrays(message)
        self.sequence.pose(position, quaternion, stamp_seconds(message.header.stamp))

    def _tick(self) -> None:
        now = now_seconds(self)
        for service, future in list(self._futures.items()):
            if future.done():
                del self._futures[service]
                result = future.result()
                success = result is not None and result.success
                message = getattr(result, "message", "no answer")
                self._carry_out(self.sequence.answered(service, success, message, now))
        self._carry_out(self.sequence.tick(now))

    # ------------------------------------------------------------------------------ outputs
    def _carry_out(self, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, PublishEvent):
                self.event_publisher.publish(String(data=output.event))
            elif isinstance(output, PublishReward):
                self.reward_publisher.publish(Float64(data=output.reward))
            elif isinstance(output, Call):
                client = self.clients_by_service[output.service]
                self._futures[output.service] = client.call_async(Trigger.Request())
            elif isinstance(output, Cancel):
                future = self._futures.pop(output.service, None)
                if future is not None:
                    self.clients_by_service[output.service].remove_pending_request(future)
            elif isinstance(output, EpisodeCounted):
                self._publish_diagnostics()
            elif isinstance(output, Log):
                write_log(self, output)

    def _publish_diagnostics(self) -> None:
        sequence = self.sequence
        episodes, recent = sequence.episodes, sequence.recent
        rate = sequence.successes / episodes if episodes else 0.0
        recent_rate = sum(recent) / len(recent) if recent else 0.0
        values = {
            "episodes": episodes,
            "successes": sequence.successes,
            "success_rate": f"{rate:.3f}",
            f"success_rate_last_{recent.maxlen}": f"{recent_rate:.3f}",
            "decisions_this_episode": sequence.decisions,
        }
        status = diagnostic_status(self, "episodes", sequence.state.value, values)
        publish_diagnostics(self, self.diagnostics_publisher, status)


def main(args: list[str] | None = None) -> None:
    run_node(RewardResetNode, "reward_reset_node", args)


if __name__ == "__main__":
    main()
