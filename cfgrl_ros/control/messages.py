"""What every state machine in cfgrl_ros.control hands its node besides its own outputs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Log:
    """A line for the node's logger."""

    level: str  # "info", "warning", "error"
    text: str


@dataclass(frozen=True)
class Reply:
    """A service's answer."""

    success: bool
    message: str
