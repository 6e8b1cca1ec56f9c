"""The noise actor: a DSRL agent that picks the frozen policy's start noise and learns online.

    ros2 run cfgrl_ros noise_actor_node --ros-args -p checkpoint:=policy.pt -p run_dir:=runs/x

Answers each ``dsrl/noise_request`` of the policy node with noise from the SAC actor
(``agent.algo``: dsrl_na, the default, or dsrl_sac) on ``dsrl/noise``; turns the
``dsrl/decision`` records into transitions (cfgrl_ros.nodes.decision_messages explains how)
and trains with ``agent.utd`` gradient updates per decision once ``agent.prefill_decisions``
decisions are stored (decisions the operator drove, marked in the records, are stored by
DSRL-NA as the chunks executed and left out by DSRL-SAC: NoiseAgent.add_transition says why):

- ``train_schedule: between_episodes`` (default): after each episode, in the node's thread,
  so the first decision of the next episode waits for the training (the arm is at rest then);
- ``train_schedule: learner_thread``: continuously in a thread of its own, which also stores
  the records and writes the checkpoints: the node's thread only answers requests (with the
  actor of the last finished round of `LEARNER_BATCH` updates: NoiseAgent.noise) and queues
  records, so no request waits for an update, a stored record or a checkpoint.

A fleet: with ``arms: [arm0, arm1, ...]`` one actor serves several arms, each on the topics
of its namespace (``arm0/dsrl/noise_request``, ...), and learns from all their records in one
replay buffer whose rows are tagged by arm (cfgrl_ros.nodes.arm_records follows each arm's
stream). A fleet needs ``learner_thread``: no arm rests while another's episode ends, so no
request may wait for training or a checkpoint. An arm that goes silent costs the others
nothing.

After every episode it checkpoints the agent with its replay buffer and each arm's state (the
stamp of its last stored record, its success counts) atomically under ``run_dir`` (by default
one folder per policy file, see cfgrl_ros.settings.NoiseActorSettings); a restarted node loads
them and receives the records it missed from each policy node's durable record history,
dropping those already stored. It resumes only a run of the same policy file (by its sha256)
and agent settings, and otherwise refuses to start, naming each difference. Parameters
``train`` (false: store transitions, no updates) and ``deterministic`` (true: the actor's mean,
for evaluation) can be changed while it runs. Episodes, success rates (overall and per arm),
transitions and updates are published on ``/diagnostics``.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.publisher import Publisher
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from cfgrl_ros.dsrl import DsrlConfig, NoiseAgent, make_noise_agent
from cfgrl_ros.dsrl.agent import (
    LATEST,
    POLICY_HASH,
    comparable_settings,
    file_sha256,
    setting_differences,
)
from cfgrl_ros.nodes.arm_records import ArmRecords, success_figures
from cfgrl_ros.nodes.decision_messages import (
    DECISION_TOPIC,
    NOISE_REQUEST_TOPIC,
    NOISE_TOPIC,
    DecisionRecord,
    EpisodeEnd,
    exchange_qos,
    noise_message,
    noise_request_features,
    parse_record,
    record_qos,
    stamp_to_ns,
)
from cfgrl_ros.nodes.node_support import (
    declare_setting,
    declare_settings,
    diagnostic_status,
    publish_diagnostics,
    run_node,
)
from cfgrl_ros.policy import FlowPolicy
from cfgrl_ros.settings import NoiseActorSettings, default_run_dir, settings_of

LEGACY_RUN_STATE = "run_state.json"  # where runs saved before fleets kept the arm's state
LEARNER_BATCH = 8  # updates per learner-thread step: it re-checks its budget this often
# What the user sets each compared setting of a run with.
AGENT_EXCLUDED = ("exec_horizon",)  # declared without the agent. prefix: the policy node's too
PARAMETER_NAMES = {
    **{info.name: f"agent.{info.name}" for info in settings_of(DsrlConfig)},
    **{name: name for name in AGENT_EXCLUDED},
    POLICY_HASH: "checkpoint",
}


def resume_differences(
    saved_run: Mapping[str, Any], saved: DsrlConfig, run: Mapping[str, Any], config: DsrlConfig
) -> list[str]:
    """What differs between a saved run (its recorded settings and agent config) and the one
    the parameters ask for, by parameter name: 'agent.utd: run has 2, parameters give 3'."""
    return setting_differences(
        saved_run, run, PARAMETER_NAMES, "parameters give"
    ) + setting_differences(
        comparable_settings(saved), comparable_settings(config), PARAMETER_NAMES, "parameters give"
    )


def saved_arm_states(agent: NoiseAgent, run_dir: Path) -> tuple[dict[str, Any], set[str]]:
    """Each arm's state as the agent's checkpoint keeps it ({} for a fresh run), and the arms
    whose next episode is already stored. Only a run saved before fleets has one: it kept its
    single arm's state in run_state.json, written after the agent, so the agent may hold one
    episode more than that state says."""
    if "arms" in agent.metadata:
        return dict(agent.metadata["arms"]), set()
    path = run_dir / LEGACY_RUN_STATE
    if not agent.transitions or not path.is_file():
        return {}, set()
    legacy = json.loads(path.read_text())
    state = {**legacy, "episodes": agent.episodes, "transitions": agent.transitions}
    stored_ahead = agent.transitions > int(legacy.get("transitions", 0))
    return {"": state}, {""} if stored_ahead else set()


class NoiseActorNode(Node):
    def __init__(self, **node_options: Any) -> None:
        super().__init__("noise_actor_node", **node_options)
        settings = declare_settings(self, NoiseActorSettings)
        if not settings.checkpoint:
            raise ValueError("parameter checkpoint is empty: pass the FlowPolicy checkpoint path")
        exec_horizon = declare_setting(self, DsrlConfig, "exec_horizon")
        config = declare_settings(
            self,
            DsrlConfig,
            "agent.",
            exclude=AGENT_EXCLUDED,
            exec_horizon=exec_horizon,
            device=settings.device,
        )
        self.schedule = settings.train_schedule
        if len(settings.arms) > 1 and self.schedule != "learner_thread":
            raise ValueError(
                f"parameter train_schedule {self.schedule!r} trains in the node's thread, where "
                f"the requests of the other arms of {list(settings.arms)} would wait: set "
                "train_schedule learner_thread for a fleet (dsrl_fleet does)"
            )
        self.train_enabled = settings.train
        self.deterministic = settings.deterministic
        self.control_period = 1.0 / settings.control_rate

        self.policy = FlowPolicy.load(settings.checkpoint, settings.device)
        policy_sha256 = file_sha256(settings.checkpoint)
        self.run_dir = (
            Path(settings.run_dir).expanduser()
            if settings.run_dir
            else default_run_dir(settings.checkpoint, policy_sha256)
        )
        self.run_settings = {POLICY_HASH: policy_sha256}
        self.agent = self._load_or_create_agent(config, settings.guidance_weight)
        saved, stored_ahead = saved_arm_states(self.agent, self.run_dir)
        self.arms = {
            name: ArmRecords(
                name, self.agent, settings.statistics_window, saved.get(name), name in stored_ahead
            )
            for name in settings.arms
        }
        self._absent_arms = {name: state for name, state in saved.items() if name not in self.arms}
        self.last_metrics: dict[str, float] = {}
        # Updates owed (utd per stored decision) and not yet done. Records are stored, and
        # updates owed and done, in one thread: the node's (between_episodes) or the learner's.
        self._budget = 0
        self._inbox: deque[tuple[ArmRecords, DecisionRecord | EpisodeEnd]] = deque()
        self._mail = threading.Event()  # learner_thread: records are waiting in the inbox

        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        for name, arm in self.arms.items():
            prefix = f"{name}/" if name else ""
            publisher = self.create_publisher(JointTrajectory, prefix + NOISE_TOPIC, exchange_qos())
            self.create_subscription(
                JointState,
                prefix + NOISE_REQUEST_TOPIC,
                partial(self._on_request, arm, publisher),
                exchange_qos(),
            )
            self.create_subscription(
                JointState,
                prefix + DECISION_TOPIC,
                partial(self._on_record, arm),
                record_qos(settings.record_history),
            )
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(1.0, self._publish_diagnostics)
        self._stop = threading.Event()
        self._learner = None
        if self.schedule == "learner_thread":
            self._learner = threading.Thread(target=self._learn_continuously, daemon=True)
            self._learner.start()
        counters = self.agent.counters()
        served = f"arms {sorted(self.arms)}, " if len(self.arms) > 1 else ""
        self.get_logger().info(
            f"{self.agent.config.algo} on {self.policy.device}, {self.schedule}; {served}"
            f"{counters['episodes']} episodes, {counters['transitions']} transitions, "
            f"{counters['updates']} updates so far; run folder {self.run_dir.resolve()}"
        )

    # -------------------------------------------------------------------------------- setup
    def _load_or_create_agent(self, config: DsrlConfig, guidance_weight: float) -> NoiseAgent:
        """The run in run_dir if it was made with this policy and these settings, else a
        fresh agent when run_dir holds none; raises ValueError naming the differences."""
        agent_dir = self.run_dir / "agent"
        if not (agent_dir / LATEST).is_file():
            return make_noise_agent(self.policy, guidance_weight, config)
        way_out = (
            "Start a fresh run in another folder (parameter run_dir, launch argument "
            f"run_dir:=) or delete {self.run_dir}; to continue that run, start with the policy "
            "file and agent settings it was made with"
        )
        try:
            agent = NoiseAgent.load(agent_dir, self.policy, config.device)
        except (FileNotFoundError, ValueError) as error:
            raise ValueError(
                f"cannot resume the run in {self.run_dir}: {error}. {way_out}"
            ) from None
        saved_run = agent.metadata.get("run")
        if saved_run is None:  # made before runs recorded their policy: compare the agent only
            self.get_logger().warning(
                f"the run in {self.run_dir} does not record its policy file; resuming it with "
                f"this one ({self.run_settings[POLICY_HASH][:8]}) on its agent settings alone"
            )
            saved_run = self.run_settings
        differences = resume_differences(saved_run, agent.config, self.run_settings, config)
        if differences:
            raise ValueError(
                f"{self.run_dir} holds a run made with other settings ("
                + "; ".join(differences)
                + f"). {way_out}"
            )
        self.get_logger().info(f"resumed from {agent_dir}")
        return agent

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        for parameter in parameters:
            if parameter.name == "train":
                self.train_enabled = bool(parameter.value)
            elif parameter.name == "deterministic":
                self.deterministic = bool(parameter.value)
        return SetParametersResult(successful=True)

    # -------------------------------------------------------------------------------- noise
    def _on_request(self, arm: ArmRecords, publisher: Publisher, message: JointState) -> None:
        try:
            guidance_weight, features = noise_request_features(message, self.policy.feature_dim)
        except ValueError as error:
            self.get_logger().error(f"{arm.label}{error}", throttle_duration_sec=10.0)
            return
        if guidance_weight != self.agent.guidance_weight:
            # One agent decodes at one weight: arms of a fleet that ask for different weights
            # make it re-distill at every switch.
            self.get_logger().info(
                f"{arm.label}guidance weight {self.agent.guidance_weight} -> {guidance_weight}"
            )
            self.agent.set_guidance_weight(guidance_weight)
        try:
            noise = self.agent.noise(features, deterministic=self.deterministic)
        except ValueError as error:  # e.g. NaN features: no answer, the policy falls back
            self.get_logger().error(
                f"{arm.label}no noise for this request: {error}", throttle_duration_sec=10.0
            )
            return
        publisher.publish(
            noise_message(stamp_to_ns(message.header.stamp), noise, self.control_period)
        )
        arm.answers += 1

    # ------------------------------------------------------------------------------ records
    def _on_record(self, arm: ArmRecords, message: JointState) -> None:
        horizon = self.policy.noise_shape[0]
        try:
            record = parse_record(message, self.policy.feature_dim, horizon)
        except ValueError as error:
            self.get_logger().error(arm.reject(str(error)), throttle_duration_sec=10.0)
            return
        if self.schedule == "learner_thread":
            self._inbox.append((arm, record))
            self._mail.set()
        else:
            self._store(arm, record)

    def _store(self, arm: ArmRecords, record: DecisionRecord | EpisodeEnd) -> None:
        """One record into the agent; after an episode's end, train (between_episodes) and
        checkpoint."""
        received = arm.receive(record)
        for error in received.errors:
            self.get_logger().error(error, throttle_duration_sec=10.0)
        if received.stored and self.agent.learning_started:
            self._budget += received.stored * self.agent.config.utd
        if received.ended is None:
            return
        if self.schedule == "between_episodes":
            self._train(self._take_budget())
        self._save()
        end = received.ended
        counters = self.agent.counters()
        self.get_logger().info(
            f"{arm.label}episode {arm.episodes}: {'success' if end.success else 'failure'} "
            f"after {end.decisions} decisions; success rate {arm.successes}/{arm.episodes}; "
            f"{counters['transitions']} transitions, {self.agent.updates} updates"
        )
        self._publish_diagnostics()

    # ----------------------------------------------------------------------------- learning
    def _take_budget(self, at_most: int | None = None) -> int:
        updates = self._budget if at_most is None else min(self._budget, at_most)
        self._budget -= updates
        return updates

    def _train(self, updates: int) -> None:
        if updates and self.train_enabled:
            self.last_metrics = self.agent.train(updates)

    def _learn_continuously(self) -> None:
        while not self._stop.is_set():
            self._store_inbox()
            updates = self._take_budget(LEARNER_BATCH)
            if updates:
                self._train(updates)  # owed updates are dropped while `train` is false
            else:
                self._mail.wait(0.05)

    def _store_inbox(self) -> None:
        self._mail.clear()
        while self._inbox:
            self._store(*self._inbox.popleft())

    def _save(self) -> None:
        arms = {name: arm.state() for name, arm in self.arms.items()}
        metadata = {"run": self.run_settings, "arms": {**self._absent_arms, **arms}}
        self.agent.save(self.run_dir / "agent", metadata)

    # -------------------------------------------------------------------------- diagnostics
    def _publish_diagnostics(self) -> None:
        counters = self.agent.counters()
        episodes = counters["episodes"]
        arms = list(self.arms.values())
        successes = sum(arm.successes for arm in arms) + sum(
            int(state.get("successes", 0)) for state in self._absent_arms.values()
        )
        recent = [success for arm in arms for success in arm.recent]  # each arm's last ones
        values = {
            **success_figures(successes, episodes, recent, arms[0].recent.maxlen),
            "transitions": counters["transitions"],
            "operator_transitions": counters["operator_transitions"],
            "replay_size": self.agent.replay_size,
            "updates": counters["updates"],
            "updates_owed": self._budget,
            "learning_started": self.agent.learning_started,
            "train": self.train_enabled,
            "deterministic": self.deterministic,
            "guidance_weight": self.agent.guidance_weight,
            **{key: sum(arm.counts()[key] for arm in arms) for key in arms[0].counts()},
            **{f"train/{key}": f"{value:.4g}" for key, value in self.last_metrics.items()},
        }
        missing = values["missing_records"]
        level = DiagnosticStatus.WARN if missing else DiagnosticStatus.OK
        message = (
            f"{episodes} episodes, {counters['transitions']} transitions, "
            f"{counters['updates']} updates"
        )
        statuses = [diagnostic_status(self, "learner", message, values, level)]
        if len(arms) > 1:  # the fleet: each arm's own figures, with its rows in the replay
            rows = self.agent.replay_sources()
            for arm in arms:
                figures = {**arm.statistics(), "replay_rows": rows.get(arm.name, 0)}
                level = DiagnosticStatus.WARN if arm.missing else DiagnosticStatus.OK
                text = f"{arm.episodes} episodes, {arm.successes} successes"
                statuses.append(diagnostic_status(self, f"arm {arm.name}", text, figures, level))
        publish_diagnostics(self, self.diagnostics_publisher, *statuses)

    def destroy_node(self) -> None:
        self._stop.set()
        if self._learner is not None:
            self._learner.join(timeout=10.0)
            if not self._learner.is_alive():
                self._store_inbox()  # what arrived since, checkpointed at its episode's end
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node(NoiseActorNode, "noise_actor_node", args)


if __name__ == "__main__":
    main()
