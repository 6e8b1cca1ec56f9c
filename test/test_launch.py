"""launch/<graph>.launch.py describes the same graph as the pip-mode launcher.

Both build their node list from cfgrl_ros.graph. Without the `launch` packages (pip mode) the
launch file must still import; where launch_ros is installed, its description is resolved and
compared node by node, parameter by parameter, with what `cfgrl-ros launch` starts.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from cfgrl_ros.cli.main import main
from cfgrl_ros.graph import GRAPHS, describe_graph, node_environment

ROOT = Path(__file__).resolve().parents[1]


class LaunchRosParameters(yaml.SafeLoader):
    """launch_ros writes list parameters as tuples (!!python/tuple); rcl reads sequences."""


LaunchRosParameters.add_constructor(
    "tag:yaml.org,2002:python/tuple", lambda loader, node: loader.construct_sequence(node)
)


def launch_file(graph: str) -> Path:
    return ROOT / "launch" / f"{graph}.launch.py"


def load_launch_file(graph: str):
    spec = importlib.util.spec_from_file_location(f"{graph}_launch", launch_file(graph))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("graph", sorted(GRAPHS))
def test_launch_file_imports_where_launch_is_not_installed(graph):
    check = textwrap.dedent(
        """
        import importlib.abc, importlib.util, sys

        class NoLaunch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("launch", "launch_ros"):
                    raise ImportError(f"{name} is not installed")

        sys.meta_path.insert(0, NoLaunch())
        spec = importlib.util.spec_from_file_location("dsrl_franka_launch", sys.argv[1])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        try:
            module.generate_launch_description()
        except ImportError as error:
            print("describing needs launch:", error)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", check, str(launch_file(graph))], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "describing needs launch: launch is not installed" in result.stdout


@pytest.mark.parametrize(
    "graph, arguments",
    [
        ("dsrl_franka", {"guidance_weight": "2.0", "use_camera": "true"}),
        ("dsrl_franka", {"sim": "false", "namespace": "fr3", "run_dir": "runs/fr3"}),
        ("dsrl_fleet", {"arms": "2", "remote_arms": "cell2", "task": "pick_place_can"}),
        ("dsrl_fleet", {"arms": "1", "keystore": "{keystore}"}),
    ],
)
def test_launch_file_starts_the_nodes_of_the_pip_launcher(tmp_path, graph, arguments):
    pytest.importorskip("launch_ros")
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import TextSubstitution

    checkpoint = tmp_path / "policy.pt"
    checkpoint.write_bytes(b"not read when describing")
    (tmp_path / "keystore" / "enclaves").mkdir(parents=True)
    keystore = str(tmp_path / "keystore")
    arguments = {"policy": str(checkpoint), **arguments}
    arguments = {name: value.format(keystore=keystore) for name, value in arguments.items()}

    description = load_launch_file(graph).generate_launch_description()
    declared = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    expected_arguments = GRAPHS[graph].arguments
    assert [a.name for a in declared] == [a.name for a in expected_arguments]
    for action, argument in zip(declared, expected_arguments, strict=True):
        assert action.description.startswith(argument.description)  # + the choices
        default = "".join(s.perform(LaunchContext()) for s in action.default_value)
        assert default == argument.default

    context = LaunchContext()
    context.launch_configurations.update(arguments)
    for action in declared:
        action.visit(context)  # fills in the defaults of the arguments not given
    (start_nodes,) = [e for e in description.entities if isinstance(e, OpaqueFunction)]
    launched = start_nodes.execute(context)
    expected = GRAPHS[graph].describe(arguments)
    assert len(launched) == len(expected)
    for node, description_node in zip(launched, expected, strict=True):
        node._perform_substitutions(context)
        assert node.node_package == "cfgrl_ros"
        assert node.node_executable == description_node.executable
        assert node.node_name == description_node.fully_qualified_name
        files = [path for path, is_file in node._Node__expanded_parameter_arguments if is_file]
        assert files[:-1] == [str(path) for path in description_node.parameter_files]
        overrides = yaml.load(Path(files[-1]).read_text(), Loader=LaunchRosParameters)
        Path(files[-1]).unlink()
        assert overrides == yaml.safe_load(description_node.override_yaml())
        environment = {
            "".join(s.perform(context) for s in key): "".join(s.perform(context) for s in value)
            for key, value in node.process_description.additional_env
        }
        assert environment == {**node_environment(os.environ), **description_node.environment}
        # The plain words of the command (the rest needs an ament index or a running launch).
        words = [part[0].text for part in node.cmd if isinstance(part[0], TextSubstitution)]
        if description_node.enclave:
            assert words[words.index("--enclave") + 1] == description_node.enclave
        else:
            assert "--enclave" not in words


@pytest.mark.parametrize(
    "order",
    [
        ["--print", "dsrl_franka", "sim:=false", "policy:={policy}"],
        ["dsrl_franka", "--print", "sim:=false", "policy:={policy}"],
        ["dsrl_franka", "sim:=false", "--print", "policy:={policy}"],
    ],
    ids=["flag-first", "flag-after-graph", "flag-among-arguments"],
)
def test_print_flag_stands_anywhere_as_with_ros2_launch(tmp_path, capsys, order):
    checkpoint = tmp_path / "policy.pt"
    checkpoint.write_bytes(b"not read when printing")
    argv = ["launch", *(item.format(policy=checkpoint) for item in order)]

    assert main(argv) == 0
    printed = capsys.readouterr().out
    expected = describe_graph({"sim": "false", "policy": str(checkpoint)})
    started = [line for line in printed.splitlines() if " -m cfgrl_ros.nodes." in line]
    assert [line.split(" -m ")[1].split()[0] for line in started] == [
        f"cfgrl_ros.nodes.{node.executable}" for node in expected
    ]
    assert "franka_sim_node" not in printed  # sim:=false (not the default) was read
