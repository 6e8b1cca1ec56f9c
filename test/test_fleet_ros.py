"""dsrl_fleet as real processes over DDS: two simulated arms, one noise actor learning from both,
and an arm lost mid-run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
from test_nodes_ros import (
    STARTUP,
    Recorder,
    agent_state,
    launch_graph,
    small_graph_settings,
    tiny_checkpoint,
)

from cfgrl_ros.dsrl import NoiseAgent
from cfgrl_ros.policy import FlowPolicy

pytestmark = [pytest.mark.ros, pytest.mark.sim]

ARMS = ("arm0", "arm1")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("policy") / "policy.pt")


def test_two_arms_train_one_actor_and_losing_one_leaves_the_other_learning(
    tmp_path, checkpoint, ros_probe
):
    """Both arms complete episodes; the actor's replay holds each arm's decisions, tagged by
    arm, exactly as many as each arm executed; killing arm1's nodes leaves arm0 learning."""
    from diagnostic_msgs.msg import DiagnosticArray

    settings = small_graph_settings(tmp_path, max_decisions=3)
    run_dir = tmp_path / "run"
    policy = FlowPolicy.load(checkpoint, "cpu")
    recorders = {arm: Recorder(ros_probe, arm) for arm in ARMS}
    for recorder in recorders.values():
        recorder.policy = policy
    arm0 = recorders["arm0"]
    statuses: dict[str, dict[str, str]] = {}  # the actor's diagnostics, by status name

    def on_diagnostics(message) -> None:
        for status in message.status:
            statuses[status.name] = {pair.key: pair.value for pair in status.values}

    diagnostics = ros_probe.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 50)
    log_path = tmp_path / "launch.log"
    launcher = launch_graph(
        tmp_path, settings, log_path, f"policy:={checkpoint}", "arms:=2", graph="dsrl_fleet"
    )

    def checkpointed(arm: str) -> dict:
        return agent_state(run_dir).get("metadata", {}).get("arms", {}).get(arm, {})

    try:
        for arm, recorder in recorders.items():
            recorder.spin_until(
                lambda arm=arm: checkpointed(arm).get("episodes", 0) >= 2,
                STARTUP + 60,
                f"two checkpointed episodes of {arm}",
            )
        pids = re.findall(r"\[launch\] started arm1/\w+ \(pid (\d+)\)", log_path.read_text())
        assert len(pids) == 3, log_path.read_text()
        for pid in pids:
            os.kill(int(pid), signal.SIGKILL)
        at_kill = agent_state(run_dir)
        arm0.spin_until(
            lambda: (
                checkpointed("arm0")["episodes"]
                >= at_kill["metadata"]["arms"]["arm0"]["episodes"] + 2
                and agent_state(run_dir)["counters"]["updates"] > at_kill["counters"]["updates"]
            ),
            STARTUP,
            "arm0 learning on after arm1 was killed",
        )
        state = agent_state(run_dir)  # one checkpoint, read once: the counts below agree
        for arm, recorder in recorders.items():
            taken = state["metadata"]["arms"][arm]["last_record_stamp"]
            recorder.spin_until(
                lambda r=recorder, t=taken: any(x.stamp_ns >= t for x in r.decisions + r.ends),
                30,
                f"the last record of {arm} in the checkpoint",
            )
        arm0.spin_until(  # diagnostics as new as that checkpoint
            lambda: (
                all(f"noise_actor_node: arm {arm}" in statuses for arm in ARMS)
                and int(statuses["noise_actor_node: learner"]["episodes"])
                >= state["counters"]["episodes"]
            ),
            30,
            "the actor's diagnostics of each arm",
        )
    finally:
        ros_probe.destroy_subscription(diagnostics)
        for recorder in recorders.values():
            recorder.close()
        launcher.send_signal(signal.SIGINT)
        launcher.wait(60)
    log = log_path.read_text()

    arms = state["metadata"]["arms"]
    # Every episode arm1 ended before it was killed is stored, and arm0 went on without it.
    assert arms["arm1"]["episodes"] == len(recorders["arm1"].ends) >= 2
    assert arms["arm0"]["episodes"] >= at_kill["metadata"]["arms"]["arm0"]["episodes"] + 2
    # Each arm's decisions up to the last record the checkpoint took, except that record
    # itself when it is a decision waiting for its successor (the checkpoint keeps it as such).
    executed = {
        arm: sum(d.stamp_ns < arms[arm]["last_record_stamp"] for d in recorders[arm].decisions)
        for arm in ARMS
    }
    assert {arm: arms[arm]["transitions"] for arm in ARMS} == executed
    assert state["counters"]["transitions"] == sum(executed.values())
    assert state["counters"]["episodes"] == sum(arms[arm]["episodes"] for arm in ARMS)
    agent = NoiseAgent.load(run_dir / "agent", policy, "cpu")
    assert agent.replay_sources() == executed
    # Per arm and overall on /diagnostics: arm1's figures stop where it was killed.
    arm1_status = statuses["noise_actor_node: arm arm1"]
    assert int(arm1_status["episodes"]) == arms["arm1"]["episodes"]
    assert int(arm1_status["replay_rows"]) == arms["arm1"]["transitions"]

    for node in ("policy_node", "franka_sim_node", "reward_reset_node"):
        assert f"[launch] arm1/{node} died (killed by SIGKILL)" in log
        assert f"[launch] arm0/{node} stopped (exit code 0)" in log
    assert "[launch] noise_actor_node stopped (exit code 0)" in log


def test_a_keystore_reaches_every_node_as_its_enclave(tmp_path, checkpoint):
    """keystore:= gives each node its enclave and enforces DDS Security. The Fast DDS of the
    PyPI wheels has no security plugins, so each node stops right there, naming that: rcl
    found its enclave (a missing one fails earlier, naming the folder)."""
    keystore = tmp_path / "keystore"
    nodes = ("franka_sim_node", "policy_node", "noise_actor_node", "reward_reset_node")
    for node in nodes[:-1]:  # the last one's enclave is missing
        enclave = keystore / "enclaves" / node
        enclave.mkdir(parents=True)
        for name in ("identity_ca.cert.pem", "cert.pem", "key.pem", "permissions_ca.cert.pem"):
            (enclave / name).write_text("not a certificate")
        for name in ("governance.p7s", "permissions.p7s"):
            (enclave / name).write_text("not signed")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cfgrl_ros.cli.main",
            "launch",
            "dsrl_franka",
            f"policy:={checkpoint}",
            f"keystore:={keystore}",
        ],
        capture_output=True,
        text=True,
        timeout=STARTUP,
    )
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    for node in nodes[:-1]:
        assert any(
            line.startswith(f"[{node}]") and "doesn't have the security libraries" in line
            for line in lines
        ), result.stdout
    assert any(
        line.startswith("[reward_reset_node]")
        and f"{keystore / 'enclaves' / 'reward_reset_node'}' does not exist" in line
        for line in lines
    ), result.stdout
    for node in nodes:
        assert f"[launch] {node} died" in result.stdout


def test_a_fleet_actor_refuses_to_train_in_the_thread_that_answers(checkpoint, ros_probe):
    from rclpy.parameter import Parameter

    from cfgrl_ros.nodes.noise_actor_node import NoiseActorNode

    with pytest.raises(ValueError, match="set train_schedule learner_thread for a fleet"):
        NoiseActorNode(
            parameter_overrides=[
                Parameter("checkpoint", value=str(checkpoint)),
                Parameter("arms", value=["arm0", "arm1"]),
                Parameter("train_schedule", value="between_episodes"),
            ]
        )
