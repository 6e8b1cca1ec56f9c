"""A learned success detector: camera frames (and proprioception) -> P(task done).

The same encoders as the flow policy (cfgrl_ros.policy.networks: a small CNN per camera with
random-shift augmentation, an MLP on the normalised state) followed by an MLP to one logit. It
reads what its `ObservationSpec` declares, as a policy does, and stores it in its checkpoint:
the success detector node refuses cameras or image sizes other than the ones it was trained on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cfgrl_ros.observation import OBSERVATIONS, ObservationSpec
from cfgrl_ros.policy.checkpoint import save_model
from cfgrl_ros.policy.config_types import from_fields
from cfgrl_ros.policy.networks import MIN_IMAGE_SIZE, ImageEncoder, StateEncoder, mlp
from cfgrl_ros.policy.normaliser import Normaliser

CHECKPOINT_FORMAT = "cfgrl_ros.success_detector"
CHECKPOINT_VERSION = 1
STATE_MIN_STD = 1e-3
STATE_CLIP = 10.0


@dataclass(frozen=True)
class DetectorConfig:
    """What the detector reads and its size. Stored in its checkpoint."""

    observation: ObservationSpec = OBSERVATIONS["vision"]
    image_channels: int = 16
    image_feature_dim: int = 32
    state_hidden_dims: tuple[int, ...] = (64,)
    state_feature_dim: int = 32
    hidden_dims: tuple[int, ...] = (128,)
    task: str = ""  # the simulated task of the training bags ("": a real arm's)

    def __post_init__(self) -> None:
        size = self.observation.image_size
        if not self.observation.image_keys or size is None:
            raise ValueError(
                "a success detector reads camera frames: its observation needs image_keys and "
                f"an image_size (got {self.observation.describe()})"
            )
        if min(size) < MIN_IMAGE_SIZE:
            raise ValueError(f"image_size {size} must be at least {MIN_IMAGE_SIZE} px a side")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DetectorConfig:
        return from_fields(cls, values, prefix="detector.")


class SuccessDetector(nn.Module):
    """P(success) of one observation or a batch; `score` for one arm observation."""

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        self.config = config
        spec = config.observation
        self.state_normaliser = Normaliser(spec.state_dim, STATE_MIN_STD)
        self.state_encoder = StateEncoder(
            spec.state_dim, config.state_hidden_dims, config.state_feature_dim
        )
        self.image_encoders = nn.ModuleDict(
            {
                key: ImageEncoder(spec.image_size, config.image_feature_dim, config.image_channels)
                for key in spec.image_keys
            }
        )
        features = config.state_feature_dim + config.image_feature_dim * len(spec.image_keys)
        self.head = mlp(features, config.hidden_dims, 1)

    @property
    def device(self) -> torch.device:
        return self.state_normaliser.mean.device

    def inputs(self, observations: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Arm observations (one tick or a batch) -> input tensors; ValueError if one is
        missing or of another size than the detector's."""
        spec = self.config.observation
        state = spec.state_vector(observations)
        tensors = {"state": torch.as_tensor(np.atleast_2d(state), device=self.device)}
        for key in spec.image_keys:
            if key not in observations:
                raise ValueError(f"the detector reads camera {key!r}; the observation has none")
            image = np.asarray(observations[key])
            image = image[None] if image.ndim == 3 else image
            if image.shape[1:] != (*spec.image_size, 3) or image.dtype != np.uint8:
                raise ValueError(
                    f"camera {key!r} gives {image.shape[1:]} {image.dtype} images; the detector "
                    f"was trained on {(*spec.image_size, 3)} uint8: resize them to its size"
                )
            tensors[key] = torch.as_tensor(image, device=self.device)
        return tensors

    def forward(self, inputs: Mapping[str, torch.Tensor], shift_pad: int = 0) -> torch.Tensor:
        """Logits [B] of input tensors; shift_pad > 0 augments the images (training)."""
        state = self.state_normaliser.normalise(inputs["state"].float())
        parts = [self.state_encoder(state.clamp(-STATE_CLIP, STATE_CLIP))]
        parts += [encoder(inputs[key], shift_pad) for key, encoder in self.image_encoders.items()]
        return self.head(torch.cat(parts, dim=-1)).squeeze(-1)

    @torch.no_grad()
    def scores(self, observations: Mapping[str, np.ndarray]) -> np.ndarray:
        """P(success) [B] of arm observations (a batch, or one tick: [1])."""
        return torch.sigmoid(self(self.inputs(observations))).cpu().numpy()

    def save(self, path: str | Path) -> None:
        save_model(self, self.config, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> SuccessDetector:
        """A detector saved by `save`; ValueError naming the file when it is not one."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no success detector at {path}")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(
                f"{path} is not a readable success detector ({type(error).__name__}); pass a "
                "file written by `cfgrl-ros train-success`"
            ) from error
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"{path} is not a success detector (a policy? train one with "
                "`cfgrl-ros train-success`)"
            )
        if payload.get("format_version") != CHECKPOINT_VERSION:
            raise ValueError(
                f"{path} has format version {payload.get('format_version')}, this build reads "
                f"{CHECKPOINT_VERSION}"
            )
        detector = cls(DetectorConfig.from_dict(payload["config"]))
        detector.load_state_dict(payload["state_dict"])
        return detector.to(device).eval()
