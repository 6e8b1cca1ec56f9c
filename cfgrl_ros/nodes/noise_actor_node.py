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
- ``train_schedule: learner_thread``: continuously in a thread of its own; the actor answers
  in between updates (the agent is locked per update, so weights are always in sync).

After every episode it checkpoints the agent with its replay buffer (atomically) under
``run_dir`` (by default one folder per policy file, see cfgrl_ros.settings.NoiseActorSettings)
and the stamp of the last stored record; a restarted node loads them and receives the records
it missed from the policy node's durable record history, dropping those already stored. It
resumes only a run of the same policy file (by its sha256) and agent settings, and otherwise
refuses to start, naming each difference. Parameters ``train`` (false: store transitions, no
updates) and ``deterministic`` (true: the actor's mean, for evaluation) can be changed while it
runs. Episodes, success rate, transitions and updates are published on ``/diagnostics``.
"""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
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

RUN_STATE = "run_state.json"  # the last stored record's stamp, next to the agent checkpoint
SUCCESS_REWARD = 1.0
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


def read_run_state(run_dir: Path) -> dict[str, Any]:
    """The run state saved with the newest agent checkpoint ({} for a fresh run)."""
    path = run_dir / RUN_STATE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_run_state(run_dir: Path, state: dict[str, Any]) -> None:
    """Write the run state atomically (temporary file, fsync, rename)."""
    temporary = run_dir / f".{RUN_STATE}.{os.getpid()}.tmp"
    with open(temporary, "w") as file:
        json.dump(state, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, run_dir / RUN_STATE)


class NoiseActorNode(Node):
    def __init__(self) -> None:
        super().__init__("noise_actor_node")
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
        run_state = read_run_state(self.run_dir) if self.agent.transitions else {}
        self.last_stamp = int(run_state.get("last_record_stamp", 0))
        # The agent checkpoint is written before the run state; if the process died between
        # the two, the agent already holds one more episode: skip its records when replayed.
        self._skip_episode = self.agent.transitions > int(run_state.get("transitions", 0))
        self.successes = int(run_state.get("successes", 0))
        self.recent: deque[bool] = deque(
            run_state.get("recent", []), maxlen=settings.statistics_window
        )
        self.answers = 0
        self.fallbacks = 0
        self.rejected_records = 0
        self.missing_records = 0
        self.last_metrics: dict[str, float] = {}
        self._pending: DecisionRecord | None = None  # a decision waiting for its successor
        self._budget = 0  # updates owed (utd per stored decision) and not yet done
        self._budget_lock = threading.Lock()

        self.noise_publisher = self.create_publisher(JointTrajectory, NOISE_TOPIC, exchange_qos())
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(JointState, NOISE_REQUEST_TOPIC, self._on_request, exchange_qos())
        self.create_subscription(
            JointState, DECISION_TOPIC, self._on_record, record_qos(settings.record_history)
        )
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(1.0, self._publish_diagnostics)
        self._stop = threading.Event()
        self._learner = None
        if self.schedule == "learner_thread":
            self._learner = threading.Thread(target=self._learn_continuously, daemon=True)
            self._learner.start()
        counters = self.agent.counters()
        self.get_logger().info(
            f"{self.agent.config.algo} on {self.policy.device}, {self.schedule}; "
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
    def _on_request(self, message: JointState) -> None:
        try:
            guidance_weight, features = noise_request_features(message, self.policy.feature_dim)
        except ValueError as error:
            self.get_logger().error(str(error), throttle_duration_sec=10.0)
            return
        if guidance_weight != self.agent.guidance_weight:
            self.get_logger().info(
                f"guidance weight {self.agent.guidance_weight} -> {guidance_weight}"
            )
            self.agent.set_guidance_weight(guidance_weight)
        try:
            noise = self.agent.noise(features, deterministic=self.deterministic)
        except ValueError as error:  # e.g. NaN features: no answer, the policy falls back
            self.get_logger().error(
                f"no noise for this request: {error}", throttle_duration_sec=10.0
            )
            return
        self.noise_publisher.publish(
            noise_message(stamp_to_ns(message.header.stamp), noise, self.control_period)
        )
        self.answers += 1

    # ------------------------------------------------------------------------------ records
    def _on_record(self, message: JointState) -> None:
        horizon = self.policy.noise_shape[0]
        try:
            record = parse_record(message, self.policy.feature_dim, horizon)
        except ValueError as error:
            self.rejected_records += 1
            self.get_logger().error(str(error), throttle_duration_sec=10.0)
            return
        if record.stamp_ns <= self.last_stamp:
            return  # stored before a restart; the durable history delivered it again
        self.last_stamp = record.stamp_ns
        if self._skip_episode:
            self._skip_episode = not isinstance(record, EpisodeEnd)
            return
        if isinstance(record, DecisionRecord):
            self._on_decision(record)
        else:
            self._on_episode_end(record)

    def _on_decision(self, record: DecisionRecord) -> None:
        if record.exec_horizon != self.agent.config.exec_horizon:
            self.rejected_records += 1
            self.get_logger().error(
                f"the policy node executes {record.exec_horizon} actions per decision but the "
                f"agent was set up for {self.agent.config.exec_horizon}: set the same "
                "exec_horizon for both nodes",
                throttle_duration_sec=10.0,
            )
            return
        if not record.noise_from_actor and not record.operator_ticks:
            self.fallbacks += 1
        expected = 0 if self._pending is None else self._pending.decision_index + 1
        if record.decision_index not in (0, expected):
            self.missing_records += record.decision_index - expected
            self.get_logger().error(
                f"decision records {expected}..{record.decision_index - 1} of this episode "
                "never arrived (the policy node's record_history was too short for the "
                "time this node was away); they are lost"
            )
        if self._pending is not None:
            self._store(self._pending, record.features, reward=0.0, success=False, end=False)
        self._pending = record

    def _on_episode_end(self, end: EpisodeEnd) -> None:
        if self._pending is not None:
            reward = SUCCESS_REWARD if end.success else 0.0
            self._store(self._pending, end.features, reward, success=end.success, end=True)
            self._pending = None
        else:
            self.agent.end_episode()
        self.successes += int(end.success)
        self.recent.append(end.success)
        counters = self.agent.counters()
        if self.schedule == "between_episodes":
            self._train(self._take_budget())
        self._save()
        self.get_logger().info(
            f"episode {counters['episodes']}: {'success' if end.success else 'failure'} after "
            f"{end.decisions} decisions; success rate {self.successes}/{counters['episodes']}; "
            f"{counters['transitions']} transitions, {self.agent.updates} updates"
        )
        self._publish_diagnostics()

    def _store(
        self,
        record: DecisionRecord,
        next_features: np.ndarray,
        reward: float,
        success: bool,
        end: bool,
    ) -> None:
        # Success terminates; any other end (timeout, operator) truncates: bootstrap from it.
        try:
            stored = self.agent.add_transition(
                record.features,
                record.noise,
                record.chunk,
                reward,
                next_features,
                terminated=success,
                truncated=end and not success,
                operator_ticks=record.operator_ticks,
            )
        except ValueError as error:  # NaN in a record: the decision cannot be learned from
            self.rejected_records += 1
            self.get_logger().error(f"decision not stored: {error}", throttle_duration_sec=10.0)
            return
        if stored and self.agent.learning_started:
            with self._budget_lock:
                self._budget += self.agent.config.utd

    # ----------------------------------------------------------------------------- learning
    def _take_budget(self, at_most: int | None = None) -> int:
        with self._budget_lock:
            updates = self._budget if at_most is None else min(self._budget, at_most)
            self._budget -= updates
        return updates

    def _train(self, updates: int) -> None:
        if updates and self.train_enabled:
            self.last_metrics = self.agent.train(updates)

    def _learn_continuously(self) -> None:
        while not self._stop.is_set():
            updates = self._take_budget(LEARNER_BATCH)
            if updates:
                self._train(updates)  # owed updates are dropped while `train` is false
            else:
                self._stop.wait(0.05)

    def _save(self) -> None:
        self.agent.save(self.run_dir / "agent", {"run": self.run_settings})
        write_run_state(
            self.run_dir,
            {
                "last_record_stamp": self.last_stamp,
                "transitions": self.agent.transitions,
                "successes": self.successes,
                "recent": list(self.recent),
            },
        )

    # -------------------------------------------------------------------------- diagnostics
    def _publish_diagnostics(self) -> None:
        counters = self.agent.counters()
        episodes = counters["episodes"]
        values = {
            "episodes": episodes,
            "successes": self.successes,
            "success_rate": f"{self.successes / episodes:.3f}" if episodes else "0.000",
            f"success_rate_last_{self.recent.maxlen}": (
                f"{sum(self.recent) / len(self.recent):.3f}" if self.recent else "0.000"
            ),
            "transitions": counters["transitions"],
            "operator_transitions": counters["operator_transitions"],
            "replay_size": self.agent.replay_size,
            "updates": counters["updates"],
            "updates_owed": self._budget,
            "learning_started": self.agent.learning_started,
            "train": self.train_enabled,
            "deterministic": self.deterministic,
            "guidance_weight": self.agent.guidance_weight,
            "noise_answers": self.answers,
            "fallback_decisions": self.fallbacks,
            "rejected_records": self.rejected_records,
            "missing_records": self.missing_records,
            **{f"train/{key}": f"{value:.4g}" for key, value in self.last_metrics.items()},
        }
        level = DiagnosticStatus.WARN if self.missing_records else DiagnosticStatus.OK
        message = (
            f"{episodes} episodes, {counters['transitions']} transitions, "
            f"{counters['updates']} updates"
        )
        status = diagnostic_status(self, "learner", message, values, level)
        publish_diagnostics(self, self.diagnostics_publisher, status)

    def destroy_node(self) -> None:
        self._stop.set()
        if self._learner is not None:
            self._learner.join(timeout=10.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node(NoiseActorNode, "noise_actor_node", args)


if __name__ == "__main__":
    main()
