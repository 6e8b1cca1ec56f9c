"""The learned success detector: labels, training, evaluation, checkpoints and the command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cfgrl_ros.cli.main import main
from cfgrl_ros.data.bag_reader import read_bags
from cfgrl_ros.data.episode import Episode
from cfgrl_ros.observation import IMAGE_KEYS, PROPRIOCEPTION, ObservationSpec
from cfgrl_ros.success.detector import DetectorConfig, SuccessDetector
from cfgrl_ros.success.training import (
    IGNORED,
    SuccessTrainConfig,
    check_episodes,
    evaluate,
    first_detection,
    frame_labels,
    split_episodes,
    train_detector,
)

SIZE = (32, 32)
SMALL = DetectorConfig(
    observation=ObservationSpec(PROPRIOCEPTION, IMAGE_KEYS, SIZE),
    image_channels=4,
    image_feature_dim=8,
    state_hidden_dims=(16,),
    state_feature_dim=8,
    hidden_dims=(16,),
)


def toy_episode(rng: np.random.Generator, success: bool, length: int = 30) -> Episode:
    """Dark camera frames; a successful episode's last 6 frames are bright (the task done)."""
    observations = {
        "joint_pos": rng.normal(size=(length, 7)),
        "gripper_width": rng.uniform(0, 0.08, (length, 1)),
        "eef_pos": rng.normal([0.5, 0.0, 0.1], 0.05, (length, 3)),
        "eef_quat": np.tile([1.0, 0.0, 0.0, 0.0], (length, 1)),
    }
    for key in IMAGE_KEYS:
        images = rng.integers(0, 60, (length, *SIZE, 3), dtype=np.uint8)
        if success:
            images[-6:] += 180
        observations[key] = images
    rewards = np.zeros(length)
    rewards[-1] = float(success)
    return Episode(observations, np.zeros((length, 7)), rewards, success)


def test_labels_leave_out_the_frames_just_before_success():
    config = SuccessTrainConfig(positive_ticks=3, ignore_ticks=4)
    rng = np.random.default_rng(0)
    labels = frame_labels(toy_episode(rng, True, length=10), config)
    assert labels.tolist() == [0, 0, 0] + [IGNORED] * 4 + [1, 1, 1]
    assert not frame_labels(toy_episode(rng, False, length=10), config).any()
    assert first_detection(np.array([0.9, 0.2, 0.6, 0.7, 0.8, 0.9]), 0.5, 3) == 4
    assert first_detection(np.array([0.9, 0.9, 0.2]), 0.5, 3) is None


def test_an_episode_that_says_when_its_task_was_done_is_labelled_and_judged_from_there(tmp_path):
    config = SuccessTrainConfig(positive_ticks=3, ignore_ticks=2, threshold=0.5, hold_ticks=1)
    episode = toy_episode(np.random.default_rng(0), True, length=10)
    episode.metadata["success_tick"] = 4  # the action of row 4 completed the task
    assert frame_labels(episode, config).tolist() == [0, 0, 0, IGNORED, IGNORED] + [1] * 5

    class Scores:  # a detector that fires from a given frame on
        def __init__(self, fires_at: int) -> None:
            self.fires_at = fires_at

        def scores(self, observations):
            return (np.arange(len(observations["eef_pos"])) >= self.fires_at).astype(float)

    assert evaluate(Scores(5), [episode], config)["episodes"][0]["result"] == "success"
    assert evaluate(Scores(4), [episode], config)["episodes"][0]["result"] == "early"


def test_held_out_episodes_have_the_same_share_of_successes():
    rng = np.random.default_rng(0)
    episodes = [toy_episode(rng, i % 3 == 0, length=4) for i in range(30)]  # 10 successes
    train, held_out = split_episodes(episodes, 0.2, seed=1)
    assert sorted(train + held_out) == list(range(30))
    assert sum(episodes[i].success for i in held_out) == 2 and len(held_out) == 6


def test_a_detector_learns_what_done_looks_like_and_is_evaluated_per_episode(tmp_path):
    rng = np.random.default_rng(0)
    episodes = [toy_episode(rng, success=i % 2 == 0) for i in range(8)]
    config = SuccessTrainConfig(steps=150, batch_size=16, positive_ticks=5, ignore_ticks=3)
    result = train_detector(episodes[:6], SMALL, config)
    assert np.mean(result.losses[-20:]) < 0.5 * np.mean(result.losses[:5])

    evaluation = evaluate(result.detector, episodes[6:], config)
    assert evaluation["precision"] == evaluation["recall"] == 1.0
    assert [e["result"] for e in evaluation["episodes"]] == ["success", "failure"]
    assert evaluation["episodes"][0]["detected_at"] >= 30 - 5
    assert evaluation["episode_precision"] == evaluation["episode_recall"] == 1.0

    path = tmp_path / "detector.pt"
    result.detector.save(path)
    loaded = SuccessDetector.load(path)
    assert loaded.config == SMALL
    observations = episodes[6].observations
    np.testing.assert_allclose(
        loaded.scores(observations), result.detector.scores(observations), atol=1e-6
    )
    wrong = {**observations, "image": np.zeros((30, 40, 40, 3), np.uint8)}
    with pytest.raises(ValueError, match=r"camera 'image' gives \(40, 40, 3\) uint8 images"):
        loaded.scores(wrong)


def test_bad_training_data_is_refused_with_the_reason(tmp_path):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="no successful episode"):
        check_episodes([toy_episode(rng, False)], SMALL)
    without_camera = toy_episode(rng, True)
    del without_camera.observations["wrist_image"]
    with pytest.raises(ValueError, match=r"no \['wrist_image'\] camera frames"):
        check_episodes([without_camera], SMALL)
    with pytest.raises(ValueError, match="reads camera frames"):
        DetectorConfig(observation=ObservationSpec())
    policy_file = tmp_path / "policy.pt"
    policy_file.write_bytes(b"not a detector")
    with pytest.raises(ValueError, match="is not a readable success detector"):
        SuccessDetector.load(policy_file)


@pytest.mark.sim
def test_train_success_on_a_recorded_bag(tmp_path, capsys):
    bag = tmp_path / "cameras"
    collect = ["collect", "--episodes", "4", "--noise", "0.2", "--seed", "3", "--horizon", "60"]
    delay = ["--success-delay", "6"]  # the success is marked 6 ticks after the task was done
    assert main([*collect, *delay, "--camera", "--image-size", "32", "--out", str(bag)]) == 0
    episodes = read_bags([bag], observation=ObservationSpec(PROPRIOCEPTION, IMAGE_KEYS, SIZE))
    for episode in episodes:
        if episode.success:
            assert episode.metadata["success_tick"] == len(episode) - 7
            held = episode.observations["eef_pos"][-6:]  # the arm holds still meanwhile
            assert np.abs(held - held[0]).max() < 0.01
        else:
            assert "success_tick" not in episode.metadata
    out = tmp_path / "detector.pt"
    flags = ["--image-size", "32", "--steps", "20", "--holdout", "0.5", "--no-progress"]
    code = main(["train-success", "--bag", str(bag), "--out", str(out), *flags, "--json"])
    assert code == 0  # 3 of the 4 episodes succeed: one of them is held out
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"precision", "recall", "episode_precision", "episodes"} <= set(summary)
    assert all(
        e["result"] in ("success", "early", "missed") for e in summary["episodes"] if e["success"]
    )
    for suffix in (".confusion.png", ".scores.png"):
        assert (tmp_path / f"detector{suffix}").read_bytes()[:4] == b"\x89PNG"
    assert SuccessDetector.load(out).config.task == "lift"
