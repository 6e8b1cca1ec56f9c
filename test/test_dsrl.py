"""DSRL in noise space: the env wrapper, DSRL-SAC and DSRL-NA, distillation, checkpoints.

Most tests use a tiny deterministic stand-in for the flow policy whose best noise is known: the
decoded first action dimension is 0.6 * w0 + 0.3 * guidance_weight (clipped to [-1, 1]) and the
reward of a tick is 1 - 4 (a_x - target_x)^2, target_x in [-0.5, 0.5] read from the object
position. A two-tick episode is one decision, so the optimum is 2.0 per episode; the base
policy (w0 ~ N(0, I)) earns about -1.2 and the zero-noise policy about 0.6.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from torch import nn

from cfgrl_ros.data.episode import Episode
from cfgrl_ros.dsrl import (
    DsrlConfig,
    DsrlNa,
    DsrlSac,
    NoiseAgent,
    NoiseSpace,
    ZeroNoise,
    make_algorithm,
    make_noise_agent,
    make_noise_env,
    run_episode,
)
from cfgrl_ros.dsrl.agent import POLICY_HASH, file_sha256, setting_differences
from cfgrl_ros.dsrl.replay import episode_transitions
from cfgrl_ros.observation import OBSERVATION_FIELDS, OBSERVATIONS

OBJECT_POS = slice(15, 18)  # object_pos in the state vector
HORIZON = 2  # chunk length of the toy policy


class ToyPolicy(nn.Module):
    """FlowPolicy's DSRL interface with a known decoder: features = object position,
    chunk = clip(gain * w0 + shift, -1, 1), shift = 0.3 * w on the first action dimension."""

    noise_shape = (HORIZON, 7)
    feature_dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(
            torch.tensor(0.6)
        )  # trainable in principle: DSRL must not touch it

    @property
    def device(self) -> torch.device:
        return self.gain.device

    def inputs_from_observation(self, observation):
        state = OBSERVATIONS["state"].state_vector(observation)
        return {"state": state[None] if state.ndim == 1 else state}

    def encode(self, obs):
        return torch.as_tensor(np.asarray(obs["state"])[:, OBJECT_POS], dtype=torch.float32)

    def decode(self, features, noise, guidance_weight, steps=None):
        features = torch.as_tensor(features, dtype=torch.float32)
        if noise is None:
            noise = torch.randn(len(features), *self.noise_shape)
        noise = torch.as_tensor(noise, dtype=torch.float32)
        shift = torch.zeros_like(noise)
        shift[..., 0] = 0.3 * guidance_weight
        return (self.gain * noise + shift).clamp(-1.0, 1.0)


def toy_observation(target: np.ndarray) -> dict[str, np.ndarray]:
    obs = {name: np.zeros(size) for name, size in OBSERVATION_FIELDS.items()}
    obs["eef_quat"][3] = obs["object_quat"][3] = 1.0
    obs["object_pos"] = np.asarray(target, dtype=float).copy()
    return obs


class ToyReachEnv(gym.Env):
    """Reach target_x with the first action dimension; `length` ticks per episode."""

    def __init__(self, length: int = HORIZON) -> None:
        self.length = length
        self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
        self.actions: list[np.ndarray] = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.target = self.np_random.uniform(-0.5, 0.5, 3)
        self.ticks = 0
        return toy_observation(self.target), {"success": False}

    def step(self, action):
        self.actions.append(np.array(action))
        self.ticks += 1
        reward = 1.0 - 4.0 * (float(action[0]) - self.target[0]) ** 2
        return toy_observation(self.target), reward, self.ticks >= self.length, False, {}


def toy_config(**overrides) -> DsrlConfig:
    settings = dict(
        exec_horizon=HORIZON,
        batch_size=64,
        hidden_sizes=(64, 64),
        utd=4,
        prefill_decisions=50,
        redistill_updates=200,
        initial_entropy_coef=1.0,  # the toy's dense rewards are large next to the entropy
        seed=0,
    )
    settings.update(overrides)
    return DsrlConfig(**settings)


def mean_return(env, agent, episodes: int = 50, deterministic: bool = True) -> float:
    return float(
        np.mean(
            [
                run_episode(env, agent, deterministic=deterministic, seed=10_000 + i).total_reward
                for i in range(episodes)
            ]
        )
    )


@pytest.fixture(scope="module")
def trained():
    """Both variants trained online on the toy task (shared by several tests)."""
    torch.set_num_threads(1)
    policy = ToyPolicy()
    agents = {}
    for algo in ("dsrl_sac", "dsrl_na"):
        config = toy_config(algo=algo)
        env = make_noise_env(ToyReachEnv(), policy, 1.0, config)
        agent = make_noise_agent(policy, 1.0, config)
        for episode in range(250):
            run_episode(env, agent, learn=True, seed=episode)
        agents[algo] = (agent, env)
    return policy, agents


# ----------------------------------------------------------------------------- noise space


@pytest.mark.parametrize("mode", ["full", "shared"])
def test_noise_space_maps_actions_to_noise_and_back(mode):
    space = NoiseSpace(horizon=3, action_dim=7, magnitude=1.5, mode=mode)
    assert space.dim == (21 if mode == "full" else 7)
    action = np.random.default_rng(0).uniform(-1, 1, (5, space.dim)).astype(np.float32)
    noise = space.noise_from_action(action)
    assert noise.shape == (5, 3, 7)
    assert np.abs(noise).max() <= 1.5
    if mode == "shared":
        assert np.all(noise == noise[:, :1])  # one vector repeated over the chunk
    np.testing.assert_allclose(space.action_from_noise(noise), action, atol=1e-6)
    tensor_noise = space.noise_from_action_tensor(torch.as_tensor(action))
    np.testing.assert_allclose(tensor_noise.numpy(), noise, atol=1e-6)
    np.testing.assert_allclose(
        space.action_from_noise_tensor(tensor_noise).numpy(), action, atol=1e-6
    )
    # Noise beyond the magnitude is clipped to what the actor can produce.
    assert space.action_from_noise(np.full((3, 7), 9.0)).max() == 1.0
    base = space.base_noise(4000)
    assert base.shape == (4000, 3, 7)
    assert abs(float(base.std()) - 1.0) < 0.05
    with pytest.raises(ValueError, match="expected"):
        space.noise_from_action(np.zeros(space.dim + 1))
    with pytest.raises(ValueError, match="noise mode"):
        NoiseSpace(3, 7, mode="diagonal")


def test_env_decodes_executes_and_sums_a_decision():
    policy = ToyPolicy()
    arm = ToyReachEnv(length=5)
    env = make_noise_env(arm, policy, 1.0, toy_config(exec_horizon=2))
    features, _ = env.reset(seed=3)
    np.testing.assert_allclose(features, arm.target, rtol=1e-6)
    assert env.action_space.shape == (14,) and env.observation_space.shape == (3,)
    action = np.full(14, 0.5, dtype=np.float32)
    _, reward, terminated, truncated, info = env.step(action)
    np.testing.assert_allclose(info["noise"], 0.75)  # magnitude * a
    expected_chunk = np.full((2, 7), 0.45, dtype=np.float32)
    expected_chunk[:, 0] = 0.75
    np.testing.assert_allclose(info["chunk"], expected_chunk, atol=1e-6)
    np.testing.assert_allclose(np.stack(arm.actions), expected_chunk, atol=1e-6)
    assert info["ticks"] == 2 and info["executed_chunk"].shape == (2, 7)
    assert reward == pytest.approx(2 * (1 - 4 * (0.75 - arm.target[0]) ** 2))
    assert not terminated and not truncated
    # The episode ends after 5 ticks: the third decision executes only one.
    env.step_noise(None)
    _, _, terminated, _, info = env.step_noise(np.zeros((2, 7), np.float32))
    assert terminated and info["ticks"] == 1
    with pytest.raises(ValueError, match="noise has shape"):
        env.step_noise(np.zeros((3, 7)))
    check_env(make_noise_env(ToyReachEnv(), policy, 1.0, toy_config()))


class EveryOtherDecision:
    """An operator who drives every second decision with a constant action."""

    action = np.full(7, 0.25, dtype=np.float32)

    def reset(self, obs) -> None:
        self.decisions = 0

    def drives(self, obs) -> bool:
        self.decisions += 1
        return self.decisions % 2 == 0

    def act(self, obs) -> np.ndarray:
        return self.action


@pytest.mark.parametrize("algo", ["dsrl_na", "dsrl_sac"])
def test_an_operators_decisions_are_executed_and_learned_by_dsrl_na_only(algo):
    policy = ToyPolicy()
    arm = ToyReachEnv(length=8)
    env = make_noise_env(arm, policy, 1.0, toy_config(exec_horizon=2))
    env.operator = EveryOtherDecision()
    env.reset(seed=0)
    _, _, _, _, info = env.step_noise(np.zeros((2, 7), np.float32))
    assert info["operator_ticks"] == 0
    _, _, _, _, info = env.step_noise(np.zeros((2, 7), np.float32))
    assert info["operator_ticks"] == 2  # the operator's decision: nothing decoded
    np.testing.assert_array_equal(info["chunk"], np.tile(EveryOtherDecision.action, (2, 1)))
    np.testing.assert_array_equal(arm.actions[-1], EveryOtherDecision.action)

    agent = make_noise_agent(policy, 1.0, toy_config(algo=algo, prefill_decisions=100))
    result = run_episode(env, agent, learn=True, seed=1)
    assert (result.decisions, result.interventions, result.operator_ticks) == (4, 2, 4)
    counters = agent.counters()
    assert counters["operator_transitions"] == 2 and counters["episodes"] == 1
    # DSRL-NA learns Q^A from every executed chunk; DSRL-SAC's noise made only the policy's.
    assert counters["transitions"] == (4 if algo == "dsrl_na" else 2)


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="algo 'ppo'"):
        DsrlConfig(algo="ppo")
    with pytest.raises(ValueError, match="magnitude"):
        DsrlConfig(magnitude=0.0)
    with pytest.raises(ValueError, match="noise_prior_weight must be >= 0"):
        DsrlConfig(noise_prior_weight=-0.1)
    with pytest.raises(ValueError, match="exec_horizon"):
        make_noise_agent(ToyPolicy(), 1.0, toy_config(exec_horizon=3))
    assert DsrlConfig.from_dict(toy_config().to_dict()) == toy_config()
    with pytest.raises(ValueError, match="no fields"):
        DsrlConfig.from_dict({"utd": 1, "speed": 2})


# ----------------------------------------------------------------------------- learning


@pytest.mark.parametrize("algo", ["dsrl_sac", "dsrl_na"])
@pytest.mark.slow
def test_both_variants_learn_the_best_noise(trained, algo):
    policy, agents = trained
    agent, env = agents[algo]
    base = mean_return(env, None, deterministic=False)
    zero_noise = float(
        np.mean(
            [
                run_episode(env, ZeroNoise((HORIZON, 7), 1.0), seed=10_000 + i).total_reward
                for i in range(50)
            ]
        )
    )
    learned = mean_return(env, agent)
    assert base < -0.5 and zero_noise < 1.0  # the task needs state-dependent noise
    assert learned > 1.5, f"{algo} reached {learned:.2f} (optimum 2.0, base {base:.2f})"
    assert agent.transitions == 250 and agent.episodes == 250
    assert agent.updates == (250 - 50 + 1) * 4
    # No gradient ever reached the frozen policy.
    assert policy.gain.grad is None and policy.gain.item() == pytest.approx(0.6)


@pytest.mark.slow
def test_distillation_makes_q_noise_match_q_action(trained):
    policy, agents = trained
    agent, _ = agents["dsrl_na"]
    model = agent.model
    assert isinstance(model, DsrlNa)
    data = model.replay_buffer.sample(512)
    noise = model.noise_space.base_noise(512)
    noise_actions = model.noise_space.action_from_noise_tensor(noise)
    fresh = make_noise_agent(policy, 1.0, toy_config(algo="dsrl_na", seed=1)).model
    with torch.no_grad():
        q_action = model.critic(data.observations, model.decode(data.observations, noise))[0]
        q_noise = model.noise_critic(data.observations, noise_actions)[0]
        q_undistilled = fresh.noise_critic(data.observations, noise_actions)[0]

    def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(np.corrcoef(a[:, 0].numpy(), b[:, 0].numpy())[0, 1])

    # Q^W(s, w0) predicts Q^A(s, pi_dp(s, w0)) for noise it never saw (w0 ~ N(0, I) afresh).
    assert correlation(q_noise, q_action) > 0.8
    assert abs(correlation(q_undistilled, q_action)) < 0.3
    error = float((q_noise - q_action).abs().mean())
    assert error < 0.5 * float(q_action.std()), f"|Q^W - Q^A| = {error:.3f}"


@pytest.mark.parametrize("noise_mode", ["full", "shared"])
@pytest.mark.slow
def test_noise_prior_brings_the_actor_to_the_base_noise_mode_where_the_critic_is_flat(noise_mode):
    """Every chunk ends the episode with the same reward, so Q^W prefers no noise over another.
    The prior b log N(w0; 0, I) then moves the deterministic actor to w0 = 0; without it the
    actor stays about where its initialisation put it."""
    torch.set_num_threads(1)
    policy = ToyPolicy()
    rng = np.random.default_rng(0)
    states = rng.uniform(-0.5, 0.5, (100, 3)).astype(np.float32)

    def actor_noise_norm(agent: NoiseAgent) -> float:
        return float(
            np.mean([np.linalg.norm(agent.noise(state, deterministic=True)) for state in states])
        )

    norms = {}
    for weight in (0.0, 1.0):
        config = toy_config(
            algo="dsrl_na",
            noise_mode=noise_mode,
            prefill_decisions=0,
            initial_entropy_coef=0.01,  # the entropy term also pulls towards the centre a little
            noise_prior_weight=weight,
        )
        agent = make_noise_agent(policy, 1.0, config)
        for state in states:
            noise = rng.standard_normal(policy.noise_shape).astype(np.float32)
            chunk = policy.decode(state[None], noise[None], 1.0)[0].detach().numpy()
            agent.add_transition(state, noise, chunk, 0.0, state, terminated=True)
        initial = actor_noise_norm(agent)
        agent.train(300)
        norms[weight] = (initial, actor_noise_norm(agent))
    (initial_free, free), (initial_held, held) = norms[0.0], norms[1.0]
    assert held < 0.2 * initial_held, norms
    assert free > 0.5 * initial_free, norms


@pytest.mark.slow
def test_changing_w_redistills_before_the_actor_trains_again():
    torch.set_num_threads(1)
    policy = ToyPolicy()
    config = toy_config(algo="dsrl_na", prefill_decisions=0, redistill_updates=300)
    env = make_noise_env(ToyReachEnv(), policy, 1.0, config)
    agent = make_noise_agent(policy, 1.0, config)
    for episode in range(60):
        run_episode(env, agent, learn=True, seed=episode)
    model = agent.model

    def distill_error() -> float:
        torch.manual_seed(1)
        np.random.seed(1)  # noqa: NPY002 (SB3's replay buffer samples with it)
        data = model.replay_buffer.sample(512)
        noise = model.noise_space.base_noise(512)
        with torch.no_grad():
            q_action = model.critic(data.observations, model.decode(data.observations, noise))
            q_noise = model.noise_critic(
                data.observations, model.noise_space.action_from_noise_tensor(noise)
            )
        return float((q_noise[0] - q_action[0]).abs().mean())

    before = {name: p.clone() for name, p in model.policy.named_parameters()}
    agent.set_guidance_weight(-1.0)  # shifts every decoded first action by -0.6
    assert agent.redistilling and model.distillation_updates_due == 300
    stale = distill_error()
    agent.train(300)
    assert not agent.redistilling
    for name, parameter in model.policy.named_parameters():
        changed = not torch.equal(parameter, before[name])
        assert changed == name.startswith("noise_critic"), name  # only Q^W was trained
    assert distill_error() < 0.5 * stale
    agent.train(1)  # then the actor and Q^A train again
    assert not torch.equal(model.actor.mu.weight, before["actor.mu.weight"])
    # DSRL-SAC has no decoder of its own: the new weight is recorded, nothing is scheduled.
    sac = make_noise_agent(policy, 1.0, toy_config(algo="dsrl_sac"))
    sac.set_guidance_weight(2.0)
    assert sac.guidance_weight == 2.0 and not sac.redistilling


# ----------------------------------------------------------------------------- data


def test_transitions_from_recorded_episodes():
    policy = ToyPolicy()
    targets = np.linspace(-0.3, 0.3, 6)[:, None] * np.ones(3)
    observations = {
        name: np.stack([toy_observation(t)[name] for t in targets]) for name in OBSERVATION_FIELDS
    }
    actions = np.arange(6 * 7, dtype=np.float32).reshape(6, 7) / 100
    rewards = np.array([0, 0, 0, 0, 0, 1.0], dtype=np.float32)
    success = Episode(observations, actions, rewards, success=True)
    failure = Episode(observations, actions, np.zeros(6, np.float32), success=False)
    batch = episode_transitions([success, failure], policy, exec_horizon=2)
    # Success: decisions at ticks 0..5 (those at 4 and 5 reach the end and are terminal);
    # failure: ticks 0..3 only (no recorded state after the last tick).
    assert len(batch) == 6 + 4
    np.testing.assert_allclose(batch.features[:6], targets, rtol=1e-6)
    np.testing.assert_allclose(batch.next_features[:4], targets[2:6], rtol=1e-6)
    np.testing.assert_allclose(batch.chunks[1], actions[1:3])
    np.testing.assert_allclose(batch.chunks[5], actions[[5, 5]])  # padded past the end
    assert batch.rewards[:6].tolist() == [0, 0, 0, 0, 1, 1]
    assert batch.terminated[:6].tolist() == [False] * 4 + [True] * 2
    assert not batch.terminated[6:].any() and not batch.rewards[6:].any()


def test_offline_data_feeds_dsrl_na_only():
    torch.set_num_threads(1)
    policy = ToyPolicy()
    rng = np.random.default_rng(0)
    episodes = []
    for _ in range(30):  # one-decision episodes with the base policy's actions
        target = rng.uniform(-0.5, 0.5, 3)
        noise = rng.standard_normal((1, HORIZON, 7))
        chunk = policy.decode(target[None], noise, 1.0)[0].detach().numpy()
        rewards = 1 - 4 * (chunk[:, 0] - target[0]) ** 2
        observations = {
            name: np.stack([toy_observation(target)[name]] * HORIZON) for name in OBSERVATION_FIELDS
        }
        episodes.append(Episode(observations, chunk, rewards.astype(np.float32), success=True))
    agent = make_noise_agent(policy, 1.0, toy_config(algo="dsrl_na", prefill_decisions=0))
    assert agent.add_offline_episodes(episodes) == 60
    assert agent.offline_transitions == 60 and agent.transitions == 0 and agent.replay_size == 60
    metrics = agent.train(20)
    assert {"critic_loss", "distill_loss", "actor_loss", "ent_coef"} <= set(metrics)
    assert all(np.isfinite(value) for value in metrics.values())
    sac = make_noise_agent(policy, 1.0, toy_config(algo="dsrl_sac"))
    with pytest.raises(ValueError, match="dsrl_na"):
        sac.add_offline_episodes(episodes)


def test_agent_rejects_bad_transitions():
    agent = make_noise_agent(ToyPolicy(), 1.0, toy_config())
    good = dict(
        features=np.zeros(3),
        noise=np.zeros((HORIZON, 7)),
        chunk=np.zeros((HORIZON, 7)),
        reward=0.0,
        next_features=np.zeros(3),
        terminated=False,
    )
    with pytest.raises(ValueError, match="empty"):
        agent.train(1)
    for key, bad, message in [
        ("features", np.zeros(4), "features has shape"),
        ("next_features", np.full(3, np.nan), "NaN"),
        ("noise", np.zeros((3, 7)), "noise has shape"),
        ("chunk", np.zeros((1, 7)), "chunk has shape"),
        ("reward", float("inf"), "reward"),
    ]:
        with pytest.raises(ValueError, match=message):
            agent.add_transition(**{**good, key: bad})
    agent.add_transition(**good)
    assert agent.transitions == 1 and agent.episodes == 0
    # The task's reward is learned with the offset: -1 per decision until success.
    assert agent.model.replay_buffer.rewards[0, 0] == 0.0 + agent.config.reward_offset == -1.0
    agent.add_transition(**{**good, "truncated": True})
    assert agent.episodes == 1


# ----------------------------------------------------------------------------- SB3 learn()


class RecordingNoiseEnv(gym.Wrapper):
    """Keeps the info of every decision SB3's learn() makes."""

    def __init__(self, env) -> None:
        super().__init__(env)
        self.infos: list[dict] = []
        self.rewards: list[float] = []

    def step(self, action):
        result = self.env.step(action)
        self.rewards.append(result[1])
        self.infos.append(result[-1])
        return result


