"""The flow-matching policy with classifier-free guidance (CFGRL), ROS-free.

A network v(a_t, t, s, c) predicts the velocity that carries start noise a_0 ~ N(0, I) to an
action chunk a_1 (H steps x action_dim) along a_t = (1 - t) a_0 + t a_1. The condition c is a
learned null embedding, an optimality label o in {0, 1}, or a goal state. Sampling integrates
K Euler steps with the guided velocity (docs/algorithms.md, sections 1-2)

    v = v(a_t, t, s, null) + w (v(a_t, t, s, c) - v(a_t, t, s, null)),

w = 0: behaviour cloning, w = 1: the conditioned policy, w > 1: further towards optimality.

Where the action normaliser sits: the flow lives in the policy's own per-dimension normalised
action space (actions of the data scaled to zero mean and unit variance, so that they match the
N(0, I) start noise whatever their range in the data). decode() un-normalises the last Euler
iterate back into the env's action units and only then clips to [-1, 1], the range the arm
adapter consumes, so clipping never depends on the data's statistics. The start noise given to
decode() (DSRL's w0) is in the flow's space: N(0, I) is the base policy.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cfgrl_ros.arm.command_adapter import AdapterConfig
from cfgrl_ros.data.episode import ACTION_DIM
from cfgrl_ros.observation import STATE_DIM, ObservationSpec
from cfgrl_ros.policy.checkpoint import resolve_device, save_model
from cfgrl_ros.policy.config_types import from_fields
from cfgrl_ros.policy.networks import (
    IMAGE_ENCODERS,
    KEYPOINTS_MIN_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    StateEncoder,
    VelocityField,
    image_encoder,
    mlp,
)
from cfgrl_ros.policy.normaliser import Normaliser

CHECKPOINT_FORMAT = "cfgrl_ros.flow_policy"
CHECKPOINT_VERSION = 2  # 2: the inputs are an ObservationSpec (1: the full state, use_state)

CONDITIONS = ("optimality", "goal", "none")
# Condition indices. In goal mode every row that is not NULL is conditioned on its goal.
NULL = 0
NOT_OPTIMAL = 1
OPTIMAL = 2

STATE_MIN_STD = 1e-2  # state units are metres and radians: 1 cm / 0.01 rad
ACTION_MIN_STD = 1e-2  # env action units ([-1, 1])
STATE_CLIP = 10.0  # normalised states beyond ±10 std are clipped: far-off inputs stay bounded


@dataclass(frozen=True)
class PolicyConfig:
    """Shape and architecture of a FlowPolicy. Stored in its checkpoint.

    ``condition`` is set by ``train_policy`` from the training method.
    """

    # What the policy reads: state fields and cameras (cfgrl_ros.observation).
    observation: ObservationSpec = dataclasses.field(default_factory=ObservationSpec)
    action_dim: int = ACTION_DIM
    horizon: int = 8  # H: actions per chunk
    flow_steps: int = 10  # K: Euler steps when decode() is not told otherwise
    # "optimality" (CFGRL), "goal" (goal-conditioned) or "none" (BC, AWR)
    condition: str = "optimality"
    state_hidden_dims: tuple[int, ...] = (256,)
    state_feature_dim: int = 64
    image_feature_dim: int = 64
    image_channels: int = 32
    # How each camera's feature maps become features: "flatten" (a linear map of all of them)
    # or "keypoints" (GroupNorm, spatial softmax; networks.KeypointImageEncoder).
    image_encoder: str = "flatten"
    condition_dim: int = 64
    time_embedding_dim: int = 64
    hidden_dims: tuple[int, ...] = (256, 256, 256)  # the velocity network
    # The arm command adapter's step sizes that normalised the training actions (an action of 1
    # moves this far per control step). A policy means these distances: the policy node refuses
    # an adapter with other step sizes.
    max_translation: float = AdapterConfig.max_translation  # m
    max_rotation: float = AdapterConfig.max_rotation  # rad
    # The simulated task of the training bags ("": they do not say, e.g. a real arm's): eval and
    # adapt refuse another task rather than report a policy's failure at a task it never saw.
    task: str = ""

    def __post_init__(self) -> None:
        problems = []
        if self.condition not in CONDITIONS:
            problems.append(f"condition {self.condition!r} is not one of {CONDITIONS}")
        if self.image_encoder not in IMAGE_ENCODERS:
            problems.append(f"image_encoder {self.image_encoder!r} is not one of {IMAGE_ENCODERS}")
        size = self.observation.image_size
        if self.observation.image_keys and (size is None or min(size) < MIN_IMAGE_SIZE):
            problems.append(f"image_size {size} must be (height, width), both >= {MIN_IMAGE_SIZE}")
        elif (
            self.observation.image_keys
            and self.image_encoder == "keypoints"
            and min(size) < KEYPOINTS_MIN_IMAGE_SIZE
        ):
            problems.append(
                f"image_size {size} is too small for the keypoints image encoder: both sides "
                f">= {KEYPOINTS_MIN_IMAGE_SIZE}, or image_encoder 'flatten'"
            )
        for name in ("action_dim", "horizon", "flow_steps"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.hidden_dims:
            problems.append("hidden_dims needs at least one layer width")
        if problems:
            raise ValueError("invalid PolicyConfig: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PolicyConfig:
        """Inverse of dataclasses.asdict; names unknown fields and values of the wrong type."""
        return from_fields(cls, values, prefix="policy.")

    @property
    def state_dim(self) -> int:
        """The length of the state vector the observation spec makes."""
        return self.observation.state_dim


class FlowPolicy(nn.Module):
    """Observation encoders + velocity field + normalisers; see the module docstring.

    encode/decode/sample run without autograd (torch.no_grad) and return ordinary tensors, so
    their outputs can feed another network's training (DSRL); a control loop may wrap them in
    torch.inference_mode. With a fixed noise, (obs, noise) -> chunk is deterministic.
    """

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        self.config = config
        self.state_normaliser = Normaliser(config.state_dim, STATE_MIN_STD)
        self.action_normaliser = Normaliser(config.action_dim, ACTION_MIN_STD)
        self.state_encoder = StateEncoder(
            config.state_dim, config.state_hidden_dims, config.state_feature_dim
        )
        observation = config.observation
        self.image_encoders = nn.ModuleDict(
            {
                key: image_encoder(
                    config.image_encoder,
                    observation.image_size,
                    config.image_feature_dim,
                    config.image_channels,
                )
                for key in observation.image_keys
            }
        )
        # One learned vector per condition index: NULL, NOT_OPTIMAL, OPTIMAL.
        self.condition_embedding = nn.Embedding(3, config.condition_dim)
        self.goal_encoder = (
            mlp(config.state_dim, config.state_hidden_dims, config.condition_dim)
            if config.condition == "goal"
            else None
        )
        self.velocity_field = VelocityField(
            chunk_dim=config.horizon * config.action_dim,
            context_dim=self.feature_dim + config.condition_dim,
            hidden_dims=config.hidden_dims,
            time_dim=config.time_embedding_dim,
        )

    # ----------------------------------------------------------------------------- properties
    @property
    def noise_shape(self) -> tuple[int, int]:
        """(H, A): the shape of one start noise / one action chunk."""
        return (self.config.horizon, self.config.action_dim)

    @property
    def feature_dim(self) -> int:
        """Length of the feature vector encode() returns."""
        cameras = len(self.config.observation.image_keys)
        return self.config.state_feature_dim + self.config.image_feature_dim * cameras

    @property
    def device(self) -> torch.device:
        return self.state_normaliser.mean.device

    # ---------------------------------------------------------------------------- observations
    def inputs_from_observation(
        self, observation: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """An arm observation (cfgrl_ros.observation fields, one tick or a batch) -> encode() input.

        Single-tick observations get a batch axis of one.
        """
        state = self.config.observation.state_vector(observation)
        inputs = {"state": state[None] if state.ndim == 1 else state}
        for key in self.config.observation.image_keys:
            if key not in observation:
                raise ValueError(
                    f"the policy needs camera image {key!r} but the observation has only "
                    f"{sorted(observation)}; enable that camera or use a state-only policy"
                )
            image = np.asarray(observation[key])
            inputs[key] = image[None] if image.ndim == 3 else image
        return inputs

    def _input_tensors(
        self, obs: Mapping[str, np.ndarray | torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Check shapes and move the encode() inputs to the policy's device."""
        needed = ["state", *self.config.observation.image_keys]
        missing = [key for key in needed if key not in obs]
        if missing:
            raise ValueError(f"policy input is missing {missing} (has {sorted(obs)})")
        tensors = {}
        for key in needed:
            value = torch.as_tensor(obs[key], device=self.device)
            if key == "state":
                expected = (self.config.state_dim,)
                value = value.float()
            else:
                expected = (*self.config.observation.image_size, 3)
                if value.dtype != torch.uint8:
                    raise ValueError(f"camera image {key!r} must be uint8 RGB, got {value.dtype}")
            if value.ndim != len(expected) + 1 or tuple(value.shape[1:]) != expected:
                raise ValueError(
                    f"policy input {key!r} has shape {tuple(value.shape)}, expected "
                    f"[batch, {', '.join(map(str, expected))}] (add a batch axis for one sample)"
                )
            tensors[key] = value
        batch_sizes = {key: len(value) for key, value in tensors.items()}
        if len(set(batch_sizes.values())) > 1:
            raise ValueError(f"policy inputs have different batch sizes {batch_sizes}")
        return tensors

    def encode_tensors(
        self,
        inputs: Mapping[str, torch.Tensor],
        shift_pad: int = 0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Encoder features of checked input tensors; shift_pad > 0 augments images (training)."""
        state = self.state_normaliser.normalise(inputs["state"]).clamp(-STATE_CLIP, STATE_CLIP)
        parts = [self.state_encoder(state)]
        for key, encoder in self.image_encoders.items():
            parts.append(encoder(inputs[key], shift_pad, generator))
        return torch.cat(parts, dim=-1)

    @torch.no_grad()
    def encode(self, obs: Mapping[str, np.ndarray | torch.Tensor]) -> torch.Tensor:
        """{"state": [B, state_dim] raw float, camera keys: [B, H, W, 3] uint8} -> [B, feature_dim].

        Deterministic (no augmentation). These are the compact features a noise actor uses.
        """
        return self.encode_tensors(self._input_tensors(obs))

    # ------------------------------------------------------------------------------ velocity
    def context_inputs(
        self, features: torch.Tensor, condition: torch.Tensor, goal: torch.Tensor | None = None
    ) -> torch.Tensor:
        """concat(features, condition vector) for condition indices [B] (and goals [B, S])."""
        condition_vectors = self.condition_embedding(condition)
        if self.goal_encoder is not None and goal is not None:
            goal = self.state_normaliser.normalise(goal).clamp(-STATE_CLIP, STATE_CLIP)
            conditioned = (condition != NULL)[:, None]
            condition_vectors = torch.where(conditioned, self.goal_encoder(goal), condition_vectors)
        return torch.cat([features, condition_vectors], dim=-1)

    def forward(
        self,
        features: torch.Tensor,
        actions_t: torch.Tensor,
        t: torch.Tensor,
        condition: torch.Tensor,
        goal: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """v(a_t, t, s, c) for a batch: actions_t [B, H, A] (flow space), t [B], condition [B]."""
        bias = self.velocity_field.bias(t, self.context_inputs(features, condition, goal))
        return self.velocity_field(actions_t.flatten(1), bias).view(actions_t.shape)

    def _branches(self, guidance_weight: float) -> tuple[int, ...]:
        """Which conditions the guided velocity needs: w = 0 and w = 1 need only one of them."""
        if not math.isfinite(guidance_weight):
            raise ValueError(f"guidance_weight must be a finite number, got {guidance_weight}")
        if self.config.condition == "none" or guidance_weight == 0.0:
            return (NULL,)
        if guidance_weight == 1.0:
            return (OPTIMAL,)
        return (NULL, OPTIMAL)

    def _branch_context_inputs(
        self, features: torch.Tensor, branches: tuple[int, ...], goal: Any
    ) -> torch.Tensor:
        """Context inputs of the branches stacked along the batch: [len(branches) * B, ...]."""
        batch = len(features)
        if goal is not None and self.config.condition != "goal":
            raise ValueError(
                f"a goal was given but this policy is not goal-conditioned (condition "
                f"{self.config.condition!r}); pass goal=None"
            )
        if self.config.condition == "goal" and OPTIMAL in branches:
            if goal is None:
                raise ValueError(
                    "this policy is goal-conditioned: pass goal=[B, state_dim] raw goal states "
                    "(or guidance_weight=0 for the unconditioned policy)"
                )
            goal = torch.as_tensor(goal, dtype=torch.float32, device=self.device)
            if tuple(goal.shape) != (batch, self.config.state_dim):
                raise ValueError(
                    f"goal has shape {tuple(goal.shape)}, expected "
                    f"({batch}, {self.config.state_dim})"
                )
            goal = goal.repeat(len(branches), 1)
        else:
            goal = None
        condition = torch.tensor(branches, device=self.device).repeat_interleave(batch)
        return self.context_inputs(features.repeat(len(branches), 1), condition, goal)

    def _guided(
        self,
        actions_t: torch.Tensor,
        bias: torch.Tensor,
        n_branches: int,
        guidance_weight: float,
    ) -> torch.Tensor:
        # v = v_null + w (v_cond - v_null), both terms from ONE batched forward pass.
        velocity = self.velocity_field(actions_t.repeat(n_branches, 1), bias)
        if n_branches == 1:
            return velocity
        v_null, v_cond = velocity.chunk(2)
        return v_null + guidance_weight * (v_cond - v_null)

    def _check_features(self, features: torch.Tensor | np.ndarray) -> torch.Tensor:
        features = torch.as_tensor(features, dtype=torch.float32, device=self.device)
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise ValueError(
                f"features have shape {tuple(features.shape)}, expected "
                f"[batch, {self.feature_dim}] (the output of encode())"
            )
        return features

    @torch.no_grad()
    def guided_velocity(
        self,
        features: torch.Tensor,
        actions_t: torch.Tensor,
        t: float,
        guidance_weight: float,
        goal: Any = None,
    ) -> torch.Tensor:
        """The velocity decode() integrates, at flow-space actions_t [B, H, A] and time t."""
        features = self._check_features(features)
        branches = self._branches(float(guidance_weight))
        context_inputs = self._branch_context_inputs(features, branches, goal)
        bias = self.velocity_field.bias(torch.tensor(float(t), device=self.device), context_inputs)
        velocity = self._guided(actions_t.flatten(1), bias, len(branches), guidance_weight)
        return velocity.view(actions_t.shape)

    # -------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def decode(
        self,
        features: torch.Tensor | np.ndarray,
        noise: torch.Tensor | np.ndarray | None = None,
        guidance_weight: float = 1.0,
        steps: int | None = None,
        goal: torch.Tensor | np.ndarray | None = None,
    ) -> torch.Tensor:
        """Features [B, feature_dim] + start noise [B, H, A] -> action chunks [B, H, A] in [-1, 1].

        K Euler steps a <- a + v(a, i/K) / K from a = noise (N(0, I) when None) with the guided
        velocity; then un-normalised to env action units and clipped to [-1, 1]. A policy
        trained without conditions (condition "none": BC, AWR) has one velocity and ignores
        guidance_weight. A goal-conditioned policy needs goal [B, state_dim] (raw states).
        """
        features = self._check_features(features)
        batch = len(features)
        steps = self.config.flow_steps if steps is None else int(steps)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if noise is None:
            noise = torch.randn(batch, *self.noise_shape, device=self.device)
        noise = torch.as_tensor(noise, dtype=torch.float32, device=self.device)
        if tuple(noise.shape) != (batch, *self.noise_shape):
            raise ValueError(
                f"noise has shape {tuple(noise.shape)}, expected ({batch}, "
                f"{self.config.horizon}, {self.config.action_dim})"
            )
        guidance_weight = float(guidance_weight)
        branches = self._branches(guidance_weight)
        context_inputs = self._branch_context_inputs(features, branches, goal)
        times = torch.arange(steps, device=self.device, dtype=torch.float32) / steps
        bias = self.velocity_field.bias(times[:, None], context_inputs)  # [K, branches * B, width]
        actions = noise.flatten(1)
        for i in range(steps):
            velocity = self._guided(actions, bias[i], len(branches), guidance_weight)
            actions = actions + velocity / steps
        actions = self.action_normaliser.unnormalise(actions.view(batch, *self.noise_shape))
        return actions.clamp(-1.0, 1.0)

    def sample(
        self,
        obs: Mapping[str, np.ndarray | torch.Tensor],
        noise: torch.Tensor | np.ndarray | None = None,
        guidance_weight: float = 1.0,
        steps: int | None = None,
        goal: torch.Tensor | np.ndarray | None = None,
    ) -> torch.Tensor:
        """decode(encode(obs), noise, guidance_weight, steps, goal): action chunks [B, H, A]."""
        return self.decode(self.encode(obs), noise, guidance_weight, steps, goal)

    # ----------------------------------------------------------------------------- checkpoint
    def save(self, path: str | Path) -> None:
        """One file: format version, config, weights and normalisers; written atomically."""
        save_model(self, self.config, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, path)

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | torch.device = "auto",
        expected_noise_shape: Sequence[int] | None = None,
    ) -> FlowPolicy:
        """Load a checkpoint written by save(); device 'auto', 'cpu' or 'cuda'.

        Raises ValueError naming every dimension that does not match this build (state_dim,
        action_dim), the caller's expected_noise_shape (H, A), or the stored weights.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no policy checkpoint at {path}")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch's texts for foreign files are long or cryptic ("101")
            raise ValueError(
                f"{path} is not a readable policy checkpoint (torch cannot load it: "
                f"{type(error).__name__}); pass a file written by `cfgrl-ros pretrain`"
            ) from error
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a cfgrl_ros flow policy checkpoint")
        if payload.get("format_version") not in (1, CHECKPOINT_VERSION):
            raise ValueError(
                f"{path} has checkpoint format version {payload.get('format_version')}, this "
                f"build reads versions 1 to {CHECKPOINT_VERSION}; retrain with `cfgrl-ros pretrain`"
            )
        values, weights = payload.get("config"), payload.get("state_dict")
        if not (
            isinstance(values, Mapping)
            and isinstance(weights, Mapping)
            and all(isinstance(value, torch.Tensor) for value in weights.values())
        ):
            raise ValueError(
                f"{path} is not a cfgrl_ros flow policy checkpoint (it lacks the config or the "
                "weights)"
            )
        try:
            if payload["format_version"] == 1:
                values = _version_1_config(values)
            config = PolicyConfig.from_dict(values)
        except ValueError as error:
            raise ValueError(f"policy checkpoint {path} has an invalid config: {error}") from None
        problems = []
        if config.action_dim != ACTION_DIM:
            problems.append(
                f"checkpoint has action_dim {config.action_dim}, this build expects {ACTION_DIM}"
            )
        if expected_noise_shape is not None and tuple(expected_noise_shape) != (
            config.horizon,
            config.action_dim,
        ):
            expected = "x".join(map(str, expected_noise_shape))
            problems.append(
                f"checkpoint has action chunk {config.horizon}x{config.action_dim}, "
                f"expected {expected}"
            )
        policy = cls(config)
        problems += _state_dict_mismatches(policy.state_dict(), weights)
        if problems:
            raise ValueError(f"policy checkpoint {path} does not fit: " + "; ".join(problems))
        # inf or NaN weights (a diverged training) would fail far downstream, naming no file.
        non_finite = sorted(key for key, value in weights.items() if not value.isfinite().all())
        if non_finite:
            raise ValueError(
                f"policy checkpoint {path} has inf or NaN weights ({len(non_finite)} of "
                f"{len(weights)} tensors, e.g. {non_finite[0]}): its training diverged; retrain "
                "it with a lower learning_rate"
            )
        policy.load_state_dict(weights)
        return policy.to(resolve_device(device)).eval()


def _version_1_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """A version-1 config (flat camera fields; the state was every field) in version 2's terms."""
    values = dict(values)
    state_dim = values.pop("state_dim", STATE_DIM)  # version 1's state was every field
    if state_dim != STATE_DIM:
        raise ValueError(f"checkpoint has state_dim {state_dim}, this build expects {STATE_DIM}")
    if not values.pop("use_state", True):
        raise ValueError("it reads cameras without any state, which this build no longer runs")
    keys, size = values.pop("image_keys", []), values.pop("image_size", None)
    values["observation"] = {"image_keys": keys, "image_size": size if keys else None}
    return values


def _state_dict_mismatches(
    expected: Mapping[str, torch.Tensor], stored: Mapping[str, torch.Tensor]
) -> list[str]:
    """Human-readable differences between the weights a config builds and those stored."""
    problems = []
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    if missing:
        problems.append(f"weights missing from the checkpoint: {missing}")
    if unexpected:
        problems.append(f"weights in the checkpoint that this config does not build: {unexpected}")
    for key in sorted(set(expected) & set(stored)):
        if tuple(expected[key].shape) != tuple(stored[key].shape):
            problems.append(
                f"weight {key} has shape {tuple(stored[key].shape)} in the checkpoint, the "
                f"config builds {tuple(expected[key].shape)}"
            )
    return problems
