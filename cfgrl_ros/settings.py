"""Settings defined once: each is a dataclass field made by `setting`, which carries its default,
description, bounds or choices and whether it may change while a node runs.

Everything else derives from that one definition: the dataclass's own validation
(`setting_problems`), the ROS parameters of a node (``cfgrl_ros.nodes.node_support.
declare_settings``: type, range, description, read-only), the flags of a command
(`add_setting_flag`: type, default, help, choices, bounds) and the parameter tables in
docs/parameters.md (`markdown_table`, written by ``scripts/parameter_docs.py``). ROS-free.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfgrl_ros.cli.arguments import finite_number, integer_at_least

SPEC_KEY = "cfgrl_ros.setting"


@dataclass(frozen=True)
class Spec:
    """What a setting is besides its default (kept in the field's metadata)."""

    description: str
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False  # the minimum itself is not allowed
    choices: tuple[str, ...] = ()
    live: bool = False  # may change while the node runs (a ROS parameter set)
    deployment: bool = False  # a parameter file shows it even at its default: a site chooses it
    none_as: Any = None  # for an optional setting: the parameter value that stands for None


def setting(
    default: Any,
    description: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: bool = False,
    choices: Sequence[str] = (),
    live: bool = False,
    deployment: bool = False,
    none_as: Any = None,
) -> Any:
    """A dataclass field with its definition; see `Spec` for the keywords."""
    spec = Spec(description, minimum, maximum, above, tuple(choices), live, deployment, none_as)
    return dataclasses.field(default=default, metadata={SPEC_KEY: spec})


@dataclass(frozen=True)
class SettingInfo:
    """One setting of a dataclass: its name, value type and definition."""

    name: str
    kind: type  # int, float, str or bool; of the elements when `sequence` (of X for X | None)
    sequence: bool  # a tuple of `kind`
    default: Any
    spec: Spec

    def bounds(self) -> str:
        """The allowed values as people read them: "in [1, 1000]", "> 0", "one of a, b"."""
        spec = self.spec
        if spec.choices:
            return "one of " + ", ".join(spec.choices)
        text = self._range()
        return f"{spec.none_as} or {text}" if spec.none_as is not None else text

    def _range(self) -> str:
        spec = self.spec
        low = None if spec.minimum is None else _number(spec.minimum)
        high = None if spec.maximum is None else _number(spec.maximum)
        if low is not None and high is not None:
            text = f"in {'(' if spec.above else '['}{low}, {high}]"
        elif low is not None:
            text = f"{'>' if spec.above else '>='} {low}"
        else:
            text = f"<= {high}" if high is not None else ""
        return text

    def problem(self, value: Any, name: str | None = None) -> str | None:
        """Why `value` is not allowed for this setting, or None; `name`: how to call the
        setting in the sentence (default: its field name)."""
        name = name or self.name
        if value is None and self.spec.none_as is not None:
            return None
        values = list(value) if self.sequence else [value]
        if self.sequence and not values:
            return f"{name} needs at least one value, got {value!r}"
        for item in values:
            if self.spec.choices and item not in self.spec.choices:
                return f"{name} {item!r} is not one of {list(self.spec.choices)}"
            if self.kind in (int, float) and not self._in_bounds(item):
                # Where none_as stands for None (a parameter, a flag) it is allowed too; in
                # the dataclass itself it is not.
                bounds = self._range() if item == self.spec.none_as else self.bounds()
                if math.isfinite(item):
                    return f"{name} must be {bounds}, got {value!r}"
                return f"{name} must be a finite number {bounds}".strip() + f", got {value!r}"
        return None

    def _in_bounds(self, number: float) -> bool:
        spec = self.spec
        if not math.isfinite(number):
            return False
        if spec.minimum is not None and (
            number <= spec.minimum if spec.above else number < spec.minimum
        ):
            return False
        return spec.maximum is None or number <= spec.maximum

    def parameter_value(self, value: Any) -> Any:
        """`value` as a ROS parameter holds it (a list for a tuple, `none_as` for None)."""
        if value is None:
            return self.spec.none_as
        return [self.kind(item) for item in value] if self.sequence else value

    def from_parameter(self, value: Any) -> Any:
        """Inverse of parameter_value."""
        if self.spec.none_as is not None and value == self.spec.none_as:
            return None
        return tuple(value) if self.sequence else value

    def type_name(self) -> str:
        """The ROS parameter type: "double", "integer array", ..."""
        names = {bool: "bool", int: "integer", float: "double", str: "string"}
        return names[self.kind] + (" array" if self.sequence else "")


def _number(value: float) -> str:
    """1000000 rather than 1e+06; 0.25 rather than 0.250000."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def settings_of(cls: type) -> list[SettingInfo]:
    """The settings of dataclass `cls`, in field order (fields without a definition skipped)."""
    hints = typing.get_type_hints(cls)
    infos = []
    for field in dataclasses.fields(cls):
        spec = field.metadata.get(SPEC_KEY)
        if spec is None:
            continue
        hint = hints[field.name]
        if spec.none_as is not None:  # X | None
            (hint,) = (arg for arg in typing.get_args(hint) if arg is not type(None))
        sequence = typing.get_origin(hint) is tuple
        kind = typing.get_args(hint)[0] if sequence else hint
        infos.append(SettingInfo(field.name, kind, sequence, field.default, spec))
    return infos


def setting_info(cls: type, name: str) -> SettingInfo:
    """The setting `name` of dataclass `cls`."""
    for info in settings_of(cls):
        if info.name == name:
            return info
    raise KeyError(f"{cls.__name__} has no setting {name!r}")


def setting_problems(instance: Any) -> list[str]:
    """What is wrong with the settings of a dataclass instance, one sentence each."""
    problems = []
    for info in settings_of(type(instance)):
        problem = info.problem(getattr(instance, info.name))
        if problem:
            problems.append(problem)
    return problems


def add_setting_flag(
    parser: argparse.ArgumentParser, cls: type, name: str, flag: str | None = None
) -> None:
    """The flag (default ``--<name with dashes>``) of setting `name` of `cls`; its value lands
    in ``args.<name>``, checked against the bounds and choices at parsing. (The parser shows
    defaults when its formatter_class is argparse.ArgumentDefaultsHelpFormatter.)"""
    info = setting_info(cls, name)
    spec = info.spec
    flag = flag or f"--{name.replace('_', '-')}"
    bounds = "" if spec.choices else info.bounds()
    options: dict[str, Any] = {
        "dest": name,
        "default": list(info.default) if info.sequence else info.default,
        "help": spec.description + (f"; {bounds}" if bounds else ""),
    }
    if info.kind is bool:
        options["action"] = argparse.BooleanOptionalAction
    elif spec.choices:
        options["choices"] = list(spec.choices)
    else:
        options["metavar"] = flag.lstrip("-").upper().replace("-", "_")
        if info.kind is int and spec.minimum is not None:
            high = None if spec.maximum is None else int(spec.maximum)
            options["type"] = integer_at_least(int(spec.minimum) + int(spec.above), high)
        elif info.kind is float:
            options["type"] = finite_number(spec.minimum, above=spec.above, maximum=spec.maximum)
        else:
            options["type"] = info.kind
    if info.sequence:
        options["nargs"] = "+"
    parser.add_argument(flag, **options)


def markdown_table(rows: Iterable[tuple[str, SettingInfo]]) -> str:
    """A Markdown table of (parameter name, setting) rows for the docs."""
    lines = [
        "| parameter | type | default | allowed | description |",
        "|---|---|---|---|---|",
    ]
    for parameter, info in rows:
        default = info.parameter_value(info.default)
        shown = f"`{default!r}`" if isinstance(default, str) else f"`{default}`"
        if isinstance(default, bool):
            shown = f"`{str(default).lower()}`"
        live = " Can be changed while the node runs." if info.spec.live else ""
        lines.append(
            f"| `{parameter}` | {info.type_name()} | {shown} | {info.bounds()} | "
            f"{info.spec.description}.{live} |"
        )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ node settings

DEFAULT_RUN_ROOT = "runs/dsrl_franka"
ARM_NAMESPACE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*")


def default_run_dir(checkpoint: str | Path, sha256: str) -> Path:
    """The noise actor's run folder for a policy file with this hash: one per policy, so a
    launch with another policy never resumes (or mixes into) this one's agent."""
    return Path(DEFAULT_RUN_ROOT) / f"{Path(checkpoint).stem}-{sha256[:8]}"


@dataclass(frozen=True)
class NoiseActorSettings:
    """The noise actor node's own parameters (its agent's are DsrlConfig's, under ``agent.``)."""

    checkpoint: str = setting(
        "", "FlowPolicy checkpoint (.pt), the policy node's; the launch argument policy:= sets it"
    )
    run_dir: str = setting(
        "",
        "folder of the agent and replay buffer checkpoints, resumed from on restart when it "
        "holds a run of the same policy and agent settings (else the node refuses to start); "
        f"empty: {DEFAULT_RUN_ROOT}/<policy file stem>-<first 8 hex digits of its sha256>, "
        "relative to the working directory. The launch argument run_dir:= sets it",
    )
    device: str = setting("auto", "torch device: auto, cpu, cuda or cuda:N", deployment=True)
    guidance_weight: float = setting(
        1.0, "guidance weight until the first noise request says", minimum=0.0
    )
    control_rate: float = setting(20.0, "control ticks per second", minimum=0.0, above=True)
    train_schedule: str = setting(
        "between_episodes",
        "when to train: between_episodes (in the node's thread after each episode, while the "
        "arm rests) or learner_thread (continuously, in a thread of its own)",
        choices=("between_episodes", "learner_thread"),
        deployment=True,
    )
    record_history: int = setting(
        2000,
        "decision records kept for a restarted noise actor (the policy node's)",
        minimum=1,
        maximum=1_000_000,
    )
    statistics_window: int = setting(
        10, "episodes in the recent success rate", minimum=1, maximum=100_000
    )
    train: bool = setting(True, "false: store transitions but make no updates", live=True)
    deterministic: bool = setting(False, "true: the actor's mean noise (evaluation)", live=True)
    arms: tuple[str, ...] = setting(
        ("",),
        "namespaces of the arms served, relative to the node's: '' is the arm beside it "
        "(dsrl/* in the node's namespace); a fleet lists one per arm, e.g. [arm0, arm1] for "
        "arm0/dsrl/*, ... The launch argument arms:= of dsrl_fleet sets it",
        deployment=True,
    )

    def __post_init__(self) -> None:
        for name in self.arms:
            if name and not ARM_NAMESPACE.fullmatch(name):
                raise ValueError(
                    f"arms entry {name!r} is not a relative ROS namespace: letters, digits and "
                    "underscores, not starting with a digit, parts joined by '/'"
                )
        if len(set(self.arms)) != len(self.arms):
            raise ValueError(f"arms {list(self.arms)} names an arm twice")
