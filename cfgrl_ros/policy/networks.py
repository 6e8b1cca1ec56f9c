"""Building blocks of the flow policy: observation encoders and the velocity field."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

MIN_IMAGE_SIZE = 32  # the image encoders' three stride-2 convolutions shrink images 8x
# "flatten": ImageEncoder; "keypoints": KeypointImageEncoder (docs/benchmarks.md, "Vision on
# Lift", compares them).
IMAGE_ENCODERS = ("flatten", "keypoints")
KEYPOINTS_MIN_IMAGE_SIZE = 48  # maps of at least 3 x 3 for the spatial softmax to locate on


def mlp(
    in_dim: int, hidden_dims: Sequence[int], out_dim: int, layer_norm: bool = False
) -> nn.Sequential:
    """Linear layers with SiLU between them (and LayerNorm before each SiLU if asked)."""
    layers: list[nn.Module] = []
    for width in hidden_dims:
        layers.append(nn.Linear(in_dim, width))
        if layer_norm:
            layers.append(nn.LayerNorm(width))
        layers.append(nn.SiLU())
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class StateEncoder(nn.Module):
    """Normalised low-dimensional state -> features (an MLP ending in LayerNorm)."""

    def __init__(self, state_dim: int, hidden_dims: Sequence[int], feature_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            mlp(state_dim, hidden_dims, feature_dim), nn.LayerNorm(feature_dim)
        )

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(state)


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None) -> torch.Tensor:
    """Shift each image [B, C, H, W] by up to ±pad pixels (edge-replicated), independently.

    The DrQ augmentation: a small CNN trained on a few demos overfits to exact pixel positions;
    random shifts make it attend to what is in the image rather than where.
    """
    batch, _, height, width = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    shift = torch.randint(0, 2 * pad + 1, (2, batch), device=images.device, generator=generator)
    rows = shift[0, :, None] + torch.arange(height, device=images.device)  # [B, H]
    cols = shift[1, :, None] + torch.arange(width, device=images.device)  # [B, W]
    batch_index = torch.arange(batch, device=images.device)[:, None, None]
    # Advanced indexing puts the indexed axes first: [B, H, W, C] -> back to [B, C, H, W].
    return padded.permute(0, 2, 3, 1)[batch_index, rows[:, :, None], cols[:, None, :]].permute(
        0, 3, 1, 2
    )


def conv_trunk(channels: int, group_norm: bool = False) -> nn.Sequential:
    """Four 3x3 convolutions with SiLU, [B, 3, H, W] -> [B, 2 * channels, ~H/8, ~W/8].

    Three stride-2 layers shrink 84 px to 9 px quickly, which keeps a decision on one CPU thread
    within a few milliseconds. group_norm puts GroupNorm (up to 8 groups) before each SiLU: unlike
    BatchNorm it does not depend on the batch, so training and acting normalise alike.
    """
    widths = (channels, channels, 2 * channels, 2 * channels)
    layers: list[nn.Module] = []
    in_channels = 3
    for index, width in enumerate(widths):
        layers.append(nn.Conv2d(in_channels, width, 3, stride=1 if index == 3 else 2))
        if group_norm:
            layers.append(nn.GroupNorm(math.gcd(8, width), width))
        layers.append(nn.SiLU())
        in_channels = width
    return nn.Sequential(*layers)


def image_tensor(
    images: torch.Tensor, shift_pad: int, generator: torch.Generator | None
) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-0.5, 0.5], randomly shifted if shift_pad."""
    x = images.permute(0, 3, 1, 2).float() / 255.0 - 0.5
    return random_shift(x, shift_pad, generator) if shift_pad > 0 else x


