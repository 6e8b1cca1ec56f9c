"""The noise actor: a DSRL agent that picks the frozen policy's start noise and learns online.

    ros2 run cfgrl_ros noise_actor_node --ros-args -p checkpoint:=policy.pt -p run_dir:=runs/x

Answers each ``dsrl/noise_request`` of the policy node with noise from the SAC actor
(``agent.algo``: dsrl_na, the default, or dsrl_sac) on ``dsrl/noise``; turns the
``dsrl/decision`` records into transitions (cfgrl_ros.nodes.decision_messages explains how)
and trains with ``agent.utd`` gradient updates per decision once ``agent.prefill_decisions``
decisions are stored:

- ``train_schedule: between_episodes`` (default): after each episode, in the node's thread,
  so the first decision of the next episode waits for the training (the arm is at rest then);
- ``train_schedule: learner_thread``: continuously in a thread of its own; the actor answers
  in between updates (the agent is locked per update, so weights are always in sync).

After every episode it checkpoints the agent with its replay buffer (atomically) under
``run_dir`` and the stamp of the last stored record; a restarted node loads them and receives
the records it missed from the policy node's durable record history, dropping those already
stored. Parameters ``train`` (false: store transitions, no updates) and ``deterministic``
(true: the actor's mean, for evaluation) can be changed while it runs. Episodes, success
rate, transitions and updates are published on ``/diagnostics``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from cfgrl_ros.dsrl import DsrlConfig, NoiseAgent, make_noise_agent
from cfgrl_ros.dsrl.agent import LATEST
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
    declare,
    declare_statistics_window,
    require_positive,
    run_node,
)
from cfgrl_ros.policy import FlowPolicy

SCHEDULES = ("between_episodes", "learner_thread")
RUN_STATE = "run_state.json"  # the last stored record's stamp, next to the agent checkpoint
SUCCESS_REWARD = 1.0
LEARNER_BATCH = 8  # updates per learner-thread step: it re-checks its budget this often

# DsrlConfig field -> description; declared as parameters agent.<field>.
AGENT_PARAMETERS: dict[str, str] = {
    "algo": "dsrl_na (noise-aliased, the default) or dsrl_sac",
    "noise_mode": "full (one noise vector per chunk step) or shared (one, repeated)",
    "magnitude": "noise bound: w0 = magnitude * tanh(u)",
    "gamma": "discount per decision",
    "batch_size": "transitions per gradient update",
    "learning_rate": "Adam learning rate of actor and critics",
    "tau": "target network soft-update rate",
    "utd": "gradient updates per stored decision (update-to-data ratio)",
    "prefill_decisions": "base-policy decisions (w0 ~ N(0, I)) stored before learning starts",
    "hidden_sizes": "hidden layer widths of actor and critics",
    "layer_norm": "LayerNorm in actor and critics",
    "n_critics": "critics in the ensemble (min over them is the target)",
    "target_entropy": "SAC's target entropy",
    "initial_entropy_coef": "SAC's entropy coefficient alpha at the start",
    "noise_prior_weight": "DSRL-NA: weight of the prior log N(w0; 0, I) in the actor's "
    "objective; keeps the noise near the frozen policy's most likely noise (0: off)",
    "buffer_size": "decisions kept in the replay buffer",
    "redistill_updates": "DSRL-NA: Q^W-only updates after a guidance weight change",
    "decode_steps": "DSRL-NA: Euler steps when decoding (0: the policy's)",
    "seed": "random seed of the agent",
}


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
        checkpoint = declare(self, "checkpoint", "", "FlowPolicy checkpoint (the policy node's)")
        device = declare(self, "device", "auto", "torch device: auto, cpu or cuda")
        if not checkpoint:
            raise ValueError("parameter checkpoint is empty: pass the FlowPolicy checkpoint path")
        self.run_dir = Path(
            declare(self, "run_dir", "runs/dsrl_franka", "where checkpoints are written")
        ).expanduser()
        guidance_weight = declare(
            self, "guidance_weight", 1.0, "guidance weight until the first noise request says"
        )
        exec_horizon = declare(
            self,
            "exec_horizon",
            4,
            "actions executed per decision (the policy node's)",
            integer_range=(1, 1000),
        )
        control_rate = declare(self, "control_rate", 20.0, "control ticks per second")
        self.schedule = declare(
            self, "train_schedule", "between_episodes", f"when to train: one of {SCHEDULES}"
        )
        history = declare(
            self,
            "record_history",
            2000,
            "decision records kept for a restarted noise actor",
            integer_range=(1, 1_000_000),
        )
        window = declare_statistics_window(self)
        self.train_enabled = declare(
            self, "train", True, "false: store transitions but make no updates", read_only=False
        )
        self.deterministic = declare(
            self,
            "deterministic",
            False,
            "true: the actor's mean noise (evaluation)",
            read_only=False,
        )
        require_positive({"control_rate": control_rate})
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"parameter train_schedule is {self.schedule!r}; use one of {SCHEDULES}"
            )
        self.control_period = 1.0 / control_rate

        self.policy = FlowPolicy.load(checkpoint, device)
        self.agent = self._load_or_create_agent(guidance_weight, exec_horizon, device)
        run_state = read_run_state(self.run_dir) if self.agent.transitions else {}
        self.last_stamp = int(run_state.get("last_record_stamp", 0))
        # The agent checkpoint is written before the run state; if the process died between
        # the two, the agent already holds one more episode: skip its records when replayed.
        self._skip_episode = self.agent.transitions > int(run_state.get("transitions", 0))
        self.successes = int(run_state.get("successes", 0))
        self.recent: deque[bool] = deque(run_state.get("recent", []), maxlen=window)
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
        self.create_subscription(JointState, DECISION_TOPIC, self._on_record, record_qos(history))
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
            f"{counters['updates']} updates so far (run_dir {self.run_dir})"
        )

    # -------------------------------------------------------------------------------- setup
    def _agent_config(self, exec_horizon: int, device: str) -> DsrlConfig:
        defaults = DsrlConfig()
        values: dict[str, Any] = {}
        for name, description in AGENT_PARAMETERS.items():
            default = getattr(defaults, name)
            if name == "hidden_sizes":
                default = list(default)
            elif name == "decode_steps":
                default = 0
            value = declare(self, f"agent.{name}", default, description)
            values[name] = value
        values["hidden_sizes"] = tuple(values["hidden_sizes"])
        values["decode_steps"] = values["decode_steps"] or None
        return DsrlConfig(**values, exec_horizon=exec_horizon, device=device)

    def _load_or_create_agent(
        self, guidance_weight: float, exec_horizon: int, device: str
    ) -> NoiseAgent:
        config = self._agent_config(exec_horizon, device)
        agent_dir = self.run_dir / "agent"
        if (agent_dir / LATEST).is_file():
            agent = NoiseAgent.load(agent_dir, self.policy, device)
            saved = dataclasses.replace(agent.config, device=device)
            if saved != config:
                changed = sorted(
                    name
                    for name in AGENT_PARAMETERS
                    if getattr(saved, name) != getattr(config, name)
                )
                self.get_logger().warning(
                    f"resuming the agent in {agent_dir}: its saved settings win over the "
                    f"parameters {changed or ['exec_horizon']}"
                )
            self.get_logger().info(f"resumed from {agent_dir}")
            return agent
        return make_noise_agent(self.policy, guidance_weight, config)

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
        if not record.noise_from_actor:
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
            self.agent.add_transition(
                record.features,
                record.noise,
                record.chunk,
                reward,
                next_features,
                terminated=success,
                truncated=end and not success,
            )
        except ValueError as error:  # NaN in a record: the decision cannot be learned from
            self.rejected_records += 1
            self.get_logger().error(f"decision not stored: {error}", throttle_duration_sec=10.0)
            return
        if self.agent.learning_started:
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
        self.agent.save(self.run_dir / "agent")
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
        status = DiagnosticStatus(
            level=level,
            name=f"{self.get_name()}: learner",
            message=f"{episodes} episodes, {counters['transitions']} transitions, "
            f"{counters['updates']} updates",
            values=[KeyValue(key=key, value=str(value)) for key, value in values.items()],
        )
        message = DiagnosticArray(status=[status])
        message.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_publisher.publish(message)

    def destroy_node(self) -> None:
        self._stop.set()
        if self._learner is not None:
            self._learner.join(timeout=10.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node(NoiseActorNode, "noise_actor_node", args)


if __name__ == "__main__":
    main()
