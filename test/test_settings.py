"""Settings defined once (cfgrl_ros.settings): the dataclass checks, ROS parameters, command
flags, docs and parameter files derived from the definitions agree with them."""

from __future__ import annotations

import argparse
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from cfgrl_ros.arm.safety import SafetyConfig
from cfgrl_ros.dsrl.agent import DsrlConfig
from cfgrl_ros.paths import config_path
from cfgrl_ros.settings import (
    NoiseActorSettings,
    add_setting_flag,
    setting,
    setting_info,
    setting_problems,
)

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Example:
    count: int = setting(3, "how many", minimum=1, maximum=10)
    rate: float = setting(0.5, "how fast", minimum=0.0, above=True)
    mode: str = setting("a", "which", choices=("a", "b"))
    widths: tuple[int, ...] = setting((4, 4), "layer widths", minimum=1)
    steps: int | None = setting(None, "steps (0: the default)", minimum=1, none_as=0)
    live: bool = setting(False, "may change", live=True)

    def __post_init__(self) -> None:
        problems = setting_problems(self)
        if problems:
            raise ValueError("; ".join(problems))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"count": 11}, "count must be in [1, 10], got 11"),
        ({"rate": 0.0}, "rate must be > 0, got 0.0"),
        ({"rate": float("nan")}, "rate must be a finite number > 0, got nan"),
        ({"mode": "c"}, "mode 'c' is not one of ['a', 'b']"),
        ({"widths": ()}, "widths needs at least one value"),
        ({"widths": (4, 0)}, "widths must be >= 1, got (4, 0)"),
        ({"steps": 0}, "steps must be >= 1, got 0"),
    ],
)
def test_a_dataclass_refuses_values_outside_its_definitions_by_name(changes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Example(**changes)
    assert Example(steps=None).steps is None and Example(steps=2).steps == 2


def test_flags_take_type_default_choices_and_bounds_from_the_definition(capsys):
    parser = argparse.ArgumentParser(prog="tool")
    for name in ("count", "rate", "mode", "widths", "live"):
        add_setting_flag(parser, Example, name)
    renamed = argparse.ArgumentParser()
    add_setting_flag(renamed, Example, "count", "--how-many")
    assert renamed.parse_args(["--how-many", "2"]).count == 2
    args = parser.parse_args([])
    assert (args.count, args.rate, args.mode, args.widths, args.live) == (
        3,
        0.5,
        "a",
        [4, 4],
        False,
    )
    args = parser.parse_args(["--count", "10", "--widths", "8", "2", "--mode", "b", "--live"])
    assert (args.count, args.widths, args.mode, args.live) == (10, [8, 2], "b", True)
    for flags, message in (
        (["--count", "11"], "argument --count: must be in [1, 10], got 11"),
        (["--rate", "0"], "argument --rate: must be a finite number > 0, got 0"),
        (["--mode", "c"], "argument --mode: invalid choice: 'c'"),
        (["--widths", "0"], "argument --widths: must be >= 1, got 0"),
    ):
        with pytest.raises(SystemExit):
            parser.parse_args(flags)
        assert message in capsys.readouterr().err
    assert "how many; in [1, 10]" in parser.format_help()


@pytest.mark.ros
def test_node_parameters_take_type_range_description_and_liveness_from_the_definition():
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from cfgrl_ros.nodes.node_support import declare_settings

    def declared(**overrides):
        node = Node(
            "settings_probe",
            context=context,
            parameter_overrides=[Parameter(f"x.{k}", value=v) for k, v in overrides.items()],
        )
        try:
            return declare_settings(node, Example, "x."), node
        except ValueError:
            node.destroy_node()
            raise

    context = Context()
    rclpy.init(args=[], context=context)
    try:
        example, node = declared(widths=[8, 2], steps=0)
        assert example == Example(widths=(8, 2), steps=None)
        count = node.describe_parameter("x.count")
        assert "how many" in count.description and count.read_only
        assert (count.integer_range[0].from_value, count.integer_range[0].to_value) == (1, 10)
        assert not node.describe_parameter("x.live").read_only
        node.destroy_node()
        for overrides, message in (
            ({"count": 11}, "parameter x.count out of range: 11 is not in [1, 10]"),
            ({"rate": -1.0}, "parameter x.rate must be > 0, got -1.0"),
            ({"mode": "c"}, "parameter x.mode 'c' is not one of ['a', 'b']"),
            ({"rate": 2}, "parameter x.rate must be of type double"),
        ):
            with pytest.raises(ValueError, match=re.escape(message)):
                declared(**overrides)
    finally:
        rclpy.shutdown(context=context)


def _check_file_values(values: dict, cls: type, where: str) -> None:
    for key, value in values.items():
        info = setting_info(cls, key)  # KeyError: the file sets something no setting defines
        assert info.spec.deployment or info.from_parameter(value) != info.default, (
            f"{where}.{key}: {value} is the default; leave it out of the file"
        )


@pytest.mark.parametrize("name", ["dsrl_franka.yaml", "franka_real.yaml"])
def test_parameter_files_set_only_defined_settings_that_a_deployment_changes(name):
    """The files hold what a site chooses, not copies of the defaults that drift from them
    (max_translation_step was 0.05 in the code and 0.06 in the file)."""
    sections = yaml.safe_load(config_path(name).read_text())
    actor = dict(sections.get("/**/noise_actor_node", {}).get("ros__parameters", {}))
    _check_file_values(actor.pop("agent", {}), DsrlConfig, "agent")
    actor_settings = {key: value for key, value in actor.items() if key != "exec_horizon"}
    _check_file_values(actor_settings, NoiseActorSettings, "noise_actor_node")
    for section in ("/**", "/**/policy_node"):
        safety = sections.get(section, {}).get("ros__parameters", {}).get("safety", {})
        _check_file_values(safety, SafetyConfig, f"{section} safety")


def test_the_parameter_docs_are_generated_from_the_current_definitions():
    spec = importlib.util.spec_from_file_location(
        "parameter_docs", ROOT / "scripts" / "parameter_docs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.parameter_docs()
    assert (ROOT / "docs" / "parameters.md").read_text() == text, (
        "docs/parameters.md is out of date: run python scripts/parameter_docs.py"
    )
    assert "| `agent.utd` | integer | `10` | >= 0 |" in text
    assert "| `safety.max_translation_step` | double | `0.06` | > 0 |" in text