@pytest.mark.parametrize("algo", ["dsrl_sac", "dsrl_na"])
def test_sb3_learn_on_the_noise_env(algo):
    torch.set_num_threads(1)
    policy = ToyPolicy()
    config = toy_config(algo=algo, prefill_decisions=200, utd=2)
    recording = RecordingNoiseEnv(make_noise_env(ToyReachEnv(), policy, 1.0, config))
    model = make_algorithm(config, policy, 1.0, env=recording)
    assert isinstance(model, DsrlNa if algo == "dsrl_na" else DsrlSac)
    model.learn(total_timesteps=220)
    assert model._n_updates == (220 - 200) * 2
    stored = model.replay_buffer.actions[:220, 0]
    if algo == "dsrl_na":  # the buffer holds what was executed
        executed = np.stack([info["executed_chunk"].reshape(-1) for info in recording.infos])
    else:  # the buffer holds the noise, as the agent's action
        executed = np.stack(
            [info["noise"].reshape(-1) / config.magnitude for info in recording.infos]
        )
    np.testing.assert_allclose(stored, executed, atol=1e-6)
    # Rewards are learned with the configured offset (-1 per decision until success).
    np.testing.assert_allclose(
        model.replay_buffer.rewards[:220, 0],
        [sum_reward + config.reward_offset for sum_reward in recording.rewards],
        atol=1e-5,
    )
    # The prefill used base noise N(0, I), clipped to +-magnitude: about 13% of the numbers
    # sit at the bound (SB3's default uniform actions would almost never).
    prefill_noise = np.stack([info["noise"] for info in recording.infos[:200]])
    at_bound = np.mean(np.isclose(np.abs(prefill_noise), config.magnitude))
    assert 0.10 < at_bound < 0.17
    assert 0.85 < np.std(prefill_noise) < 1.0


