"""Policy-guided diffusion: windows, the trajectory model, guidance, dynamics error, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cfgrl_ros.data.episode import Episode
from cfgrl_ros.pgd.diffusion import TrajectoryModel, TrajectoryModelConfig
from cfgrl_ros.pgd.dynamics import (
    DynamicsModel,
    Transitions,
    episode_transitions,
    window_transitions,
    world_model_rollouts,
)
from cfgrl_ros.pgd.target import GaussianTarget, flow_policy_action
from cfgrl_ros.pgd.trajectories import WindowLayout, episodes_from_windows, sub_trajectories

HORIZON = 12
STEP = 0.02  # metres moved per tick at |action| = 1 (the default adapter's max_translation)
EEF = slice(8, 11)  # eef_pos in the state vector
OBJECT = slice(15, 18)  # object_pos in the state vector


def reach_episodes(count: int, seed: int) -> list[Episode]:
    """Reaching episodes: the gripper moves toward the object with noisy proportional actions
    (a random gain per episode); success when within 2 cm, else a timeout after 30 ticks."""
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(count):
        eef = rng.uniform([0.4, -0.2, 0.1], [0.6, 0.2, 0.2])
        target = rng.uniform([0.4, -0.2, 0.0], [0.6, 0.2, 0.0])
        gain = rng.uniform(1.0, 4.0)
        rows: dict[str, list] = {key: [] for key in ("eef", "actions")}
        success = False
        for _ in range(30):
            action = np.zeros(7)
            action[:3] = np.clip(gain * (target - eef) + rng.normal(0, 0.2, 3), -1, 1)
            action[6] = -1.0
            rows["eef"].append(eef.copy())
            rows["actions"].append(action)
            eef = eef + STEP * action[:3]
            if np.linalg.norm(target - eef) < 0.02:
                success = True
                break
        eef_track = np.asarray(rows["eef"], dtype=np.float32)
        length = len(eef_track)
        rewards = np.zeros(length, dtype=np.float32)
        rewards[-1] = float(success)
        identity = np.tile(np.float32([0, 0, 0, 1]), (length, 1))
        observations = {
            "joint_pos": np.concatenate(
                [eef_track, -eef_track, eef_track.sum(1, keepdims=True)], 1
            ),
            "gripper_width": np.full((length, 1), 0.08, dtype=np.float32),
            "eef_pos": eef_track,
            "eef_quat": identity,
            "object_pos": np.tile(target.astype(np.float32), (length, 1)),
            "object_quat": identity.copy(),
        }
        actions = np.asarray(rows["actions"], dtype=np.float32)
        episodes.append(Episode(observations, actions, rewards, success))
    return episodes


def reach_target(states: torch.Tensor) -> torch.Tensor:
    """A stiffer reaching controller than the data's: the target policy's action mu(s)."""
    actions = torch.zeros(len(states), 7)
    actions[:, :3] = torch.clamp(8.0 * (states[:, OBJECT] - states[:, EEF]), -1, 1)
    actions[:, 6] = -1.0
    return actions


@pytest.fixture(scope="module")
def episodes() -> list[Episode]:
    return reach_episodes(60, seed=0)


@pytest.fixture(scope="module")
def trained(episodes) -> tuple[TrajectoryModel, np.ndarray]:
    windows = sub_trajectories(episodes, HORIZON)
    config = TrajectoryModelConfig(
        horizon=HORIZON, channels=64, blocks=4, train_steps=1200, batch_size=64, learning_rate=2e-3
    )
    torch.set_num_threads(1)
    model, losses = TrajectoryModel.fit(windows, config, progress=False)
    assert np.mean(losses[-50:]) < 0.5 * np.mean(losses[:50])
    return model, windows


def test_windows_pad_successes_and_convert_back(episodes):
    layout = WindowLayout(HORIZON)
    success = next(e for e in episodes if e.success and len(e) > HORIZON)
    timeout = next(e for e in episodes if not e.success)
    windows = sub_trajectories([success, timeout], HORIZON)
    # A success may end anywhere in a window (padded after it); a timeout is never padded.
    assert len(windows) == len(success) + len(timeout) - HORIZON + 1
    last = windows[len(success) - 1]  # starts at the success tick: terminal, then padding
    assert last[0, layout.reward] == 1.0 and np.all(last[:, layout.done] == 1.0)
    assert np.all(last[1:, layout.reward] == 0.0)

    back = episodes_from_windows(windows, HORIZON, metadata={"source": "test"})
    tail = back[len(success) - HORIZON + 1]  # its second-to-last row is the success
    assert tail.success and len(tail) == HORIZON - 1 and tail.rewards[-1] == 1.0
    np.testing.assert_allclose(tail.states(), success.states()[-(HORIZON - 1) :], atol=1e-6)
    first_timeout = back[len(success)]
    assert not first_timeout.success and len(first_timeout) == HORIZON
    np.testing.assert_allclose(first_timeout.actions, timeout.actions[:HORIZON])
    assert all(e.synthetic and e.metadata == {"source": "test"} for e in back)


def test_windows_need_episodes_long_enough():
    short = [e for e in reach_episodes(10, seed=1) if not e.success][:1]
    with pytest.raises(ValueError, match="smaller --horizon"):
        sub_trajectories(short, 100)


@pytest.mark.slow
def test_unguided_samples_match_data_statistics(trained):
    model, windows = trained
    layout = model.layout
    samples = model.sample(1024, denoising_steps=32, seed=1, progress=False)
    assert samples.shape == (1024, HORIZON, layout.width)
    data_rows = windows.reshape(-1, layout.width)
    sample_rows = samples.reshape(-1, layout.width)
    columns = np.r_[layout.states, layout.actions]
    varying = columns[data_rows[:, columns].std(0) > 1e-4]
    constant = np.setdiff1d(columns, varying)  # orientation, gripper: checked by value
    std = data_rows[:, varying].std(0)
    mean_error = (sample_rows[:, varying].mean(0) - data_rows[:, varying].mean(0)) / std
    std_ratio = sample_rows[:, varying].std(0) / std
    assert np.all(np.abs(mean_error) < 0.25), mean_error
    assert np.all((std_ratio > 0.7) & (std_ratio < 1.3)), std_ratio
    np.testing.assert_allclose(
        sample_rows[:, constant].mean(0), data_rows[:, constant].mean(0), atol=1e-3
    )
    # The transitions follow the real dynamics: the gripper moves by STEP * action.
    steps = window_transitions(samples, HORIZON)
    moves = steps.next_states[:, EEF] - steps.states[:, EEF]
    dynamics_error = np.abs(moves - STEP * np.clip(steps.actions[:, :3], -1, 1)).mean()
    assert dynamics_error < 0.15 * np.abs(moves).mean(), (dynamics_error, np.abs(moves).mean())


@pytest.mark.slow
def test_guidance_raises_target_likelihood(trained):
    model, windows = trained
    layout = model.layout
    target = GaussianTarget(reach_target, model.action_std)
    log_likelihoods, distances = [], []
    for guidance in (0.0, 2.0, 8.0):
        samples = model.sample(
            256,
            denoising_steps=32,
            guidance=guidance,
            target_log_prob=target.log_prob,
            seed=2,
            progress=False,
        )
        steps = window_transitions(samples, HORIZON)
        states, actions = torch.as_tensor(steps.states), torch.as_tensor(steps.actions)
        log_likelihoods.append(float(target.log_prob(states, actions).mean()))
        distances.append(float((actions - reach_target(states))[:, :3].abs().mean()))
        # The states stay those of the data: the guidance moves actions, not the scene.
        data_states = torch.as_tensor(windows[:, :, layout.states]).flatten(0, 1)
        z = (states.mean(0) - data_states.mean(0)) / data_states.std(0).clamp_min(1e-3)
        assert torch.all(z.abs() < 1.0)
    assert log_likelihoods[0] + 2.0 < log_likelihoods[1] < log_likelihoods[2] - 0.5
    assert distances[0] > distances[1] > distances[2]
    assert distances[2] < 0.3 * distances[0]


@pytest.mark.slow
def test_guidance_needs_a_target(trained):
    model, _ = trained
    with pytest.raises(ValueError, match="target policy"):
        model.sample(4, guidance=1.0, progress=False)
    target = GaussianTarget(reach_target, model.action_std)
    for guidance in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite number >= 0"):
            model.sample(4, guidance=guidance, target_log_prob=target.log_prob, progress=False)


@pytest.mark.slow
def test_model_load_refuses_other_files_and_save_leaves_no_partial_file(
    trained, tmp_path, monkeypatch
):
    model, _ = trained
    other = tmp_path / "other.pt"
    for content in (b"", b"garbage"):
        other.write_bytes(content)
        with pytest.raises(ValueError, match="is not a PGD trajectory model"):
            TrajectoryModel.load(other)
    torch.save({"format": "cfgrl_ros.pgd_trajectory_model", "format_version": 1}, other)
    with pytest.raises(ValueError, match="damaged PGD trajectory model"):
        TrajectoryModel.load(other)

    def interrupted_save(payload, file):
        Path(file).write_bytes(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        model.save(tmp_path / "pgd.pt")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["other.pt"]


@pytest.mark.slow
def test_model_save_and_load_sample_identically(trained, tmp_path):
    model, _ = trained
    path = tmp_path / "pgd.pt"
    model.save(path)
    loaded = TrajectoryModel.load(path)
    assert loaded.fingerprint == model.fingerprint
    np.testing.assert_array_equal(
        loaded.sample(8, denoising_steps=4, seed=3, progress=False),
        model.sample(8, denoising_steps=4, seed=3, progress=False),
    )


@pytest.mark.slow
def test_dynamics_error_tells_real_from_broken_transitions(episodes):
    real = episode_transitions(episodes[:40])
    held_out = episode_transitions(episodes[40:])
    evaluator = DynamicsModel.fit(real, hidden_dims=(64, 64), steps=600, progress=False)
    reference = evaluator.error(held_out)
    shuffled = Transitions(
        held_out.states,
        np.random.default_rng(0).permutation(held_out.actions),
        held_out.next_states,
    )
    broken = evaluator.error(shuffled)
    assert set(reference) == {
        "joint_pos",
        "gripper_width",
        "eef_pos",
        "eef_quat",
        "object_pos",
        "object_quat",
    }
    assert reference["eef_pos"] < 0.2 * broken["eef_pos"]
    assert reference["eef_pos"] < 1e-3  # metres: the reach dynamics are nearly linear

    def data_like_controller(states: torch.Tensor) -> torch.Tensor:
        actions = torch.zeros(len(states), 7)
        actions[:, :3] = torch.clamp(2.5 * (states[:, OBJECT] - states[:, EEF]), -1, 1)
        actions[:, 6] = -1.0
        return actions

    rollouts = world_model_rollouts(evaluator, held_out.states[:5], data_like_controller, HORIZON)
    assert rollouts.states.shape == (5 * (HORIZON - 1), held_out.states.shape[1])
    # Under actions like the data's, the rollout moves the gripper as the real dynamics would.
    moved = rollouts.next_states[:, EEF] - rollouts.states[:, EEF]
    np.testing.assert_allclose(moved, STEP * rollouts.actions[:, :3], atol=3e-3)


def test_flow_policy_target_is_the_first_decoded_action():
    from cfgrl_ros.observation import ObservationSpec
    from cfgrl_ros.policy.flow_policy import FlowPolicy, PolicyConfig

    policy = FlowPolicy(PolicyConfig(hidden_dims=(32,), state_hidden_dims=(32,))).eval()
    states = torch.as_tensor(reach_episodes(2, seed=4)[0].states())
    first = flow_policy_action(policy)(states)
    features = policy.encode({"state": states})
    chunk = policy.decode(features, torch.zeros(len(states), *policy.noise_shape))
    torch.testing.assert_close(first, chunk[:, 0])

    from cfgrl_ros.dsrl.agent import DsrlConfig, make_noise_agent

    agent = make_noise_agent(policy, 1.0, DsrlConfig(algo="dsrl_sac", hidden_sizes=(32,)))
    steered = flow_policy_action(policy, agent)(states)
    for index in (0, len(states) - 1):
        noise = agent.noise(features[index].numpy(), deterministic=True)
        chunk = policy.decode(features[index : index + 1], noise[None])
        torch.testing.assert_close(steered[index], chunk[0, 0])

    camera_policy = FlowPolicy(
        PolicyConfig(
            observation=ObservationSpec(image_keys=("image",), image_size=(32, 32)),
            hidden_dims=(32,),
        )
    )
    with pytest.raises(ValueError, match="state-only policy"):
        flow_policy_action(camera_policy)


@pytest.mark.slow
def test_synthetic_bag_reads_back_marked_synthetic(trained, tmp_path):
    from cfgrl_ros.data.bag_reader import read_bag
    from cfgrl_ros.data.bag_writer import EpisodeBagWriter

    model, _ = trained
    written = episodes_from_windows(model.sample(6, seed=5, progress=False), HORIZON)
    with EpisodeBagWriter(tmp_path / "synthetic", synthetic=True) as writer:
        for episode in written:
            writer.write(episode)
    read = read_bag(tmp_path / "synthetic")
    assert len(read) == len(written)
    for before, after in zip(written, read, strict=True):
        assert after.synthetic and after.success == before.success
        assert len(after) == len(before)
        np.testing.assert_allclose(after.states(), before.states(), atol=1e-5)
        np.testing.assert_allclose(after.actions[:, :6], before.actions[:, :6], atol=1e-4)
        np.testing.assert_array_equal(after.actions[:, 6] > 0, before.actions[:, 6] > 0)


@pytest.fixture(scope="module")
def synthesize_inputs(episodes, tmp_path_factory):
    """A bag of 12 recorded episodes and an untrained state-only policy, in one folder."""
    from cfgrl_ros.data.bag_writer import EpisodeBagWriter
    from cfgrl_ros.policy.flow_policy import FlowPolicy, PolicyConfig

    folder = tmp_path_factory.mktemp("synthesize_inputs")
    with EpisodeBagWriter(folder / "demos") as writer:
        for episode in episodes[:12]:
            writer.write(episode)
    FlowPolicy(PolicyConfig(hidden_dims=(32,), state_hidden_dims=(32,))).save(folder / "p.pt")
    return folder


def synthesize_command(inputs) -> list[str]:
    """A `synthesize` command line that trains and samples in about a second (no --model/--out)."""
    return [
        "synthesize",
        "--bag",
        str(inputs / "demos"),
        "--policy",
        str(inputs / "p.pt"),
        "--guidance",
        "2",
        "--trajectories",
        "5",
        "--horizon",
        "8",
        "--train-steps",
        "20",
        "--batch-size",
        "16",
        "--denoising-steps",
        "4",
        "--no-progress",
    ]


@pytest.mark.slow
def test_synthesize_command_writes_a_synthetic_bag_and_reuses_its_model(
    synthesize_inputs, tmp_path, capsys
):
    from cfgrl_ros.cli.main import main
    from cfgrl_ros.data.bag_reader import read_bag

    command = [*synthesize_command(synthesize_inputs), "--model", str(tmp_path / "pgd.pt")]
    assert main([*command, "--out", str(tmp_path / "synthetic")]) == 0
    assert (tmp_path / "pgd.pt").is_file()
    read = read_bag(tmp_path / "synthetic")
    assert len(read) == 5 and all(e.synthetic for e in read)
    modified = (tmp_path / "pgd.pt").stat().st_mtime_ns
    assert main([*command, "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "pgd.pt").stat().st_mtime_ns == modified  # loaded, not retrained
    assert main([*command, "--out", str(tmp_path / "again")]) == 1  # exists: refused

    # The consumer side: pretrain on recorded + synthetic bags with a mix ratio.
    demos = synthesize_inputs / "demos"
    pretrain = ["pretrain", "--bag", str(demos), "--bag", str(tmp_path / "synthetic")]
    pretrain += ["--method", "bc", "--steps", "2", "--device", "cpu", "--synthetic-ratio"]
    capsys.readouterr()
    assert main([*pretrain, "0", "--out", str(tmp_path / "real_only.pt")]) == 0
    assert "12 episodes (" in capsys.readouterr().err
    assert main([*pretrain, "100", "--out", str(tmp_path / "mixed.pt")]) == 0
    printed = capsys.readouterr().err
    assert "17 episodes (" in printed and "; 5 synthetic)" in printed


def test_synthesize_never_overwrites_a_model_file_it_cannot_reuse(
    synthesize_inputs, tmp_path, capsys
):
    from cfgrl_ros.cli.main import main

    command = [*synthesize_command(synthesize_inputs), "--out", str(tmp_path / "synthetic")]
    policy = synthesize_inputs / "p.pt"
    policy_bytes = policy.read_bytes()
    assert main([*command, "--model", str(policy)]) == 1  # the probe's lost policy
    assert policy.read_bytes() == policy_bytes
    assert "p.pt is not a PGD trajectory model" in capsys.readouterr().err

    # A trajectory model trained with other settings is refused before training, kept as it is.
    model = tmp_path / "pgd.pt"
    assert main([*command, "--model", str(model)]) == 0
    model_bytes = model.read_bytes()
    again = [*command[:-1], str(tmp_path / "again"), "--model", str(model)]
    assert main([*again, "--horizon", "6"]) == 1
    assert model.read_bytes() == model_bytes and not (tmp_path / "again").exists()
    assert "trained with --horizon 8 (now 6)" in capsys.readouterr().err

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model at all")
    assert main([*again, "--model", str(garbage)]) == 1
    assert garbage.read_bytes() == b"not a model at all"
    assert "torch cannot read it" in capsys.readouterr().err

    # Paths where no model file can be written fail before the bags are read.
    (tmp_path / "file").write_text("")
    for unusable in (tmp_path, tmp_path / "file" / "pgd.pt"):
        assert main([*again, "--model", str(unusable)]) == 1
        printed = capsys.readouterr().err
        assert f"--model {unusable}" in printed and "episodes" not in printed


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--guidance", "nan"),
        ("--guidance", "inf"),
        ("--target-std", "nan"),
        ("--target-std", "0"),
        ("--denoising-steps", "0"),
        ("--decode-steps", "0"),
        ("--policy-guidance-weight", "nan"),
    ],
)
def test_synthesize_checks_its_numbers_before_reading_bags(
    synthesize_inputs, tmp_path, capsys, flag, value
):
    from cfgrl_ros.cli.main import main

    command = [*synthesize_command(synthesize_inputs), "--model", str(tmp_path / "pgd.pt")]
    with pytest.raises(SystemExit) as exit_code:
        main([*command, flag, value, "--out", str(tmp_path / "synthetic")])
    assert exit_code.value.code == 2
    assert f"argument {flag}: must be" in capsys.readouterr().err
    assert not (tmp_path / "pgd.pt").exists()  # nothing was trained


def test_synthesize_refuses_an_out_under_a_file_before_training(
    synthesize_inputs, tmp_path, capsys
):
    from cfgrl_ros.cli.main import main

    (tmp_path / "file").write_text("")
    command = [*synthesize_command(synthesize_inputs), "--model", str(tmp_path / "pgd.pt")]
    assert main([*command, "--out", str(tmp_path / "file" / "synthetic")]) == 1
    assert "file is a file, not a directory" in capsys.readouterr().err
    assert not (tmp_path / "pgd.pt").exists()


@pytest.mark.slow
def test_interrupted_synthesize_says_what_it_kept(synthesize_inputs, tmp_path, capsys, monkeypatch):
    from cfgrl_ros.cli.main import main
    from cfgrl_ros.data.bag_writer import EpisodeBagWriter

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    model = tmp_path / "pgd.pt"
    command = [*synthesize_command(synthesize_inputs), "--model", str(model)]
    command += ["--out", str(tmp_path / "synthetic")]
    with monkeypatch.context() as patch:
        patch.setattr(TrajectoryModel, "fit", interrupt)
        assert main(command) == 130
    printed = capsys.readouterr().err
    assert "interrupted; " in printed and "no trajectory model was written" in printed
    assert not model.exists()

    # Interrupted while writing the bag: the trained model is on disk and reused next time.
    with monkeypatch.context() as patch:
        patch.setattr(EpisodeBagWriter, "write", interrupt)
        assert main(command) == 130
    printed = capsys.readouterr().err
    assert f"{tmp_path / 'synthetic'} was not written" in printed
    assert f"the trajectory model {model} is kept" in printed
    assert sorted(path.name for path in tmp_path.iterdir()) == ["pgd.pt"]  # no partial bag
    assert main(command) == 0
    assert "loaded the trajectory model" in capsys.readouterr().err


def test_synthetic_ratio_keeps_every_recorded_episode_and_a_budget_of_synthetic_ones(episodes):
    from dataclasses import replace

    from cfgrl_ros.data.episode import mix_synthetic

    real = episodes[:4]
    synthetic = [replace(episode, synthetic=True) for episode in episodes[4:40]]
    real_ticks = sum(len(episode) for episode in real)
    for ratio in (0.0, 0.5, 2.0):
        mixed = mix_synthetic(real + synthetic, ratio, seed=1)
        assert mixed[: len(real)] == real
        ticks = sum(len(episode) for episode in mixed[len(real) :])
        assert all(episode.synthetic for episode in mixed[len(real) :])
        assert ticks <= ratio * real_ticks
        assert ticks > ratio * real_ticks - max(len(episode) for episode in synthetic)
    assert mix_synthetic(real + synthetic, None) == real + synthetic
    with pytest.raises(ValueError, match="every episode given is synthetic"):
        mix_synthetic(synthetic, 1.0)
    with pytest.raises(ValueError, match="number >= 0, got -1"):
        mix_synthetic(real, -1.0)
