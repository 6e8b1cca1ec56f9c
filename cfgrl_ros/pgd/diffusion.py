"""Policy-guided diffusion (PGD): a flow-matching model of sub-trajectories, sampled under the
guidance of a target policy (Jackson et al., "Policy-Guided Diffusion", 2024; docs/algorithms.md 4).

Model. A window [horizon, width] of (state, action, reward, done) rows (see
`cfgrl_ros.pgd.trajectories`) is modelled as x: its states replaced by the first state and the
changes from tick to tick (s_0, s_1 - s_0, ..., s_{H-1} - s_{H-2}), then normalised per tick
and column. A 1 mm move of the gripper is then as large for the loss as the 10 cm spread of
start positions, which is what makes generated transitions follow the dynamics; states are
recovered by a cumulative sum. x is learned by flow matching exactly as the policy learns
action chunks (docs/algorithms.md 1):
    x0 ~ N(0, I),  t ~ U[0, 1],  x_t = (1 - t) x0 + t x,
    loss = || v(x_t, t) - (x - x0) ||^2.
v is a temporal convolution network over the window's ticks.

Sampling: K Euler steps from x <- x0 ~ N(0, I); for k = 0..K-1, t_k = k / K:
    v = v(x, t_k)
    x_hat = x + (1 - t_k) v                      (the model's estimate of the clean window)
    g = grad_a sum_t log pi(a_t | s_t) at (s_hat, a_hat)      (action columns only)
    v_a <- v_a + lambda_k g,   lambda_k = lambda (1 - t_k)
    x <- x + v / K
With lambda = 0 this samples the behaviour distribution of the recorded windows. With
lambda > 0 the actions are pulled toward what the target policy would do in the generated
states, while the model keeps states, rewards and terminations consistent with those actions:
samples come from a behaviour-regularised target distribution instead of being rolled out
step by step through a learned dynamics model (whose errors compound).
The coefficient decays linearly (the paper's schedule): guidance acts while the window is
still noisy and fades out, so the last denoising steps make the window coherent again. The
score is taken at the clean estimate (s_hat, a_hat), not at the noisy x, because a target
policy is only meaningful on realistic states.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from cfgrl_ros.pgd.trajectories import WindowLayout
from cfgrl_ros.policy.networks import SinusoidalEmbedding
from cfgrl_ros.policy.normaliser import Normaliser

# (states [N, S], actions [N, A]) -> log pi(a | s) [N], differentiable in the actions; raw units.
TargetLogProb = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

MIN_STD = 1e-3  # floor of the per-dimension std: constant columns are only shifted
CHECKPOINT_FORMAT = "cfgrl_ros.pgd_trajectory_model"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class TrajectoryModelConfig:
    """Shape of the trajectory model and how it is trained."""

    horizon: int = 16  # ticks per window
    channels: int = 64
    blocks: int = 4  # residual blocks, dilations 1, 2, 4, 8, 1, 2, ...
    time_dim: int = 64
    train_steps: int = 4000
    batch_size: int = 128
    learning_rate: float = 2e-3

    def __post_init__(self) -> None:
        WindowLayout(self.horizon)  # validates the horizon
        for name in ("channels", "blocks", "time_dim", "train_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"trajectory model {name} must be >= 1, got {getattr(self, name)}")
        if self.channels % 8:
            raise ValueError(f"channels must be a multiple of 8 (GroupNorm), got {self.channels}")


class _ResidualBlock(nn.Module):
    """Two dilated 3-tap convolutions over ticks, the time embedding as scale and shift."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.norm_in = nn.GroupNorm(8, channels)
        self.conv_in = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.time_film = nn.Linear(channels, 2 * channels)
        self.norm_out = nn.GroupNorm(8, channels)
        self.conv_out = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)

    def forward(self, h: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        scale, shift = self.time_film(time)[:, :, None].chunk(2, dim=1)
        y = self.conv_in(nn.functional.silu(self.norm_in(h)))
        y = self.norm_out(y) * (1 + scale) + shift
        return h + self.conv_out(nn.functional.silu(y))


class TemporalVelocityNet(nn.Module):
    """v(x_t, t): windows [B, horizon, width] and times [B] -> velocities [B, horizon, width]."""

    def __init__(self, width: int, config: TrajectoryModelConfig) -> None:
        super().__init__()
        channels = config.channels
        self.time = nn.Sequential(
            SinusoidalEmbedding(config.time_dim),
            nn.Linear(config.time_dim, channels),
            nn.SiLU(),
            nn.Linear(channels, channels),
        )
        self.rows_in = nn.Conv1d(width, channels, 1)
        # Where a tick sits matters: tick 0 holds the state itself, later ticks its changes.
        self.position = nn.Parameter(torch.zeros(1, channels, config.horizon))
        self.blocks = nn.ModuleList(
            _ResidualBlock(channels, dilation=2 ** (i % 4)) for i in range(config.blocks)
        )
        self.rows_out = nn.Sequential(
            nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv1d(channels, width, 1)
        )

    def forward(self, windows: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        time = self.time(t)
        h = self.rows_in(windows.transpose(1, 2)) + self.position
        for block in self.blocks:
            h = block(h, time)
        return self.rows_out(h).transpose(1, 2)


def to_state_changes(windows: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
    """Windows [N, H, width] with states s_t replaced by s_0 and s_t - s_{t-1} for t >= 1."""
    changes = windows.clone()
    states = windows[:, :, layout.states]
    changes[:, 1:, layout.states] = states[:, 1:] - states[:, :-1]
    return changes


def from_state_changes(changes: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
    """The inverse of `to_state_changes`: states are the cumulative sums over ticks."""
    windows = changes.clone()
    windows[:, :, layout.states] = changes[:, :, layout.states].cumsum(dim=1)
    return windows


def guidance_coefficient(guidance: float, t: float) -> float:
    """lambda_k = lambda (1 - t_k): the guidance coefficient at denoising time t_k in [0, 1)."""
    return guidance * (1.0 - t)


def data_fingerprint(windows: np.ndarray, config: TrajectoryModelConfig) -> str:
    """A hash of the training windows and the config: a cached model is reused only on a match."""
    digest = hashlib.sha256(np.ascontiguousarray(windows, dtype=np.float32).tobytes())
    digest.update(json.dumps(asdict(config), sort_keys=True).encode())
    return digest.hexdigest()


class TrajectoryModel:
    """The trajectory flow model and its normaliser: `fit` trains it, `sample` generates."""

    def __init__(self, config: TrajectoryModelConfig, device: str | torch.device = "cpu") -> None:
        self.config = config
        self.layout = WindowLayout(config.horizon)
        self.device = torch.device(device)
        # One mean and std per tick and column of the state-change representation.
        self.normaliser = Normaliser(config.horizon * self.layout.width, MIN_STD).to(self.device)
        self.velocity = TemporalVelocityNet(self.layout.width, config).to(self.device)
        self.fingerprint = ""

    @property
    def action_std(self) -> np.ndarray:
        """Per-dimension std [A] of the recorded actions (the mean over window ticks)."""
        std = self.normaliser.std.view(self.layout.horizon, self.layout.width)
        return std[:, self.layout.actions].mean(0).cpu().numpy()

    def encode(self, windows: torch.Tensor) -> torch.Tensor:
        """Raw windows [N, H, width] -> the normalised state-change representation x."""
        changes = to_state_changes(windows, self.layout)
        return self.normaliser.normalise(changes.flatten(1)).view(windows.shape)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised state-change representation x -> raw windows [N, H, width]."""
        changes = self.normaliser.unnormalise(x.flatten(1)).view(x.shape)
        return from_state_changes(changes, self.layout)

    @classmethod
    def fit(
        cls,
        windows: np.ndarray,
        config: TrajectoryModelConfig,
        device: str | torch.device = "cpu",
        seed: int = 0,
        progress: bool = True,
    ) -> tuple[TrajectoryModel, list[float]]:
        """Train on raw windows [N, horizon, width]; returns the model and the loss per step."""
        torch.manual_seed(seed)  # the network's initial weights
        model = cls(config, device)
        expected = (config.horizon, model.layout.width)
        if windows.ndim != 3 or windows.shape[1:] != expected or len(windows) == 0:
            raise ValueError(
                f"training windows have shape {windows.shape}, expected (N, {expected})"
            )
        data = torch.as_tensor(windows, dtype=torch.float32, device=model.device)
        model.normaliser.fit(to_state_changes(data, model.layout).flatten(1))
        data = model.encode(data)
        model.fingerprint = data_fingerprint(windows, config)

        optimiser = torch.optim.AdamW(model.velocity.parameters(), lr=config.learning_rate)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, config.train_steps)
        generator = torch.Generator(device=model.device).manual_seed(seed)
        losses = []
        model.velocity.train()
        for _ in tqdm(range(config.train_steps), desc="trajectory model", disable=not progress):
            index = torch.randint(len(data), (config.batch_size,), generator=generator)
            x = data[index]
            # Flow matching: x0 ~ N(0, I), t ~ U[0, 1], x_t = (1 - t) x0 + t x,
            # loss = || v(x_t, t) - (x - x0) ||^2.
            x0 = torch.randn(x.shape, generator=generator, device=model.device)
            t = torch.rand(len(x), generator=generator, device=model.device)
            x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * x
            loss = (model.velocity(x_t, t) - (x - x0)).pow(2).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.velocity.parameters(), 1.0)
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
        model.velocity.eval()
        return model, losses

    def _action_score(
        self, target_log_prob: TargetLogProb, clean_estimate: torch.Tensor
    ) -> torch.Tensor:
        """grad_a sum_t log pi(a_t | s_t) at the clean estimate, in normalised coordinates."""
        layout = self.layout
        raw = self.decode(clean_estimate)
        states = raw[..., layout.states].reshape(-1, layout.state_dim)
        actions = raw[..., layout.actions].reshape(-1, layout.action_dim).detach()
        actions.requires_grad_(True)
        with torch.enable_grad():
            log_prob = target_log_prob(states, actions).sum()
            (score,) = torch.autograd.grad(log_prob, actions)
        # a_raw = mean + std * a_norm, so d/da_norm = std * d/da_raw.
        action_std = self.normaliser.std.view(layout.horizon, layout.width)[:, layout.actions]
        return score.view(raw[..., layout.actions].shape) * action_std

    @torch.no_grad()
    def sample(
        self,
        count: int,
        denoising_steps: int = 64,
        guidance: float = 0.0,
        target_log_prob: TargetLogProb | None = None,
        batch_size: int = 256,
        seed: int = 0,
        progress: bool = True,
    ) -> np.ndarray:
        """`count` raw windows [count, horizon, width], guided by the target with `guidance`.

        guidance = 0 samples the behaviour distribution; guidance > 0 needs `target_log_prob`.
        """
        if count < 1 or denoising_steps < 1 or batch_size < 1:
            raise ValueError(
                f"need count, denoising_steps and batch_size >= 1, got {count}, "
                f"{denoising_steps}, {batch_size}"
            )
        if not math.isfinite(guidance) or guidance < 0:  # nan passes every comparison
            raise ValueError(f"guidance must be a finite number >= 0, got {guidance}")
        if guidance > 0 and target_log_prob is None:
            raise ValueError("guidance > 0 needs a target policy (target_log_prob)")
        layout = self.layout
        generator = torch.Generator(device=self.device).manual_seed(seed)
        batches = [min(batch_size, count - start) for start in range(0, count, batch_size)]
        windows = []
        bar = tqdm(total=len(batches) * denoising_steps, desc="synthesize", disable=not progress)
        for size in batches:
            shape = (size, layout.horizon, layout.width)
            x = torch.randn(shape, generator=generator, device=self.device)
            for k in range(denoising_steps):
                t = k / denoising_steps
                velocity = self.velocity(x, torch.full((size,), t, device=self.device))
                coefficient = guidance_coefficient(guidance, t)
                if coefficient > 0:
                    clean_estimate = x + (1 - t) * velocity
                    score = self._action_score(target_log_prob, clean_estimate)
                    velocity[..., layout.actions] += coefficient * score
                x = x + velocity / denoising_steps
                bar.update()
            windows.append(self.decode(x).cpu().numpy())
        bar.close()
        return np.concatenate(windows)

    def save(self, path: str | Path) -> None:
        """Write the model (config, weights, normaliser, data fingerprint) to `path`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            torch.save(
                {
                    "format": CHECKPOINT_FORMAT,
                    "format_version": CHECKPOINT_VERSION,
                    "config": asdict(self.config),
                    "velocity": self.velocity.state_dict(),
                    "normaliser": self.normaliser.state_dict(),
                    "fingerprint": self.fingerprint,
                },
                tmp,
            )
            tmp.replace(path)  # atomic: a crash never leaves a half-written model
        finally:
            tmp.unlink(missing_ok=True)  # left only when saving failed or was interrupted

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> TrajectoryModel:
        """Read a model written by `save`; ValueError for another file or format version."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no trajectory model at {path}")
        try:
            with warnings.catch_warnings():
                # torch warns about foreign pickles before failing on them: the error says it.
                warnings.simplefilter("ignore", UserWarning)
                saved = torch.load(path, map_location=device, weights_only=True)
        except Exception as error:  # torch raises many kinds, with long texts, for other files
            raise ValueError(
                f"{path} is not a PGD trajectory model (torch cannot read it: "
                f"{type(error).__name__})"
            ) from error
        if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a PGD trajectory model")
        if saved.get("format_version") != CHECKPOINT_VERSION:
            raise ValueError(
                f"{path} has format version {saved.get('format_version')}, this build reads "
                f"version {CHECKPOINT_VERSION}"
            )
        try:
            model = cls(TrajectoryModelConfig(**saved["config"]), device)
            model.velocity.load_state_dict(saved["velocity"])
            model.normaliser.load_state_dict(saved["normaliser"])
            model.fingerprint = saved["fingerprint"]
        except (KeyError, TypeError, RuntimeError) as error:
            raise ValueError(f"{path} is a damaged PGD trajectory model: {error!r}") from error
        model.velocity.eval()
        return model