# ----------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("algo", ["dsrl_sac", "dsrl_na"])
def test_save_load_round_trip_resumes_identically(tmp_path, algo):
    torch.set_num_threads(1)
    policy = ToyPolicy()
    config = toy_config(algo=algo, prefill_decisions=10)
    env = make_noise_env(ToyReachEnv(), policy, 1.0, config)
    agent = make_noise_agent(policy, 1.0, config)
    for episode in range(20):
        run_episode(env, agent, learn=True, seed=episode)
    agent.save(tmp_path / "agent", metadata={"success_curve": [0, 1]})
    restored = NoiseAgent.load(tmp_path / "agent", policy)
    assert restored.counters() == agent.counters()
    assert restored.metadata == {"success_curve": [0, 1]}
    assert restored.config == config and restored.guidance_weight == 1.0
    assert restored.replay_size == agent.replay_size == 20
    np.testing.assert_array_equal(
        restored.model.replay_buffer.observations[:20], agent.model.replay_buffer.observations[:20]
    )
    features = np.array([0.1, -0.2, 0.3], np.float32)
    np.testing.assert_array_equal(
        restored.noise(features, deterministic=True), agent.noise(features, deterministic=True)
    )

    # Training on from the checkpoint gives the same networks as training on without stopping.
    def train_from(resumed: NoiseAgent) -> dict[str, torch.Tensor]:
        torch.manual_seed(5)
        np.random.seed(5)  # noqa: NPY002 (SB3's replay buffer samples with it)
        resumed.train(5)
        return {name: p.detach().clone() for name, p in resumed.model.policy.state_dict().items()}

    continued, reloaded = train_from(agent), train_from(restored)
    for name, value in continued.items():
        torch.testing.assert_close(reloaded[name], value, msg=name)

    # A second save replaces the first; an interrupted save's staging folder is ignored.
    (tmp_path / "agent" / ".checkpoint-000099.tmp").mkdir()
    agent.save(tmp_path / "agent")
    folders = sorted(path.name for path in (tmp_path / "agent").iterdir())
    assert folders == ["checkpoint-000002", "latest.json"]
    assert json.loads((tmp_path / "agent" / "latest.json").read_text()) == {
        "checkpoint": "checkpoint-000002"
    }
    assert NoiseAgent.load(tmp_path / "agent", policy).updates == agent.updates

    # A checkpoint from before the noise prior existed trained without it, and resumes so.
    state_path = tmp_path / "agent" / "checkpoint-000002" / "agent.json"
    state = json.loads(state_path.read_text())
    del state["config"]["noise_prior_weight"]
    state_path.write_text(json.dumps(state))
    older = NoiseAgent.load(tmp_path / "agent", policy)
    assert older.config.noise_prior_weight == 0.0
    if algo == "dsrl_na":  # DSRL-SAC has no prior
        assert older.model.noise_prior_weight == 0.0


