"""What every node of the package does the same way: parameters, clock, main()."""

from __future__ import annotations

import math
import signal
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterException,
)
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions

from cfgrl_ros.control.messages import Log
from cfgrl_ros.settings import setting_info, settings_of

SIGINT_LATENCY = 0.1  # seconds: how long Ctrl-C may wait for the executor
T = TypeVar("T")


def declare(
    node: Node,
    name: str,
    default: Any,
    description: str,
    *,
    read_only: bool = True,
    integer_range: tuple[int, int] | None = None,
    float_range: tuple[float, float] | None = None,
) -> Any:
    """Declare a parameter with a description (and range); returns its value.

    Parameters are read-only unless they are meant to be changed while the node runs. A value
    given at start-up (parameter file, ``-p``) of the wrong type or outside the range raises
    ValueError naming the parameter, the value and what it should be.
    """
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    if integer_range is not None:
        descriptor.integer_range = [
            IntegerRange(from_value=integer_range[0], to_value=integer_range[1], step=1)
        ]
    if float_range is not None:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float_range[0], to_value=float_range[1], step=0.0)
        ]
    try:
        return node.declare_parameter(name, default, descriptor).value
    except InvalidParameterTypeException:
        given = _refused_value(node, name, default)
        expected, got = _type_name(default), _type_name(given)
        integer_for_double = "double" in expected and "integer" in got
        hint = "; write numbers with a decimal point, e.g. 2.0" if integer_for_double else ""
        raise ValueError(
            f"parameter {name} must be of type {expected} like its default {default!r}, got "
            f"{given!r} of type {got}{hint}"
        ) from None
    except InvalidParameterValueException:
        if integer_range is None and float_range is None:
            raise  # refused by a callback, which gives its own reason
        low, high = integer_range or float_range
        raise ValueError(
            f"parameter {name} out of range: {_refused_value(node, name, default)} is not in "
            f"[{low}, {high}]"
        ) from None


def declare_setting(node: Node, cls: type, name: str, parameter: str | None = None) -> Any:
    """Declare setting `name` of dataclass `cls` (cfgrl_ros.settings) as parameter
    `parameter` (default: `name`) with the definition's default, description, range and
    read-only flag; returns its value as the dataclass holds it (a tuple for a list).

    Raises ValueError naming the parameter for a value of the wrong type, outside its bounds
    or not one of its choices.
    """
    info = setting_info(cls, name)
    parameter = parameter or name
    spec = info.spec
    ranges: dict[str, tuple] = {}
    # ROS ranges are closed intervals; the others are checked below.
    closed = spec.minimum is not None and spec.maximum is not None and not spec.above
    if closed and not info.sequence and spec.none_as is None:
        if info.kind is int:
            ranges["integer_range"] = (int(spec.minimum), int(spec.maximum))
        elif info.kind is float:
            ranges["float_range"] = (float(spec.minimum), float(spec.maximum))
    bounds = info.bounds()
    description = spec.description + (f" ({bounds})" if bounds else "")
    given = declare(
        node,
        parameter,
        info.parameter_value(info.default),
        description,
        read_only=not spec.live,
        **ranges,
    )
    value = info.from_parameter(given)
    problem = info.problem(value, f"parameter {parameter}")
    if problem:
        raise ValueError(problem)
    return value


def declare_settings(
    node: Node, cls: type[T], prefix: str = "", exclude: Collection[str] = (), **given: Any
) -> T:
    """Declare parameter ``<prefix><name>`` for every setting of dataclass `cls` (see
    `declare_setting`) except those in `exclude` or `given`; returns `cls` built from their
    values and `given` (e.g. ``declare_settings(node, SafetyConfig, "safety.")``).

    Raises ValueError naming the parameter, or the dataclass's own (prefixed) for settings that
    contradict each other.
    """
    values = dict(given)
    for info in settings_of(cls):
        if info.name not in exclude and info.name not in given:
            values[info.name] = declare_setting(node, cls, info.name, prefix + info.name)
    try:
        return cls(**values)
    except ValueError as error:
        raise ValueError(f"parameters {prefix}*: {error}" if prefix else str(error)) from None


