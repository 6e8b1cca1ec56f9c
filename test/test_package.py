"""The package is a real ament_python package: CLI, layout, colcon build, lint config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cfgrl_ros.cli.main import SUBCOMMANDS

ROOT = Path(__file__).resolve().parents[1]


def test_cli_help_lists_every_subcommand_with_its_summary():
    result = subprocess.run(
        [sys.executable, "-m", "cfgrl_ros.cli.main", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for name, summary in SUBCOMMANDS.items():
        module = name.replace("-", "_")
        assert (ROOT / "cfgrl_ros" / "cli" / f"{module}.py").is_file(), f"no module for {name}"
        assert name in result.stdout
        assert summary[:40] in " ".join(result.stdout.split())


def test_cli_unknown_command_fails_with_message():
    result = subprocess.run(
        [sys.executable, "-m", "cfgrl_ros.cli.main", "fly"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "invalid choice: 'fly'" in result.stderr


def test_cli_ctrl_c_exits_130_with_one_line(monkeypatch, capsys):
    from cfgrl_ros.cli import main, param

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(param, "run", interrupted)
    assert main.main(["param", "get", "policy_node", "guidance_weight"]) == 130
    assert capsys.readouterr().err == "cfgrl-ros param: interrupted\n"


def test_package_xml_declares_every_message_package_imported():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.find("export/build_type").text == "ament_python"
    exec_depends = {e.text for e in root.findall("exec_depend")}
    imported = set()
    for path in (ROOT / "cfgrl_ros").rglob("*.py"):
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("from", "import"):
                top = words[1].split(".")[0]
                if top.endswith(("_msgs", "_srvs")) or top == "rclpy":
                    imported.add(top)
    optional = {"franka_msgs", "control_msgs"}  # used when importable, never required
    missing = imported - exec_depends - optional
    assert not missing, f"package.xml lacks exec_depend on {sorted(missing)}"


def test_console_script_for_every_node_module():
    nodes = sorted(p.stem for p in (ROOT / "cfgrl_ros" / "nodes").glob("*_node.py"))
    setup_py = (ROOT / "setup.py").read_text()
    assert nodes, "no nodes found"
    for node in nodes:
        assert f'"{node}"' in setup_py, f"setup.py has no console script for {node}"


@pytest.mark.skipif(shutil.which("colcon") is None, reason="colcon not installed")
@pytest.mark.slow
def test_colcon_build_installs_an_ament_package(tmp_path):
    workspace = tmp_path / "ws"
    ignore = shutil.ignore_patterns(
        ".venv*", ".git", "build", "install", "log", "runs", "__pycache__", "*.egg-info"
    )
    shutil.copytree(ROOT, workspace / "src" / "cfgrl_ros", ignore=ignore)
    env = dict(os.environ)
    env.pop("AMENT_PREFIX_PATH", None)
    subprocess.run(
        ["colcon", "build", "--packages-select", "cfgrl_ros"],
        cwd=workspace,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    install = workspace / "install" / "cfgrl_ros"
    share = install / "share" / "cfgrl_ros"
    assert (share / "package.xml").is_file()
    assert (share / "launch" / "dsrl_franka.launch.py").is_file()
    assert (share / "config" / "dsrl_franka.yaml").is_file()
    assert (
        install / "share" / "ament_index" / "resource_index" / "packages" / "cfgrl_ros"
    ).exists()
    # The installed console script runs from the workspace and finds its share directory.
    script = install / "lib" / "cfgrl_ros" / "cfgrl-ros"
    check = (
        f"source {workspace}/install/setup.bash && cd {tmp_path} && {script} --help && "
        "python -c 'from cfgrl_ros.paths import share_dir; print(share_dir())'"
    )
    result = subprocess.run(
        ["bash", "-c", check], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "usage: cfgrl-ros" in result.stdout
    assert str(share) in result.stdout
