"""Several arms, one learner, without DDS: the replay rows tagged by arm, each arm's record
stream kept apart, noise answered while the agent trains or saves, and the dsrl_fleet graph."""

from __future__ import annotations

import json
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
from test_dsrl import HORIZON, ToyPolicy, toy_config

from cfgrl_ros.cli.main import main
from cfgrl_ros.dsrl import NoiseAgent, make_noise_agent
from cfgrl_ros.graph import (
    ARM_SEED_STRIDE,
    FLEET_ARGUMENTS,
    describe_fleet,
    describe_graph,
    node_environment,
)
from cfgrl_ros.nodes.arm_records import ArmRecords
from cfgrl_ros.nodes.decision_messages import DecisionRecord, EpisodeEnd
from cfgrl_ros.settings import NoiseActorSettings

A = 7  # action dimensions


def decision(stamp: int, index: int, value: float = 0.1) -> DecisionRecord:
    return DecisionRecord(
        stamp_ns=stamp,
        features=np.full(3, value, np.float32),
        noise=np.zeros((HORIZON, A), np.float32),
        chunk=np.full((HORIZON, A), value, np.float32),
        guidance_weight=1.0,
        noise_from_actor=True,
        decision_index=index,
        exec_horizon=HORIZON,
        operator=np.zeros(HORIZON, bool),
    )


def end(stamp: int, success: bool, decisions: int) -> EpisodeEnd:
    return EpisodeEnd(stamp, np.zeros(3, np.float32), success, decisions)


def episode(start: int, decisions: int, success: bool) -> list:
    """The records of one episode stamped start, start+1, ..."""
    records = [decision(start + i, i) for i in range(decisions)]
    return [*records, end(start + decisions, success, decisions)]


@pytest.fixture
def agent() -> NoiseAgent:
    return make_noise_agent(ToyPolicy(), 1.0, toy_config(prefill_decisions=4, batch_size=4))


def test_each_arm_keeps_its_own_stream_and_its_rows_are_tagged(agent):
    """Arms stamp records by their own clocks: an arm whose stamps are behind another's loses
    nothing (one shared 'last stamp' would drop them all), and every stored row names its arm."""
    arms = {name: ArmRecords(name, agent, statistics_window=5) for name in ("arm0", "arm1")}
    ahead = episode(1_000_000, 3, success=True)
    behind = episode(10, 2, success=False)
    for first, second in zip(ahead, [*behind, None], strict=True):  # interleaved
        arms["arm0"].receive(first)
        if second is not None:
            arms["arm1"].receive(second)
    assert arms["arm0"].transitions == 3 and arms["arm1"].transitions == 2
    assert agent.replay_sources() == {"arm0": 3, "arm1": 2}
    assert agent.transitions == 5 and agent.episodes == 2
    assert (arms["arm0"].successes, arms["arm1"].successes) == (1, 0)
    # The durable history delivers an arm's records again after a restart: dropped.
    for record in behind:
        assert arms["arm1"].receive(record).stored == 0
    assert agent.replay_sources() == {"arm0": 3, "arm1": 2}


def test_an_arm_resumes_from_its_state_and_names_its_lost_records(agent):
    arm = ArmRecords("arm1", agent, statistics_window=3)
    for record in episode(100, 2, success=True):
        arm.receive(record)
    resumed = ArmRecords("arm1", agent, statistics_window=3, state=arm.state())
    assert resumed.state() == arm.state()
    assert resumed.receive(decision(102, 1)).stored == 0  # stored before the restart
    assert resumed.receive(decision(200, 0)).errors == []
    received = resumed.receive(decision(201, 3))
    assert resumed.missing == 2
    assert received.errors[0].startswith("arm1: decision records 1..2 of this episode")
    wrong = decision(202, 4)
    wrong.exec_horizon = HORIZON + 1
    assert "set the same exec_horizon" in resumed.receive(wrong).errors[0]
    assert resumed.rejected == 1


def test_replay_sources_survive_a_checkpoint_and_old_buffers_read_as_one_arm(agent, tmp_path):
    arm = ArmRecords("arm0", agent, statistics_window=3)
    for record in episode(1, 3, success=True):
        arm.receive(record)
    agent.save(tmp_path / "agent", {"arms": {"arm0": arm.state()}})
    loaded = NoiseAgent.load(tmp_path / "agent", ToyPolicy())
    assert loaded.replay_sources() == {"arm0": 3}
    assert loaded.metadata["arms"]["arm0"]["transitions"] == 3

    state = agent.model.replay_buffer.__getstate__()
    for name in ("sources", "source_names"):  # a buffer pickled before rows had sources
        del state[name]
    old = pickle.loads(pickle.dumps(agent.model.replay_buffer))
    old.__setstate__(state)
    assert old.source_counts() == {"": 3}


