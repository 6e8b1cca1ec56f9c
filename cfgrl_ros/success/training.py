"""Train and evaluate a success detector on labelled episodes (recorded bags).

Frame labels. An episode ends at its outcome: a successful one at (or, when an operator marks
it after the fact, some ticks after) the tick its task was done. Where the episode knows that
tick (`metadata["success_tick"]`: the recording's success Bool came before its end, e.g.
`collect --success-delay`), every frame after it shows the done task and is positive;
otherwise the last `positive_ticks` frames are. The `ignore_ticks` frames before the positives
are left out (the object is all but there: a label either way would be noise); the earlier
frames and every frame of a failed episode are negative. Keep that window short: a detector
that never sees the approach to "done" as negative fires during it (docs/benchmarks.md,
"Success detector": with 15 frames left out it fired early in all 12 held-out Lift
successes, with 3 in none). Batches draw positives and negatives
half and half: positives are a few percent of the frames.

Evaluation on held-out episodes, as the detector node uses it: an episode is detected as a
success at the first tick from which the score has stayed at or above `threshold` for
`hold_ticks` ticks. Per episode the result is "success" (a successful episode detected within
its positive frames, where the task is done), "early" (detected before them: live,
the episode would have ended before the task was done, a false success), "missed" (a successful
episode not detected by its last frame), "false success" (a failed episode detected) or
"failure" (a failed episode not detected). Episode precision = success / (success + early +
false success), episode recall = success / successful episodes; per frame, precision and recall
at `threshold` over the labelled frames.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from cfgrl_ros.data.episode import Episode
from cfgrl_ros.settings import setting, setting_problems
from cfgrl_ros.success.detector import DetectorConfig, SuccessDetector

IGNORED = -1  # a frame label: left out of training and of the per-frame metrics
OUTCOMES = ("success", "early", "missed", "false success", "failure")  # of an episode


@dataclass(frozen=True)
class SuccessTrainConfig:
    """Labels, training and the detection rule."""

    positive_ticks: int = setting(
        5,
        "last frames of a successful episode labelled positive, where it does not say when "
        "its task was done (else every frame after that is)",
        minimum=1,
    )
    ignore_ticks: int = setting(
        3, "frames before those that are left out (neither positive nor negative)", minimum=0
    )
    steps: int = setting(1500, "gradient steps", minimum=1)
    batch_size: int = setting(64, "frames per step (half positive, half negative)", minimum=2)
    learning_rate: float = setting(3e-4, "Adam learning rate", minimum=0.0, above=True)
    shift_pad: int = setting(4, "random-shift augmentation of the images (pixels)", minimum=0)
    threshold: float = setting(
        0.5, "score at or above which a frame counts as done", minimum=0.0, maximum=1.0
    )
    hold_ticks: int = setting(
        5, "consecutive ticks at or above the threshold that detect a success", minimum=1
    )
    seed: int = setting(0, "random seed", minimum=0)

    def __post_init__(self) -> None:
        problems = setting_problems(self)
        if problems:
            raise ValueError("invalid SuccessTrainConfig: " + "; ".join(problems))


def frame_labels(episode: Episode, config: SuccessTrainConfig) -> np.ndarray:
    """1 (done), 0 (not done) or IGNORED per frame of `episode` (the module docstring)."""
    labels = np.zeros(len(episode), dtype=np.int64)
    if episode.success:
        positive_from = first_done_frame(episode, config)
        labels[max(positive_from - config.ignore_ticks, 0) : positive_from] = IGNORED
        labels[positive_from:] = 1
    return labels


def first_done_frame(episode: Episode, config: SuccessTrainConfig) -> int:
    """The first frame of a successful episode that counts as done (the module docstring)."""
    done_tick = episode.metadata.get("success_tick")
    if done_tick is not None and 0 <= done_tick < len(episode) - 1:
        return int(done_tick) + 1
    return max(len(episode) - config.positive_ticks, 0)


def split_episodes(
    episodes: Sequence[Episode], holdout: float, seed: int
) -> tuple[list[int], list[int]]:
    """Training and held-out episode indices, each with the same share of successes."""
    rng = np.random.default_rng(seed)
    train, held_out = [], []
    for outcome in (True, False):
        indices = [i for i, episode in enumerate(episodes) if episode.success == outcome]
        rng.shuffle(indices)
        count = round(len(indices) * holdout)
        held_out += indices[:count]
        train += indices[count:]
    return sorted(train), sorted(held_out)


def check_episodes(episodes: Sequence[Episode], config: DetectorConfig) -> None:
    """ValueError with the reason when `episodes` cannot train this detector."""
    if not any(episode.success for episode in episodes):
        raise ValueError(
            "no successful episode: a success detector needs episodes labelled success "
            "(and failures) to learn from"
        )
    missing = [
        key
        for key in config.observation.image_keys
        if any(key not in episode.observations for episode in episodes)
    ]
    if missing:
        raise ValueError(
            f"the episodes have no {missing} camera frames: record with cameras "
            "(`cfgrl-ros collect --camera`, or the camera topics in the topic map)"
        )


@dataclass
class TrainResult:
    detector: SuccessDetector
    losses: list[float] = field(default_factory=list)


def train_detector(
    episodes: Sequence[Episode],
    detector_config: DetectorConfig,
    config: SuccessTrainConfig,
    progress: Callable[[int], None] | None = None,
) -> TrainResult:
    """A detector trained on the labelled frames of `episodes`; `progress(step)` after each."""
    check_episodes(episodes, detector_config)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    frames = _frames(episodes, detector_config)
    labels = np.concatenate([frame_labels(episode, config) for episode in episodes])
    positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if len(negatives) == 0:
        raise ValueError("no negative frame: record some failed episodes too")
    detector = SuccessDetector(detector_config)
    detector.state_normaliser.fit(torch.as_tensor(frames["state"]))
    optimiser = torch.optim.Adam(detector.parameters(), lr=config.learning_rate)
    half = config.batch_size // 2
    result = TrainResult(detector)
    detector.train()
    for step in range(config.steps):
        batch = np.concatenate(
            [rng.choice(positives, half), rng.choice(negatives, config.batch_size - half)]
        )
        inputs = {key: torch.as_tensor(values[batch]) for key, values in frames.items()}
        targets = torch.as_tensor(labels[batch], dtype=torch.float32)
        # L = BCE(sigmoid(f(o)), y), over a batch balanced between done and not done
        loss = F.binary_cross_entropy_with_logits(detector(inputs, config.shift_pad), targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        result.losses.append(loss.item())
        if progress is not None:
            progress(step)
    detector.eval()
    return result


def _frames(episodes: Sequence[Episode], config: DetectorConfig) -> dict[str, np.ndarray]:
    """Every frame of `episodes` as detector inputs: "state" and the camera keys."""
    spec = config.observation
    frames = {"state": np.concatenate([spec.state_vector(e.observations) for e in episodes])}
    for key in spec.image_keys:
        frames[key] = np.concatenate([episode.observations[key] for episode in episodes])
    return frames


def episode_scores(detector: SuccessDetector, episode: Episode, batch: int = 256) -> np.ndarray:
    """The detector's score at every frame of `episode`."""
    observations = episode.observations
    return np.concatenate(
        [
            detector.scores(
                {key: values[start : start + batch] for key, values in observations.items()}
            )
            for start in range(0, len(episode), batch)
        ]
    )


