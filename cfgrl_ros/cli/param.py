"""Get or set a parameter of a running node (like `ros2 param get|set`).

    cfgrl-ros param get policy_node guidance_weight
    cfgrl-ros param set policy_node guidance_weight 2.0

Talks to the node's standard parameter services (rcl_interfaces). VALUE is read as YAML, as
`ros2 param set` does (true, 3, 2.5, [0.1, 0.2], text); an integer given for a floating-point
parameter is sent as a float. A refused set prints the node's reason and exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

SERVICE_TIMEOUT = 10.0  # seconds to discover the node's parameter services


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("get", "set"), help="read or change the parameter")
    parser.add_argument("node", help="node name, e.g. policy_node or /robot1/policy_node")
    parser.add_argument("name", help="parameter name, e.g. guidance_weight")
    parser.add_argument("value", nargs="?", help="new value (set only), read as YAML")
    parser.add_argument(
        "--timeout",
        type=float,
        default=SERVICE_TIMEOUT,
        help="seconds to wait for the node to answer",
    )


def describe_value(value: Any) -> str:
    """A ParameterValue as `ros2 param get` prints it."""
    from rcl_interfaces.msg import ParameterType
    from rclpy.parameter import parameter_value_to_python

    labels = {
        ParameterType.PARAMETER_BOOL: "Boolean value is",
        ParameterType.PARAMETER_INTEGER: "Integer value is",
        ParameterType.PARAMETER_DOUBLE: "Double value is",
        ParameterType.PARAMETER_STRING: "String value is",
        ParameterType.PARAMETER_BYTE_ARRAY: "Byte values are",
        ParameterType.PARAMETER_BOOL_ARRAY: "Boolean values are",
        ParameterType.PARAMETER_INTEGER_ARRAY: "Integer values are",
        ParameterType.PARAMETER_DOUBLE_ARRAY: "Double values are",
        ParameterType.PARAMETER_STRING_ARRAY: "String values are",
    }
    if value.type == ParameterType.PARAMETER_NOT_SET:
        return "Parameter not set."
    return f"{labels[value.type]}: {parameter_value_to_python(value)}"


def parse_value(text: str) -> Any:
    """VALUE read as YAML into a ParameterValue, typed as `ros2 param set` types it (rclpy's
    get_parameter_value, which Humble's rclpy lacks); text that fits no parameter type is sent
    as a string."""
    import yaml
    from rclpy.parameter import Parameter

    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError:
        loaded = text
    if loaded == []:
        return Parameter("value", Parameter.Type.BOOL_ARRAY, []).get_parameter_value()
    try:
        return Parameter("value", value=text if loaded is None else loaded).get_parameter_value()
    except TypeError:  # a mapping, or a list of mixed types
        return Parameter("value", value=text).get_parameter_value()


def _nodes_named(node: Any, full_name: str) -> list[tuple[str, str]]:
    """The (name, namespace) of every node in the graph called `full_name` ("/ns/name")."""
    return [
        (name, namespace)
        for name, namespace in node.get_node_names_and_namespaces()
        if f"{namespace.rstrip('/')}/{name}" == full_name
    ]


def _wait(node, future, timeout: float, what: str):
    import rclpy

    rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
    if not future.done() or future.result() is None:
        raise TimeoutError(f"no answer to {what} within {timeout}s")
    return future.result()


def _run(args: argparse.Namespace) -> int:
    import rclpy
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rcl_interfaces.msg import ParameterType
    from rcl_interfaces.srv import GetParameters, GetParameterTypes, SetParameters

    node_name = args.node if args.node.startswith("/") else f"/{args.node}"
    rclpy.init(args=["--ros-args", "--disable-rosout-logs"])
    node = rclpy.create_node(f"cfgrl_ros_param_{os.getpid()}")
    try:
        # Plain clients of the node's parameter services: rclpy's AsyncParameterClient wraps
        # the same services but is missing from Humble.
        get_client, types_client, set_client = (
            node.create_client(service, f"{node_name}/{name}")
            for service, name in (
                (GetParameters, "get_parameters"),
                (GetParameterTypes, "get_parameter_types"),
                (SetParameters, "set_parameters"),
            )
        )
        deadline = time.monotonic() + args.timeout
        if not all(
            client.wait_for_service(timeout_sec=max(0.0, deadline - time.monotonic()))
            for client in (get_client, types_client, set_client)
        ):
            print(
                f"Node not found: {node_name} (no parameter services within {args.timeout}s)",
                file=sys.stderr,
            )
            return 1
        # Each call is answered by whichever server of that name answers first: with two
        # nodes of one name (a stray process, another session in the domain) a get could read
        # the other's value.
        # The node list comes on its own topic, a process's nodes in one message: once one of
        # them is listed, all of that process are.
        namesakes = _nodes_named(node, node_name)
        while not namesakes and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
            namesakes = _nodes_named(node, node_name)
        if len(namesakes) > 1:
            print(
                f"{len(namesakes)} nodes are named {node_name} in ROS_DOMAIN_ID "
                f"{os.environ.get('ROS_DOMAIN_ID', '0')}: stop the stray one (or use another "
                "domain) so that get and set reach the same node",
                file=sys.stderr,
            )
            return 1
        if args.action == "get":
            request = GetParameters.Request(names=[args.name])
            response = _wait(node, get_client.call_async(request), args.timeout, "get")
            if not response.values:
                print(f"Parameter not set: {args.name} is not declared by {node_name}")
                return 1
            print(describe_value(response.values[0]))
            return 0
        value = parse_value(args.value)
        request = GetParameterTypes.Request(names=[args.name])
        types = _wait(node, types_client.call_async(request), args.timeout, "get types")
        if (
            types.types
            and types.types[0] == ParameterType.PARAMETER_DOUBLE
            and value.type == ParameterType.PARAMETER_INTEGER
        ):
            value = parse_value(repr(float(value.integer_value)))
        request = SetParameters.Request(parameters=[ParameterMsg(name=args.name, value=value)])
        response = _wait(node, set_client.call_async(request), args.timeout, "set")
        result = response.results[0]
        if result.successful:
            print("Set parameter successful")
            return 0
        print(f"Set parameter failed: {result.reason}", file=sys.stderr)
        return 1
    except TimeoutError as error:
        print(f"{node_name}: {error}", file=sys.stderr)
        return 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def run(args: argparse.Namespace) -> int:
    if args.action == "set" and args.value is None:
        print("error: `param set` needs a VALUE", file=sys.stderr)
        return 2
    if args.action == "get" and args.value is not None:
        print("error: `param get` takes no VALUE", file=sys.stderr)
        return 2
    return _run(args)
