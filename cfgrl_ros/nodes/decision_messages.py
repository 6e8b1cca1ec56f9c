"""The message contract between policy_node, noise_actor_node and reward_reset_node.

Standard message types only. Everything that belongs to one decision carries a header whose
stamp is the decision's stamp (the time the policy node took the observation it decides on);
the stamp is the key that matches a noise answer to its request and a record to its decision.
Topic names are relative: they live in the nodes' namespace.

- ``dsrl/noise_request``, sensor_msgs/JointState, policy -> noise actor; reliable, volatile.
- ``dsrl/noise``, trajectory_msgs/JointTrajectory, noise actor -> policy; reliable, volatile.
- ``dsrl/decision``, sensor_msgs/JointState, policy -> noise actor, reward/reset node, loggers;
  reliable, transient local, the last ``record_history`` records kept for late readers.
- ``episode_event``, std_msgs/String, reward/reset node -> policy node, bags; reliable,
  transient local, depth 1 (a restarted node learns whether an episode is running).
- ``reward``, std_msgs/Float64 (1.0 success, 0.0 failure at each episode end), reward/reset
  node -> loggers.
- ``teleop/action``, sensor_msgs/JointState, teleop node -> policy node; reliable, volatile,
  depth 1: the operator's latest normalised action (below).
- ``policy_node/takeover``, std_srvs/SetBool, teleop node (or anyone) -> policy node: true hands
  the arm to the operator at the next control tick, false hands it back to the policy at the
  next decision; the reply says why a request was refused.

Noise request (``dsrl/noise_request``): at each decision the policy node encodes the latest
observation and publishes a stamped, named vector: ``name`` = ``guidance_weight, feature/0 ..
feature/{D-1}``, ``position`` = the guidance weight the chunk will be decoded with (DSRL-NA's
critic depends on it) and the features.

Noise (``dsrl/noise``): the noise actor answers with the start noise w0 for that decision, a
chunk (H steps x A action dimensions) like the action chunk it will be decoded into:
``header.stamp`` = the request's stamp, ``joint_names`` = `ACTION_NAMES`, ``points[k].positions``
= w0[k], ``time_from_start`` = k control periods. The policy node waits at most its
``noise_timeout`` for the answer with its stamp; otherwise it decodes from w0 ~ N(0, I) (the
base policy) and marks the decision (``noise_from_actor`` = 0). Late answers are dropped.

Decision record (``dsrl/decision``): every executed decision, published once it is over (its
``exec_horizon`` actions sent, or the episode ended), as a stamped named vector (every number
labelled, so bags and plots read it without this module):

    episode_end = 0, decision_index, exec_horizon, guidance_weight, noise_from_actor,
    feature/i (D), noise/k/<action name> (H x A), chunk/k/<action name> (H x A),
    operator/k (H)

``exec_horizon`` is how many rows of the chunk the arm executes before the next decision.
``chunk`` is the chunk as executed: row k is the action sent at the decision's k-th tick, which
is the decoded row unless the operator drove that tick (``operator/k`` = 1); rows never
executed keep the decoded ones. A decision that starts while the operator drives decodes
nothing: its noise is 0, ``noise_from_actor`` 0, and its rows after the last executed one
repeat that action. DSRL-NA learns from the executed chunk whoever chose it; DSRL-SAC, which
learns the noise, stores only decisions without operator ticks.

When an episode ends (``episode_event`` success or failure) the policy node stops commanding,
publishes the record of the decision it was executing and then an episode-end record:

    episode_end = 1, success, decisions, feature/i (D: the final observation)

Records come from one publisher on one topic, so they arrive in order: consecutive decision
records of an episode, then its end record. Decision i's successor state is decision i+1's
features (or the end record's), its reward is 1 if it is the last decision of a successful
episode (sparse success), and it is terminal exactly then. The durable history lets a
restarted noise actor receive the records it missed; it drops those it has already stored by
their stamps.

Operator action (``teleop/action``): ``header.stamp`` = when the teleop node read the input,
``name`` = `ACTION_NAMES`, ``position`` = the normalised action in [-1, 1] (the policy's action
space: the same adapter and safety envelope turn it into a target). The policy node uses it
while the operator drives and only while it is younger than its ``operator_timeout``; older, it
holds the arm and keeps the operator in control.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration, Time
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from cfgrl_ros.data.episode import ACTION_DIM

ACTION_NAMES: tuple[str, ...] = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "grip")
assert len(ACTION_NAMES) == ACTION_DIM

NOISE_REQUEST_TOPIC = "dsrl/noise_request"
OPERATOR_ACTION_TOPIC = "teleop/action"
TAKEOVER_SERVICE = "policy_node/takeover"
NOISE_TOPIC = "dsrl/noise"
DECISION_TOPIC = "dsrl/decision"
EPISODE_EVENT_TOPIC = "episode_event"
REWARD_TOPIC = "reward"
EPISODE_EVENTS = ("start", "success", "failure")


def record_qos(depth: int) -> QoSProfile:
    """Decision records: reliable, and the last `depth` kept for late (restarted) readers."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


