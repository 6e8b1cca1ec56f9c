"""Training a flow policy from episodes: CFGRL, goal-conditioned CFGRL, flow BC and flow AWR.

All four methods share one code path and differ only in the condition and the per-sample
weight of the flow-matching loss (docs/algorithms.md, sections 1-2):

- "cfgrl": a value function is trained first (value.py), every sample is labelled
  o = 1 if A(s, a) >= 0 else 0, and the policy learns v(a_t, t, s, o); the condition is
  replaced by null with probability p_uncond so the same network also learns v(a_t, t, s, null).
  At test time w sets how far guidance pushes towards optimality.
- "cfgrl_goal": the condition is a goal g, a future state of the same episode (no value
  function); null with probability p_uncond. w = 1 is goal-conditioned BC, w > 1 improves on it.
- "bc": plain flow behaviour cloning (null condition only).
- "awr": advantage-weighted flow BC: the loss of each sample is weighted by
  min(exp(A / beta), max_weight), the weighted-regression baseline CFGRL is compared with.

The policy learns from recorded episodes; synthetic ones (policy-guided diffusion) only train
the value function (dataset.py).

Training is resumable: every ``save_every`` steps the whole training state (networks,
optimisers, random generator, history) is written atomically next to the checkpoint, and a
resumed run continues from its step with the same random stream.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from cfgrl_ros.data.episode import Episode
from cfgrl_ros.paths import file_in_the_way
from cfgrl_ros.policy.checkpoint import atomic_save, resolve_device
from cfgrl_ros.policy.config_types import from_fields
from cfgrl_ros.policy.dataset import ChunkDataset, build_dataset
from cfgrl_ros.policy.flow_policy import NOT_OPTIMAL, NULL, OPTIMAL, FlowPolicy, PolicyConfig
from cfgrl_ros.policy.value import ADVANTAGE_ESTIMATORS, ValueLearner

# method -> the condition the policy is trained with
METHODS: dict[str, str] = {
    "cfgrl": "optimality",
    "cfgrl_goal": "goal",
    "bc": "none",
    "awr": "none",
}
TRAIN_STATE_FORMAT = "cfgrl_ros.policy_train_state"
TRAIN_STATE_VERSION = 2  # 2: the policy config holds an ObservationSpec
# Fields a resumed run may change: more steps, another save interval.
RESUMABLE_CHANGES = ("steps", "save_every")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. Defaults suit Lift, state only."""

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    method: str = "cfgrl"  # "cfgrl", "cfgrl_goal", "bc" or "awr"
    advantage: str = "mc"  # "mc" or "iql": how A(s, a) is estimated (cfgrl and awr)
    steps: int = 20_000  # policy gradient steps
    value_steps: int = 10_000  # value-function gradient steps before them (cfgrl and awr)
    batch_size: int = 256
    learning_rate: float = 3e-4
    grad_clip_norm: float = 1.0
    p_uncond: float = 0.1  # probability of training a sample with the null condition
    discount: float = 0.99  # per control tick
    value_horizon: int = 4  # actions per value step: the executed part of a chunk
    value_hidden_dims: tuple[int, ...] = (256, 256)
    value_folds: int = 2  # out-of-fold advantages (see value.ValueLearner); 1: in-sample
    expectile: float = 0.7  # IQL's tau
    target_update_rate: float = 0.005  # Polyak rate of the target Q networks
    awr_temperature: float = 0.1  # beta in exp(A / beta); returns are in [0, 1] for 0/1 success
    awr_max_weight: float = 100.0
    image_shift: int = 4  # random-shift augmentation of camera images, pixels
    seed: int = 0
    device: str = "auto"  # "auto", "cpu" or "cuda"
    save_every: int = 1000  # steps between training-state files (0: only at the end)

    def __post_init__(self) -> None:
        problems = []
        if self.method not in METHODS:
            problems.append(f"method {self.method!r} is not one of {sorted(METHODS)}")
        if self.advantage not in ADVANTAGE_ESTIMATORS:
            problems.append(f"advantage {self.advantage!r} is not one of {ADVANTAGE_ESTIMATORS}")
        if self.method in ("cfgrl", "cfgrl_goal") and not 0.0 < self.p_uncond < 1.0:
            problems.append(
                f"p_uncond {self.p_uncond} must be in (0, 1): guidance needs both the null and "
                "the conditioned velocity"
            )
        for name in ("steps", "batch_size", "value_horizon"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.save_every < 0 or self.image_shift < 0:
            problems.append("save_every and image_shift must be >= 0")
        if self.method in ("cfgrl", "awr") and self.value_steps < 1:
            problems.append(f"method {self.method!r} needs value_steps >= 1 to label its data")
        if not 0.0 < self.discount <= 1.0 or not 0.0 < self.expectile < 1.0:
            problems.append("discount must be in (0, 1] and expectile in (0, 1)")
        if self.awr_temperature <= 0.0:
            problems.append(f"awr_temperature must be > 0, got {self.awr_temperature}")
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))

    @property
    def uses_value(self) -> bool:
        return self.method in ("cfgrl", "awr")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Inverse of dataclasses.asdict (the policy's fields under "policy", lists for tuples);
        names unknown fields and values of the wrong type."""
        return from_fields(cls, values)


@dataclass
class TrainResult:
    """The trained policy (eval mode), per-step losses, and a summary of the data and labels.

    history: name -> one float per step of that phase ("policy_loss"; "value_loss" and, for
    IQL, "q_loss" when a value function was trained).
    info: "samples" (recorded ticks, the policy's data), "synthetic_samples" (value-only),
    "episodes", and "optimal_fraction" (cfgrl) or "mean_awr_weight" (awr) over the samples.
    """

    policy: FlowPolicy
    history: dict[str, list[float]]
    info: dict[str, float]


def training_state_path(checkpoint_path: Path) -> Path:
    """Where the resumable training state of a checkpoint lives.

    policy.pt -> policy.train_state.pt
    """
    checkpoint_path = Path(checkpoint_path)
    return checkpoint_path.with_name(checkpoint_path.stem + ".train_state.pt")


def check_checkpoint_path(checkpoint_path: Path, resume: bool) -> None:
    """Refuse, before any training, a checkpoint path the run could not write or would wrongly
    overwrite: a folder, a path under a file, or (resuming) a checkpoint without the training
    state to continue it, which a fresh run would replace."""
    checkpoint_path = Path(checkpoint_path)
    state_path = training_state_path(checkpoint_path)
    for path in (checkpoint_path, state_path):
        if path.is_dir():
            raise ValueError(f"{path} is a folder: give a file path, e.g. {path / 'policy.pt'}")
    blocking = file_in_the_way(checkpoint_path)
    if blocking is not None:
        raise ValueError(
            f"cannot write {checkpoint_path}: {blocking} is a file, not a folder; choose another "
            "path"
        )
    if resume and checkpoint_path.exists() and not state_path.exists():
        raise ValueError(
            f"cannot resume {checkpoint_path}: its training state {state_path} does not exist, "
            f"and a fresh run would overwrite {checkpoint_path}; write to another path, or delete "
            f"{checkpoint_path} to train afresh"
        )


def flow_matching_loss(
    policy: FlowPolicy,
    features: torch.Tensor,
    chunks: torch.Tensor,
    condition: torch.Tensor,
    goal: torch.Tensor | None,
    weight: torch.Tensor | None,
    generator: torch.Generator,
) -> torch.Tensor:
    """E[weight * || v(a_t, t, s, c) - (a_1 - a_0) ||^2], a_t = (1 - t) a_0 + t a_1.

    a_1: the data's chunk in the flow's normalised action space, a_0 ~ N(0, I), t ~ U[0, 1].
    """
    target_chunk = policy.action_normaliser.normalise(chunks)
    start_noise = torch.randn(target_chunk.shape, device=chunks.device, generator=generator)
    t = torch.rand(len(chunks), device=chunks.device, generator=generator)
    actions_t = (1 - t[:, None, None]) * start_noise + t[:, None, None] * target_chunk
    velocity = policy(features, actions_t, t, condition, goal)
    per_sample = (velocity - (target_chunk - start_noise)).pow(2).mean(dim=(1, 2))
    return per_sample.mean() if weight is None else (weight * per_sample).mean()


class _Run:
    """The mutable state of one training run (what a training-state file holds)."""

    def __init__(self, config: TrainConfig, data: ChunkDataset, device: torch.device) -> None:
        self.config = config
        self.data = data
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
            torch.manual_seed(config.seed)
            self.policy = FlowPolicy(config.policy)
            recorded = slice(0, data.policy_rows)
            self.policy.state_normaliser.fit(data.states[recorded])
            self.policy.action_normaliser.fit(data.chunks[recorded, 0])  # row t's own action
            self.value = (
                ValueLearner(
                    data,
                    config.value_folds,
                    config.advantage,
                    self.policy.state_normaliser,
                    config.policy.action_dim,
                    min(config.value_horizon, config.policy.horizon),
                    config.value_hidden_dims,
                    config.learning_rate,
                    config.expectile,
                    config.target_update_rate,
                )
                if config.uses_value
                else None
            )
        self.policy.to(device)
        if self.value is not None:
            self.value.to(device)
        self.optimiser = torch.optim.Adam(self.policy.parameters(), lr=config.learning_rate)
        self.generator = torch.Generator(device).manual_seed(config.seed)
        self.step = 0
        self.history: dict[str, list[float]] = {"policy_loss": []}
        if self.value is not None:
            self.history["value_loss"] = []
        if config.uses_value and config.advantage == "iql":
            self.history["q_loss"] = []

    @property
    def value_steps(self) -> int:
        return self.config.value_steps if self.value is not None else 0

    @property
    def total_steps(self) -> int:
        return self.value_steps + self.config.steps

    def state(self) -> dict[str, Any]:
        return {
            "format": TRAIN_STATE_FORMAT,
            "format_version": TRAIN_STATE_VERSION,
            "config": dataclasses.asdict(self.config),
            "data_fingerprint": self.data.fingerprint(),
            "step": self.step,
            "policy": self.policy.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "value": None if self.value is None else self.value.training_state(),
            "generator": self.generator.get_state(),
            "history": self.history,
        }

    def restore(self, state: Any, path: Path) -> None:
        """Continue from a training-state file; refuses one made with other settings or data."""
        if not isinstance(state, dict) or state.get("format") != TRAIN_STATE_FORMAT:
            raise ValueError(f"{path} is not a cfgrl_ros training-state file")
        if state.get("format_version") != TRAIN_STATE_VERSION:
            raise ValueError(
                f"{path} has training-state version {state.get('format_version')}, this build "
                f"reads {TRAIN_STATE_VERSION}; start without resume"
            )
        stored = TrainConfig.from_dict(state["config"])
        ours = dataclasses.asdict(self.config)
        theirs = dataclasses.asdict(stored)
        changed = [
            f"{key}: {theirs[key]!r} -> {ours[key]!r}"
            for key in ours
            if key not in RESUMABLE_CHANGES and ours[key] != theirs[key]
        ]
        if changed:
            raise ValueError(
                f"cannot resume from {path}: the settings differ ({'; '.join(changed)}); "
                f"only {RESUMABLE_CHANGES} may change, or start without resume"
            )
        if state["data_fingerprint"] != self.data.fingerprint():
            raise ValueError(
                f"cannot resume from {path}: it was trained on other data (rows, episodes, sums "
                f"{state['data_fingerprint']} vs {self.data.fingerprint()}); start without resume"
            )
        self.policy.load_state_dict(state["policy"])
        self.optimiser.load_state_dict(state["optimiser"])
        if self.value is not None:
            self.value.load_training_state(state["value"])
        self.generator.set_state(state["generator"])
        self.step = state["step"]
        self.history = state["history"]


def train_policy(
    episodes: Sequence[Episode],
    config: TrainConfig,
    checkpoint_path: Path | None = None,
    resume: bool = False,
    progress: bool = False,
) -> TrainResult:
    """Train a flow policy on episodes; save it to checkpoint_path (atomically) when given.

    With resume=True and a training-state file next to checkpoint_path (see
    training_state_path), training continues from its step; without one it starts afresh, unless
    that would overwrite checkpoint_path (check_checkpoint_path). A loss or weights that become
    inf or NaN stop training with a ValueError, before checkpoint_path is written.
    """
    if resume and checkpoint_path is None:
        raise ValueError("resume needs a checkpoint_path (the training state is kept beside it)")
    if not episodes:
        raise ValueError("no episodes to train on")
    device = resolve_device(config.device)
    state_path = None if checkpoint_path is None else training_state_path(checkpoint_path)
    state = None
    if checkpoint_path is not None:
        check_checkpoint_path(checkpoint_path, resume)
        if resume and state_path.is_file():
            state = _load_state(state_path)
    config = dataclasses.replace(
        config, policy=dataclasses.replace(config.policy, condition=METHODS[config.method])
    )
    data = build_dataset(
        episodes,
        config.policy.horizon,
        config.policy.observation,
        config.discount,
        min(config.value_horizon, config.policy.horizon),
        device,
    )
    run = _Run(config, data, device)
    if state is not None:
        run.restore(state, state_path)

    info = {
        "samples": float(data.policy_rows),
        "synthetic_samples": float(len(data) - data.policy_rows),
        "episodes": float(data.episode_count),
    }
    condition = weight = None
    labelled = run.value is None
    # closed on an error too, so that the error starts on a line of its own
    with tqdm(
        total=run.total_steps, initial=run.step, disable=not progress, desc=config.method
    ) as bar:
        while run.step < run.total_steps:
            if run.step < run.value_steps:
                losses = run.value.update(data, config.batch_size, run.generator)
            else:
                if not labelled:
                    condition, weight, info = _labels(run, info)
                    labelled = True
                losses = _policy_step(run, condition, weight)
            for name, loss in losses.items():
                if not math.isfinite(loss):
                    raise ValueError(_diverged(run, run.step, f"{name} is {loss}"))
                run.history[name].append(loss)
            run.step += 1
            bar.update()
            if run.step % 100 == 0:
                bar.set_postfix(losses)
            save_now = config.save_every and run.step % config.save_every == 0
            if state_path is not None and (save_now or run.step == run.value_steps):
                atomic_save(run.state(), state_path)
    if not labelled:  # resumed after the end: still report the labels
        _, _, info = _labels(run, info)

    policy = run.policy.eval()
    if not all(value.isfinite().all() for value in policy.state_dict().values()):
        raise ValueError(_diverged(run, run.step - 1, "the last step left non-finite weights"))
    if checkpoint_path is not None:
        atomic_save(run.state(), state_path)
        policy.save(checkpoint_path)
    return TrainResult(policy=policy, history=run.history, info=info)


def _load_state(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file fails in pickle, zip or torch code
        raise ValueError(
            f"{path} is not a readable training-state file ({type(error).__name__}); write to "
            "another path, or delete it and its checkpoint to train afresh"
        ) from None


def _diverged(run: _Run, step: int, what: str) -> str:
    """The error of a run whose loss or weights became inf or NaN at (0-based) `step`."""
    if step < run.value_steps:
        phase = f"value-function step {step + 1} of {run.value_steps}"
    else:
        phase = f"policy step {step - run.value_steps + 1} of {run.config.steps}"
    return (
        f"training diverged at {phase}: {what}; no checkpoint was written. Train with a lower "
        f"learning_rate (this run: {run.config.learning_rate:g})"
    )


def _labels(
    run: _Run, info: dict[str, float]
) -> tuple[torch.Tensor | None, torch.Tensor | None, dict[str, float]]:
    """Per-row optimality labels (cfgrl) or AWR weights (awr) from the trained value function."""
    advantage = run.value.advantages(run.data)[: run.data.policy_rows]  # the policy's rows
    if run.config.method == "cfgrl":
        # o = 1 if A(s, a) >= 0 else 0
        optimal = advantage >= 0
        condition = torch.where(optimal, OPTIMAL, NOT_OPTIMAL)
        return condition, None, {**info, "optimal_fraction": optimal.float().mean().item()}
    # AWR: weight = min(exp(A / beta), max_weight)
    weight = torch.exp(advantage / run.config.awr_temperature).clamp_max(run.config.awr_max_weight)
    return None, weight, {**info, "mean_awr_weight": weight.mean().item()}


def _policy_step(
    run: _Run, condition: torch.Tensor | None, weight: torch.Tensor | None
) -> dict[str, float]:
    """One gradient step of the flow-matching loss with the method's condition and weight."""
    config, data, device, generator = run.config, run.data, run.data.states.device, run.generator
    batch = config.batch_size
    rows = torch.randint(0, data.policy_rows, (batch,), device=device, generator=generator)
    goal = None
    if config.method == "cfgrl":
        row_condition = condition[rows]
    elif config.method == "cfgrl_goal":
        # g = s_{t'}, t' uniform over the remaining ticks t..T-1 of the same episode
        remaining = data.episode_end[rows] - rows + 1
        offset = (torch.rand(batch, device=device, generator=generator) * remaining).long()
        goal = data.states[rows + offset.clamp_max(remaining - 1)]
        row_condition = torch.full((batch,), OPTIMAL, device=device)
    else:
        row_condition = torch.full((batch,), NULL, device=device)
    if config.method in ("cfgrl", "cfgrl_goal"):
        # classifier-free guidance training: c <- null with probability p_uncond
        dropped = torch.rand(batch, device=device, generator=generator) < config.p_uncond
        row_condition = torch.where(dropped, NULL, row_condition)

    inputs = {"state": data.states[rows], **{key: data.images[key][rows] for key in data.images}}
    features = run.policy.encode_tensors(inputs, config.image_shift, generator)
    loss = flow_matching_loss(
        run.policy,
        features,
        data.chunks[rows],
        row_condition,
        goal,
        None if weight is None else weight[rows],
        generator,
    )
    run.optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.policy.parameters(), config.grad_clip_norm)
    run.optimiser.step()
    return {"policy_loss": loss.item()}