def test_load_names_what_is_wrong(tmp_path):
    policy = ToyPolicy()
    with pytest.raises(FileNotFoundError, match="no noise agent checkpoint"):
        NoiseAgent.load(tmp_path, policy)
    agent = make_noise_agent(policy, 1.0, toy_config())
    agent.save(tmp_path)

    class LongerChunks(ToyPolicy):
        noise_shape = (4, 7)

    with pytest.raises(ValueError, match="chunks"):
        NoiseAgent.load(tmp_path, LongerChunks())


# ----------------------------------------------------------------------------- resuming


def test_a_run_resumes_only_with_its_policy_file_and_agent_settings():
    """The comparison adapt and the noise actor share: each difference named by what the user
    sets it with; the device may change."""
    from cfgrl_ros.nodes.noise_actor_node import resume_differences

    saved = toy_config(utd=2)
    run = {POLICY_HASH: "a" * 64}
    assert resume_differences(run, saved, run, dataclasses.replace(saved, device="cuda")) == []
    other_policy = {POLICY_HASH: "b" * 64}
    assert resume_differences(run, saved, other_policy, toy_config(utd=3, exec_horizon=1)) == [
        "checkpoint: a different policy file than the run's",
        "exec_horizon: run has 2, parameters give 1",
        "agent.utd: run has 2, parameters give 3",
    ]
    assert setting_differences({"utd": 2}, {"utd": 3}, {"utd": "--utd"}, "command gives") == [
        "--utd: run has 2, command gives 3"
    ]