def event_qos(depth: int = 1) -> QoSProfile:
    """Episode events: reliable, the latest kept, so a (re)started node learns the state.

    Publishers keep 1; subscribers take a deeper queue so that events arriving in quick
    succession ("failure" then "start") are all delivered.
    """
    return record_qos(depth)


def exchange_qos(depth: int = 10) -> QoSProfile:
    """Noise requests and answers, operator actions (depth 1: only the latest matters):
    reliable, only for whoever listens now."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


_DECISION_SCALARS = (
    "episode_end",
    "decision_index",
    "exec_horizon",
    "guidance_weight",
    "noise_from_actor",
)
_END_SCALARS = ("episode_end", "success", "decisions")


def stamp_from_ns(nanoseconds: int) -> Time:
    """builtin_interfaces/Time for integer nanoseconds."""
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def stamp_to_ns(stamp: Any) -> int:
    """Integer nanoseconds of a builtin_interfaces/Time: exact, usable as a key."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


@dataclass
class DecisionRecord:
    """One executed decision (see the module docstring)."""

    stamp_ns: int
    features: np.ndarray  # [D] float32: the policy's encoding of the observation
    noise: np.ndarray  # [H, A]: the start noise w0 the chunk was decoded from
    chunk: np.ndarray  # [H, A]: the chunk as executed (decoded rows, the operator's where it drove)
    guidance_weight: float
    noise_from_actor: bool  # False: the actor did not answer in time (w0 ~ N(0, I)), or operator
    decision_index: int  # 0 for the first decision of an episode
    exec_horizon: int  # rows of the chunk executed before the next decision
    operator: np.ndarray  # [H] bool: the rows the operator drove

    @property
    def operator_ticks(self) -> int:
        return int(np.count_nonzero(self.operator))


@dataclass
class EpisodeEnd:
    """The end of an episode, as the policy node saw it."""

    stamp_ns: int
    features: np.ndarray  # [D] float32: the final observation's encoding
    success: bool
    decisions: int  # decision records the policy node published in this episode


@lru_cache(maxsize=8)
def _feature_names(feature_dim: int) -> tuple[str, ...]:
    return tuple(f"feature/{i}" for i in range(feature_dim))


@lru_cache(maxsize=8)
def _chunk_names(prefix: str, horizon: int) -> tuple[str, ...]:
    return tuple(f"{prefix}/{k}/{name}" for k in range(horizon) for name in ACTION_NAMES)


@lru_cache(maxsize=8)
def decision_names(feature_dim: int, horizon: int) -> tuple[str, ...]:
    """The ``name`` layout of a decision record."""
    return (
        *_DECISION_SCALARS,
        *_feature_names(feature_dim),
        *_chunk_names("noise", horizon),
        *_chunk_names("chunk", horizon),
        *(f"operator/{k}" for k in range(horizon)),
    )


