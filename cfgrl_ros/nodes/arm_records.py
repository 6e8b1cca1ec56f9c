"""What the noise actor knows of one arm: its decision records turned into transitions.

The noise actor serves one arm or a fleet (``arms``: namespaces); each arm's records arrive on
its own ``<arm>/dsrl/decision`` and are stamped by its own clock, so everything that follows an
arm's stream lives here, once per arm: the last stamp taken (a restarted actor drops what the
durable record history delivers again), the decision waiting for its successor, the missing
and rejected records, and the arm's success statistics. A checkpoint keeps all of it
(`state`), the waiting decision included: in a fleet some arm is always mid-episode when
another's episode end is checkpointed. No rclpy: the node feeds it parsed records
(cfgrl_ros.nodes.decision_messages) and logs what it returns.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cfgrl_ros.dsrl import NoiseAgent
from cfgrl_ros.nodes.decision_messages import DecisionRecord, EpisodeEnd

SUCCESS_REWARD = 1.0


@dataclass
class Received:
    """What one record did: transitions stored, the episode it ended, problems to log."""

    stored: int = 0
    ended: EpisodeEnd | None = None
    errors: list[str] = field(default_factory=list)


class ArmRecords:
    """One arm's record stream into the shared agent, with the arm's counters.

    `name`: the arm's namespace ("" for the single arm beside the actor), the source its
    transitions carry in the replay buffer. `state()` is what a checkpoint keeps of it, and
    `ArmRecords(..., state=...)` resumes from that.
    """

    def __init__(
        self,
        name: str,
        agent: NoiseAgent,
        statistics_window: int,
        state: Mapping[str, Any] | None = None,
        skip_episode: bool = False,
    ) -> None:
        state = state or {}
        self.name = name
        self.agent = agent
        self.last_stamp = int(state.get("last_record_stamp", 0))
        self.episodes = int(state.get("episodes", 0))
        self.successes = int(state.get("successes", 0))
        self.transitions = int(state.get("transitions", 0))
        self.recent: deque[bool] = deque(state.get("recent", []), maxlen=statistics_window)
        # A run saved by an older actor may hold one episode more than its run state says.
        self.skip_episode = skip_episode
        self.answers = 0
        self.fallbacks = 0
        self.rejected = 0
        self.missing = 0
        # A decision waiting for its successor (its record's stamp is last_stamp).
        pending = state.get("pending")
        self._pending = None if pending is None else _record_from_state(pending)

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of this arm (JSON-serialisable)."""
        return {
            "last_record_stamp": self.last_stamp,
            "episodes": self.episodes,
            "successes": self.successes,
            "transitions": self.transitions,
            "recent": list(self.recent),
            "pending": None if self._pending is None else _record_state(self._pending),
        }

    @property
    def label(self) -> str:
        """How log lines name the arm ("" for the single arm: no name)."""
        return f"{self.name}: " if self.name else ""

    def reject(self, error: str) -> str:
        """Count a record that could not be parsed; the line to log."""
        self.rejected += 1
        return f"{self.label}{error}"

    def receive(self, record: DecisionRecord | EpisodeEnd) -> Received:
        """Take one parsed record of this arm."""
        if record.stamp_ns <= self.last_stamp:
            return Received()  # stored before a restart; the durable history delivered it again
        self.last_stamp = record.stamp_ns
        if self.skip_episode:
            self.skip_episode = not isinstance(record, EpisodeEnd)
            return Received()
        if isinstance(record, DecisionRecord):
            return self._on_decision(record)
        return self._on_episode_end(record)

    def _on_decision(self, record: DecisionRecord) -> Received:
        received = Received()
        if record.exec_horizon != self.agent.config.exec_horizon:
            self.rejected += 1
            received.errors.append(
                f"{self.label}the policy node executes {record.exec_horizon} actions per "
                f"decision but the agent was set up for {self.agent.config.exec_horizon}: set "
                "the same exec_horizon for both nodes"
            )
            return received
        if not record.noise_from_actor and not record.operator_ticks:
            self.fallbacks += 1
        expected = 0 if self._pending is None else self._pending.decision_index + 1
        if record.decision_index not in (0, expected):
            self.missing += record.decision_index - expected
            received.errors.append(
                f"{self.label}decision records {expected}..{record.decision_index - 1} of this "
                "episode never arrived (the policy node's record_history was too short for the "
                "time this node was away); they are lost"
            )
        if self._pending is not None:
            self._store(self._pending, record.features, 0.0, False, False, received)
        self._pending = record
        return received

    def _on_episode_end(self, end: EpisodeEnd) -> Received:
        received = Received(ended=end)
        if self._pending is not None:
            reward = SUCCESS_REWARD if end.success else 0.0
            self._store(self._pending, end.features, reward, end.success, True, received)
            self._pending = None
        else:
            self.agent.end_episode()
        self.episodes += 1
        self.successes += int(end.success)
        self.recent.append(end.success)
        return received

    def _store(
        self,
        record: DecisionRecord,
        next_features: np.ndarray,
        reward: float,
        success: bool,
        end: bool,
        received: Received,
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
                source=self.name,
            )
        except ValueError as error:  # NaN in a record: the decision cannot be learned from
            self.rejected += 1
            received.errors.append(f"{self.label}decision not stored: {error}")
            return
        self.transitions += int(stored)
        received.stored += int(stored)

    def counts(self) -> dict[str, int]:
        """The arm's record counters, as diagnostics name them (a fleet's are their sums)."""
        return {
            "noise_answers": self.answers,
            "fallback_decisions": self.fallbacks,
            "rejected_records": self.rejected,
            "missing_records": self.missing,
        }

    def statistics(self) -> dict[str, Any]:
        """The arm's diagnostic values."""
        return {
            **success_figures(self.successes, self.episodes, self.recent, self.recent.maxlen),
            "transitions": self.transitions,
            **self.counts(),
        }


def success_figures(
    successes: int, episodes: int, recent: Sequence[bool], window: int | None
) -> dict[str, Any]:
    """Episodes, successes, the success rate and that of `recent` (each arm's last `window`)."""
    return {
        "episodes": episodes,
        "successes": successes,
        "success_rate": f"{successes / episodes:.3f}" if episodes else "0.000",
        f"success_rate_last_{window}": (f"{sum(recent) / len(recent):.3f}" if recent else "0.000"),
    }


def _record_state(record: DecisionRecord) -> dict[str, Any]:
    """A decision record as JSON values."""
    return {
        name: value.tolist() if isinstance(value, np.ndarray | np.generic) else value
        for name, value in vars(record).items()
    }


def _record_from_state(state: Mapping[str, Any]) -> DecisionRecord:
    arrays = {"features": np.float32, "noise": np.float32, "chunk": np.float32, "operator": bool}
    values = {
        name: np.asarray(value, dtype=arrays[name]) if name in arrays else value
        for name, value in state.items()
    }
    return DecisionRecord(**values)
