"""DSRL-NA (noise-aliased DSRL): critics over actions, distilled into noise space.

docs/algorithms.md section 3, as a subclass of stable-baselines3's SAC. Notation: s features of the
frozen policy's encoder, w0 start noise, pi_dp(s, w0) the frozen policy's decoded chunk, a the
part of a chunk chosen for execution (its first exec_horizon actions: all that affects what
happens next), pi^W the noise actor.

1. Q^A(s, a), twin critics with polyak targets, trained by TD on transitions that hold the
   executed actions (online decisions, base-policy prefill or recorded episodes alike):
       y = r + gamma (1 - d) [min_i Qbar^A_i(s', a') - alpha log pi^W(w'|s')],
       w' ~ pi^W(s'),  a' = pi_dp(s', w')
2. Q^W(s, w0), twin critics, distilled from Q^A on base noise:
       w0 ~ N(0, I),  a = pi_dp(s, w0),  loss = sum_i (Q^W_i(s, w0) - Q^A_i(s, a))^2
   Many w0 decode to the same a ("aliasing"); each of them gets that value at once.
3. The actor maximises min_i Q^W_i(s, w0) + b log N(w0; 0, I) - alpha log pi^W(w0|s),
   w0 ~ pi^W(s) (SAC's actor loss on Q^W), with the entropy coefficient alpha tuned as in SAC.
   b = noise_prior_weight (0: as published) is a prior on the noise: N(0, I) noise in many
   dimensions lies on a shell far from the centre, so neither critic has seen what the centre
   decodes to, and without b their errors there move the actor wherever they point. With b the
   actor leaves the base noise's mode (w0 = 0) only as far as Q^W pays for it.

pi_dp is only ever called inside torch.no_grad: no gradient goes through the frozen policy.

A change of guidance weight changes pi_dp. Q^A stays valid (it is over actions), but Q^W
describes the old decoder, so `set_guidance_weight` schedules `redistill_updates` updates that
train only Q^W before Q^A and the actor are trained again.

Roles of SB3's attributes: `critic` / `critic_target` are Q^A (over executed chunks, the TD
critic, so SB3's target-network machinery applies unchanged); `noise_critic` is Q^W (over the
agent's noise action); `actor` is pi^W. The replay buffer's "actions" are executed chunks.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.policies import BasePolicy, ContinuousCritic
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.utils import polyak_update
from torch.nn import functional as F

from cfgrl_ros.dsrl.dsrl_sac import DsrlPolicy, DsrlSac
from cfgrl_ros.dsrl.noise_space import FrozenPolicy
from cfgrl_ros.dsrl.replay import DecisionReplayBuffer


class NoiseAliasedPolicy(DsrlPolicy):
    """Actor pi^W over noise, TD critic Q^A (+ target) over executed chunks of `chunk_dim`
    numbers, and the distilled noise critic Q^W."""

    def __init__(self, *args: Any, chunk_dim: int, **kwargs: Any) -> None:
        self.chunk_space = spaces.Box(-1.0, 1.0, shape=(chunk_dim,), dtype=np.float32)
        super().__init__(*args, **kwargs)

    def make_critic(
        self, features_extractor: BaseFeaturesExtractor | None = None
    ) -> ContinuousCritic:
        """Q^A: SAC's critic (and its target), over executed chunks."""
        return self.make_critic_over(self.chunk_space, features_extractor)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        self.noise_critic = self.make_critic_over(self.action_space)  # Q^W over noise
        self.noise_critic.optimizer = self.optimizer_class(
            self.noise_critic.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )

    def set_training_mode(self, mode: bool) -> None:
        super().set_training_mode(mode)
        self.noise_critic.set_training_mode(mode)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data["chunk_dim"] = self.chunk_space.shape[0]
        return data