def test_noise_is_answered_while_the_agent_trains_or_saves(agent):
    """Noise comes from the copy of the actor the last training round left: a request does not
    wait for the agent's lock, which training and checkpointing hold."""
    for index in range(6):
        agent.add_transition(
            np.full(3, 0.1 * index, np.float32),
            np.zeros((HORIZON, A)),
            np.zeros((HORIZON, A)),
            0.0,
            np.zeros(3, np.float32),
            terminated=False,
        )
    agent.train(3)
    features = np.array([0.1, 0.2, 0.3], np.float32)
    expected, _ = agent.model.predict(features[None], deterministic=True)
    np.testing.assert_allclose(
        agent.noise(features, deterministic=True),
        agent.noise_space.noise_from_action(expected[0]),
        atol=1e-6,
    )
    answered = threading.Event()
    with agent._lock:  # what train() and save() hold
        thread = threading.Thread(
            target=lambda: (agent.noise(features), answered.set()), daemon=True
        )
        thread.start()
        assert answered.wait(10.0), "noise() waited for the agent's lock"
    before = agent.noise(features, deterministic=True)
    agent.train(20)
    assert not np.allclose(agent.noise(features, deterministic=True), before)


def test_arm_names_are_checked():
    assert NoiseActorSettings(checkpoint="p.pt", arms=("arm0", "cell_2/arm")).arms
    for arms, message in (
        (("arm0", "arm0"), "names an arm twice"),
        (("0arm",), "not a relative ROS namespace"),
        (("arm 1",), "not a relative ROS namespace"),
    ):
        with pytest.raises(ValueError, match=message):
            NoiseActorSettings(checkpoint="p.pt", arms=arms)


@pytest.fixture
def policy_file(tmp_path) -> Path:
    path = tmp_path / "policy.pt"
    path.write_bytes(b"not read when describing")
    return path


def test_the_fleet_is_arm_groups_in_namespaces_and_one_actor_serving_them(policy_file, tmp_path):
    bag = tmp_path / "bags"
    nodes = describe_fleet(
        {
            "policy": str(policy_file),
            "arms": "3",
            "remote_arms": "cell2, /cell3/",
            "task": "pick_place_can",
            "record": "true",
            "bag": str(bag),
        }
    )
    by_name = {node.fully_qualified_name: node for node in nodes}
    actor = by_name.pop("/noise_actor_node")
    assert actor.parameters["arms"] == ["arm0", "arm1", "arm2", "cell2", "cell3"]
    assert actor.parameters["train_schedule"] == "learner_thread"  # no arm waits for training
    single = {node.name: node for node in describe_graph({"policy": str(policy_file)})}
    assert actor.parameter_files == single["noise_actor_node"].parameter_files
    groups = {}
    for node in by_name.values():
        groups.setdefault(node.namespace, set()).add(node.name)
    assert set(groups) == {"/arm0", "/arm1", "/arm2"}
    expected = {"franka_sim_node", "policy_node", "reward_reset_node", "bag_recorder_node"}
    assert all(names == expected for names in groups.values())
    for index in range(3):
        simulator = by_name[f"/arm{index}/franka_sim_node"]
        assert simulator.parameters["seed"] == index * ARM_SEED_STRIDE
        assert simulator.parameters["task"] == "pick_place_can"
        assert by_name[f"/arm{index}/policy_node"].parameters["seed"] == index * ARM_SEED_STRIDE
        recorder = by_name[f"/arm{index}/bag_recorder_node"]
        assert recorder.parameters["out"] == str(bag.resolve() / f"arm{index}")
        assert by_name[f"/arm{index}/reward_reset_node"].parameters["max_decisions"] == 32


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"arms": "0"}, "arms:='0' must be 1 to 16 \\(0 with remote_arms:="),
        ({"arms": "17"}, "arms:='17' must be 1 to 16"),
        ({"arms": "two"}, "arms:='two' must be 1 to 16"),
        ({"remote_arms": "arm1"}, "'arm1' is not a namespace of its own"),
        ({"remote_arms": "cell2,cell2"}, "'cell2' is not a namespace of its own"),
        ({"namespace": "x"}, "unknown launch arguments \\['namespace'\\]"),
        ({"policy": ""}, "policy:=PATH is required: every arm of dsrl_fleet"),
    ],
)
def test_the_fleet_refuses_bad_arguments_naming_them(policy_file, arguments, message):
    with pytest.raises(ValueError, match=message):
        describe_fleet({"policy": str(policy_file), **arguments})


def test_fleet_arguments_are_the_single_cells_plus_the_arms():
    names = [argument.name for argument in FLEET_ARGUMENTS]
    assert names[:2] == ["arms", "remote_arms"]
    assert "namespace" not in names and "noise_actor" not in names and "policy" in names


def test_a_learner_may_serve_only_remote_cells(policy_file):
    (actor,) = describe_fleet(
        {"policy": str(policy_file), "arms": "0", "remote_arms": "cell_a", "sim": "false"}
    )
    assert actor.name == "noise_actor_node" and actor.parameters["arms"] == ["cell_a"]