def first_detection(scores: np.ndarray, threshold: float, hold_ticks: int) -> int | None:
    """The first tick at which the score has been >= threshold for hold_ticks ticks."""
    run = 0
    for tick, score in enumerate(scores):
        run = run + 1 if score >= threshold else 0
        if run >= hold_ticks:
            return tick
    return None


def evaluate(
    detector: SuccessDetector, episodes: Sequence[Episode], config: SuccessTrainConfig
) -> dict:
    """Per-frame and per-episode results on `episodes` (the module docstring)."""
    confusion = np.zeros((2, 2), dtype=int)  # [true label, predicted]
    results = []
    for episode in episodes:
        scores = episode_scores(detector, episode)
        labels = frame_labels(episode, config)
        labelled = labels != IGNORED
        predicted = (scores >= config.threshold).astype(int)
        np.add.at(confusion, (labels[labelled], predicted[labelled]), 1)
        detected = first_detection(scores, config.threshold, config.hold_ticks)
        if episode.success:
            if detected is None:
                outcome = "missed"
            else:
                outcome = "success" if detected >= first_done_frame(episode, config) else "early"
        else:
            outcome = "failure" if detected is None else "false success"
        results.append(
            {
                "success": bool(episode.success),
                "length": len(episode),
                "detected_at": detected,
                "result": outcome,
                "scores": scores.round(3).tolist(),
            }
        )
    counts = {name: sum(r["result"] == name for r in results) for name in OUTCOMES}
    detections = counts["success"] + counts["early"] + counts["false success"]
    successes = sum(episode.success for episode in episodes)
    true_positive, false_positive = confusion[1, 1], confusion[0, 1]
    return {
        "precision": _ratio(true_positive, true_positive + false_positive),
        "recall": _ratio(true_positive, confusion[1].sum()),
        "confusion": confusion.tolist(),
        "episode_precision": _ratio(counts["success"], detections),
        "episode_recall": _ratio(counts["success"], successes),
        "outcomes": counts,
        "episodes": results,
    }


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(float(numerator) / denominator, 4) if denominator else None