def _tiny_flow_policy(path: Path, seed: int) -> Path:
    from cfgrl_ros.policy.flow_policy import FlowPolicy, PolicyConfig

    torch.manual_seed(seed)
    config = PolicyConfig(
        horizon=8, flow_steps=2, hidden_dims=(32, 32), state_hidden_dims=(32,), state_feature_dim=16
    )
    FlowPolicy(config).save(path)
    return path


@pytest.mark.ros
def test_the_noise_actor_refuses_to_resume_a_run_of_another_policy(ros_nodes, tmp_path):
    """Policy B launched on policy A's run folder: the node stops at start and names the
    differences and the way out, instead of training A's agent on B's features."""
    from cfgrl_ros.policy.flow_policy import FlowPolicy

    policy_a = _tiny_flow_policy(tmp_path / "policy_a.pt", seed=1)
    policy_b = _tiny_flow_policy(tmp_path / "policy_b.pt", seed=2)
    small = {"batch_size": 16, "prefill_decisions": 8}
    run_dir = tmp_path / "run"
    config = DsrlConfig(**small, utd=2, hidden_sizes=(32, 32))
    agent = make_noise_agent(FlowPolicy.load(policy_a, "cpu"), 1.0, config)
    agent.save(run_dir / "agent", {"run": {POLICY_HASH: file_sha256(policy_a)}})

    parameters = {
        "checkpoint": str(policy_b),
        "run_dir": str(run_dir),
        "device": "cpu",
        "agent": {**small, "hidden_sizes": [32, 32], "utd": 3},
    }
    node = ros_nodes.start("noise_actor_node", parameters=parameters, wait=0)
    assert node.process.wait(120) == 1
    log = node.log()
    assert "cannot start:" in log and "Traceback" not in log
    assert "checkpoint: a different policy file than the run's" in log
    assert "agent.utd: run has 2, parameters give 3" in log
    assert "run_dir" in log and str(run_dir) in log
