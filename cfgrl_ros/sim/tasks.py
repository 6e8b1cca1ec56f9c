"""The simulated tasks: which robosuite environment, object, horizon and workspace each has.

Free of MuJoCo and robosuite, so that the launch description and the command line can name
and check tasks without loading the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cfgrl_ros.arm.command_adapter import AdapterConfig


@dataclass(frozen=True)
class TaskSpec:
    """What a task is made of in robosuite, and its defaults."""

    robosuite_env: str
    object_body: str  # the MuJoCo body whose pose is published as /object_pose
    horizon: int  # control steps before truncation
    workspace_low: tuple[float, float, float]  # adapter workspace box, robot base frame
    workspace_high: tuple[float, float, float]


# The robot base is at the table's edge; the table (or bin floor) is 0.112 m below the base.
TASKS: dict[str, TaskSpec] = {
    "lift": TaskSpec(
        robosuite_env="Lift",
        object_body="cube_main",
        horizon=100,
        workspace_low=AdapterConfig.workspace_low,  # the adapter's defaults are lift's
        workspace_high=AdapterConfig.workspace_high,
    ),
    "pick_place_can": TaskSpec(
        robosuite_env="PickPlaceCan",
        object_body="Can_main",
        horizon=250,
        workspace_low=(0.25, -0.40, -0.105),
        workspace_high=(0.85, 0.65, 0.35),
    ),
}


def task_adapter_config(task: str, **overrides: Any) -> AdapterConfig:
    """The adapter configuration for a task: its workspace box, the default step sizes."""
    spec = task_spec(task)
    settings = {"workspace_low": spec.workspace_low, "workspace_high": spec.workspace_high}
    settings.update(overrides)
    return AdapterConfig(**settings)


def task_spec(task: str) -> TaskSpec:
    """The TaskSpec of `task`; ValueError listing the known tasks otherwise."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASKS)}")
    return TASKS[task]
