"""The graph description, its parameter files, the message contract and the pip-mode launcher.

No node processes here (except the launcher's process handling, with stand-in processes);
test_nodes_ros.py runs the real graph.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from cfgrl_ros.cli import launch as launcher
from cfgrl_ros.graph import LAUNCH_ARGUMENTS, describe_graph
from cfgrl_ros.nodes import decision_messages as contract
from cfgrl_ros.paths import config_path
from cfgrl_ros.sim.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
EXECUTABLES = ("franka_sim_node", "policy_node", "noise_actor_node", "reward_reset_node")


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "policy.pt"
    path.write_bytes(b"not read by the graph description")
    return path


def test_simulated_graph_has_every_node_with_the_arguments_parameters(checkpoint):
    nodes = describe_graph({"policy": str(checkpoint), "guidance_weight": "1.5"})
    assert [node.executable for node in nodes] == list(EXECUTABLES)
    assert [node.name for node in nodes] == list(EXECUTABLES)
    by_name = {node.name: node for node in nodes}
    for node in nodes:
        assert node.namespace == ""
        assert node.parameter_files == (config_path("dsrl_franka.yaml"),)
    assert by_name["franka_sim_node"].parameters == {
        "mode": "lockstep",
        "use_camera": False,
        "task": "lift",
    }
    assert by_name["policy_node"].parameters == {
        "checkpoint": str(checkpoint),
        "guidance_weight": 1.5,
        "lockstep": True,
        "use_camera": False,
        "task": "lift",
        "workspace_low": list(TASKS["lift"].workspace_low),
        "workspace_high": list(TASKS["lift"].workspace_high),
    }
    assert by_name["noise_actor_node"].parameters == {
        "checkpoint": str(checkpoint),
        "guidance_weight": 1.5,
    }
    # 100 ticks of lift at the file's 8 actions per decision
    assert by_name["reward_reset_node"].parameters == {"reset": "sim", "max_decisions": 13}


def test_teleop_runs_the_simulator_in_realtime_and_record_adds_the_recorder(checkpoint, tmp_path):
    nodes = describe_graph({"policy": str(checkpoint), "teleop": "true"})
    by_name = {node.name: node for node in nodes}
    assert by_name["franka_sim_node"].parameters["mode"] == "realtime"  # a person's pace
    assert by_name["policy_node"].parameters["lockstep"] is False
    assert "teleop_node" in by_name and "noise_actor_node" in by_name

    bag = tmp_path / "demos"
    nodes = describe_graph({"teleop": "true", "record": "true", "bag": str(bag)})
    assert [node.name for node in nodes] == [
        "franka_sim_node",
        "policy_node",
        "reward_reset_node",
        "teleop_node",
        "bag_recorder_node",
    ]  # no policy: no noise actor, the operator drives
    assert nodes[1].parameters["checkpoint"] == ""
    assert nodes[-1].parameters == {"out": str(bag), "task": "lift"}
    with pytest.raises(ValueError, match="or teleop:=true for an operator to drive"):
        describe_graph({"record": "true"})

    # The simulated operator drives through teleop_node's mapping, whatever the file sets.
    config = tmp_path / "teleop.yaml"
    settings = yaml.safe_load(config_path("dsrl_franka.yaml").read_text())
    settings["/**/teleop_node"] = {"ros__parameters": {"axes": [2, -1, 3], "success_button": 4}}
    config.write_text(yaml.safe_dump(settings))
    nodes = describe_graph({"teleop": "scripted", "config": str(config)})
    assert nodes[-1].name == "scripted_operator_node"
    assert nodes[-1].parameters == {
        "task": "lift",
        "drive_every_episode": True,
        "axes": [2, -1, 3],
        "success_button": 4,
    }
    with pytest.raises(ValueError, match="teleop:=scripted needs sim:=true"):
        describe_graph({"teleop": "scripted", "sim": "false"})


def test_a_success_detector_replaces_the_simulators_success_signal(checkpoint):
    arguments = {"policy": str(checkpoint), "success_detector": str(checkpoint)}
    with pytest.raises(ValueError, match="needs use_camera:=true"):
        describe_graph(arguments)
    nodes = {node.name: node for node in describe_graph({**arguments, "use_camera": "true"})}
    assert nodes["success_detector_node"].parameters == {"detector": str(checkpoint)}
    assert nodes["franka_sim_node"].parameters["success_topic"] == "sim/success"
    assert nodes["reward_reset_node"].parameters["use_success_topic"] is True
    with pytest.raises(FileNotFoundError, match=r"success_detector:=nowhere\.pt: no such file"):
        describe_graph({**arguments, "use_camera": "true", "success_detector": "nowhere.pt"})


def test_task_argument_sets_the_simulator_the_box_and_the_episode_length(checkpoint, tmp_path):
    nodes = describe_graph({"policy": str(checkpoint), "task": "pick_place_can"})
    by_name = {node.name: node for node in nodes}
    spec = TASKS["pick_place_can"]
    assert by_name["franka_sim_node"].parameters["task"] == "pick_place_can"
    assert by_name["policy_node"].parameters["task"] == "pick_place_can"
    assert by_name["policy_node"].parameters["workspace_high"] == list(spec.workspace_high)
    assert by_name["reward_reset_node"].parameters["max_decisions"] == 32  # ceil(250 / 8)
    # The episode length follows the policy node's exec_horizon in the files given.
    config = tmp_path / "mine.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "/**": {"ros__parameters": {"exec_horizon": 8}},
                "/**/policy_node": {"ros__parameters": {"exec_horizon": 5}},
                "/**/reward_reset_node": {"ros__parameters": {"exec_horizon": 4}},
            }
        )
    )
    arguments = {"policy": str(checkpoint), "task": "pick_place_can"}
    nodes = describe_graph({**arguments, "config": str(config)})
    assert nodes[-1].parameters["max_decisions"] == 50
    # ...unless the files choose an episode length themselves,
    chosen = tmp_path / "chosen.yaml"
    chosen.write_text(
        yaml.safe_dump(
            {
                "/**": {"ros__parameters": {"exec_horizon": 8}},
                "/**/reward_reset_node": {"ros__parameters": {"max_decisions": 0}},
            }
        )
    )
    nodes = describe_graph({**arguments, "config": str(chosen)})
    assert "max_decisions" not in nodes[-1].parameters
    # and files that give no exec_horizon are named.
    empty = tmp_path / "empty.yaml"
    empty.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"device": "cpu"}}}))
    with pytest.raises(ValueError, match="no exec_horizon >= 1"):
        describe_graph({**arguments, "config": str(empty)})
    # A real arm's box and episode length come from its parameter files, not from a task.
    nodes = describe_graph({"policy": str(checkpoint), "sim": "false", "task": "pick_place_can"})
    assert all("task" not in node.parameters for node in nodes)
    assert "max_decisions" not in nodes[-1].parameters


def test_run_dir_argument_gives_the_noise_actor_its_run_folder(checkpoint, tmp_path, monkeypatch):
    """run_dir:= reaches the noise actor alone, as an absolute path (the nodes' working
    directory may differ from the launcher's); empty leaves the node its per-policy default."""
    monkeypatch.chdir(tmp_path)
    nodes = describe_graph({"policy": str(checkpoint), "run_dir": "runs/mine"})
    by_name = {node.name: node for node in nodes}
    assert by_name["noise_actor_node"].parameters["run_dir"] == str(tmp_path / "runs" / "mine")
    assert all(
        "run_dir" not in node.parameters for node in nodes if node.name != "noise_actor_node"
    )
    by_name = {node.name: node for node in describe_graph({"policy": str(checkpoint)})}
    assert "run_dir" not in by_name["noise_actor_node"].parameters


def test_real_arm_graph_starts_no_simulator_and_loads_the_arm_config(checkpoint):
    nodes = describe_graph({"policy": str(checkpoint), "sim": "false", "namespace": "fr3/"})
    assert [node.name for node in nodes] == list(EXECUTABLES[1:])
    by_name = {node.name: node for node in nodes}
    assert by_name["policy_node"].parameters["lockstep"] is False
    assert "guidance_weight" not in by_name["policy_node"].parameters  # the file's value
    assert by_name["reward_reset_node"].parameters == {"reset": "real"}
    for node in nodes:
        assert node.namespace == "/fr3"
        assert node.fully_qualified_name == f"/fr3/{node.name}"
        assert node.parameter_files == (
            config_path("dsrl_franka.yaml"),
            config_path("franka_real.yaml"),
        )


def test_node_parameter_applies_the_files_as_ros_does(tmp_path):
    """Every file's /** first, then the node's own sections (/**/node, /node, /ns/node), a
    later file over an earlier one: a later file's /** does not beat an earlier node section."""
    from cfgrl_ros.graph import node_parameter

    own = tmp_path / "own.yaml"
    own.write_text(yaml.safe_dump({"/**/policy_node": {"ros__parameters": {"exec_horizon": 5}}}))
    shared = tmp_path / "shared.yaml"
    shared.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"exec_horizon": 8}}}))
    named = tmp_path / "named.yaml"
    named.write_text(
        yaml.safe_dump(
            {"/arm1/policy_node": {"ros__parameters": {"exec_horizon": 2}}, "/**/other": None}
        )
    )
    assert node_parameter((own, shared), "", "policy_node", "exec_horizon") == 5
    assert node_parameter((shared, own), "", "policy_node", "exec_horizon") == 5
    assert node_parameter((shared, own, named), "/arm1", "policy_node", "exec_horizon") == 2
    assert node_parameter((shared, own, named), "", "policy_node", "exec_horizon") == 5
    assert node_parameter((shared,), "", "policy_node", "max_decisions") is None


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({}, ValueError, "policy:=PATH is required"),
        ({"sim": "maybe"}, ValueError, "sim:='maybe' must be true or false"),
        ({"colour": "red"}, ValueError, "unknown launch arguments ['colour']"),
        ({"guidance_weight": "strong"}, ValueError, "guidance_weight:='strong' is not a number"),
        ({"task": "stack"}, ValueError, "task:='stack' must be one of ['lift', 'pick_place_can']"),
        ({"config": "/nonexistent.yaml"}, FileNotFoundError, "config:=/nonexistent.yaml"),
    ],
)
def test_bad_launch_arguments_are_named(checkpoint, arguments, error, message):
    if arguments:
        arguments = {"policy": str(checkpoint), **arguments}
    with pytest.raises(error, match=message.replace("[", r"\[").replace("]", r"\]")):
        describe_graph(arguments)


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="policy:="):
        describe_graph({"policy": str(tmp_path / "missing.pt")})