class DsrlNa(DsrlSac):
    """DSRL-NA on SB3's SAC; see the module docstring.

    Extra parameters: frozen_policy (decodes noise into chunks; not saved with the agent, pass
    it again to `load`), guidance_weight, exec_horizon (executed actions per decision: Q^A's
    input is exec_horizon x action_dim), decode_steps (Euler steps, None: the policy's
    default), redistill_updates (Q^W-only updates after a guidance weight change),
    noise_prior_weight (b of the actor's objective).
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": NoiseAliasedPolicy}
    noise_critic: ContinuousCritic

    def __init__(
        self,
        policy: str | type[NoiseAliasedPolicy],
        env: Any,
        frozen_policy: FrozenPolicy | None = None,
        guidance_weight: float = 1.0,
        exec_horizon: int = 4,
        decode_steps: int | None = None,
        redistill_updates: int = 500,
        noise_prior_weight: float = 0.0,
        **kwargs: Any,
    ) -> None:
        self.frozen_policy = frozen_policy
        self.guidance_weight = float(guidance_weight)
        self.exec_horizon = exec_horizon
        self.decode_steps = decode_steps
        self.redistill_updates = redistill_updates
        self.noise_prior_weight = noise_prior_weight
        self.distillation_updates_due = 0
        super().__init__(policy, env, **kwargs)

    @property
    def chunk_dim(self) -> int:
        """Numbers in one executed chunk: Q^A's action input."""
        if self.noise_space is None:
            raise ValueError("this agent has no noise_space; pass noise_space= when creating it")
        return self.exec_horizon * self.noise_space.action_dim

    def _setup_model(self) -> None:
        self.policy_kwargs["chunk_dim"] = self.chunk_dim
        if self.replay_buffer is None:
            # The buffer holds executed chunks, not noise: create it before SB3 would.
            self.replay_buffer = DecisionReplayBuffer(
                self.buffer_size,
                self.observation_space,
                spaces.Box(-1.0, 1.0, shape=(self.chunk_dim,), dtype=np.float32),
                device=self.device,
                n_envs=self.n_envs,
            )
        super()._setup_model()

    def _create_aliases(self) -> None:
        super()._create_aliases()
        self.noise_critic = self.policy.noise_critic

    # ------------------------------------------------------------------ guidance weight

    def set_guidance_weight(self, guidance_weight: float) -> None:
        """Decode with a new w from now on; Q^W is re-distilled before the actor trusts it."""
        guidance_weight = float(guidance_weight)
        if guidance_weight == self.guidance_weight:
            return
        self.guidance_weight = guidance_weight
        if self._n_updates > 0:  # an untrained Q^W has nothing stale in it
            self.distillation_updates_due = self.redistill_updates

    # ------------------------------------------------------------------ training

    def decode(self, features: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Executed chunks [B, exec_horizon * A] that pi_dp decodes from (s, w0); no autograd."""
        if self.frozen_policy is None:
            raise ValueError("DSRL-NA needs the frozen policy: pass frozen_policy= (also to load)")
        device = self.frozen_policy.device
        with torch.no_grad():
            chunks = self.frozen_policy.decode(
                features.to(device),
                noise.to(device),
                self.guidance_weight,
                steps=self.decode_steps,
            )
        return chunks[:, : self.exec_horizon].reshape(len(chunks), -1).to(self.device)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        assert self.replay_buffer is not None and self.noise_space is not None
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer, self.noise_critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers.append(self.ent_coef_optimizer)
        self._update_learning_rate(optimizers)

        logs: dict[str, list[float]] = {}
        for _ in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            observations = data.observations
            base_noise = self.noise_space.base_noise(batch_size, self.device)

            if self.distillation_updates_due > 0:
                # Re-distillation after a guidance weight change: Q^W only.
                distill_actions = self.decode(observations, base_noise)
                self._distill(observations, base_noise, distill_actions, logs)
                self.distillation_updates_due -= 1
                continue

            # Entropy coefficient, as in SAC: alpha <- alpha - lr * d/dalpha[-alpha (log pi + H)].
            actions_pi, log_prob = self.actor.action_log_prob(observations)
            log_prob = log_prob.reshape(-1, 1)
            if self.ent_coef_optimizer is not None and self.log_ent_coef is not None:
                ent_coef = torch.exp(self.log_ent_coef.detach())
                ent_coef_loss = -(self.log_ent_coef * (log_prob + self.target_entropy).detach())
                self.ent_coef_optimizer.zero_grad()
                ent_coef_loss.mean().backward()
                self.ent_coef_optimizer.step()
                _append(logs, "ent_coef_loss", ent_coef_loss.mean().item())
            else:
                ent_coef = self.ent_coef_tensor
            _append(logs, "ent_coef", ent_coef.item())

            with torch.no_grad():
                # One decode for both uses: a' = pi_dp(s', w'), w' ~ pi^W(s'), for the TD target,
                # and a = pi_dp(s, w0), w0 ~ N(0, I), for the distillation.
                next_actions_pi, next_log_prob = self.actor.action_log_prob(data.next_observations)
                next_noise = self.noise_space.noise_from_action_tensor(next_actions_pi)
                decoded = self.decode(
                    torch.cat([data.next_observations, observations]),
                    torch.cat([next_noise, base_noise]),
                )
                next_chunks, distill_actions = decoded.split(batch_size)
                # y = r + gamma (1 - d) [min_i Qbar^A_i(s', a') - alpha log pi^W(w'|s')]
                next_q = torch.cat(self.critic_target(data.next_observations, next_chunks), dim=1)
                next_q = next_q.min(dim=1, keepdim=True).values
                next_q = next_q - ent_coef * next_log_prob.reshape(-1, 1)
                discounts = data.discounts if data.discounts is not None else self.gamma
                target_q = data.rewards + (1 - data.dones) * discounts * next_q

            # Q^A: 1/2 sum_i (Q^A_i(s, a) - y)^2 on the executed chunks of the buffer.
            current_q = self.critic(observations, data.actions)
            critic_loss = 0.5 * sum(F.mse_loss(q, target_q) for q in current_q)
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()
            _append(logs, "critic_loss", critic_loss.item())
            _append(logs, "q_action", current_q[0].mean().item())

            self._distill(observations, base_noise, distill_actions, logs)

            # Actor: mean(alpha log pi^W(w0|s) - min_i Q^W_i(s, w0) - b log N(w0; 0, I)),
            # w0 ~ pi^W(s), where -log N(w0; 0, I) = |w0|^2 / 2 + const.
            q_pi = torch.cat(self.noise_critic(observations, actions_pi), dim=1)
            # The agent's own coordinates: the whole noise (full), or the one shared vector
            # whose base distribution is N(0, I) (shared: not its H repeats).
            noise_pi = self.noise_space.magnitude * actions_pi
            prior_cost = 0.5 * noise_pi.pow(2).sum(dim=1, keepdim=True)
            actor_loss = (
                ent_coef * log_prob
                - q_pi.min(dim=1, keepdim=True).values
                + self.noise_prior_weight * prior_cost
            ).mean()
            self.actor.optimizer.zero_grad()
            actor_loss.backward()
            self.actor.optimizer.step()
            _append(logs, "actor_loss", actor_loss.item())
            _append(logs, "actor_noise_norm", noise_pi.norm(dim=1).mean().item())

            polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)

        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for key, values in logs.items():
            self.logger.record(f"train/{key}", float(np.mean(values)))

    def _distill(
        self,
        observations: torch.Tensor,
        noise: torch.Tensor,
        decoded_actions: torch.Tensor,
        logs: dict[str, list[float]],
    ) -> None:
        """Q^W: 1/2 sum_i (Q^W_i(s, w0) - Q^A_i(s, pi_dp(s, w0)))^2 with w0 ~ N(0, I)."""
        with torch.no_grad():
            targets = self.critic(observations, decoded_actions)
        noise_actions = self.noise_space.action_from_noise_tensor(noise)
        predictions = self.noise_critic(observations, noise_actions)
        distill_loss = 0.5 * sum(
            F.mse_loss(prediction, target)
            for prediction, target in zip(predictions, targets, strict=True)
        )
        self.noise_critic.optimizer.zero_grad()
        distill_loss.backward()
        self.noise_critic.optimizer.step()
        _append(logs, "distill_loss", distill_loss.item())

    # ------------------------------------------------------------------ SB3 hooks

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray,
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        # learn() on a NoiseSpaceEnv: Q^A learns from what was executed, not from the noise.
        chunks = np.stack([np.asarray(info["executed_chunk"]).reshape(-1) for info in infos])
        super()._store_transition(replay_buffer, chunks, new_obs, reward, dones, infos)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "frozen_policy"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        return [*state_dicts, "noise_critic.optimizer"], variables


def _append(logs: dict[str, list[float]], key: str, value: float) -> None:
    logs.setdefault(key, []).append(value)
