"""The ROS 2 node graph of ``dsrl_franka``: one description for both launchers.

``launch/dsrl_franka.launch.py`` (``ros2 launch``) and ``cfgrl-ros launch dsrl_franka`` (pip
mode, no ``launch`` package) both call `describe_graph` with the same launch arguments and start
exactly the nodes it returns, each with the package's parameter files plus the few parameters
the arguments set. ROS-free: plain data, no rclpy or launch imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from cfgrl_ros.paths import config_path
from cfgrl_ros.sim.tasks import TASKS
from cfgrl_ros.teleop.twist_input import TeleopConfig

GRAPH_NAME = "dsrl_franka"
CONFIG_FILE = "dsrl_franka.yaml"
ARM_CONFIG_FILE = "franka_real.yaml"
PACKAGE = "cfgrl_ros"


@dataclass(frozen=True)
class LaunchArgument:
    """A ``name:=value`` argument of the launch file, with its default and help text."""

    name: str
    default: str
    description: str
    choices: tuple[str, ...] = ()


LAUNCH_ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument(
        "sim",
        "true",
        "true: also start the simulated Franka (franka_sim_node, lockstep); false: run against "
        "a real arm (franka_ros2 and a camera driver must already be running)",
        ("true", "false"),
    ),
    LaunchArgument(
        "task",
        "lift",
        "the simulated task: the simulator's task, the adapter's workspace box for it, the "
        "episode length (the task's horizon in decisions), and the policy node refuses a "
        "policy trained on another task. Not used with sim:=false (a real cell's box and "
        "episode length are in arm_config)",
        tuple(sorted(TASKS)),
    ),
    LaunchArgument(
        "policy",
        "",
        "path of the FlowPolicy checkpoint (.pt) that the policy node and the noise actor load; "
        "empty with teleop:=true: no policy and no noise actor, the operator drives every "
        "episode (recording demonstrations with record:=true)",
    ),
    LaunchArgument(
        "teleop",
        "false",
        "true: also start teleop_node (a SpaceMouse or joystick through its ROS driver: "
        "spacenav/twist and spacenav/joy by default), so the operator can take the arm over; "
        "the simulator then runs in realtime, at the pace of a person. scripted (sim only): "
        "teleop_node driven by scripted_operator_node, a simulated operator who takes over "
        "when an episode goes badly (drives every episode without a policy)",
        ("true", "false", "scripted"),
    ),
    LaunchArgument(
        "record",
        "false",
        "true: also start bag_recorder_node, which writes every episode into its own bag in "
        "the folder `bag`, the layout `cfgrl-ros pretrain --bag` reads",
        ("true", "false"),
    ),
    LaunchArgument(
        "bag",
        "runs/recordings",
        "with record:=true, the folder of the episode bags (created; a later recording goes "
        "on numbering)",
    ),
    LaunchArgument(
        "run_dir",
        "",
        "the noise actor's run folder (agent and replay buffer checkpoints), resumed when it "
        "holds a run of the same policy and agent settings; empty: one folder per policy file, "
        "runs/dsrl_franka/<policy file stem>-<first 8 hex digits of its sha256>",
    ),
    LaunchArgument(
        "config",
        "",
        f"ROS parameter file for every node; empty: the package's config/{CONFIG_FILE}",
    ),
    LaunchArgument(
        "arm_config",
        "",
        "with sim:=false, a parameter file loaded after `config` with the real arm's settings; "
        f"empty: the package's config/{ARM_CONFIG_FILE}",
    ),
    LaunchArgument(
        "guidance_weight",
        "",
        "CFGRL guidance weight w at start (0: behaviour cloning, 1: conditioned, >1: further); "
        "empty: the value in the parameter file. Change it live with a parameter set.",
    ),
    LaunchArgument(
        "use_camera",
        "false",
        "true: the simulator renders and publishes camera images (a policy trained with "
        "images needs them)",
        ("true", "false"),
    ),
    LaunchArgument(
        "success_detector",
        "",
        "a success detector (`cfgrl-ros train-success`): success_detector_node watches the "
        "cameras (use_camera:=true) and its `success` ends episodes; the simulator's own "
        "success signal moves to sim/success, unread. Empty: none",
    ),
    LaunchArgument(
        "namespace",
        "",
        "ROS namespace of every node (and of their relative topic names); empty: none",
    ),
)


@dataclass(frozen=True)
class NodeDescription:
    """One node to start: its console script, name, namespace and parameters.

    Parameters come from `parameter_files` in order, then `parameters` (the launch
    arguments' values), which win: they are given to the node as one more parameter file,
    keyed by its fully qualified name, which is what launch_ros does with a dict of parameters
    (a ``-p`` override would lose against a file's ``/**/<node>`` section).
    """

    executable: str
    name: str
    namespace: str
    parameter_files: tuple[Path, ...]
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def fully_qualified_name(self) -> str:
        return f"{self.namespace}/{self.name}"

    def override_yaml(self) -> str:
        """The parameter file holding `parameters` for this node only."""
        return yaml.safe_dump({self.fully_qualified_name: {"ros__parameters": self.parameters}})

    def ros_arguments(self, override_file: Path) -> list[str]:
        """The ``--ros-args`` that make a process this node (`override_file`: override_yaml)."""
        arguments = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            arguments += ["-r", f"__ns:={self.namespace}"]
        for path in (*self.parameter_files, override_file):
            arguments += ["--params-file", str(path)]
        return arguments


def node_environment(inherited: Mapping[str, str]) -> dict[str, str]:
    """The environment variables every node gets on top of `inherited` (the launcher's).

    One torch thread per node unless OMP_NUM_THREADS says otherwise: the networks are small,
    and the policy node and the noise actor's learner each taking every core makes decisions
    wait (the latency targets in docs/benchmarks.md are for one thread).
    """
    return {"OMP_NUM_THREADS": inherited.get("OMP_NUM_THREADS", "1")}


def argument_defaults() -> dict[str, str]:
    """Launch argument name -> default value."""
    return {argument.name: argument.default for argument in LAUNCH_ARGUMENTS}


def _choice(values: Mapping[str, str], name: str) -> str:
    """The value of a launch argument with choices; ValueError naming them otherwise."""
    text = values[name].strip().lower()
    choices = next(argument.choices for argument in LAUNCH_ARGUMENTS if argument.name == name)
    if text not in choices:
        allowed = f"{', '.join(choices[:-1])} or {choices[-1]}"
        raise ValueError(f"launch argument {name}:={values[name]!r} must be {allowed}")
    return text


def _flag(values: Mapping[str, str], name: str) -> bool:
    return _choice(values, name) == "true"


def _file(values: Mapping[str, str], name: str, default: str) -> Path:
    given = values[name].strip()
    path = Path(given).expanduser().resolve() if given else config_path(default)
    if not path.is_file():
        raise FileNotFoundError(f"launch argument {name}:={given}: no such file {path}")
    return path


def node_parameter(files: tuple[Path, ...], namespace: str, node: str, name: str) -> Any:
    """The value the parameter files give `node` for `name`, as ROS applies them: every file's
    ``/**`` section first, then the sections naming the node (``/**/node``, ``/node``,
    ``/namespace/node``), a later file over an earlier one. None when no file sets it."""
    sections = [yaml.safe_load(path.read_text()) or {} for path in files]
    own_keys = {f"/**/{node}", f"/{node}", f"{namespace}/{node}", node}
    value = None
    for keys in ({"/**"}, own_keys):
        for file_sections in sections:
            for key, section in file_sections.items():
                parameters = (section or {}).get("ros__parameters") or {}
                if key in keys and name in parameters:
                    value = parameters[name]
    return value


def describe_graph(arguments: Mapping[str, str]) -> list[NodeDescription]:
    """The nodes to start for launch arguments (name -> string value; missing: default).

    Raises ValueError naming the argument for unknown names and bad values, and
    FileNotFoundError for a missing checkpoint or parameter file.
    """
    known = argument_defaults()
    unknown = sorted(set(arguments) - set(known))
    if unknown:
        raise ValueError(f"unknown launch arguments {unknown}; {GRAPH_NAME} takes {sorted(known)}")
    values = {**known, **{name: str(value) for name, value in arguments.items()}}
    sim = _flag(values, "sim")
    use_camera = _flag(values, "use_camera")
    teleop_mode = _choice(values, "teleop")
    if teleop_mode == "scripted" and not sim:
        raise ValueError(
            "launch argument teleop:=scripted needs sim:=true (it reads the simulator)"
        )
    teleop = teleop_mode != "false"
    record = _flag(values, "record")
    policy = None
    if values["policy"].strip():
        policy = Path(values["policy"].strip()).expanduser().resolve()
        if not policy.is_file():
            raise FileNotFoundError(f"launch argument policy:={values['policy']}: no such file")
    elif not teleop:
        raise ValueError(
            "launch argument policy:=PATH is required: the FlowPolicy checkpoint to run "
            "(train one with `cfgrl-ros pretrain`), or teleop:=true for an operator to drive "
            "every episode (recording demonstrations)"
        )
    parameter_files = (_file(values, "config", CONFIG_FILE),)
    if not sim:
        parameter_files += (_file(values, "arm_config", ARM_CONFIG_FILE),)
    namespace = values["namespace"].strip().strip("/")
    namespace = f"/{namespace}" if namespace else ""

    shared: dict[str, Any] = {"checkpoint": str(policy) if policy else ""}
    weight = values["guidance_weight"].strip()
    if weight:
        try:
            shared["guidance_weight"] = float(weight)
        except ValueError:
            raise ValueError(
                f"launch argument guidance_weight:={weight!r} is not a number"
            ) from None

    def node(executable: str, parameters: dict[str, Any]) -> NodeDescription:
        return NodeDescription(executable, executable, namespace, parameter_files, parameters)

    task = values["task"].strip()
    if task not in TASKS:
        raise ValueError(f"launch argument task:={task!r} must be one of {sorted(TASKS)}")
    detector = values["success_detector"].strip()
    if detector:
        detector_path = Path(detector).expanduser().resolve()
        if not detector_path.is_file():
            raise FileNotFoundError(f"launch argument success_detector:={detector}: no such file")
        if not use_camera:
            raise ValueError(
                "launch argument success_detector:= needs use_camera:=true: the detector "
                "watches the cameras"
            )
    nodes = []
    # A person drives in realtime; without one the simulator steps as fast as the policy.
    lockstep = sim and not teleop
    policy_parameters = {**shared, "lockstep": lockstep, "use_camera": use_camera}
    episode_parameters: dict[str, Any] = {"reset": "sim" if sim else "real"}
    if detector:
        episode_parameters["use_success_topic"] = True  # a real arm's file switches it off
    if sim:
        spec = TASKS[task]
        mode = "lockstep" if lockstep else "realtime"
        simulator = {"mode": mode, "use_camera": use_camera, "task": task}
        if detector:  # the detector alone says when the task is done
            simulator["success_topic"] = "sim/success"
        nodes.append(node("franka_sim_node", simulator))
        policy_parameters.update(
            task=task,
            workspace_low=list(spec.workspace_low),
            workspace_high=list(spec.workspace_high),
        )
        # The task's horizon in decisions, unless the files choose an episode length.
        if node_parameter(parameter_files, namespace, "reward_reset_node", "max_decisions") is None:
            exec_horizon = node_parameter(parameter_files, namespace, "policy_node", "exec_horizon")
            if not isinstance(exec_horizon, int) or exec_horizon < 1:
                raise ValueError(
                    f"the parameter files {[str(f) for f in parameter_files]} give policy_node "
                    f"no exec_horizon >= 1 (found {exec_horizon!r}): set it in their /** section "
                    "to run a task's episodes"
                )
            episode_parameters["max_decisions"] = -(-spec.horizon // exec_horizon)  # ceiling
    actor: dict[str, Any] = dict(shared)
    run_dir = values["run_dir"].strip()
    if run_dir:
        actor["run_dir"] = str(Path(run_dir).expanduser().resolve())
    nodes.append(node("policy_node", policy_parameters))
    if policy is not None:
        nodes.append(node("noise_actor_node", actor))
    nodes.append(node("reward_reset_node", episode_parameters))
    if teleop:
        nodes.append(node("teleop_node", {}))
    if teleop_mode == "scripted":
        scripted = {"task": task, "drive_every_episode": policy is None}
        # Its input goes through teleop_node's mapping: the same axes, scales and buttons.
        for name in (field.name for field in fields(TeleopConfig)):
            value = node_parameter(parameter_files, namespace, "teleop_node", name)
            if value is not None:
                scripted[name] = value
        nodes.append(node("scripted_operator_node", scripted))
    if detector:
        nodes.append(node("success_detector_node", {"detector": str(detector_path)}))
    if record:
        bag = Path(values["bag"].strip() or "runs/recordings").expanduser().resolve()
        nodes.append(node("bag_recorder_node", {"out": str(bag), "task": task if sim else ""}))
    return nodes