@pytest.mark.ros
def test_launch_argument_parameters_win_over_the_files(checkpoint, tmp_path):
    """What a node process gets from the parameter files and its overrides (rclpy's rules)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node

    node = describe_graph({"policy": str(checkpoint), "sim": "false"})[0]
    override = tmp_path / "override.yaml"
    override.write_text(node.override_yaml())
    context = Context()
    rclpy.init(args=["process", *node.ros_arguments(override)], context=context)
    try:
        process = Node("unnamed", context=context)
        values = {
            name: process.declare_parameter(name, default).value
            for name, default in (
                ("checkpoint", ""),
                ("lockstep", True),
                ("robot_mode_guard", False),
                ("exec_horizon", 0),
            )
        }
        assert process.get_fully_qualified_name() == "/policy_node"
        process.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    # checkpoint and lockstep from the launch arguments, robot_mode_guard from
    # franka_real.yaml over dsrl_franka.yaml, exec_horizon from dsrl_franka.yaml.
    assert values == {
        "checkpoint": str(checkpoint),
        "lockstep": False,
        "robot_mode_guard": True,
        "exec_horizon": 8,
    }


def test_parameter_files_configure_only_nodes_of_the_package():
    for name in ("dsrl_franka.yaml", "franka_real.yaml"):
        sections = yaml.safe_load(config_path(name).read_text())
        for key, section in sections.items():
            assert set(section) == {"ros__parameters"}, f"{name}: {key} needs ros__parameters"
            if key != "/**":
                node = key.removeprefix("/**/")
                assert (ROOT / "cfgrl_ros" / "nodes" / f"{node}.py").is_file(), f"{name}: {key}"


def test_adapter_parameters_are_the_scaling_policies_are_trained_with():
    """Policies are trained on actions normalised by task_adapter_config("lift") (collect, the
    bag reader, the simulator): the graph must execute them with the same adapter."""
    from cfgrl_ros.arm.command_adapter import AdapterConfig
    from cfgrl_ros.sim.tasks import task_adapter_config

    shared = yaml.safe_load(config_path("dsrl_franka.yaml").read_text())["/**"]["ros__parameters"]
    trained = task_adapter_config("lift")
    for field in dataclasses.fields(AdapterConfig):
        value = shared[field.name]
        assert (tuple(value) if isinstance(value, list) else value) == getattr(
            trained, field.name
        ), f"dsrl_franka.yaml {field.name}: {value} != {getattr(trained, field.name)}"
    # The real arm's file sets its own box but never the step sizes.
    real = yaml.safe_load(config_path("franka_real.yaml").read_text())
    for section in real.values():
        assert not {"max_translation", "max_rotation"} & set(section["ros__parameters"])


def test_show_args_and_print(checkpoint, capsys):
    parser = launcher.argparse.ArgumentParser()
    launcher.add_arguments(parser)
    assert launcher.run(parser.parse_args(["dsrl_franka", "--show-args"])) == 0
    shown = capsys.readouterr().out
    for argument in LAUNCH_ARGUMENTS:
        assert f"'{argument.name}'" in shown
    arguments = ["dsrl_franka.launch.py", f"policy:={checkpoint}", "--print"]
    assert launcher.run(parser.parse_args(arguments)) == 0
    printed = capsys.readouterr().out
    for executable in EXECUTABLES:
        assert f"-m cfgrl_ros.nodes.{executable} --ros-args -r __node:={executable}" in printed
    assert launcher.run(parser.parse_args(["dsrl_franka", "sim=false"])) == 2
    assert "not of the form name:=value" in capsys.readouterr().err
    assert launcher.run(parser.parse_args(["other_graph"])) == 2


def test_launcher_reports_a_dead_node_and_stops_the_others_on_sigint(tmp_path):
    """The launcher's process handling, with two stand-in processes instead of ROS nodes."""
    script = tmp_path / "run_launcher.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from cfgrl_ros.cli import launch
            from cfgrl_ros.graph import NodeDescription

            programs = {
                # Exits by itself with status 3.
                "crashing_node": "import time; print('about to fail', flush=True); "
                "time.sleep(0.5); raise SystemExit(3)",
                # Runs until SIGINT, then exits cleanly (says so once it can).
                "steady_node": "import signal, sys, time; "
                "signal.signal(signal.SIGINT, lambda *a: sys.exit(0)); "
                "print('steady', flush=True); time.sleep(60)",
            }
            launch.node_command = lambda node, override: [sys.executable, "-c",
                                                          programs[node.name]]
            nodes = [NodeDescription(name, name, "", ()) for name in programs]
            sys.exit(launch.launch(nodes))
            """
        )
    )
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        output.append(process.stdout.readline())
        text = "".join(output)
        if "crashing_node died" in text and "[steady_node] steady" in text:
            break
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=30)
    text = "".join(output) + rest
    assert "[crashing_node] about to fail" in text
    assert "[steady_node] steady" in text
    assert "[launch] crashing_node died (exit code 3)" in text
    assert "[launch] steady_node stopped (exit code 0)" in text
    assert process.returncode == 1  # a node died


# ------------------------------------------------------------------------- message contract
def test_noise_request_and_answer_round_trip():
    features = np.arange(5, dtype=np.float32) / 7
    request = contract.noise_request_message(123_456_789_012, 1.5, features)
    assert contract.stamp_to_ns(request.header.stamp) == 123_456_789_012
    weight, decoded = contract.noise_request_features(request, 5)
    assert weight == 1.5
    np.testing.assert_array_equal(decoded, features)
    with pytest.raises(ValueError, match="same checkpoint"):
        contract.noise_request_features(request, 6)

    noise = np.random.default_rng(0).standard_normal((8, 7)).astype(np.float32)
    answer = contract.noise_message(123_456_789_012, noise, control_period=0.05)
    assert answer.joint_names == list(contract.ACTION_NAMES)
    assert answer.points[3].time_from_start.nanosec == 150_000_000
    np.testing.assert_array_equal(contract.noise_from_message(answer, (8, 7)), noise)
    with pytest.raises(ValueError, match="expected 4 rows"):
        contract.noise_from_message(answer, (4, 7))


def test_decision_and_episode_end_records_round_trip():
    rng = np.random.default_rng(1)
    record = contract.DecisionRecord(
        stamp_ns=5_000_000_001,
        features=rng.standard_normal(6).astype(np.float32),
        noise=rng.standard_normal((8, 7)).astype(np.float32),
        chunk=rng.uniform(-1, 1, (8, 7)).astype(np.float32),
        guidance_weight=2.0,
        noise_from_actor=True,
        decision_index=3,
        exec_horizon=4,
        operator=np.array([False, True, True, False, False, False, False, False]),
    )
    message = contract.decision_message(record)
    assert message.name[:5] == [
        "episode_end",
        "decision_index",
        "exec_horizon",
        "guidance_weight",
        "noise_from_actor",
    ]
    assert "chunk/7/grip" in message.name and "noise/0/dx" in message.name
    assert message.name[-1] == "operator/7"
    assert not contract.is_episode_end(message)
    parsed = contract.parse_record(message, feature_dim=6, horizon=8)
    assert isinstance(parsed, contract.DecisionRecord)
    for field in ("features", "noise", "chunk", "operator"):
        np.testing.assert_array_equal(getattr(parsed, field), getattr(record, field))
    assert parsed.operator_ticks == 2
    assert (parsed.stamp_ns, parsed.guidance_weight, parsed.noise_from_actor) == (
        5_000_000_001,
        2.0,
        True,
    )
    assert (parsed.decision_index, parsed.exec_horizon) == (3, 4)
    with pytest.raises(ValueError, match="another checkpoint"):
        contract.parse_record(message, feature_dim=7, horizon=8)

    end = contract.EpisodeEnd(5_000_000_002, record.features, success=True, decisions=4)
    end_msg = contract.end_message(end)
    assert contract.is_episode_end(end_msg)
    parsed_end = contract.parse_record(end_msg, feature_dim=6, horizon=8)
    assert isinstance(parsed_end, contract.EpisodeEnd)
    assert (parsed_end.success, parsed_end.decisions) == (True, 4)
    np.testing.assert_array_equal(parsed_end.features, record.features)

    stranger = contract.JointState(name=["position"], position=[1.0])
    with pytest.raises(ValueError, match="not a decision record"):
        contract.is_episode_end(stranger)


def test_operator_actions_round_trip_and_broken_ones_are_refused():
    action = np.array([0.5, -1.0, 0.0, 0.1, 0.0, 0.0, 1.0], dtype=np.float32)
    message = contract.operator_action_message(7, action)
    np.testing.assert_array_equal(contract.operator_action_from_message(message), action)
    message.position[2] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        contract.operator_action_from_message(message)
    with pytest.raises(ValueError, match="publish it with the teleop node"):
        contract.operator_action_from_message(contract.JointState(name=["dx"], position=[0.0]))


def test_the_graph_executes_as_many_actions_per_decision_as_the_agent_expects():
    """The policy node reads exec_horizon from the file's /** section, the noise actor too; it
    must be the agent's default, which the benchmarks measured."""
    from cfgrl_ros.dsrl import DsrlConfig

    sections = yaml.safe_load(config_path("dsrl_franka.yaml").read_text())
    assert sections["/**"]["ros__parameters"]["exec_horizon"] == DsrlConfig().exec_horizon