@lru_cache(maxsize=8)
def end_names(feature_dim: int) -> tuple[str, ...]:
    """The ``name`` layout of an episode-end record."""
    return (*_END_SCALARS, *_feature_names(feature_dim))


@lru_cache(maxsize=8)
def request_names(feature_dim: int) -> tuple[str, ...]:
    """The ``name`` layout of a noise request."""
    return ("guidance_weight", *_feature_names(feature_dim))


def noise_request_message(
    stamp_ns: int, guidance_weight: float, features: np.ndarray
) -> JointState:
    features = np.asarray(features, dtype=np.float64).reshape(-1)
    message = JointState()
    message.header.stamp = stamp_from_ns(stamp_ns)
    message.name = list(request_names(len(features)))
    message.position = [float(guidance_weight), *features.tolist()]
    return message


def noise_request_features(message: JointState, feature_dim: int) -> tuple[float, np.ndarray]:
    """(guidance weight, features) of a noise request.

    Raises ValueError when it does not hold `feature_dim` features.
    """
    if tuple(message.name) != request_names(feature_dim):
        raise ValueError(
            f"noise request has {len(message.name)} values, expected the guidance weight and "
            f"{feature_dim} features: the policy node and the noise actor must load the same "
            "checkpoint"
        )
    values = np.asarray(message.position, dtype=np.float64)
    return float(values[0]), values[1:].astype(np.float32)


def noise_message(stamp_ns: int, noise: np.ndarray, control_period: float) -> JointTrajectory:
    """A noise chunk [H, A] answering the request with stamp `stamp_ns`."""
    noise = np.asarray(noise, dtype=np.float64)
    message = JointTrajectory()
    message.header.stamp = stamp_from_ns(stamp_ns)
    message.joint_names = list(ACTION_NAMES)
    for k, row in enumerate(noise):
        seconds = k * control_period
        message.points.append(
            JointTrajectoryPoint(
                positions=row.tolist(),
                time_from_start=Duration(sec=int(seconds), nanosec=int(seconds % 1 * 1e9)),
            )
        )
    return message


def noise_from_message(message: JointTrajectory, noise_shape: tuple[int, int]) -> np.ndarray:
    """The [H, A] noise of a noise answer; ValueError if it does not fit or is not finite."""
    horizon, action_dim = noise_shape
    rows = [point.positions for point in message.points]
    if (
        tuple(message.joint_names) != ACTION_NAMES[:action_dim]
        or len(rows) != horizon
        or any(len(row) != action_dim for row in rows)
    ):
        raise ValueError(
            f"noise answer has {len(rows)} rows of {list(message.joint_names)}, expected "
            f"{horizon} rows of {list(ACTION_NAMES)}: the noise actor must load the policy "
            "node's checkpoint"
        )
    noise = np.asarray(rows, dtype=np.float32)
    if not np.all(np.isfinite(noise)):
        raise ValueError("noise answer has NaN or infinite values; it is not used")
    return noise


def decision_message(record: DecisionRecord) -> JointState:
    message = JointState()
    message.header.stamp = stamp_from_ns(record.stamp_ns)
    horizon = len(record.chunk)
    message.name = list(decision_names(len(record.features), horizon))
    scalars = [
        0.0,
        float(record.decision_index),
        float(record.exec_horizon),
        float(record.guidance_weight),
        1.0 if record.noise_from_actor else 0.0,
    ]
    values = np.concatenate(
        [
            scalars,
            np.asarray(record.features, dtype=np.float64).reshape(-1),
            np.asarray(record.noise, dtype=np.float64).reshape(-1),
            np.asarray(record.chunk, dtype=np.float64).reshape(-1),
            np.asarray(record.operator, dtype=np.float64).reshape(-1),
        ]
    )
    message.position = values.tolist()
    return message


