"""Ctrl-C stops every node started alone, even one a shell started in the background.

A shell's background job (`policy_node ... &`, nohup) inherits SIGINT ignored; rclpy's own
handler would override that, but the nodes leave SIGINT to Python (so that the policy node can
still publish its last hold), which keeps an inherited "ignore". The whole graph's Ctrl-C is
checked by test_nodes_ros.py's launcher run.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_nodes_ros import SIGINT_EXIT, STARTUP, tiny_checkpoint

pytestmark = [pytest.mark.ros]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("policy") / "policy.pt")


def start(executable: str, parameters: dict, log_dir: Path, sigint_ignored: bool):
    """Start `executable` as the console script; `sigint_ignored`: as a shell's `&` would."""
    params_file = log_dir / f"{executable}_params.yaml"
    params_file.write_text(yaml.safe_dump({executable: {"ros__parameters": parameters}}))
    log_path = log_dir / f"{executable}.log"
    process = subprocess.Popen(
        [shutil.which(executable), "--ros-args", "--params-file", str(params_file)],
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        if sigint_ignored
        else None,
    )
    return process, log_path


def wait_until_visible(probe, name: str, process, log_path: Path) -> bool:
    """Whether node `name` answers a service call (False: it exited by itself first).

    Its name in the graph is not enough: a node of that name that an earlier test killed stays
    listed until its discovery lease ends, and this one may still be importing.
    """
    import rclpy
    from rcl_interfaces.srv import ListParameters

    client = probe.create_client(ListParameters, f"/{name}/list_parameters")
    deadline = time.monotonic() + STARTUP
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            if client.service_is_ready():
                future = client.call_async(ListParameters.Request())
                rclpy.spin_until_future_complete(probe, future, timeout_sec=1.0)
                if future.done():
                    return True
                client.remove_pending_request(future)
            rclpy.spin_once(probe, timeout_sec=0.1)
    finally:
        probe.destroy_client(client)
    raise TimeoutError(f"{name} not answering after {STARTUP}s:\n{log_path.read_text()}")


def interrupt(process) -> float:
    """SIGINT; the seconds until the process exited (killed and failed if it outlives 20 s)."""
    interrupted = time.monotonic()
    process.send_signal(signal.SIGINT)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
        pytest.fail("still running 20 s after SIGINT")
    return time.monotonic() - interrupted


@pytest.mark.parametrize(
    ("executable", "sigint_ignored"),
    [
        ("policy_node", True),
        ("policy_node", False),
        ("reward_reset_node", True),
        ("noise_actor_node", True),
        pytest.param("franka_sim_node", True, marks=pytest.mark.sim),
        ("realsense_camera_node", True),
    ],
)
def test_ctrl_c_stops_a_node_started_alone(
    executable, sigint_ignored, checkpoint, ros_probe, tmp_path
):
    parameters = {
        "policy_node": {"checkpoint": str(checkpoint), "device": "cpu"},
        "noise_actor_node": {"checkpoint": str(checkpoint), "run_dir": str(tmp_path / "run")},
    }.get(executable, {})
    process, log_path = start(executable, parameters, tmp_path, sigint_ignored)
    try:
        if not wait_until_visible(ros_probe, executable, process, log_path):
            # Only the camera node may refuse to start alone: without a camera.
            assert executable == "realsense_camera_node", log_path.read_text()
            assert process.returncode == 1 and "cannot start" in log_path.read_text()
            return
        seconds = interrupt(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    log = log_path.read_text()
    assert process.returncode == 0, log
    assert seconds < SIGINT_EXIT, f"{executable} took {seconds:.1f}s to exit after SIGINT"
    assert "Traceback" not in log


def test_ctrl_c_stops_the_policy_node_after_its_arm_went_silent(checkpoint, ros_probe, tmp_path):
    """The arm's driver died first: the policy node still ends at Ctrl-C, at once."""
    import rclpy
    from test_nodes_ros import StandInArm

    parameters = {"checkpoint": str(checkpoint), "device": "cpu", "use_noise_actor": False}
    process, log_path = start("policy_node", parameters, tmp_path, sigint_ignored=True)
    arm = StandInArm(ros_probe, [0.45, 0.0, 0.25])
    try:
        assert wait_until_visible(ros_probe, "policy_node", process, log_path)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # the node hears the arm for a while ...
            rclpy.spin_once(ros_probe, timeout_sec=0.05)
    finally:
        arm.close()  # ... then the driver is gone
    try:
        seconds = interrupt(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    assert process.returncode == 0, log_path.read_text()
    assert seconds < SIGINT_EXIT


SECOND_CTRL_C = """
import os, signal
from rclpy.node import Node
from cfgrl_ros.nodes.node_support import run_node

class Impatient(Node):
    def __init__(self):
        super().__init__("impatient")
        self.create_timer(0.1, lambda: os.kill(os.getpid(), signal.SIGINT))  # the first Ctrl-C

    def destroy_node(self):
        os.kill(os.getpid(), signal.SIGINT)  # a second one while the node cleans up
        print("cleaned up", flush=True)
        super().destroy_node()

run_node(Impatient, "impatient")
print("shut down", flush=True)
"""


def test_a_second_ctrl_c_does_not_cut_the_clean_up_short(tmp_path):
    """The user presses Ctrl-C again while the node holds the arm or joins its learner."""
    result = subprocess.run(
        [sys.executable, "-c", SECOND_CTRL_C], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["cleaned", "up", "shut", "down"]
    assert "Traceback" not in result.stderr


def test_ctrl_c_during_start_up_stops_a_node_a_shell_started_in_the_background(
    checkpoint, tmp_path
):
    """Before run_node (the node module still imports torch and SB3) Ctrl-C must work too."""
    parameters = {"checkpoint": str(checkpoint), "run_dir": str(tmp_path / "run")}
    process, _ = start("noise_actor_node", parameters, tmp_path, sigint_ignored=True)
    time.sleep(0.3)  # importing: seconds before the node exists
    try:
        interrupt(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
