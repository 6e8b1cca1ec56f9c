"""Target policies whose likelihood guides the trajectory model (docs/algorithms.md section 4).

Policy guidance needs grad_a log pi(a | s) of the policy the synthetic experience should follow.
The package's targets are deterministic given their noise (a frozen flow policy decoding a
fixed start noise, possibly chosen by a DSRL noise actor), so the target is a Gaussian around
the target action mu(s), as the PGD paper does for deterministic actors:
    log pi(a | s) = -1/2 sum_i ((a_i - mu_i(s)) / std_i)^2 + const,
    grad_a log pi(a | s) = (mu(s) - a) / std^2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from cfgrl_ros.pgd.trajectories import observations_from_states
from cfgrl_ros.policy.flow_policy import FlowPolicy

if TYPE_CHECKING:
    from cfgrl_ros.dsrl.agent import NoiseAgent

# states [N, STATE_DIM] (raw) -> target actions [N, ACTION_DIM] (raw, no autograd)
TargetAction = Callable[[torch.Tensor], torch.Tensor]


class GaussianTarget:
    """pi(a | s) = N(a; mu(s), diag(std^2)) around a deterministic target action mu(s).

    std: one number or one per action dimension, in action units (> 0).
    """

    def __init__(self, target_action: TargetAction, std: float | np.ndarray) -> None:
        std = np.asarray(std, dtype=np.float32)
        if not np.all(np.isfinite(std)) or np.any(std <= 0):
            raise ValueError(f"target std must be finite and > 0, got {std}")
        self.target_action = target_action
        self.std = torch.as_tensor(std)

    def log_prob(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a | s) [N] for states [N, S] and actions [N, A]; differentiable in actions."""
        with torch.no_grad():
            mean = self.target_action(states.detach()).to(actions)
        std = self.std.to(actions)
        z = (actions - mean) / std
        log_norm = torch.log(std).expand(actions.shape[-1:]).sum()
        return -0.5 * z.pow(2).sum(-1) - log_norm - 0.5 * actions.shape[-1] * math.log(2 * math.pi)


def flow_policy_action(
    policy: FlowPolicy,
    noise_agent: NoiseAgent | None = None,
    guidance_weight: float = 1.0,
    decode_steps: int | None = None,
    batch_size: int = 8192,
) -> TargetAction:
    """mu(s): the first action of the chunk `policy` decodes for state s.

    With `noise_agent` the start noise is the noise actor's deterministic choice, so mu is the
    DSRL-steered policy (decoded with the agent's decode_steps unless `decode_steps` is given);
    without one it is zero, the centre of the base policy's N(0, I) noise. Needs a state-only
    policy: synthetic states have no camera images.
    """
    if policy.config.observation.image_keys:
        raise ValueError(
            "policy guidance needs a state-only policy, this one uses cameras "
            f"{list(policy.config.observation.image_keys)} and synthetic trajectories have no "
            "images"
        )
    if noise_agent is not None and decode_steps is None:
        decode_steps = noise_agent.config.decode_steps  # the decoder the agent learned with

    def first_action(states: torch.Tensor) -> torch.Tensor:
        observations = observations_from_states(states.cpu().numpy())
        inputs = policy.inputs_from_observation(observations)
        actions = []
        for start in range(0, len(states), batch_size):
            batch = {key: value[start : start + batch_size] for key, value in inputs.items()}
            features = policy.encode(batch)
            if noise_agent is None:
                noise = torch.zeros(len(features), *policy.noise_shape, device=policy.device)
            else:
                # Batched form of NoiseAgent.noise(features, deterministic=True).
                agent_actions, _ = noise_agent.model.predict(
                    features.cpu().numpy(), deterministic=True
                )
                noise = noise_agent.noise_space.noise_from_action(agent_actions)
            chunk = policy.decode(features, noise, guidance_weight, decode_steps)
            actions.append(chunk[:, 0])
        return torch.cat(actions).to(states.device)

    return first_action
