"""The ROS 2 node graphs ``dsrl_franka`` and ``dsrl_fleet``: one description for both launchers.

``launch/<graph>.launch.py`` (``ros2 launch``) and ``cfgrl-ros launch <graph>`` (pip mode, no
``launch`` package) both call the graph's `Graph.describe` with the same launch arguments and
start exactly the nodes it returns, each with the package's parameter files plus the few
parameters the arguments set. ``dsrl_fleet`` is N groups of ``dsrl_franka`` in namespaces
``arm0`` ... and one noise actor serving them all. ROS-free: plain data, no rclpy or launch
imports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from cfgrl_ros.paths import config_path
from cfgrl_ros.settings import ARM_NAMESPACE
from cfgrl_ros.sim.tasks import TASKS
from cfgrl_ros.teleop.twist_input import TeleopConfig

GRAPH_NAME = "dsrl_franka"
FLEET_GRAPH_NAME = "dsrl_fleet"
MAX_ARMS = 16
DISCOVERY_RANGE = "ROS_AUTOMATIC_DISCOVERY_RANGE"
FAST_DDS_PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")
LOOPBACK_PROFILE = "fastdds_localhost.xml"
ARM_SEED_STRIDE = 1_000_000  # arm i's simulator starts at seed + i * stride: no shared episodes
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
        "noise_actor",
        "true",
        "false: start no noise actor; the arm is served by a fleet's (dsrl_fleet "
        "remote_arms:=<this namespace>) on another computer of the same ROS domain",
        ("true", "false"),
    ),
    LaunchArgument(
        "keystore",
        "",
        "an SROS2 keystore (`ros2 security create_keystore`, one enclave per node named by its "
        "namespace and name, e.g. /arm0/policy_node): every node runs with DDS Security "
        "enforced in its enclave. Empty: no security (docs/real_robot.md, several cells)",
    ),
    LaunchArgument(
        "namespace",
        "",
        "ROS namespace of every node (and of their relative topic names); empty: none",
    ),
)

FLEET_ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument(
        "arms",
        "2",
        f"how many arm groups to start (1 to {MAX_ARMS}), in namespaces arm0, arm1, ...: each "
        "its policy_node, reward_reset_node and (sim:=true) franka_sim_node, seeded apart; 0 "
        "with remote_arms:=: only the noise actor, for arms on other computers",
    ),
    LaunchArgument(
        "remote_arms",
        "",
        "comma-separated namespaces of more arms that the noise actor serves, whose groups run "
        "on other computers of the same ROS domain (there: cfgrl-ros launch dsrl_franka "
        "namespace:=<name> noise_actor:=false)",
    ),
    *(
        argument
        for argument in LAUNCH_ARGUMENTS
        if argument.name not in ("namespace", "noise_actor")
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
    environment: dict[str, str] = field(default_factory=dict)  # on top of node_environment's
    secure: bool = False  # DDS Security in its own enclave (launch argument keystore:=)

    @property
    def fully_qualified_name(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def enclave(self) -> str:
        """The node's SROS2 enclave, named by its fully qualified name ("": not secure)."""
        return self.fully_qualified_name if self.secure else ""

    @property
    def enclave_arguments(self) -> list[str]:
        """The ROS arguments that run the node in its enclave (none when not secure)."""
        return ["--enclave", self.enclave] if self.secure else []

    def override_yaml(self) -> str:
        """The parameter file holding `parameters` for this node only."""
        return yaml.safe_dump({self.fully_qualified_name: {"ros__parameters": self.parameters}})

    def ros_arguments(self, override_file: Path) -> list[str]:
        """The ``--ros-args`` that make a process this node (`override_file`: override_yaml)."""
        arguments = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            arguments += ["-r", f"__ns:={self.namespace}"]
        arguments += self.enclave_arguments
        for path in (*self.parameter_files, override_file):
            arguments += ["--params-file", str(path)]
        return arguments


def node_environment(inherited: Mapping[str, str]) -> dict[str, str]:
    """The environment variables every node gets on top of `inherited` (the launcher's).

    One torch thread per node unless OMP_NUM_THREADS says otherwise: the networks are small,
    and the policy node and the noise actor's learner each taking every core makes decisions
    wait (the latency targets in docs/benchmarks.md are for one thread).

    DDS stays on this computer unless the environment chooses otherwise: discovery range
    LOCALHOST, and (unless a Fast DDS profile is set) config/fastdds_localhost.xml, whose
    transports listen on the loopback interface only. That is the narrowest setting that
    still reaches franka_ros2 and the camera drivers on the same PC; LOCALHOST alone still
    lets in a process on another computer that names this one in ROS_STATIC_PEERS, the
    profile does not (docs/benchmarks.md, "Who can reach the arm"). A fleet across computers
    exports ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET or ROS_STATIC_PEERS (docs/real_robot.md).
    """
    discovery = inherited.get(DISCOVERY_RANGE, "LOCALHOST")
    environment = {
        "OMP_NUM_THREADS": inherited.get("OMP_NUM_THREADS", "1"),
        DISCOVERY_RANGE: discovery,
    }
    profile_chosen = any(name in inherited for name in FAST_DDS_PROFILE_VARIABLES)
    if discovery == "LOCALHOST" and not profile_chosen:
        environment[FAST_DDS_PROFILE_VARIABLES[0]] = str(config_path(LOOPBACK_PROFILE))
    return environment