def _type_name(value: Any) -> str:
    """The ROS parameter type of a value, as people read it: "double", "integer array"."""
    return Parameter.Type.from_parameter_value(value).name.lower().replace("_", " ")


def _refused_value(node: Node, name: str, default: Any) -> Any:
    # rclpy has no API for a start-up value it refused: declare the parameter again without
    # type or range checks, only to read that value for the error message.
    unchecked = ParameterDescriptor(dynamic_typing=True)
    return node.declare_parameter(name, default, unchecked).value


def declare_statistics_window(node: Node) -> int:
    """The ``statistics_window`` parameter: episodes in the node's recent success rate."""
    return declare(
        node,
        "statistics_window",
        10,
        "episodes in the recent success rate",
        integer_range=(1, 100_000),
    )


def require_positive(values: dict[str, float]) -> None:
    """Raise ValueError naming the first parameter that is not a finite number > 0."""
    for name, value in values.items():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"parameter {name} must be a number > 0, got {value}")


def diagnostic_status(
    node: Node,
    what: str,
    message: str,
    values: Mapping[str, Any],
    level: bytes = DiagnosticStatus.OK,
) -> DiagnosticStatus:
    """A status named "<node>: <what>" with `values` as its key-value pairs."""
    return DiagnosticStatus(
        level=level,
        name=f"{node.get_name()}: {what}",
        message=message,
        values=[KeyValue(key=key, value=str(value)) for key, value in values.items()],
    )


def publish_diagnostics(node: Node, publisher: Any, *statuses: DiagnosticStatus) -> None:
    """One /diagnostics message of `statuses`, stamped now."""
    message = DiagnosticArray(status=list(statuses))
    message.header.stamp = node.get_clock().now().to_msg()
    publisher.publish(message)


def write_log(node: Node, log: Log) -> None:
    """Write a state machine's log line (cfgrl_ros.control) with the node's logger."""
    # One call per severity: rclpy refuses a call site whose severity changes.
    if log.level == "info":
        node.get_logger().info(log.text)
    elif log.level == "warning":
        node.get_logger().warning(log.text)
    else:
        node.get_logger().error(log.text)


def now_seconds(node: Node) -> float:
    """The node's clock in float seconds (the clock message stamps are compared with)."""
    return node.get_clock().now().nanoseconds * 1e-9


def run_node(make_node: Callable[[], Node], name: str, args: Sequence[str] | None = None) -> None:
    """rclpy.init, build the node, spin until Ctrl-C or shutdown, clean up.

    On Ctrl-C (SIGINT) the node's destroy_node runs while it can still publish.

    A configuration error raised while building the node (ValueError, FileNotFoundError,
    RuntimeError naming what is wrong, rclpy's ParameterException for a parameter it refused) is
    logged as fatal and exits with status 1, without a traceback: it is the user's input, not a
    bug.
    """
    # rclpy's own SIGINT handler shuts the context down before destroy_node runs, so a node
    # could not publish on its way out (the policy node's last hold). Python's handler raises
    # KeyboardInterrupt instead and leaves the context up; rclpy still handles SIGTERM. A SIGINT
    # that a shell left ignored was restored when cfgrl_ros.nodes was imported.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.SIGTERM)
    node = None
    status = 0
    try:
        node = make_node()  # Ctrl-C meanwhile raises KeyboardInterrupt: start-up stops at once
        # From here Ctrl-C only sets a flag. A KeyboardInterrupt raised while the executor runs
        # a finaliser (rclpy's Future.__del__) is swallowed by Python ("Exception ignored"),
        # and that Ctrl-C was lost: the node kept running.
        interrupted: list[int] = []
        signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not interrupted:
            # Returns to Python at least every SIGINT_LATENCY, where the flag is looked at.
            executor.spin_once(timeout_sec=SIGINT_LATENCY)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, FileNotFoundError, RuntimeError, ParameterException) as error:
        if node is not None:
            raise
        rclpy.logging.get_logger(name).fatal(f"cannot start: {error}")
        status = 1
    finally:
        # A second Ctrl-C must not cut the way out short (the last hold, the learner's join):
        # it would skip the rest of destroy_node and the shutdown, with a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    if status:
        sys.exit(status)