class ImageEncoder(nn.Module):
    """One RGB camera, uint8 [B, H, W, 3] -> features: the conv trunk, flattened, a linear map."""

    def __init__(self, image_size: tuple[int, int], feature_dim: int, channels: int = 32) -> None:
        super().__init__()
        self.convs = conv_trunk(channels)
        with torch.no_grad():
            flat_dim = self.convs(torch.zeros(1, 3, *image_size)).numel()
        self.head = nn.Sequential(nn.Linear(flat_dim, feature_dim), nn.LayerNorm(feature_dim))

    def forward(
        self, images: torch.Tensor, shift_pad: int = 0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return self.head(self.convs(image_tensor(images, shift_pad, generator)).flatten(1))


def spatial_softmax(feature_maps: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, 2C]: for each channel, the expected (x, y) in [-1, 1] under the
    softmax of its map over the H*W positions (a soft argmax: where that feature is)."""
    batch, channels, height, width = feature_maps.shape
    weights = feature_maps.flatten(2).softmax(dim=-1).view(batch, channels, height, width)
    xs = torch.linspace(-1.0, 1.0, width, device=feature_maps.device)
    ys = torch.linspace(-1.0, 1.0, height, device=feature_maps.device)
    x = (weights.sum(dim=2) * xs).sum(dim=-1)  # marginal over rows, then E[x]
    y = (weights.sum(dim=3) * ys).sum(dim=-1)
    return torch.cat([x, y], dim=-1)


class KeypointImageEncoder(nn.Module):
    """One RGB camera -> features, the visuomotor-policy way (robomimic, Diffusion Policy):
    the conv trunk with GroupNorm, a 1x1 convolution to `keypoints` maps, spatial softmax (each
    map's expected image position), then a linear map.

    The features say where things are rather than what each pixel holds, which generalises from
    few demonstrations when the object's position is what varies.
    """

    def __init__(self, feature_dim: int, channels: int = 32, keypoints: int = 32) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            conv_trunk(channels, group_norm=True), nn.Conv2d(2 * channels, keypoints, 1)
        )
        self.head = nn.Sequential(nn.Linear(2 * keypoints, feature_dim), nn.LayerNorm(feature_dim))

    def forward(
        self, images: torch.Tensor, shift_pad: int = 0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return self.head(spatial_softmax(self.convs(image_tensor(images, shift_pad, generator))))


def image_encoder(
    kind: str, image_size: tuple[int, int], feature_dim: int, channels: int
) -> nn.Module:
    """The image encoder named by `kind` (one of IMAGE_ENCODERS)."""
    if kind == "flatten":
        return ImageEncoder(image_size, feature_dim, channels)
    if kind == "keypoints":
        return KeypointImageEncoder(feature_dim, channels)  # any image size: softmax pools
    raise ValueError(f"image encoder {kind!r} is not one of {IMAGE_ENCODERS}")


class SinusoidalEmbedding(nn.Module):
    """t in [0, 1] -> [sin(f_k t), cos(f_k t)] with frequencies f_k from 1 to 1000 (geometric)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        self.register_buffer(
            "frequencies", torch.exp(torch.linspace(0.0, math.log(1000.0), half)), persistent=False
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t[..., None] * self.frequencies
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class VelocityField(nn.Module):
    """v(a_t, t, context) for a flattened action chunk.

    The first layer is a linear map of concat(a_t, time embedding, context), written as a sum of
    three linear maps so that the parts that do not depend on a_t (the context: observation
    features and condition; the time of each Euler step) are computed once per decision rather
    than once per step.
    """

    def __init__(
        self, chunk_dim: int, context_dim: int, hidden_dims: Sequence[int], time_dim: int
    ) -> None:
        super().__init__()
        width = hidden_dims[0]
        self.action_in = nn.Linear(chunk_dim, width)
        self.time_in = nn.Sequential(
            SinusoidalEmbedding(time_dim), nn.Linear(time_dim, width, bias=False)
        )
        self.context_in = nn.Linear(context_dim, width, bias=False)
        self.body = nn.Sequential(nn.SiLU(), mlp(width, hidden_dims[1:], chunk_dim))

    def bias(self, t: torch.Tensor, context_inputs: torch.Tensor) -> torch.Tensor:
        """The part of the first layer that does not depend on a_t; t [...] and context_inputs
        [..., context_dim] broadcast: t [B] with [B, context_dim] -> [B, width] (training),
        t [K, 1] (the times of K Euler steps) with [B, context_dim] -> [K, B, width] (sampling).
        """
        return self.time_in(t) + self.context_in(context_inputs)

    def forward(self, actions_t: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """actions_t [B, chunk_dim] with its bias [B, width] -> velocity [B, chunk_dim]."""
        return self.body(self.action_in(actions_t) + bias)
