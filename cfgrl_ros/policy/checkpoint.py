"""Atomic file writes and device selection, shared by the policy, its training and the CLI."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> None:
    """``write(file)`` into a temporary file in the same folder, fsync, then os.replace.

    A crash or a kill at any moment leaves either the old file or the new one, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_save(payload: dict[str, Any], path: str | Path) -> None:
    """torch.save `payload` to `path` atomically (`atomic_write`)."""
    atomic_write(path, lambda file: torch.save(payload, file))


def save_model(
    model: torch.nn.Module, config: Any, file_format: str, version: int, path: str | Path
) -> None:
    """One file: format name and version, the config (a dataclass) and the weights on the CPU;
    written atomically."""
    payload = {
        "format": file_format,
        "format_version": version,
        "config": dataclasses.asdict(config),
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
    }
    atomic_save(payload, Path(path))


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N' -> torch.device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} was asked for but this torch build sees no CUDA GPU "
            f"(torch {torch.__version__}); use device 'cpu' or 'auto'"
        )
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")
    return resolved
