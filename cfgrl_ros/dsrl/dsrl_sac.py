"""DSRL-SAC: stable-baselines3's SAC acting in the frozen policy's noise space.

docs/algorithms.md section 3. The frozen sampler is part of the environment; the agent's action is
a in [-1, 1]^D and the start noise is w0 = magnitude * a. SB3's SAC already squashes its Gaussian
with tanh, so this is w0 = magnitude * tanh(u). Everything else is stock SAC (twin critics,
learned entropy coefficient, polyak targets), with three DSRL choices:

- MLPs with LayerNorm after every hidden linear layer (actor and critics);
- target entropy 0 instead of SB3's -dim(A) (the noise space is large; the actor keeps
  exploring instead of collapsing early);
- the warm-up ("prefill") decisions use base-policy noise w0 ~ N(0, I), not SB3's uniform
  actions, so the first transitions are what the pretrained policy would do. The actor cannot
  produce noise beyond +-magnitude, so prefill noise is clipped there: what is stored is exactly
  what was executed.

Its transitions are (s, w0, r, s'): it cannot learn from actions no noise produced. Recorded
demonstrations and an operator's interventions (a takeover in the ROS graph, `adapt --operator
scripted`) are therefore left out (`NoiseAgent.add_transition`); DSRL-NA learns from them.

The classes work both with `learn()` on a `NoiseSpaceEnv` (the usual SB3 way) and without any
environment through `for_spaces()` (decisions arriving as messages: see `agent.NoiseAgent`).
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy, ContinuousCritic
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, create_mlp
from stable_baselines3.sac.policies import Actor, SACPolicy
from torch import nn

from cfgrl_ros.dsrl.noise_space import NoiseSpace
from cfgrl_ros.dsrl.replay import DecisionReplayBuffer

AlgorithmType = TypeVar("AlgorithmType", bound="DsrlSac")


class LayerNormActor(Actor):
    """SB3's SAC actor with LayerNorm after each hidden linear layer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        hidden = create_mlp(
            self.features_dim,
            -1,
            self.net_arch,
            self.activation_fn,
            post_linear_modules=[nn.LayerNorm],
        )
        self.latent_pi = nn.Sequential(*hidden)


class LayerNormCritic(ContinuousCritic):
    """SB3's twin Q-networks with LayerNorm after each hidden linear layer."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        n_critics: int = 2,
        share_features_extractor: bool = True,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            net_arch,
            features_extractor,
            features_dim,
            activation_fn,
            normalize_images,
            n_critics,
            share_features_extractor,
        )
        input_dim = features_dim + get_action_dim(action_space)
        self.q_networks = []
        for index in range(n_critics):
            layers = create_mlp(
                input_dim, 1, net_arch, activation_fn, post_linear_modules=[nn.LayerNorm]
            )
            q_network = nn.Sequential(*layers)
            self.add_module(f"qf{index}", q_network)  # replaces the plain MLP of the same name
            self.q_networks.append(q_network)


class DsrlPolicy(SACPolicy):
    """SACPolicy whose MLPs have LayerNorm (layer_norm=True, the default)."""

    def __init__(self, *args: Any, layer_norm: bool = True, **kwargs: Any) -> None:
        self.layer_norm = layer_norm  # read by make_actor/make_critic during super().__init__
        super().__init__(*args, **kwargs)

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> Actor:
        if not self.layer_norm:
            return super().make_actor(features_extractor)
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return LayerNormActor(**actor_kwargs).to(self.device)

    def make_critic(
        self, features_extractor: BaseFeaturesExtractor | None = None
    ) -> ContinuousCritic:
        return self.make_critic_over(self.action_space, features_extractor)

    def make_critic_over(
        self, action_space: spaces.Box, features_extractor: BaseFeaturesExtractor | None = None
    ) -> ContinuousCritic:
        """Twin Q-networks Q(s, x) for x in `action_space`."""
        critic_kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        critic_kwargs["action_space"] = action_space
        critic_class = LayerNormCritic if self.layer_norm else ContinuousCritic
        return critic_class(**critic_kwargs).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data["layer_norm"] = self.layer_norm
        return data


class DsrlSac(SAC):
    """SAC over start noise. `noise_space` defines a <-> w0; see the module docstring.

    Extra parameter: noise_space (NoiseSpace), needed for the base-policy prefill. Other
    parameters are SAC's; the defaults differ in replay_buffer_class (DecisionReplayBuffer).
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": DsrlPolicy}

    def __init__(
        self,
        policy: str | type[SACPolicy],
        env: Any,
        noise_space: NoiseSpace | None = None,
        **sac_kwargs: Any,
    ) -> None:
        self.noise_space = noise_space
        sac_kwargs.setdefault("replay_buffer_class", DecisionReplayBuffer)
        super().__init__(policy, env, **sac_kwargs)

    @classmethod
    def for_spaces(
        cls: type[AlgorithmType],
        observation_space: spaces.Box,
        action_space: spaces.Box,
        **kwargs: Any,
    ) -> AlgorithmType:
        """An agent without an environment: transitions are added to its replay buffer by hand.

        Its logger keeps the last training values (`logger.name_to_value`) and writes nothing.
        """
        model = cls("MlpPolicy", None, _init_setup_model=False, **kwargs)
        model.observation_space = observation_space
        model.action_space = action_space
        model.n_envs = 1
        model._setup_model()
        model.set_logger(Logger(folder=None, output_formats=[]))
        return model

    def base_actions(self, count: int) -> np.ndarray:
        """Agent actions [count, dim] of base-policy noise w0 ~ N(0, I), clipped to the range."""
        if self.noise_space is None:
            raise ValueError("this agent has no noise_space; pass noise_space= when creating it")
        noise = self.noise_space.base_noise(count).numpy()
        return self.noise_space.action_from_noise(noise)

    def _sample_action(
        self,
        learning_starts: int,
        action_noise: ActionNoise | None = None,
        n_envs: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.num_timesteps < learning_starts:
            # Prefill with the base policy instead of SB3's uniform actions.
            actions = self.base_actions(n_envs)
            return actions, actions
        return super()._sample_action(learning_starts, action_noise, n_envs)
