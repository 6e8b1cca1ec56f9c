"""CFGRL training on small offline-RL problems with a known optimum; value targets; resuming.

The bandit: a state-dependent two-mode choice. The good mode moves towards the object's side
(dx = +0.6 sign(object y - gripper y)) and succeeds with probability 0.8, the bad mode (the
opposite sign) with 0.2; 80% of the data takes the bad mode. Plain BC copies the data (~20% good
decisions); CFGRL's labels point at the good mode and guidance w pushes further towards it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cfgrl_ros.data.episode import ACTION_DIM, Episode
from cfgrl_ros.observation import OBSERVATIONS, STATE_DIM
from cfgrl_ros.policy import FlowPolicy, PolicyConfig, TrainConfig, train_policy
from cfgrl_ros.policy.dataset import build_dataset
from cfgrl_ros.policy.training import training_state_path

TICKS = 4
GOOD_SUCCESS, BAD_SUCCESS = 0.8, 0.2
RELATIVE_Y = 22  # index of (object - gripper) y in the state vector

SMALL_POLICY = PolicyConfig(
    horizon=4, hidden_dims=(128, 128), state_hidden_dims=(128,), state_feature_dim=32
)
SMALL_TRAINING = TrainConfig(
    policy=SMALL_POLICY,
    steps=1000,
    value_steps=300,
    value_hidden_dims=(64, 64),
    target_update_rate=0.05,  # a short run: targets must follow Q within the 300 steps
    device="cpu",
    save_every=0,
)

STATE = OBSERVATIONS["state"]


def arm_observations(rng: np.random.Generator, count: int) -> dict[str, np.ndarray]:
    """Observations whose only varying part is the object position (y away from 0)."""
    side = rng.choice([-1.0, 1.0], count) * rng.uniform(0.03, 0.2, count)
    return {
        "joint_pos": np.zeros((count, 7)),
        "gripper_width": np.full((count, 1), 0.04),
        "eef_pos": np.zeros((count, 3)),
        "eef_quat": np.tile([0.0, 0.0, 0.0, 1.0], (count, 1)),
        "object_pos": np.stack([rng.uniform(-0.1, 0.1, count), side, np.zeros(count)], axis=1),
        "object_quat": np.tile([0.0, 0.0, 0.0, 1.0], (count, 1)),
    }


def bandit_episodes(seed: int, count: int = 1000, good_fraction: float = 0.2) -> list[Episode]:
    rng = np.random.default_rng(seed)
    episodes = []
    for fields in (arm_observations(rng, 1) for _ in range(count)):
        good = rng.random() < good_fraction
        side = np.sign(OBSERVATIONS["state"].state_vector(fields)[0, RELATIVE_Y])
        actions = rng.normal(0.0, 0.05, (TICKS, ACTION_DIM))
        actions[:, 0] += 0.6 * side * (1 if good else -1)
        success = rng.random() < (GOOD_SUCCESS if good else BAD_SUCCESS)
        rewards = np.zeros(TICKS)
        rewards[-1] = float(success)
        observations = {name: np.repeat(values, TICKS, axis=0) for name, values in fields.items()}
        episodes.append(Episode(observations, actions.clip(-1, 1), rewards, bool(success)))
    return episodes


def success_rate(policy: FlowPolicy, guidance_weight: float, count: int = 500) -> float:
    """Expected success of the first action on fresh states, with fixed start noises."""
    rng = np.random.default_rng(123)
    states = OBSERVATIONS["state"].state_vector(arm_observations(rng, count))
    noise = rng.standard_normal((count, *policy.noise_shape)).astype(np.float32)
    chunks = policy.sample({"state": states}, noise, guidance_weight).numpy()
    good = np.mean(np.sign(chunks[:, 0, 0]) == np.sign(states[:, RELATIVE_Y]))
    return float(GOOD_SUCCESS * good + BAD_SUCCESS * (1 - good))


@pytest.fixture(scope="module")
def bandit() -> list[Episode]:
    return bandit_episodes(seed=0)


@pytest.fixture(scope="module")
def bc_success(bandit) -> float:
    policy = train_policy(bandit, dataclasses.replace(SMALL_TRAINING, method="bc")).policy
    return success_rate(policy, 1.0)


@pytest.mark.parametrize("advantage", ["mc", "iql"])
@pytest.mark.slow
def test_cfgrl_improves_with_guidance_and_beats_bc(bandit, bc_success, advantage):
    config = dataclasses.replace(SMALL_TRAINING, method="cfgrl", advantage=advantage)
    result = train_policy(bandit, config)
    success = {w: success_rate(result.policy, w) for w in (0.0, 1.0, 2.0, 3.0, 5.0)}
    print(
        f"\n{advantage}: data {0.2 * GOOD_SUCCESS + 0.8 * BAD_SUCCESS:.2f}, BC {bc_success:.2f}, "
        "CFGRL "
        + ", ".join(f"w={w:g} {rate:.2f}" for w, rate in success.items())
        + f" (optimal fraction {result.info['optimal_fraction']:.2f})"
    )
    assert success[0.0] < 0.45  # w = 0 is BC: mostly the data's bad mode
    assert success[0.0] + 0.1 < success[1.0] < success[3.0] + 0.02
    assert max(success.values()) > bc_success + 0.3
    assert len(result.history["policy_loss"]) == config.steps
    assert len(result.history["value_loss"]) == config.value_steps
    assert ("q_loss" in result.history) == (advantage == "iql")


@pytest.mark.slow
def test_awr_baseline_on_the_same_code_path(bandit, bc_success):
    config = dataclasses.replace(SMALL_TRAINING, method="awr", advantage="mc")
    result = train_policy(bandit, config)
    awr_success = success_rate(result.policy, 1.0)
    print(f"\nAWR (beta {config.awr_temperature}): {awr_success:.2f}, BC {bc_success:.2f}")
    assert result.policy.config.condition == "none"
    assert torch.equal(
        result.policy.sample({"state": bandit[0].states()}, torch.zeros(TICKS, 4, 7), 0.0),
        result.policy.sample({"state": bandit[0].states()}, torch.zeros(TICKS, 4, 7), 3.0),
    )
    assert awr_success > bc_success + 0.1
    assert result.info["mean_awr_weight"] > 1.0


def goal_episodes(seed: int, count: int = 400, ticks: int = 6) -> list[Episode]:
    """Random walks of the gripper along x: each episode moves one way (dx = ±0.6)."""
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(count):
        fields = arm_observations(rng, ticks)
        direction = rng.choice([-1.0, 1.0])
        start = rng.uniform(-0.1, 0.1)
        fields["eef_pos"][:, 0] = start + 0.02 * direction * np.arange(ticks)
        actions = rng.normal(0.0, 0.05, (ticks, ACTION_DIM))
        actions[:, 0] += 0.6 * direction
        episodes.append(Episode(fields, actions.clip(-1, 1), np.zeros(ticks), False))
    return episodes


@pytest.mark.slow
def test_goal_conditioned_guidance_heads_for_the_goal():
    config = dataclasses.replace(SMALL_TRAINING, method="cfgrl_goal", steps=1000, p_uncond=0.2)
    policy = train_policy(goal_episodes(seed=0), config).policy
    assert policy.config.condition == "goal"
    rng = np.random.default_rng(7)
    fields = arm_observations(rng, 400)
    states = OBSERVATIONS["state"].state_vector(fields)
    direction = rng.choice([-1.0, 1.0], 400)
    fields["eef_pos"][:, 0] += 0.06 * direction
    goals = OBSERVATIONS["state"].state_vector(fields)
    noise = rng.standard_normal((400, *policy.noise_shape)).astype(np.float32)

    def towards_goal(w: float) -> float:
        chunks = policy.sample({"state": states}, noise, w, goal=goals).numpy()
        return float(np.mean(np.sign(chunks[:, 0, 0]) == direction))

    rates = {w: towards_goal(w) for w in (0.0, 1.0, 3.0)}
    print(f"\ngoal reached direction: {rates}")
    assert abs(rates[0.0] - 0.5) < 0.15  # unconditioned: either way
    assert rates[1.0] > 0.7 and rates[3.0] >= rates[1.0] - 0.02


def test_value_targets_of_hand_made_episodes():
    rng = np.random.default_rng(0)
    rewards = np.array([0.0, 0.0, 0.0, 0.0, 1.0])
    success = Episode(arm_observations(rng, 5), np.zeros((5, ACTION_DIM)), rewards, True)
    actions = np.repeat([[0.1], [0.2], [0.3]], ACTION_DIM, axis=1)
    failure = Episode(arm_observations(rng, 3), actions, np.zeros(3), False)
    cut_off = Episode(arm_observations(rng, 3), actions, np.zeros(3), False, synthetic=True)
    data = build_dataset([cut_off, success, failure], 4, STATE, 0.5, 2, torch.device("cpu"))
    # recorded episodes first (the policy's rows), then synthetic ones
    assert data.policy_rows == 8 and data.episode_count == 3
    assert data.episode_index.tolist() == [0] * 5 + [1] * 3 + [2] * 3
    assert data.episode_end.tolist() == [4] * 5 + [7] * 3 + [10] * 3
    torch.testing.assert_close(
        data.returns, torch.tensor([1 / 16, 1 / 8, 1 / 4, 1 / 2, 1, 0, 0, 0, 0, 0, 0])
    )
    assert data.complete_return.tolist() == [True] * 8 + [False] * 3  # cut-off: unknown
    torch.testing.assert_close(data.n_step_rewards, torch.tensor([0, 0, 0, 0.5, 1] + [0.0] * 6))
    assert data.next_row.tolist() == [2, 3, 4, 3, 4, 7, 6, 7, 10, 9, 10]
    torch.testing.assert_close(
        data.next_discount, torch.tensor([0.25, 0.25, 0.25, 0, 0, 0.25, 0, 0, 0.25, 0, 0])
    )
    # a recorded end is terminal; past a synthetic cut-off end there is no TD target
    assert data.td_valid.tolist() == [True] * 9 + [False] * 2
    assert data.chunks.shape == (11, 4, ACTION_DIM) and data.states.shape == (11, STATE_DIM)
    # past the end of an episode a chunk repeats its last action
    torch.testing.assert_close(data.chunks[6, :, 0], torch.tensor([0.2, 0.3, 0.3, 0.3]))
    with pytest.raises(ValueError, match="no recorded episodes among the 1 given"):
        build_dataset([cut_off], 4, STATE, 0.5, 2, torch.device("cpu"))


def test_resumed_training_continues_exactly_where_it_stopped(tmp_path):
    episodes = bandit_episodes(seed=1, count=40)
    small = dataclasses.replace(
        SMALL_TRAINING, method="cfgrl", advantage="iql", value_steps=10, batch_size=32
    )
    whole = train_policy(episodes, dataclasses.replace(small, steps=30))

    checkpoint = tmp_path / "run" / "policy.pt"
    first = dataclasses.replace(small, steps=12, save_every=5)
    train_policy(episodes, first, checkpoint_path=checkpoint)
    assert training_state_path(checkpoint) == tmp_path / "run" / "policy.train_state.pt"
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == [
        "policy.pt",
        "policy.train_state.pt",
    ]
    resumed = train_policy(
        episodes, dataclasses.replace(small, steps=30), checkpoint_path=checkpoint, resume=True
    )
    assert resumed.history == whole.history
    for key, value in whole.policy.state_dict().items():
        assert torch.equal(value, resumed.policy.state_dict()[key]), key
    reloaded = FlowPolicy.load(checkpoint, device="cpu")
    noise = torch.randn(2, *reloaded.noise_shape)
    obs = {"state": episodes[0].states()[:2]}
    assert torch.equal(reloaded.sample(obs, noise, 2.0), resumed.policy.sample(obs, noise, 2.0))

    with pytest.raises(ValueError, match=r"settings differ \(p_uncond: 0.1 -> 0.3\)"):
        train_policy(
            episodes,
            dataclasses.replace(small, p_uncond=0.3),
            checkpoint_path=checkpoint,
            resume=True,
        )
    with pytest.raises(ValueError, match="it was trained on other data"):
        train_policy(episodes[:-1], small, checkpoint_path=checkpoint, resume=True)


def test_bad_settings_are_named():
    assert TrainConfig.from_dict(dataclasses.asdict(SMALL_TRAINING)) == SMALL_TRAINING
    with pytest.raises(ValueError, match=r"unknown fields \['speed'\]"):
        TrainConfig.from_dict({"speed": 2.0})
    with pytest.raises(ValueError, match="method 'dqn' is not one of"):
        TrainConfig(method="dqn")
    with pytest.raises(ValueError, match=r"p_uncond 0.0 must be in \(0, 1\)"):
        TrainConfig(p_uncond=0.0)
    with pytest.raises(ValueError, match="advantage 'td' is not one of"):
        TrainConfig(advantage="td")
    # PyYAML reads 3e-4 as a string: named before it reaches torch's optimiser.
    with pytest.raises(ValueError, match=r"learning_rate is '3e-4' .* write 3\.0e-4"):
        TrainConfig.from_dict({"learning_rate": "3e-4"})
    with pytest.raises(ValueError, match=r"batch_size is 'abc' \(str\), expected an integer$"):
        TrainConfig.from_dict({"batch_size": "abc"})
    with pytest.raises(ValueError, match=r"policy is \[1\] \(list\), expected a mapping"):
        TrainConfig.from_dict({"policy": [1]})
    with pytest.raises(ValueError, match=r"policy\.hidden_dims is .* expected a list of integers"):
        TrainConfig.from_dict({"policy": {"hidden_dims": [64, "x"]}})
    assert TrainConfig.from_dict({"learning_rate": 1}).learning_rate == 1.0
    with pytest.raises(ValueError, match="resume needs a checkpoint_path"):
        train_policy(bandit_episodes(0, count=2), SMALL_TRAINING, resume=True)
    with pytest.raises(ValueError, match="no episodes"):
        train_policy([], SMALL_TRAINING)
    with pytest.raises(ValueError, match="value_folds 2 needs at least that many episodes"):
        train_policy(bandit_episodes(0, count=1), SMALL_TRAINING)


def test_diverging_training_stops_before_writing(tmp_path):
    checkpoint = tmp_path / "policy.pt"
    config = dataclasses.replace(
        SMALL_TRAINING, method="bc", steps=20, batch_size=16, learning_rate=1e12
    )
    with pytest.raises(ValueError, match=r"diverged at policy step \d+ of 20: policy_loss is nan"):
        train_policy(bandit_episodes(0, count=8), config, checkpoint_path=checkpoint)
    assert not checkpoint.exists()


def test_checkpoint_paths_that_would_fail_or_lose_data_are_refused(tmp_path):
    episodes = bandit_episodes(0, count=4)
    config = dataclasses.replace(SMALL_TRAINING, method="bc", steps=2, batch_size=8)
    # Resuming a checkpoint whose training state is gone would train afresh over it.
    kept = tmp_path / "kept.pt"
    kept.write_text("only copy")
    with pytest.raises(ValueError, match=r"its training state .*kept\.train_state\.pt does not"):
        train_policy(episodes, config, checkpoint_path=kept, resume=True)
    assert kept.read_text() == "only copy"
    training_state_path(kept).write_text("garbage")
    with pytest.raises(ValueError, match=r"kept\.train_state\.pt is not a readable training-state"):
        train_policy(episodes, config, checkpoint_path=kept, resume=True)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="folder is a folder: give a file path"):
        train_policy(episodes, config, checkpoint_path=tmp_path / "folder")
    with pytest.raises(ValueError, match=r"kept\.pt is a file, not a folder"):
        train_policy(episodes, config, checkpoint_path=kept / "policy.pt")
    # Nothing to resume and nothing to overwrite: a fresh run.
    train_policy(episodes, config, checkpoint_path=tmp_path / "new.pt", resume=True)
    assert FlowPolicy.load(tmp_path / "new.pt", device="cpu").config.condition == "none"