def security_environment(keystore: Path) -> dict[str, str]:
    """What makes rcl run a node with DDS Security enforced, from `keystore`'s enclaves."""
    return {
        "ROS_SECURITY_KEYSTORE": str(keystore),
        "ROS_SECURITY_ENABLE": "true",
        "ROS_SECURITY_STRATEGY": "Enforce",
    }


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
    environment: dict[str, str] = {}
    keystore = values["keystore"].strip()
    if keystore:
        keystore_path = Path(keystore).expanduser().resolve()
        if not (keystore_path / "enclaves").is_dir():
            raise FileNotFoundError(
                f"launch argument keystore:={keystore}: {keystore_path} is not an SROS2 keystore "
                "(no enclaves folder); create one with `ros2 security create_keystore`"
            )
        environment = security_environment(keystore_path)

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
        return NodeDescription(
            executable,
            executable,
            namespace,
            parameter_files,
            parameters,
            environment,
            secure=bool(keystore),
        )

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
    if policy is not None and _flag(values, "noise_actor"):
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


def describe_fleet(arguments: Mapping[str, str]) -> list[NodeDescription]:
    """The nodes of ``dsrl_fleet``: one noise actor (no namespace) serving `arms` groups of
    ``dsrl_franka`` in namespaces arm0, arm1, ... and the `remote_arms` started elsewhere.

    Every other argument means what it means for ``dsrl_franka``, for every group. The
    simulators and policy nodes are seeded `ARM_SEED_STRIDE` apart, a recording goes to one
    folder per arm under `bag`. Raises ValueError / FileNotFoundError as `describe_graph`.
    """
    known = {argument.name: argument.default for argument in FLEET_ARGUMENTS}
    unknown = sorted(set(arguments) - set(known))
    if unknown:
        raise ValueError(
            f"unknown launch arguments {unknown}; {FLEET_GRAPH_NAME} takes {sorted(known)}"
        )
    values = {**known, **{name: str(value) for name, value in arguments.items()}}
    remote = [name.strip().strip("/") for name in values["remote_arms"].split(",")]
    remote = [name for name in remote if name]
    try:
        count = int(values["arms"])
    except ValueError:
        count = -1
    if not (0 if remote else 1) <= count <= MAX_ARMS:
        raise ValueError(
            f"launch argument arms:={values['arms']!r} must be 1 to {MAX_ARMS} (0 with "
            "remote_arms:=, a learner serving only arms on other computers)"
        )
    local = [f"arm{index}" for index in range(count)]
    for name in remote:
        if not ARM_NAMESPACE.fullmatch(name) or name in local or remote.count(name) > 1:
            raise ValueError(
                f"launch argument remote_arms: {name!r} is not a namespace of its own (letters, "
                f"digits, underscores; not one of {local}, named once)"
            )
    if not values["policy"].strip():
        raise ValueError(
            f"launch argument policy:=PATH is required: every arm of {FLEET_GRAPH_NAME} runs "
            "that FlowPolicy checkpoint and the noise actor learns for it"
        )
    group_values = {name: value for name, value in values.items() if name in argument_defaults()}
    single = describe_graph({**group_values, "noise_actor": "true"})
    actor = next(node for node in single if node.executable == "noise_actor_node")
    nodes = []
    for index, arm in enumerate(local):
        for node in describe_graph({**group_values, "namespace": arm, "noise_actor": "false"}):
            parameters = dict(node.parameters)
            if node.executable in ("franka_sim_node", "policy_node"):
                files, namespace = node.parameter_files, node.namespace
                seed = node_parameter(files, namespace, node.executable, "seed") or 0
                parameters["seed"] = int(seed) + index * ARM_SEED_STRIDE
            if node.executable == "bag_recorder_node":
                parameters["out"] = str(Path(parameters["out"]) / arm)
            nodes.append(replace(node, parameters=parameters))
    actor = replace(
        actor,
        namespace="",
        # No arm may wait for another's training: train beside the requests (the node says why).
        parameters={**actor.parameters, "arms": local + remote, "train_schedule": "learner_thread"},
    )
    return [actor, *nodes]


@dataclass(frozen=True)
class Graph:
    """A graph both launchers start: its launch arguments and its description."""

    name: str
    arguments: tuple[LaunchArgument, ...]
    describe: Callable[[Mapping[str, str]], list[NodeDescription]]


GRAPHS = {
    graph.name: graph
    for graph in (
        Graph(GRAPH_NAME, LAUNCH_ARGUMENTS, describe_graph),
        Graph(FLEET_GRAPH_NAME, FLEET_ARGUMENTS, describe_fleet),
    )
}
