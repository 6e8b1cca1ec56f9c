"""Test harness: ROS 2 traffic stays on loopback, in a domain of this session's own.

The environment is set at import, before anything imports rclpy, so that this process and
every node subprocess inherit it. ``ros_nodes`` starts the package's nodes as real processes.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import random
import sys
import tempfile

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
# Humble reads only ROS_LOCALHOST_ONLY; Jazzy warns about it and Kilted ignores it (see
# scripts/ros_env.sh). Humble has no PyPI wheels: there ROS_DISTRO comes from its setup.bash.
if os.environ.get("ROS_DISTRO") == "humble":
    os.environ["ROS_LOCALHOST_ONLY"] = "1"
os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 101))
os.environ["ROS_LOG_DIR"] = tempfile.mkdtemp(prefix="cfgrl_ros_test_log_")
os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
from node_processes import NodeProcesses

# Fixtures that put a test on DDS: a test that uses one must be marked ros.
DDS_FIXTURES = {"ros_probe", "ros_nodes"}


def pytest_collection_modifyitems(items):
    """A test on DDS without the ros marker would run in `make test-fast`: refuse the run."""
    unmarked = [
        item.nodeid
        for item in items
        if DDS_FIXTURES & set(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("ros") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            f"mark with pytest.mark.ros the tests that use {sorted(DDS_FIXTURES)}: {unmarked}"
        )


class _RefuseImport(importlib.abc.MetaPathFinder):
    def __init__(self, module: str, reason: str) -> None:
        self.module, self.reason = module, reason

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == self.module:
            raise ImportError(self.reason)


@pytest.fixture(autouse=True)
def _markers_match_what_tests_start(request, monkeypatch):
    """A test without the ros marker that starts rclpy in this process, or one without the sim
    marker that imports robosuite, fails and names the marker it needs. (Node subprocesses are
    not seen here: tests that start them use ros_nodes, or must be marked by hand.)"""

    def needs(marker: str, what: str) -> str:
        return f"{request.node.nodeid} {what}: mark it pytest.mark.{marker}"

    if request.node.get_closest_marker("ros") is None and importlib.util.find_spec("rclpy"):
        import rclpy

        def refuse_init(*args, **kwargs):
            raise RuntimeError(needs("ros", "starts rclpy (DDS)"))

        monkeypatch.setattr(rclpy, "init", refuse_init)
    if request.node.get_closest_marker("sim") is None:
        reason = needs("sim", "runs the simulator (robosuite)")
        if "robosuite" in sys.modules:

            def refuse_make(*args, **kwargs):
                raise RuntimeError(reason)

            monkeypatch.setattr(sys.modules["robosuite"], "make", refuse_make)
        else:
            blocker = _RefuseImport("robosuite", reason)
            sys.meta_path.insert(0, blocker)
            request.addfinalizer(lambda: sys.meta_path.remove(blocker))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def ros_probe():
    """An rclpy node in the test process, for discovery, topics, services and parameters."""
    import rclpy
    from rclpy.node import Node

    rclpy.init()
    node = Node("cfgrl_ros_test_probe")
    yield node
    node.destroy_node()
    rclpy.try_shutdown()


@pytest.fixture
def ros_nodes(request, ros_probe, tmp_path):
    """Start package nodes as subprocesses; stopped (SIGINT, then kill) after the test.

    Their output is written to files under tmp_path and printed when the test fails.
    """
    processes = NodeProcesses(ros_probe, tmp_path / "node_logs")
    yield processes
    processes.stop_all()
    failed = any(
        getattr(getattr(request.node, f"report_{when}", None), "failed", False)
        for when in ("setup", "call")
    )
    if failed:
        processes.print_logs()
