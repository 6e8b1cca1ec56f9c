"""Episodes of a noise agent (or of the base policy) in a `NoiseSpaceEnv`.

The loop is the one the ROS graph runs, one decision at a time: choose noise, decode and
execute, record the transition, train `utd` updates once the prefill is done.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from cfgrl_ros.dsrl.agent import NoiseAgent
from cfgrl_ros.dsrl.noise_space import NoiseSpaceEnv


@dataclass
class EpisodeResult:
    """What one episode did; `metrics` are the mean training metrics over its decisions,
    `learner_seconds` the wall-clock time its updates took, `interventions` how often an
    operator took over (runs of decisions it drove) and `operator_ticks` the ticks it drove."""

    success: bool
    total_reward: float
    decisions: int
    ticks: int
    metrics: dict[str, float] = field(default_factory=dict)
    learner_seconds: float = 0.0
    interventions: int = 0
    operator_ticks: int = 0


class ZeroNoise:
    """In place of a noise agent: w0 = 0 at every decision, the centre of the noise distribution.

    A deterministic policy that needs no learning; a deterministic noise actor should beat it,
    not only the base policy (sampled noise), to show that it learned something.
    """

    def __init__(self, noise_shape: tuple[int, int], guidance_weight: float) -> None:
        self.noise_shape = tuple(noise_shape)
        self.guidance_weight = float(guidance_weight)

    def noise(self, features: np.ndarray, deterministic: bool = False) -> np.ndarray:
        return np.zeros(self.noise_shape, dtype=np.float32)


def run_episode(
    env: NoiseSpaceEnv,
    agent: NoiseAgent | ZeroNoise | None,
    *,
    learn: bool = False,
    deterministic: bool = False,
    seed: int | None = None,
) -> EpisodeResult:
    """One episode from env.reset(seed=seed).

    agent None: the base policy (w0 ~ N(0, I) from the env's generator). learn (a NoiseAgent
    only): every decision is added to the agent and, once its prefill is done, followed by
    `config.utd` updates.
    """
    if learn and not isinstance(agent, NoiseAgent):
        raise ValueError("learn=True needs a NoiseAgent")
    if agent is not None and agent.guidance_weight != env.guidance_weight:
        raise ValueError(
            f"the agent decodes at w={agent.guidance_weight} but the env at "
            f"w={env.guidance_weight}; set both with set_guidance_weight / env.guidance_weight"
        )
    features, _ = env.reset(seed=seed)
    total_reward, decisions, ticks, success, learner_seconds = 0.0, 0, 0, False, 0.0
    interventions, operator_ticks, operator_drove_last = 0, 0, False
    metric_series: dict[str, list[float]] = {}
    done = False
    while not done:
        if agent is None:
            noise = env.sample_base_noise()
        else:
            noise = agent.noise(features, deterministic=deterministic)
        next_features, reward, terminated, truncated, info = env.step_noise(noise)
        if learn:
            assert agent is not None
            agent.add_transition(
                features,
                noise,
                info["chunk"],
                reward,
                next_features,
                terminated,
                truncated,
                operator_ticks=info["operator_ticks"],
            )
            if agent.learning_started and agent.config.utd > 0:
                began = time.perf_counter()
                for name, value in agent.train(agent.config.utd).items():
                    metric_series.setdefault(name, []).append(value)
                learner_seconds += time.perf_counter() - began
        operator_drove = info["operator_ticks"] > 0
        interventions += int(operator_drove and not operator_drove_last)
        operator_drove_last = operator_drove
        operator_ticks += info["operator_ticks"]
        total_reward += reward
        decisions += 1
        ticks += info["ticks"]
        success = success or info["is_success"]
        features = next_features
        done = terminated or truncated
    metrics = {name: float(np.mean(values)) for name, values in metric_series.items()}
    return EpisodeResult(
        success,
        total_reward,
        decisions,
        ticks,
        metrics,
        learner_seconds,
        interventions,
        operator_ticks,
    )
