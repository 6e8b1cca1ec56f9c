"""ROS 2 distributions: Jazzy (the default) and Kilted from PyPI wheels, Humble by construction.

Humble has no PyPI wheels. What its rclpy lacks was found by reading its source
(docs/real_robot.md, "ROS 2 distributions"); these tests keep the package clear of it and
check the environment and set-up rules that select a distribution, all without DDS.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rclpy.parameter import get_parameter_value

from cfgrl_ros.cli.param import parse_value

ROOT = Path(__file__).resolve().parents[1]

# What rclpy's jazzy branch has and its humble branch lacks: modules, module functions, and
# Node/Client methods that the package could be tempted to call.
MODULES_NOT_IN_HUMBLE = {
    "rclpy.clock_type",
    "rclpy.destroyable",
    "rclpy.event_handler",
    "rclpy.logging_service",
    "rclpy.parameter_client",
    "rclpy.parameter_event_handler",
    "rclpy.service_introspection",
    "rclpy.type_description_service",
    "rclpy.type_hash",
}
FUNCTIONS_NOT_IN_HUMBLE = {
    "rclpy.parameter": {"get_parameter_value", "parameter_dict_from_yaml_file"},
}
METHODS_NOT_IN_HUMBLE = {
    "add_post_set_parameters_callback",
    "add_pre_set_parameters_callback",
    "remove_post_set_parameters_callback",
    "remove_pre_set_parameters_callback",
    "count_clients",
    "count_services",
    "get_fully_qualified_node_names",
    "wait_for_node",
    "configure_introspection",
}
KEYWORDS_NOT_IN_HUMBLE = {"autostart"}  # create_timer(..., autostart=)


def humble_problems(source: str) -> list[str]:
    """The uses of rclpy API that Humble lacks in one module's source."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
            problems += [f"import {name}" for name in names if name in MODULES_NOT_IN_HUMBLE]
        elif isinstance(node, ast.ImportFrom) and node.module:
            missing_functions = FUNCTIONS_NOT_IN_HUMBLE.get(node.module, set())
            for name in (alias.name for alias in node.names):
                modules = {node.module, f"{node.module}.{name}"}
                if modules & MODULES_NOT_IN_HUMBLE or name in missing_functions:
                    problems.append(f"from {node.module} import {name}")
        elif isinstance(node, ast.Attribute) and node.attr in METHODS_NOT_IN_HUMBLE:
            problems.append(f".{node.attr}")
        elif isinstance(node, ast.keyword) and node.arg in KEYWORDS_NOT_IN_HUMBLE:
            problems.append(f"{node.arg}=")
    return problems


def test_the_check_finds_api_that_humble_lacks():
    source = (
        "from rclpy.parameter_client import AsyncParameterClient\n"
        "from rclpy.parameter import Parameter, get_parameter_value\n"
        "import rclpy.type_hash\n"
        "node.add_post_set_parameters_callback(check)\n"
        "node.create_timer(1.0, tick, autostart=False)\n"
        "value = Parameter('x', value=1).get_parameter_value()\n"  # a method Humble has
    )
    assert sorted(humble_problems(source)) == [
        ".add_post_set_parameters_callback",
        "autostart=",
        "from rclpy.parameter import get_parameter_value",
        "from rclpy.parameter_client import AsyncParameterClient",
        "import rclpy.type_hash",
    ]


def test_the_package_uses_only_rclpy_api_that_humble_has():
    found = {
        str(path.relative_to(ROOT)): problems
        for path in sorted((ROOT / "cfgrl_ros").rglob("*.py"))
        if (problems := humble_problems(path.read_text()))
    }
    assert found == {}


SCALAR_TEXTS = ["true", "3", "2.5", "1e3", "'3'", "text", "", "~", "null"]
LIST_TEXTS = ["[]", "[1, 2]", "[0.1, 0.2]", "[1, 2.5]", "[true, false]", "[a, b]", "[1, a]"]


@pytest.mark.parametrize("text", [*SCALAR_TEXTS, *LIST_TEXTS])
def test_param_values_are_typed_as_rclpy_types_them(text):
    assert parse_value(text) == get_parameter_value(text)


def _clean_environment(**values: str) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("ROS_DISTRO", "ROS_LOCALHOST_ONLY", "VENV", "MAKEFLAGS", "MAKELEVEL")
    }
    return {**environment, **values}


@pytest.mark.parametrize(("distro", "localhost_only"), [("humble", "1"), ("jazzy", "unset")])
def test_ros_env_sets_localhost_only_for_humble_alone(distro, localhost_only):
    # Humble reads only ROS_LOCALHOST_ONLY; Jazzy would warn about it in every process.
    result = subprocess.run(
        ["bash", "-c", 'source scripts/ros_env.sh && echo "${ROS_LOCALHOST_ONLY-unset}"'],
        cwd=ROOT,
        env=_clean_environment(ROS_DISTRO=distro),
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == localhost_only


@pytest.mark.parametrize(("distro", "localhost_only"), [("humble", "1"), ("kilted", "unset")])
def test_the_test_harness_sets_localhost_only_for_humble_alone(distro, localhost_only):
    show = "import os, conftest; print(os.environ.get('ROS_LOCALHOST_ONLY', 'unset'))"
    result = subprocess.run(
        [sys.executable, "-c", show],
        cwd=ROOT / "test",
        env=_clean_environment(ROS_DISTRO=distro),
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == localhost_only


def test_setup_names_the_distros_it_can_install():
    result = subprocess.run(
        ["scripts/setup.sh"],
        cwd=ROOT,
        env=_clean_environment(ROS_DISTRO="humble"),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "ROS_DISTRO=humble has no PyPI wheels; use jazzy or kilted" in result.stderr


@pytest.mark.parametrize("stamp", ["ros_distro=jazzy\ninputs=0123456789abcdef\n", "0123abcd\n"])
def test_setup_refuses_a_venv_that_holds_another_distro(tmp_path, stamp):
    # "0123abcd": the stamp of set-ups from before distros were recorded, all Jazzy.
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    # Not an interpreter: a set-up that went on to pip would fail here instead of installing.
    fake_python = venv / "bin" / "python"
    fake_python.write_text("#!/bin/sh\necho 'the fake venv python ran' >&2\nexit 3\n")
    fake_python.chmod(0o755)
    (venv / ".cfgrl_ros-installed").write_text(stamp)
    result = subprocess.run(
        ["scripts/setup.sh"],
        cwd=ROOT,
        env=_clean_environment(ROS_DISTRO="kilted", VENV=str(venv)),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert f"{venv} holds the ROS 2 jazzy wheels, not kilted" in result.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
@pytest.mark.parametrize(("distro", "venv"), [(None, ".venv"), ("kilted", ".venv-kilted")])
def test_make_picks_the_venv_of_the_distro(distro, venv):
    command = ["make", "--dry-run", "--silent", "test-fast"]
    if distro:
        command.append(f"ROS_DISTRO={distro}")
    result = subprocess.run(
        command, cwd=ROOT, env=_clean_environment(), capture_output=True, text=True, check=True
    )
    assert f"source {venv}/bin/activate" in result.stdout
    assert 'pytest test -m "not ros and not sim and not slow"' in result.stdout
