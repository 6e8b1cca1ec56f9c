"""The noise-space MDP of DSRL: the agent's action is the frozen policy's start noise.

docs/algorithms.md section 3. A frozen flow policy decodes (s, w0) -> a chunk deterministically,
so the policy can be treated as part of the environment and an RL agent can choose w0 instead of
the action. `NoiseSpace` converts between the agent's action a in [-1, 1]^D and the start noise
w0 = magnitude * a of shape (H, A); `NoiseSpaceEnv` turns any arm environment into the
noise-space environment.

Noise modes:
- "full": one independent noise vector per chunk step, D = H * A (the safe default);
- "shared": one A-dimensional vector repeated over the chunk, D = A (a smaller search space).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from cfgrl_ros.data.episode import ACTION_DIM

NOISE_MODES = ("full", "shared")


class FrozenPolicy(Protocol):
    """What DSRL needs from a flow policy (`cfgrl_ros.policy.FlowPolicy` provides it).

    decode() is deterministic for a given noise and runs without autograd.
    """

    noise_shape: tuple[int, int]
    feature_dim: int
    device: torch.device

    def inputs_from_observation(self, observation: Mapping[str, np.ndarray]) -> dict[str, Any]: ...

    def encode(self, obs: Mapping[str, Any]) -> torch.Tensor: ...

    def decode(
        self,
        features: torch.Tensor,
        noise: torch.Tensor | None,
        guidance_weight: float,
        steps: int | None = None,
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class NoiseSpace:
    """The agent's action space over the start noise of a policy with chunks (horizon, action_dim).

    The agent acts with a in [-1, 1]^dim (SB3's SAC squashes with tanh, so a = tanh(u)); the noise
    is w0 = magnitude * a, reshaped (full) or repeated (shared) to (horizon, action_dim).
    """

    horizon: int
    action_dim: int
    magnitude: float = 1.5
    mode: str = "full"

    def __post_init__(self) -> None:
        if self.mode not in NOISE_MODES:
            raise ValueError(f"noise mode {self.mode!r} is not one of {NOISE_MODES}")
        if self.horizon < 1 or self.action_dim < 1:
            raise ValueError(
                f"noise shape ({self.horizon}, {self.action_dim}) must be positive in both sizes"
            )
        if not self.magnitude > 0:
            raise ValueError(f"noise magnitude must be > 0, got {self.magnitude}")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.horizon, self.action_dim)

    @property
    def dim(self) -> int:
        """Dimension of the agent's action."""
        return self.horizon * self.action_dim if self.mode == "full" else self.action_dim

    def action_space(self) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, shape=(self.dim,), dtype=np.float32)

    def noise_from_action(self, action: np.ndarray) -> np.ndarray:
        """Start noise [..., H, A] (float32) for agent actions [..., dim]."""
        action = np.asarray(action, dtype=np.float32)
        self._check_action(action.shape)
        noise = self.magnitude * np.clip(action, -1.0, 1.0)
        if self.mode == "full":
            return noise.reshape(*noise.shape[:-1], *self.shape)
        return np.repeat(noise[..., None, :], self.horizon, axis=-2)

    def noise_from_action_tensor(self, action: torch.Tensor) -> torch.Tensor:
        """`noise_from_action` for torch tensors [B, dim] (no clipping: SAC's are in [-1, 1])."""
        self._check_action(tuple(action.shape))
        noise = self.magnitude * action
        if self.mode == "full":
            return noise.reshape(*noise.shape[:-1], *self.shape)
        return noise[..., None, :].expand(*noise.shape[:-1], *self.shape)

    def action_from_noise(self, noise: np.ndarray) -> np.ndarray:
        """The agent action [..., dim] that reproduces noise [..., H, A] as closely as it can.

        Noise beyond +-magnitude is clipped (the actor cannot produce it); in shared mode the
        first chunk step's vector is used, which is exact for noise this space produced.
        """
        noise = np.asarray(noise, dtype=np.float32)
        if noise.shape[-2:] != self.shape:
            raise ValueError(f"noise has shape {noise.shape}, expected (..., {self.shape})")
        action = np.clip(noise / self.magnitude, -1.0, 1.0)
        if self.mode == "full":
            return action.reshape(*action.shape[:-2], self.dim)
        return action[..., 0, :]

    def action_from_noise_tensor(self, noise: torch.Tensor) -> torch.Tensor:
        """noise [B, H, A] / magnitude as agent coordinates [B, dim], unclipped.

        For critics over noise: N(0, I) noise reaches a little beyond the actor's +-1 range and
        a critic can be taught there too.
        """
        scaled = noise / self.magnitude
        if self.mode == "full":
            return scaled.reshape(len(noise), self.dim)
        return scaled[:, 0, :]

    def base_noise(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """w0 ~ N(0, I) as [batch, H, A]: the base policy's noise, with this mode's structure.

        Full: independent everywhere. Shared: one N(0, I) vector per sample, repeated over the
        chunk. Not clipped: this is what the frozen policy was trained to decode.
        """
        rows = self.horizon if self.mode == "full" else 1
        noise = torch.randn(batch, rows, self.action_dim, device=device)
        return noise.expand(batch, self.horizon, self.action_dim)

    def _check_action(self, shape: tuple[int, ...]) -> None:
        if len(shape) == 0 or shape[-1] != self.dim:
            raise ValueError(
                f"noise action has shape {shape}, expected (..., {self.dim}) for {self.mode} noise "
                f"over chunks {self.shape}"
            )


class Operator(Protocol):
    """Someone who may drive whole decisions instead of the policy (a scripted operator)."""

    def reset(self, obs: dict[str, np.ndarray]) -> None:
        """An episode starts at `obs`."""

    def drives(self, obs: dict[str, np.ndarray]) -> bool:
        """Whether the operator drives the decision that starts at `obs`."""

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The operator's normalised action (7,) at `obs`."""


class NoiseSpaceEnv(gym.Env):
    """An arm environment seen through a frozen policy: act with start noise, not actions.

    The wrapped env takes normalised 7-d actions and returns observation dicts (the fields of
    `cfgrl_ros.observation`). Each step of this env is one decision: the noise is decoded into a
    chunk (H, 7) at the current guidance weight, its first `exec_horizon` actions are executed
    (fewer if the episode ends), and the rewards of the executed ticks are summed. The agent's
    observation is the policy's `encode` features, so image policies need no second encoder.

    With an `operator` (None: none), each decision first asks it whether it drives; if so its
    actions are executed instead of a decoded chunk (nothing is decoded), as when an operator
    takes over a real arm (cfgrl_ros.control.decision_loop).

    `info` of every step: "noise" (H, A) the start noise given, "chunk" (H, A) the chunk as
    executed (the decoded one; the operator's actions, the last repeated, when it drove),
    "executed_chunk" (exec_horizon, A) the part chosen for execution (what DSRL-NA's Q^A sees),
    "operator_ticks" the ticks the operator drove,
    "ticks" the control ticks executed (a per-tick discount gamma_tick becomes gamma_tick ** ticks
    per decision; the agents here discount once per decision), "is_success" whether the episode
    ended in success during this decision, and the wrapped env's last info under "env_info".
    """

    metadata = {"render_modes": []}  # noqa: RUF012 (gymnasium's convention)

    def __init__(
        self,
        env: gym.Env,
        policy: FrozenPolicy,
        guidance_weight: float,
        noise_mode: str = "full",
        magnitude: float = 1.5,
        exec_horizon: int = 4,
        decode_steps: int | None = None,
        operator: Operator | None = None,
    ) -> None:
        horizon, action_dim = policy.noise_shape
        if action_dim != ACTION_DIM:
            raise ValueError(f"policy actions have {action_dim} dims, the arm takes {ACTION_DIM}")
        if not 1 <= exec_horizon <= horizon:
            raise ValueError(f"exec_horizon {exec_horizon} must be in [1, chunk horizon {horizon}]")
        self.env = env
        self.policy = policy
        self.guidance_weight = float(guidance_weight)
        self.noise_space = NoiseSpace(horizon, action_dim, magnitude, noise_mode)
        self.exec_horizon = exec_horizon
        self.decode_steps = decode_steps
        self.action_space = self.noise_space.action_space()
        self.observation_space = spaces.Box(
            -np.inf, np.inf, shape=(policy.feature_dim,), dtype=np.float32
        )
        self.operator = operator
        self._features: np.ndarray | None = None
        self._obs: dict[str, np.ndarray] = {}

    def encode(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The agent's observation: the frozen policy's features of one observation dict."""
        with torch.no_grad():
            features = self.policy.encode(self.policy.inputs_from_observation(obs))
        return features[0].detach().cpu().numpy().astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        obs, info = self.env.reset(seed=seed, options=options)
        self._obs = obs
        if self.operator is not None:
            self.operator.reset(obs)
        self._features = self.encode(obs)
        return self._features, {"env_info": info}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One decision with agent action a in [-1, 1]^dim, i.e. noise magnitude * a."""
        return self.step_noise(self.noise_space.noise_from_action(action))

    def step_noise(
        self, noise: np.ndarray | None
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One decision with raw start noise (H, A); None draws w0 ~ N(0, I): the base policy."""
        if self._features is None:
            raise RuntimeError("call reset() before step()")
        if noise is None:
            noise = self.sample_base_noise()
        noise = np.asarray(noise, dtype=np.float32)
        if noise.shape != self.noise_space.shape:
            raise ValueError(f"noise has shape {noise.shape}, expected {self.noise_space.shape}")
        by_operator = self.operator is not None and self.operator.drives(self._obs)
        chunk = None if by_operator else self.decode(self._features, noise)
        total_reward = 0.0
        terminated = truncated = False
        ticks = 0
        env_info: dict[str, Any] = {}
        obs = self._obs
        executed = []  # the operator's actions (a decoded chunk is already whole)
        for tick in range(self.exec_horizon):
            action = self.operator.act(obs) if by_operator else chunk[tick]
            if by_operator:
                executed.append(np.asarray(action, dtype=np.float32))
            obs, reward, terminated, truncated, env_info = self.env.step(action)
            total_reward += float(reward)
            ticks += 1
            if terminated or truncated:
                break
        if by_operator:  # rows after the last executed one repeat it
            rows = self.noise_space.shape[0] - len(executed)
            chunk = np.concatenate([executed, np.repeat(executed[-1:], rows, axis=0)])
        self._obs = obs
        self._features = self.encode(obs)
        info = {
            "noise": noise,
            "chunk": chunk,
            "executed_chunk": chunk[: self.exec_horizon],
            "operator_ticks": ticks if by_operator else 0,
            "ticks": ticks,
            "is_success": bool(env_info.get("success", terminated)),
            "env_info": env_info,
        }
        return self._features, total_reward, bool(terminated), bool(truncated), info

    def sample_base_noise(self) -> np.ndarray:
        """w0 ~ N(0, I) of shape (H, A), from this env's generator (seeded by reset(seed))."""
        return self.np_random.standard_normal(self.noise_space.shape).astype(np.float32)

    def decode(self, features: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """The chunk (H, A) the frozen policy decodes from one feature vector and noise."""
        with torch.no_grad():
            device = self.policy.device
            chunk = self.policy.decode(
                torch.as_tensor(features[None], device=device),
                torch.as_tensor(noise[None], device=device),
                self.guidance_weight,
                steps=self.decode_steps,
            )
        return chunk[0].detach().cpu().numpy().astype(np.float32)

    def close(self) -> None:
        self.env.close()