def end_message(end: EpisodeEnd) -> JointState:
    message = JointState()
    message.header.stamp = stamp_from_ns(end.stamp_ns)
    message.name = list(end_names(len(end.features)))
    scalars = [1.0, 1.0 if end.success else 0.0, float(end.decisions)]
    features = np.asarray(end.features, dtype=np.float64).reshape(-1)
    message.position = [*scalars, *features.tolist()]
    return message


def is_episode_end(message: JointState) -> bool:
    """True for an episode-end record, False for a decision record."""
    if not message.name or message.name[0] != "episode_end" or not message.position:
        raise ValueError(
            f"{DECISION_TOPIC} message does not start with 'episode_end' (names "
            f"{list(message.name[:3])}...): it is not a decision record"
        )
    return message.position[0] == 1.0


def parse_record(
    message: JointState, feature_dim: int, horizon: int
) -> DecisionRecord | EpisodeEnd:
    """A decision or episode-end record, checked against the reader's policy dimensions.

    Raises ValueError when the layout differs: the publisher runs another checkpoint.
    """
    values = np.asarray(message.position, dtype=np.float64)
    stamp_ns = stamp_to_ns(message.header.stamp)
    if is_episode_end(message):
        expected = end_names(feature_dim)
        if tuple(message.name) != expected:
            raise ValueError(
                f"episode-end record has {len(message.name) - len(_END_SCALARS)} features, "
                f"expected {feature_dim}: the policy node runs another checkpoint"
            )
        offset = len(_END_SCALARS)
        return EpisodeEnd(
            stamp_ns=stamp_ns,
            features=values[offset:].astype(np.float32),
            success=bool(values[1]),
            decisions=int(values[2]),
        )
    expected = decision_names(feature_dim, horizon)
    if tuple(message.name) != expected:
        raise ValueError(
            f"decision record has {len(message.name)} values, expected {len(expected)} "
            f"({feature_dim} features, {horizon}x{ACTION_DIM} noise and chunk, {horizon} operator "
            "marks): the policy "
            "node runs another checkpoint"
        )
    offset = len(_DECISION_SCALARS)
    chunk_size = horizon * ACTION_DIM
    features = values[offset : offset + feature_dim]
    noise = values[offset + feature_dim : offset + feature_dim + chunk_size]
    chunk = values[offset + feature_dim + chunk_size : offset + feature_dim + 2 * chunk_size]
    operator = values[offset + feature_dim + 2 * chunk_size :]
    return DecisionRecord(
        stamp_ns=stamp_ns,
        features=features.astype(np.float32),
        noise=noise.reshape(horizon, ACTION_DIM).astype(np.float32),
        chunk=chunk.reshape(horizon, ACTION_DIM).astype(np.float32),
        guidance_weight=float(values[3]),
        noise_from_actor=bool(values[4]),
        decision_index=int(values[1]),
        exec_horizon=int(values[2]),
        operator=operator == 1.0,
    )


def operator_action_message(stamp_ns: int, action: np.ndarray) -> JointState:
    message = JointState()
    message.header.stamp = stamp_from_ns(stamp_ns)
    message.name = list(ACTION_NAMES)
    message.position = np.asarray(action, dtype=np.float64).reshape(-1).tolist()
    return message


def operator_action_from_message(message: JointState) -> np.ndarray:
    """The (A,) action of an operator action; ValueError if it is not one or not finite."""
    if tuple(message.name) != ACTION_NAMES or len(message.position) != ACTION_DIM:
        raise ValueError(
            f"{OPERATOR_ACTION_TOPIC} message names {list(message.name)} with "
            f"{len(message.position)} values, expected {list(ACTION_NAMES)}: publish it with "
            "the teleop node"
        )
    action = np.asarray(message.position, dtype=np.float32)
    if not np.all(np.isfinite(action)):
        raise ValueError(f"{OPERATOR_ACTION_TOPIC} action has NaN or infinite values; not used")
    return action