def test_a_remote_cell_starts_its_group_without_an_actor(policy_file):
    nodes = describe_graph(
        {"policy": str(policy_file), "sim": "false", "namespace": "cell2", "noise_actor": "false"}
    )
    assert [node.name for node in nodes] == ["policy_node", "reward_reset_node"]
    assert {node.namespace for node in nodes} == {"/cell2"}


def test_discovery_stays_on_this_computer_unless_the_environment_says_otherwise():
    assert node_environment({})["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    chosen = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}
    assert node_environment(chosen)["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"


def test_a_keystore_gives_every_node_its_enclave(policy_file, tmp_path):
    keystore = tmp_path / "keystore"
    with pytest.raises(FileNotFoundError, match="not an SROS2 keystore"):
        describe_fleet({"policy": str(policy_file), "keystore": str(keystore)})
    (keystore / "enclaves").mkdir(parents=True)
    nodes = describe_fleet({"policy": str(policy_file), "keystore": str(keystore)})
    enclaves = {node.enclave for node in nodes}
    assert "/noise_actor_node" in enclaves and "/arm1/policy_node" in enclaves
    assert len(enclaves) == len(nodes)
    for node in nodes:
        assert node.environment["ROS_SECURITY_KEYSTORE"] == str(keystore.resolve())
        assert node.environment["ROS_SECURITY_STRATEGY"] == "Enforce"
        arguments = node.ros_arguments(Path("overrides.yaml"))
        assert arguments[arguments.index("--enclave") + 1] == node.enclave


def test_the_launcher_prints_every_arm_node_under_its_namespace(policy_file, capsys):
    assert main(["launch", "dsrl_fleet", f"policy:={policy_file}", "arms:=2", "--print"]) == 0
    output = capsys.readouterr().out
    assert output.count("-r __ns:=/arm1") == 3
    assert "<arm0/policy_node overrides>" in output
    assert "'arms': ['arm0', 'arm1']" in output
    assert main(["launch", "dsrl_fleet", "--show-args"]) == 0
    assert "'remote_arms'" in capsys.readouterr().out


def test_a_run_saved_before_fleets_resumes_as_its_single_arm(agent, tmp_path):
    """Older runs kept the arm's state in run_state.json, written after the agent: it resumes
    as arm "" (the arm beside the actor), which skips its next episode when the agent already
    holds it; a run saved now keeps every arm's state in the checkpoint itself."""
    from cfgrl_ros.nodes.noise_actor_node import LEGACY_RUN_STATE, saved_arm_states

    arm = ArmRecords("", agent, statistics_window=3)
    for record in episode(1, 2, success=True):
        arm.receive(record)
    legacy = {"last_record_stamp": 3, "transitions": 2, "successes": 1, "recent": [True]}
    (tmp_path / LEGACY_RUN_STATE).write_text(json.dumps(legacy))
    states, ahead = saved_arm_states(agent, tmp_path)
    assert states == {"": {**legacy, "episodes": 1}} and ahead == set()
    for record in episode(10, 2, success=False):  # stored, but the process died before
        arm.receive(record)  # run_state.json was written
    states, ahead = saved_arm_states(agent, tmp_path)
    assert ahead == {""}
    resumed = ArmRecords("", agent, 3, states[""], skip_episode=True)
    for record in episode(10, 2, success=False):  # the durable history delivers it again
        assert resumed.receive(record).stored == 0
    assert resumed.receive(decision(20, 0)).stored == 0  # the next episode's first decision ...
    assert resumed.receive(decision(21, 1)).stored == 1  # ... waits for its successor

    agent.metadata = {"arms": {"arm0": {"episodes": 4}}}
    assert saved_arm_states(agent, tmp_path) == ({"arm0": {"episodes": 4}}, set())


def test_a_checkpoint_taken_mid_episode_loses_and_repeats_nothing(agent):
    """In a fleet some arm is always mid-episode when a checkpoint is taken: its decision
    waiting for a successor is kept, so after a restart the redelivered records store each
    decision once, the waiting one included."""
    arm = ArmRecords("arm0", agent, statistics_window=3)
    records = episode(100, 4, success=True)
    for record in records[:2]:  # decision 0 stored, decision 1 waiting
        arm.receive(record)
    saved = json.loads(json.dumps(arm.state()))  # as the checkpoint writes it
    assert saved["pending"]["decision_index"] == 1
    resumed = ArmRecords("arm0", agent, statistics_window=3, state=saved)
    stored = [resumed.receive(record) for record in records]  # the whole history again
    assert [r.stored for r in stored] == [0, 0, 1, 1, 1] and not any(r.errors for r in stored)
    assert resumed.missing == 0 and resumed.transitions == 4
    assert agent.replay_sources() == {"arm0": 4}
