"""The noise agent: DSRL-SAC or DSRL-NA behind one small API, with or without an environment.

`NoiseAgent` is what the ROS noise actor node and the `adapt` command use: decisions arrive one
at a time (features of the frozen policy's encoder, the noise used, the decoded chunk, the
reward of the executed ticks), the agent proposes the next noise, trains when told, and saves
itself with its replay buffer so that a restarted run resumes where it stopped. Underneath is an
SB3 algorithm (`DsrlSac` or `DsrlNa`); `make_algorithm(..., env=noise_env)` gives the same
algorithm for SB3's own `learn()` on a `NoiseSpaceEnv`.

Thread safety: a node may call `noise()` from one thread while `train()` or `save()` runs in
another. `noise()` acts with a copy of the actor that `train()` refreshes when its updates are
done, so a decision never waits for training or checkpointing (the noise actor of a fleet
answers every arm while it learns); every other method takes the agent's lock.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import pickle
import shutil
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zipfile import BadZipFile

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.wrappers import TransformReward
from stable_baselines3.common.logger import Logger

from cfgrl_ros.data.episode import Episode
from cfgrl_ros.dsrl.dsrl_na import DsrlNa
from cfgrl_ros.dsrl.dsrl_sac import DsrlSac
from cfgrl_ros.dsrl.noise_space import NOISE_MODES, FrozenPolicy, NoiseSpace, NoiseSpaceEnv
from cfgrl_ros.dsrl.replay import SOURCE_KEY, DecisionReplayBuffer, episode_transitions
from cfgrl_ros.policy.checkpoint import resolve_device
from cfgrl_ros.settings import setting, setting_problems

ALGORITHMS: dict[str, type[DsrlSac]] = {"dsrl_na": DsrlNa, "dsrl_sac": DsrlSac}
CHECKPOINT_FORMAT = "cfgrl_ros.noise_agent"
CHECKPOINT_VERSION = 1
LATEST = "latest.json"  # names the newest complete checkpoint folder


@dataclass(frozen=True)
class DsrlConfig:
    """Settings of a noise agent (docs/algorithms.md section 3).

    The defaults are the settings of the DSRL benchmark in docs/benchmarks.md (measured on Lift
    with 100-tick episodes), so `cfgrl-ros adapt` without flags runs the documented agent.
    """

    algo: str = setting(
        "dsrl_na",
        "dsrl_na (noise-aliased, learns from recorded actions too) or dsrl_sac (stock SAC on "
        "the noise)",
        choices=tuple(ALGORITHMS),
        deployment=True,
    )
    noise_mode: str = setting(
        "full",
        "full: one noise vector per chunk step; shared: one, repeated",
        choices=NOISE_MODES,
    )
    magnitude: float = setting(
        1.5, "noise bound: w0 = magnitude * tanh(u)", minimum=0.0, above=True
    )
    exec_horizon: int = setting(
        8,
        "actions of each chunk executed per decision (the policy node's and the agent's must "
        "agree); 8 makes 13 decisions of a 100-tick Lift episode",
        minimum=1,
        maximum=1000,
    )
    gamma: float = setting(
        0.92,
        "discount per decision (0.99 per tick ** 8 actions per decision)",
        minimum=0.0,
        maximum=1.0,
    )
    batch_size: int = setting(256, "transitions per gradient update", minimum=1)
    learning_rate: float = setting(
        3e-4, "Adam learning rate of actor and critics", minimum=0.0, above=True
    )
    tau: float = setting(
        0.005, "target network soft-update rate", minimum=0.0, maximum=1.0, above=True
    )
    utd: int = setting(10, "gradient updates per stored decision (update-to-data ratio)", minimum=0)
    prefill_decisions: int = setting(
        130,
        "base-policy decisions (w0 ~ N(0, I)) stored before learning starts (~10 Lift "
        "episodes); 0 after adapt --offline-bag: act with the offline-trained actor at once",
        minimum=0,
    )
    hidden_sizes: tuple[int, ...] = setting(
        (256, 256), "hidden layer widths of actor and critics", minimum=1
    )
    layer_norm: bool = setting(True, "LayerNorm in actor and critics")
    n_critics: int = setting(
        2, "critics in the ensemble (the minimum over them is the target)", minimum=1
    )
    target_entropy: float = setting(0.0, "SAC's target entropy")
    # Small: the entropy of a 56-d noise actor is ~35 nats at first, and alpha * 35 per
    # decision must stay well below the success reward.
    initial_entropy_coef: float = setting(
        0.01, "SAC's entropy coefficient alpha at the start (then tuned)", minimum=0.0, above=True
    )
    # With the task's sparse 1.0 at success, -1 makes it "-1 per decision until success": then
    # SAC's entropy bonus can never make staying in an episode worth more than ending it with
    # a success.
    reward_offset: float = setting(-1.0, "added to every decision's reward before learning")
    # In 56 dimensions N(0, I) noise never comes near the centre, so the critics know nothing
    # there and their errors pull the actor around; b keeps it at the noise the frozen policy
    # finds most likely (w0 = 0) until the critic shows something better. In units of Q: it
    # weighs against reward_offset and gamma.
    noise_prior_weight: float = setting(
        0.1,
        "DSRL-NA: weight b of the prior log N(w0; 0, I) in the actor's objective (it maximises "
        "Q^W + b log N(w0; 0, I) - alpha log pi^W); keeps the noise near the frozen policy's "
        "most likely noise until the critic finds better (0: DSRL-NA as published)",
        minimum=0.0,
    )
    buffer_size: int = setting(200_000, "decisions kept in the replay buffer", minimum=1)
    redistill_updates: int = setting(
        500, "DSRL-NA: Q^W-only updates after a guidance weight change", minimum=0
    )
    # One decoder for the env's decodes and DSRL-NA's training.
    decode_steps: int | None = setting(
        None, "Euler steps of every decode (0: the policy's)", minimum=1, none_as=0
    )
    seed: int = setting(0, "random seed of the agent", minimum=0)
    device: str = "cpu"  # "cpu", "cuda", "cuda:N" or "auto"

    def __post_init__(self) -> None:
        problems = setting_problems(self)
        if problems:
            raise ValueError("invalid DsrlConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DsrlConfig:
        """Inverse of to_dict; names unknown fields."""
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"DsrlConfig has no fields {unknown} (known: {sorted(names)})")
        converted = dict(values)
        if "hidden_sizes" in converted:
            converted["hidden_sizes"] = tuple(converted["hidden_sizes"])
        return cls(**converted)

    def noise_space(self, policy: FrozenPolicy) -> NoiseSpace:
        horizon, action_dim = policy.noise_shape
        if self.exec_horizon > horizon:
            raise ValueError(
                f"exec_horizon {self.exec_horizon} is longer than the policy's chunks ({horizon})"
            )
        return NoiseSpace(horizon, action_dim, self.magnitude, self.noise_mode)


POLICY_HASH = "policy_sha256"  # the key of the policy file's hash in a run's recorded settings


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes (hex): a policy is the same if its file is."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def comparable_settings(config: DsrlConfig) -> dict[str, Any]:
    """The agent settings a resumed run must share with the run it continues (all but the
    device: a run may resume on another one), as JSON holds them."""
    values = config.to_dict()
    values.pop("device")
    values["hidden_sizes"] = list(values["hidden_sizes"])
    return values


def setting_differences(
    saved: Mapping[str, Any], given: Mapping[str, Any], names: Mapping[str, str], given_by: str
) -> list[str]:
    """'<name>: run has X, <given_by> Y' for every setting that differs between a saved run
    and the one asked for; `names` maps a setting to what the user sets it with (a flag, a
    parameter), and the policy hash is named as a different policy file."""
    differences = []
    for key in sorted(set(saved) | set(given)):
        if saved.get(key) != given.get(key):
            name = names.get(key, key)
            if key == POLICY_HASH:
                differences.append(f"{name}: a different policy file than the run's")
            else:
                differences.append(
                    f"{name}: run has {saved.get(key)!r}, {given_by} {given.get(key)!r}"
                )
    return differences


def make_noise_env(
    env: Any, policy: FrozenPolicy, guidance_weight: float, config: DsrlConfig
) -> NoiseSpaceEnv:
    """`env` (an arm env) seen through `policy` with this configuration's noise settings.

    The env decodes with `config.decode_steps` Euler steps, as DSRL-NA's training does: the two
    must be the same decoder.
    """
    return NoiseSpaceEnv(
        env,
        policy,
        guidance_weight,
        noise_mode=config.noise_mode,
        magnitude=config.magnitude,
        exec_horizon=config.exec_horizon,
        decode_steps=config.decode_steps,
    )


def make_algorithm(
    config: DsrlConfig,
    policy: FrozenPolicy,
    guidance_weight: float,
    env: gym.Env | None = None,
) -> DsrlSac:
    """The SB3 algorithm of `config`: on `env` (a NoiseSpaceEnv, possibly wrapped) for
    `learn()`, or environment-free (env=None).

    With an env, SB3's learn() trains `utd` updates per decision after `prefill_decisions`
    base-policy decisions, on the env's rewards plus `reward_offset`.
    """
    noise_space = config.noise_space(policy)
    kwargs: dict[str, Any] = {
        "noise_space": noise_space,
        "learning_rate": config.learning_rate,
        "buffer_size": config.buffer_size,
        "learning_starts": config.prefill_decisions,
        "batch_size": config.batch_size,
        "tau": config.tau,
        "gamma": config.gamma,
        "gradient_steps": config.utd,
        "ent_coef": f"auto_{config.initial_entropy_coef}",
        "target_entropy": config.target_entropy,
        "policy_kwargs": {
            "net_arch": list(config.hidden_sizes),
            "layer_norm": config.layer_norm,
            "n_critics": config.n_critics,
        },
        "seed": config.seed,
        "device": resolve_device(config.device),
    }
    if config.algo == "dsrl_na":
        kwargs.update(
            frozen_policy=policy,
            guidance_weight=guidance_weight,
            exec_horizon=config.exec_horizon,
            decode_steps=config.decode_steps,
            redistill_updates=config.redistill_updates,
            noise_prior_weight=config.noise_prior_weight,
        )
    algorithm = ALGORITHMS[config.algo]
    if env is None:
        observation_space = spaces.Box(-np.inf, np.inf, (policy.feature_dim,), np.float32)
        return algorithm.for_spaces(observation_space, noise_space.action_space(), **kwargs)
    noise_env = env.unwrapped
    if not isinstance(noise_env, NoiseSpaceEnv):
        raise ValueError(f"env must be a NoiseSpaceEnv (or wrap one), got {type(noise_env)}")
    if noise_env.noise_space != noise_space or noise_env.exec_horizon != config.exec_horizon:
        raise ValueError(
            f"the env's noise settings ({noise_env.noise_space}, exec_horizon "
            f"{noise_env.exec_horizon}) "
            f"differ from the config's ({noise_space}, exec_horizon {config.exec_horizon}); "
            "build the env with make_noise_env(env, policy, w, config)"
        )
    offset = config.reward_offset
    model = algorithm("MlpPolicy", TransformReward(env, lambda reward: reward + offset), **kwargs)
    # SB3's default logger of learn() creates a folder in the temp directory on every run.
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def make_noise_agent(
    policy: FrozenPolicy, guidance_weight: float, config: DsrlConfig | None = None
) -> NoiseAgent:
    """A fresh environment-free noise agent for `policy` decoding at `guidance_weight`."""
    config = config or DsrlConfig()
    return NoiseAgent(
        make_algorithm(config, policy, guidance_weight), policy, config, guidance_weight
    )


class NoiseAgent:
    """Chooses start noise per decision, learns from decisions, checkpoints itself.

    Counters: `transitions` (online decisions added), `offline_transitions` (from recorded
    episodes), `operator_transitions` (online decisions the operator drove at least one tick
    of: stored by DSRL-NA, left out by DSRL-SAC), `episodes` (online episodes ended), `updates`
    (gradient updates done). `replay_sources()` counts the stored rows by source (arm).
    """

    def __init__(
        self,
        model: DsrlSac,
        policy: FrozenPolicy,
        config: DsrlConfig,
        guidance_weight: float,
    ) -> None:
        self.model = model
        self.policy = policy
        self.config = config
        self.noise_space = config.noise_space(policy)
        self.feature_dim = policy.feature_dim
        self._guidance_weight = float(guidance_weight)
        self.transitions = 0
        self.offline_transitions = 0
        self.operator_transitions = 0
        self.episodes = 0
        self.metadata: dict[str, Any] = {}  # run state restored by load()
        self._lock = threading.RLock()
        # What noise() acts with: the actor as of the end of the last train().
        self._acting_actor = copy.deepcopy(model.actor).eval()
        self._acting_lock = threading.Lock()

    # ------------------------------------------------------------------ state

    @property
    def updates(self) -> int:
        return self.model._n_updates

    @property
    def guidance_weight(self) -> float:
        return self._guidance_weight

    @property
    def learning_started(self) -> bool:
        """True once the prefill of base-policy decisions is done: train after each decision."""
        return self.transitions >= self.config.prefill_decisions

    @property
    def redistilling(self) -> bool:
        """DSRL-NA: Q^W is being re-distilled after a guidance weight change."""
        return getattr(self.model, "distillation_updates_due", 0) > 0

    @property
    def replay_size(self) -> int:
        assert isinstance(self.model.replay_buffer, DecisionReplayBuffer)
        return len(self.model.replay_buffer)

    def replay_sources(self) -> dict[str, int]:
        """Stored rows by source: arm name ("" for a single arm) or "offline"."""
        assert isinstance(self.model.replay_buffer, DecisionReplayBuffer)
        with self._lock:
            return self.model.replay_buffer.source_counts()

    def counters(self) -> dict[str, int]:
        return {
            "transitions": self.transitions,
            "offline_transitions": self.offline_transitions,
            "operator_transitions": self.operator_transitions,
            "episodes": self.episodes,
            "updates": self.updates,
        }

    # ------------------------------------------------------------------ acting

    def noise(self, features: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """The start noise w0 (H, A) for a decision at `features` (the policy's encode output).

        During the prefill (and unless deterministic) this is base-policy noise N(0, I) clipped
        to +-magnitude; afterwards a sample of the noise actor, or its mean when deterministic
        (as SB3's `predict` computes it, on the copy of the actor the last `train()` left).
        """
        features = self._check_features(features, "features")
        if not deterministic and not self.learning_started:
            action = self.model.base_actions(1)[0]  # torch's global generator: thread-safe
        else:
            observation = torch.as_tensor(features[None], device=self.model.device)
            with self._acting_lock, torch.no_grad():
                squashed = self._acting_actor(observation, deterministic=deterministic)
            action = self.model.policy.unscale_action(squashed.cpu().numpy())[0]
        return self.noise_space.noise_from_action(action)

    # ------------------------------------------------------------------ learning

    def add_transition(
        self,
        features: np.ndarray,
        noise: np.ndarray,
        chunk: np.ndarray,
        reward: float,
        next_features: np.ndarray,
        terminated: bool,
        truncated: bool = False,
        operator_ticks: int = 0,
        source: str = "",
    ) -> bool:
        """Record one executed decision; returns whether it was stored.

        noise: the start noise (H, A) that was decoded; chunk: the chunk (H, A) as executed or
        its executed part (exec_horizon, A); reward: the task's, summed over the executed ticks
        (`reward_offset` is added here); terminated: the task ended (success); truncated: the
        episode was cut (time limit, operator) and the value of next_features is still
        bootstrapped; operator_ticks: how many executed rows the operator drove instead of
        the decoded chunk. DSRL-NA stores the executed chunk, whoever chose it: its action
        critic Q^A learns from interventions and passes them to the noise actor through
        distillation. DSRL-SAC stores the noise (clipped to +-magnitude, the range it can act
        in), which did not produce an operator's rows: it leaves those decisions out.
        source: the arm that made the decision (tags its replay row; see `replay_sources`).
        """
        features = self._check_features(features, "features")
        next_features = self._check_features(next_features, "next_features")
        noise = np.asarray(noise, dtype=np.float32)
        chunk = np.asarray(chunk, dtype=np.float32)
        if noise.shape != self.noise_space.shape:
            raise ValueError(f"noise has shape {noise.shape}, expected {self.noise_space.shape}")
        action_dim = self.noise_space.action_dim
        if chunk.ndim != 2 or chunk.shape[1] != action_dim or len(chunk) < self.config.exec_horizon:
            raise ValueError(
                f"chunk has shape {chunk.shape}, expected (n, {action_dim}) with n >= "
                f"exec_horizon {self.config.exec_horizon}"
            )
        if not np.isfinite(reward):
            raise ValueError(f"reward must be finite, got {reward}")
        reward = float(reward) + self.config.reward_offset
        stored = not (operator_ticks and self.config.algo == "dsrl_sac")
        if self.config.algo == "dsrl_sac":
            action = self.noise_space.action_from_noise(noise)
        else:
            action = chunk[: self.config.exec_horizon].reshape(-1)
        with self._lock:
            if stored:
                self._add(features, action, reward, next_features, terminated, truncated, source)
                self.transitions += 1
                self.model.num_timesteps += 1
            self.operator_transitions += int(operator_ticks > 0)
            if terminated or truncated:
                self.episodes += 1
        return stored

    def add_offline_episodes(self, episodes: Iterable[Episode]) -> int:
        """DSRL-NA: add every decision of recorded episodes (no noise needed); returns how many."""
        if self.config.algo != "dsrl_na":
            raise ValueError(
                f"offline episodes need algo 'dsrl_na' (they hold actions, not noise); this agent "
                f"is {self.config.algo!r}"
            )
        batch = episode_transitions(episodes, self.policy, self.config.exec_horizon)
        with self._lock:
            for index in range(len(batch)):
                self._add(
                    batch.features[index],
                    batch.chunks[index].reshape(-1),
                    float(batch.rewards[index]) + self.config.reward_offset,
                    batch.next_features[index],
                    bool(batch.terminated[index]),
                    truncated=False,
                    source="offline",
                )
            self.offline_transitions += len(batch)
        return len(batch)

    def _add(
        self,
        features: np.ndarray,
        action: np.ndarray,
        reward: float,
        next_features: np.ndarray,
        terminated: bool,
        truncated: bool,
        source: str,
    ) -> None:
        assert self.model.replay_buffer is not None
        self.model.replay_buffer.add(
            features[None],
            next_features[None],
            action[None],
            np.array([reward], dtype=np.float32),
            np.array([terminated or truncated]),
            [{"TimeLimit.truncated": truncated and not terminated, SOURCE_KEY: source}],
        )

    def train(self, updates: int) -> dict[str, float]:
        """`updates` gradient updates; returns the mean of each training metric over them."""
        if updates < 0:
            raise ValueError(f"updates must be >= 0, got {updates}")
        if updates and self.replay_size == 0:
            raise ValueError("the replay buffer is empty: add transitions before training")
        values: dict[str, list[float]] = {}
        for _ in range(updates):
            with self._lock:
                self.model.train(gradient_steps=1, batch_size=self.config.batch_size)
                recorded = dict(self.model.logger.name_to_value)
                self.model.logger.dump()
            for key, value in recorded.items():
                name = key.removeprefix("train/")
                if name not in ("n_updates", "learning_rate"):
                    values.setdefault(name, []).append(float(value))
        if updates:
            with self._lock:
                weights = self.model.actor.state_dict()
                with self._acting_lock:
                    self._acting_actor.load_state_dict(weights)
        return {name: float(np.mean(series)) for name, series in values.items()}

    def set_guidance_weight(self, guidance_weight: float) -> None:
        """The policy now decodes at `guidance_weight`.

        DSRL-NA re-distills Q^W for the new decoder during its next `redistill_updates` updates
        (the actor waits). DSRL-SAC's critic is over noise and learned from experience; it
        adapts to the new decoder only by learning on.
        """
        with self._lock:
            self._guidance_weight = float(guidance_weight)
            if isinstance(self.model, DsrlNa):
                self.model.set_guidance_weight(guidance_weight)

    def end_episode(self) -> None:
        """Count an episode that ended without a terminated/truncated transition (operator)."""
        with self._lock:
            self.episodes += 1

    # ------------------------------------------------------------------ checkpoints

    def save(self, directory: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write model, optimisers, replay buffer and counters into a new checkpoint folder.

        metadata: JSON-serialisable run state kept with the checkpoint (e.g. a learning curve);
        `load` restores it as `agent.metadata`, consistent with the model it was saved with.

        The folder is complete before `latest.json` names it (os.replace), and older folders are
        removed only after that; a crash at any moment leaves the previous checkpoint loadable.
        Returns the checkpoint folder.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            previous = _latest_checkpoint_name(directory)
            number = int(previous.rsplit("-", 1)[1]) + 1 if previous else 1
            name = f"checkpoint-{number:06d}"
            staging = directory / f".{name}.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            self.model.save(staging / "model.zip")
            self.model.save_replay_buffer(staging / "replay_buffer.pkl")
            state = {
                "format": CHECKPOINT_FORMAT,
                "format_version": CHECKPOINT_VERSION,
                "config": self.config.to_dict(),
                "guidance_weight": self._guidance_weight,
                "noise_shape": list(self.noise_space.shape),
                "feature_dim": self.feature_dim,
                "counters": self.counters(),
                "metadata": dict(metadata or {}),
            }
            (staging / "agent.json").write_text(json.dumps(state, indent=2))
            _fsync_tree(staging)
            final = directory / name
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
            _atomic_write_text(directory / LATEST, json.dumps({"checkpoint": name}))
            for stale in directory.iterdir():
                if (
                    stale.is_dir()
                    and stale.name != name
                    and stale.name.lstrip(".").startswith("checkpoint-")
                ):
                    shutil.rmtree(stale, ignore_errors=True)
        return final

    @classmethod
    def load(
        cls, directory: str | Path, policy: FrozenPolicy, device: str | None = None
    ) -> NoiseAgent:
        """The agent saved in `directory` (its newest checkpoint), decoding with `policy`.

        device: overrides the saved configuration's device (e.g. a checkpoint from a GPU
        workstation loaded on a CPU-only machine).
        """
        directory = Path(directory)
        name = _latest_checkpoint_name(directory)
        if name is None:
            raise FileNotFoundError(f"no noise agent checkpoint in {directory} (no {LATEST})")
        folder = directory / name
        try:
            state = json.loads((folder / "agent.json").read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read {folder / 'agent.json'}: {error}") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{folder} is not a noise agent checkpoint")
        if state.get("format_version") != CHECKPOINT_VERSION:
            raise ValueError(
                f"{folder} has format version {state.get('format_version')}, this build reads "
                f"{CHECKPOINT_VERSION}"
            )
        saved = dict(state["config"])
        saved.setdefault("noise_prior_weight", 0.0)  # checkpoints from before the prior
        config = DsrlConfig.from_dict(saved)
        if device is not None:
            config = dataclasses.replace(config, device=device)
        if tuple(state["noise_shape"]) != tuple(policy.noise_shape) or state["feature_dim"] != int(
            policy.feature_dim
        ):
            raise ValueError(
                f"the agent in {folder} was trained for a policy with chunks "
                f"{tuple(state['noise_shape'])} and {state['feature_dim']} features; this policy "
                f"has {tuple(policy.noise_shape)} and {policy.feature_dim}"
            )
        algorithm = ALGORITHMS[config.algo]
        extra: dict[str, Any] = {}
        if config.algo == "dsrl_na":
            extra = {"frozen_policy": policy, "noise_prior_weight": config.noise_prior_weight}
        # A damaged file can fail in any of these ways (zip, pickle, torch): name the file.
        unreadable = (
            OSError,
            EOFError,
            ValueError,
            KeyError,
            RuntimeError,
            pickle.PickleError,
            BadZipFile,
        )
        try:
            model = algorithm.load(
                folder / "model.zip", device=resolve_device(config.device), **extra
            )
        except unreadable as error:
            raise ValueError(f"cannot read {folder / 'model.zip'}: {error!r}") from None
        try:
            model.load_replay_buffer(folder / "replay_buffer.pkl")
        except unreadable as error:
            raise ValueError(f"cannot read {folder / 'replay_buffer.pkl'}: {error!r}") from None
        model.set_logger(Logger(folder=None, output_formats=[]))
        # SB3's load reseeds with the configured seed; a resumed run must not replay the
        # random numbers its first updates used.
        model.set_random_seed(config.seed + model._n_updates)
        agent = cls(model, policy, config, state["guidance_weight"])
        counters = state["counters"]
        agent.transitions = counters["transitions"]
        agent.offline_transitions = counters["offline_transitions"]
        agent.operator_transitions = counters.get("operator_transitions", 0)  # added later
        agent.episodes = counters["episodes"]
        agent.metadata = state["metadata"]
        return agent

    # ------------------------------------------------------------------ helpers

    def _check_features(self, features: np.ndarray, name: str) -> np.ndarray:
        features = np.asarray(features, dtype=np.float32)
        if features.shape != (self.feature_dim,):
            raise ValueError(
                f"{name} has shape {features.shape}, expected ({self.feature_dim},): one vector "
                "of the frozen policy's encode() output"
            )
        if not np.all(np.isfinite(features)):
            raise ValueError(f"{name} contains NaN or infinite values")
        return features


def _latest_checkpoint_name(directory: Path) -> str | None:
    latest = directory / LATEST
    if not latest.is_file():
        return None
    try:
        name = json.loads(latest.read_text())["checkpoint"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{latest} does not name a checkpoint folder: {error!r}") from None
    if not isinstance(name, str) or not (directory / name).is_dir():
        raise FileNotFoundError(f"{latest} names {name}, which is missing from {directory}")
    return name


def _atomic_write_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as file:
            os.fsync(file.fileno())
