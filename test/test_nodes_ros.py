"""The dsrl_franka graph as real processes over DDS, against the simulator in lockstep mode.

A tiny flow policy trained on synthetic episodes stands in for a real one: the tests check the
plumbing (decisions, noise, records, learning, checkpoints, parameters, resets), not success.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cfgrl_ros.data.episode import Episode
from cfgrl_ros.nodes import decision_messages as contract
from cfgrl_ros.observation import IMAGE_KEYS, OBSERVATIONS, PROPRIOCEPTION, ObservationSpec
from cfgrl_ros.paths import config_path
from cfgrl_ros.policy import FlowPolicy, PolicyConfig, TrainConfig, train_policy

pytestmark = [pytest.mark.ros, pytest.mark.sim]

STARTUP = 120.0  # seconds for torch, robosuite and discovery on a busy 2-core machine
SIGINT_EXIT = 10.0  # seconds a node may take to exit after Ctrl-C (~1 s idle, ~4 s at load 9)
VISION = ObservationSpec(PROPRIOCEPTION, IMAGE_KEYS, (32, 32))  # tiny images, no object pose
SMALL_AGENT = {
    "utd": 2,
    "prefill_decisions": 8,
    "batch_size": 16,
    "hidden_sizes": [32, 32],
    "redistill_updates": 10,
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("policy") / "policy.pt")


def tiny_checkpoint(
    path: Path, task: str = "lift", observation: ObservationSpec = OBSERVATIONS["state"]
) -> Path:
    """A tiny CFGRL flow policy of `task` reading `observation`, trained in seconds on synthetic
    episodes, saved at `path`."""
    rng = np.random.default_rng(0)
    episodes = []
    for index in range(4):
        length = 24
        observations = {
            "joint_pos": rng.normal(0.0, 0.3, (length, 7)),
            "gripper_width": rng.uniform(0.0, 0.08, (length, 1)),
            "eef_pos": rng.normal([0.5, 0.0, 0.1], 0.05, (length, 3)),
            "eef_quat": np.tile([1.0, 0.0, 0.0, 0.0], (length, 1)),
            "object_pos": rng.normal([0.5, 0.0, -0.08], 0.05, (length, 3)),
            "object_quat": np.tile([0.0, 0.0, 0.0, 1.0], (length, 1)),
        }
        for key in observation.image_keys:
            size = (length, *observation.image_size, 3)
            observations[key] = rng.integers(0, 256, size, dtype=np.uint8)
        rewards = np.zeros(length, dtype=np.float32)
        rewards[-1] = float(index % 2 == 0)
        actions = rng.uniform(-1, 1, (length, 7)).astype(np.float32)
        episodes.append(Episode(observations, actions, rewards, success=index % 2 == 0))
    policy = PolicyConfig(
        state_hidden_dims=(32,),
        state_feature_dim=16,
        condition_dim=8,
        time_embedding_dim=8,
        hidden_dims=(32, 32),
        flow_steps=4,
        image_channels=8,
        task=task,
        observation=observation,
    )
    config = TrainConfig(
        policy=policy,
        steps=40,
        value_steps=20,
        batch_size=32,
        value_hidden_dims=(32,),
        device="cpu",
        save_every=0,
    )
    train_policy(episodes, config, checkpoint_path=path)
    return path


class Recorder:
    """What the probe hears of the graph (of the arm in `namespace`): decision records, episode
    events, rewards."""

    def __init__(self, probe, namespace: str = "") -> None:
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64, String

        self.probe = probe
        self.decisions: list[contract.DecisionRecord] = []
        self.ends: list[contract.EpisodeEnd] = []
        self.events: list[str] = []
        self.rewards: list[float] = []
        self.policy: FlowPolicy | None = None
        prefix = f"{namespace}/" if namespace else ""
        self.subscriptions = [
            probe.create_subscription(
                JointState,
                prefix + contract.DECISION_TOPIC,
                self._record,
                contract.record_qos(10_000),
            ),
            probe.create_subscription(
                String, prefix + contract.EPISODE_EVENT_TOPIC, self._event, contract.event_qos(100)
            ),
            probe.create_subscription(
                Float64, prefix + contract.REWARD_TOPIC, lambda m: self.rewards.append(m.data), 10
            ),
        ]

    def _record(self, message) -> None:
        record = contract.parse_record(message, self.policy.feature_dim, self.policy.noise_shape[0])
        (self.ends if isinstance(record, contract.EpisodeEnd) else self.decisions).append(record)

    def _event(self, message) -> None:
        self.events.append(message.data)

    def spin_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        import rclpy

        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{what} did not happen within {timeout}s: {len(self.decisions)} decisions, "
                    f"{len(self.ends)} episode ends, events {self.events[-6:]}"
                )
            rclpy.spin_once(self.probe, timeout_sec=0.05)

    def close(self) -> None:
        for subscription in self.subscriptions:
            self.probe.destroy_subscription(subscription)


@pytest.fixture
def recorder(ros_probe, checkpoint):
    recorder = Recorder(ros_probe)
    recorder.policy = FlowPolicy.load(checkpoint, "cpu")
    yield recorder
    recorder.close()


def agent_state(run_dir: Path) -> dict:
    """agent.json of the newest noise agent checkpoint in run_dir ({} before the first)."""
    latest = run_dir / "agent" / "latest.json"
    for _ in range(10):  # the actor may replace the checkpoint between the two reads
        if not latest.is_file():
            return {}
        folder = run_dir / "agent" / json.loads(latest.read_text())["checkpoint"]
        try:
            return json.loads((folder / "agent.json").read_text())
        except FileNotFoundError:
            time.sleep(0.05)
    raise RuntimeError(f"cannot read the noise agent checkpoint in {run_dir}")


def agent_counters(run_dir: Path) -> dict[str, int]:
    """The counters of the newest noise agent checkpoint in run_dir ({} before the first)."""
    return agent_state(run_dir).get("counters", {})


def cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cfgrl_ros.cli.main", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
    )


def declared_parameters(probe, node: str) -> set[str]:
    import rclpy
    from rclpy.parameter_client import AsyncParameterClient

    client = AsyncParameterClient(probe, f"/{node}")
    assert client.wait_for_services(timeout_sec=20), f"{node} has no parameter services"
    future = client.list_parameters()
    rclpy.spin_until_future_complete(probe, future, timeout_sec=20)
    return set(future.result().result.names)


def small_graph_settings(tmp_path: Path, **episode_settings) -> dict:
    """The package's parameter files with a small agent, a run folder in `tmp_path` and
    `episode_settings` for the reward/reset node."""
    settings = yaml.safe_load(config_path("dsrl_franka.yaml").read_text())
    actor = settings["/**/noise_actor_node"]["ros__parameters"]
    actor["agent"].update(SMALL_AGENT)
    actor["run_dir"] = str(tmp_path / "run")
    settings["/**/reward_reset_node"]["ros__parameters"].update(episode_settings)
    return settings


def launch_graph(
    tmp_path: Path, settings: dict, log_path: Path, *arguments: str, graph: str = "dsrl_franka"
) -> subprocess.Popen:
    """`cfgrl-ros launch GRAPH ARGUMENTS` with `settings` as its config, output to
    `log_path`."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(settings))
    with log_path.open("w") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cfgrl_ros.cli.main",
                "launch",
                graph,
                *arguments,
                f"config:={config}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def first_episode_of_a_graph(
    tmp_path: Path, probe, checkpoint: Path, settings: dict, *arguments: str
) -> tuple[Recorder, str]:
    """Launch the graph on `checkpoint`, wait for its first episode end and stop it; what the
    probe heard and the launch log."""
    recorder = Recorder(probe)
    recorder.policy = FlowPolicy.load(checkpoint, "cpu")
    log_path = tmp_path / "launch.log"
    launcher = launch_graph(tmp_path, settings, log_path, f"policy:={checkpoint}", *arguments)
    try:
        recorder.spin_until(lambda: len(recorder.ends) >= 1, STARTUP + 60, "a first episode end")
    finally:
        recorder.close()  # later graphs may run policies with other feature sizes
        launcher.send_signal(signal.SIGINT)
        launcher.wait(60)
    return recorder, log_path.read_text()


def test_graph_runs_episodes_learns_every_decision_and_takes_live_guidance(
    tmp_path, checkpoint, recorder, ros_probe
):
    """The pip-mode launcher runs the whole graph: a short run completes, every executed
    decision becomes one stored transition, and guidance_weight set from another process
    changes the next decision's chunk while an out-of-range value is refused."""
    from std_srvs.srv import Trigger

    # No decision limit: the test ends each episode itself, so none can end before the live
    # guidance change however slowly the parameter client starts.
    settings = small_graph_settings(tmp_path, episodes=3, max_decisions=0)
    log_path = tmp_path / "launch.log"
    launcher = launch_graph(tmp_path, settings, log_path, f"policy:={checkpoint}")
    mark_failure = ros_probe.create_client(Trigger, "/reward_reset_node/mark_failure")
    try:
        recorder.spin_until(lambda: len(recorder.decisions) >= 2, STARTUP, "a first decision")

        result = cli("param", "set", "policy_node", "guidance_weight", "0.0")
        assert result.returncode == 0, result.stderr
        assert "Set parameter successful" in result.stdout
        weight_set = time.time_ns()
        result = cli("param", "get", "policy_node", "guidance_weight")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "Double value is: 0.0"
        result = cli("param", "get", "policy_node", "guidance_wieght")
        assert result.returncode == 1 and "Parameter not set" in result.stdout
        result = cli("param", "set", "policy_node", "guidance_weight", "11")
        assert result.returncode == 1
        assert "Set parameter failed" in result.stderr and "out of range" in result.stderr

        while len(recorder.ends) < 3:
            _end_episode_after_two_decisions(recorder, mark_failure, since_ns=weight_set)
        declared = {
            node: declared_parameters(ros_probe, node)
            for node in ("franka_sim_node", "policy_node", "noise_actor_node", "reward_reset_node")
        }
        recorder.spin_until(
            lambda: agent_counters(tmp_path / "run").get("episodes") == 3,
            60,
            "the noise actor's checkpoint of episode 3",
        )
    finally:
        ros_probe.destroy_client(mark_failure)
        launcher.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        launcher.wait(60)
    stopping = time.monotonic() - interrupted
    log = log_path.read_text()
    assert launcher.returncode == 0, log
    # Ctrl-C stops every node by itself, without the launcher's SIGTERM after its grace.
    assert "after SIGINT" not in log, f"{stopping:.1f}s after SIGINT:\n{log}"
    for node in ("franka_sim_node", "policy_node", "noise_actor_node", "reward_reset_node"):
        assert f"[launch] {node} stopped (exit code 0)" in log

    # A short run completes: 3 episodes, each ended by a record of the policy node.
    assert recorder.events.count("start") == 3
    assert len(recorder.rewards) == 3
    assert sum(end.decisions for end in recorder.ends) == len(recorder.decisions)
    # Every executed decision reached the learner.
    counters = agent_counters(tmp_path / "run")
    assert counters["transitions"] == len(recorder.decisions)
    assert counters["updates"] > 0

    # The new guidance weight decodes the next decisions: their chunk is the w = 0 chunk of
    # their own features and noise, not the w = 1 chunk.
    after = [d for d in recorder.decisions if d.stamp_ns > weight_set]
    assert after, "no decision after the guidance weight was set"
    policy = recorder.policy
    for decision in after:
        assert decision.guidance_weight == 0.0
        features = torch.as_tensor(decision.features[None])
        noise = torch.as_tensor(decision.noise[None])
        at_zero = policy.decode(features, noise, 0.0)[0].numpy()
        at_one = policy.decode(features, noise, 1.0)[0].numpy()
        np.testing.assert_allclose(decision.chunk, at_zero, atol=1e-5)
        assert not np.allclose(decision.chunk, at_one, atol=1e-3)
    assert recorder.decisions[0].guidance_weight == 1.0

    # Every parameter in the parameter file is declared by the node it is meant for.
    for section, values in settings.items():
        names = set(_flatten(values["ros__parameters"]))
        if section == "/**":
            for name in names:
                assert any(name in node_names for node_names in declared.values()), name
        else:
            node = section.removeprefix("/**/")
            assert names <= declared[node], f"{node} does not declare {names - declared[node]}"


def test_graph_runs_pick_place_can_with_its_episode_length(tmp_path, ros_probe):
    """task:=pick_place_can reaches the simulator, and an episode the policy does not finish
    ends after the task's 250 ticks: ceil(250 / 8) = 32 decisions (the policy node may have
    begun a 33rd when the failure reaches it)."""
    checkpoint = tiny_checkpoint(tmp_path / "can_policy.pt", task="pick_place_can")
    settings = small_graph_settings(tmp_path, episodes=1)
    recorder, log = first_episode_of_a_graph(
        tmp_path, ros_probe, checkpoint, settings, "task:=pick_place_can"
    )
    assert "simulating pick_place_can in lockstep mode" in log, log
    end = recorder.ends[0]
    assert end.decisions in (32, 33) or end.success, log


def test_graph_runs_a_vision_policy_without_the_object_pose(tmp_path, ros_probe):
    """use_camera:=true: the simulator publishes the scene and wrist cameras, the policy node
    decides from them and proprioception alone, and the noise actor learns its features."""
    checkpoint = tiny_checkpoint(tmp_path / "vision.pt", observation=VISION)
    settings = small_graph_settings(tmp_path, episodes=1, max_decisions=3)
    settings["/**/franka_sim_node"]["ros__parameters"]["image_size"] = 32
    recorder, log = first_episode_of_a_graph(
        tmp_path, ros_probe, checkpoint, settings, "use_camera:=true"
    )
    assert "cameras: ['image', 'wrist_image']" in log, log
    assert "it reads 4 state fields (no object pose) + cameras image, wrist_image at 32x32" in log
    assert recorder.ends[0].decisions in (3, 4), log  # 3, and perhaps the start of a 4th
    assert len(recorder.decisions) == recorder.ends[0].decisions and "holding the arm" not in log


def test_policy_node_names_the_silent_camera(tmp_path, ros_probe):
    """In-process, timer mode: a camera that never published and one that stopped are named
    (the envelope holds the arm meanwhile); the object pose is not even subscribed to."""
    from geometry_msgs.msg import PoseStamped
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image, JointState

    from cfgrl_ros.nodes.arm_interface import ARM_JOINTS, FINGER_JOINTS
    from cfgrl_ros.nodes.policy_node import PolicyNode

    checkpoint = tiny_checkpoint(tmp_path / "vision.pt", observation=VISION)
    overrides = [Parameter("checkpoint", value=str(checkpoint)), Parameter("device", value="cpu")]
    with pytest.raises(ValueError, match=r"camera images \['image', 'wrist_image'\]: launch with"):
        PolicyNode(parameter_overrides=overrides).destroy_node()
    node = PolicyNode(parameter_overrides=[*overrides, Parameter("use_camera", value=True)])
    try:
        assert set(node.observation_topics) == {"joint_states", "current_pose", *IMAGE_KEYS}
        old = Image()
        old.header.stamp.sec = 100
        node._latest["image"] = old
        silent = node.silent_topics(["image", "wrist_image"], now=101.0)
        assert silent == [
            "/camera/camera/color/image_raw is 1.00 s old (safety.max_observation_age 0.25 s)",
            "no message on /wrist_camera/camera/color/image_raw yet",
        ]
        # Images of another size are resized to the policy's; an unknown encoding is named.
        joints = JointState(name=[*ARM_JOINTS, *FINGER_JOINTS], position=[0.0] * 7 + [0.04, 0.04])
        node._latest |= {"joint_states": joints, "current_pose": PoseStamped()}
        for key in IMAGE_KEYS:
            node._latest[key] = Image(height=48, width=40, encoding="rgb8", step=120)
            node._latest[key].data = bytes(48 * 120)
        observation, _ = node._observation(with_images=True)
        assert observation["wrist_image"].shape == (32, 32, 3) and "object_pos" not in observation
        node._latest["image"].encoding = "16UC1"
        with pytest.raises(ValueError, match=r"^/camera/camera/color/image_raw: image encoding "):
            node._observation(with_images=True)
    finally:
        node.destroy_node()


def _end_episode_after_two_decisions(recorder: Recorder, mark_failure, since_ns: int) -> None:
    """Wait for two decisions of the running episode stamped after `since_ns`, then end it
    with ~/mark_failure (unless it ended by itself) and wait for its end record."""
    import rclpy
    from std_srvs.srv import Trigger

    ends = len(recorder.ends)
    since_ns = max([since_ns, *(end.stamp_ns for end in recorder.ends)])
    recorder.spin_until(
        lambda: (
            len(recorder.ends) > ends or sum(d.stamp_ns > since_ns for d in recorder.decisions) >= 2
        ),
        STARTUP,
        "two decisions of the episode",
    )
    if len(recorder.ends) == ends:
        assert mark_failure.wait_for_service(timeout_sec=20)
        future = mark_failure.call_async(Trigger.Request())
        rclpy.spin_until_future_complete(recorder.probe, future, timeout_sec=20)
    recorder.spin_until(lambda: len(recorder.ends) > ends, STARTUP, "the episode's end")


def _flatten(values: dict, prefix: str = "") -> list[str]:
    names = []
    for key, value in values.items():
        if isinstance(value, dict):
            names += _flatten(value, f"{prefix}{key}.")
        else:
            names.append(f"{prefix}{key}")
    return names


def test_noise_actor_crash_falls_back_to_base_policy_and_restart_loses_nothing(
    tmp_path, checkpoint, recorder, ros_nodes
):
    """Killing the noise actor mid-episode leaves the arm on the base policy; a restarted
    actor resumes from its checkpoint and the durable record history, losing no decision."""
    run_dir = tmp_path / "run"
    actor_parameters = {
        "checkpoint": str(checkpoint),
        "run_dir": str(run_dir),
        "train_schedule": "learner_thread",
        "agent": SMALL_AGENT,
    }
    starts = [
        ("franka_sim_node", {"mode": "lockstep"}),
        (
            "policy_node",
            {"checkpoint": str(checkpoint), "lockstep": True, "first_noise_timeout": 3.0},
        ),
        ("noise_actor_node", actor_parameters),
        ("reward_reset_node", {"reset": "sim", "max_decisions": 8}),  # episodes until stopped
    ]
    processes = {
        name: ros_nodes.start(name, parameters=parameters, wait=0) for name, parameters in starts
    }
    for process in processes.values():
        ros_nodes.wait_for_node(process, STARTUP)

    def mid_episode_after_checkpoint() -> bool:
        if not agent_counters(run_dir) or not recorder.ends:
            return False
        started = recorder.ends[-1].stamp_ns
        current = [d for d in recorder.decisions if d.stamp_ns > started]
        return len(current) >= 2 and any(d.noise_from_actor for d in recorder.decisions)

    recorder.spin_until(mid_episode_after_checkpoint, STARTUP, "a decision after a checkpoint")
    processes["noise_actor_node"].process.kill()  # a crash: no clean shutdown
    processes["noise_actor_node"].process.wait(10)
    killed_at = time.time_ns()

    def ends_after_kill() -> list[int]:
        return [end.stamp_ns for end in recorder.ends if end.stamp_ns > killed_at]

    # A whole episode begun after the kill: the episode it interrupted may end after it with
    # every decision stamped before it (a decision is stamped when it asks for noise).
    recorder.spin_until(
        lambda: len(ends_after_kill()) >= 2, STARTUP, "an episode without the noise actor"
    )
    first_end, second_end = ends_after_kill()[:2]
    without_actor = [d for d in recorder.decisions if first_end < d.stamp_ns < second_end]
    assert without_actor and not any(d.noise_from_actor for d in without_actor)
    assert processes["policy_node"].alive()

    restarted = ros_nodes.start("noise_actor_node", parameters=actor_parameters, wait=STARTUP)
    restarted_at = time.time_ns()
    recorder.spin_until(
        lambda: any(d.noise_from_actor for d in recorder.decisions if d.stamp_ns > restarted_at),
        STARTUP,
        "noise from the restarted actor",
    )
    assert "resumed from" in restarted.log()
    # Wait until the restarted actor has checkpointed an episode that ended after the restart.
    ends_at_restart = sum(end.stamp_ns < restarted_at for end in recorder.ends)
    state: dict = {}

    def checkpoint_after_restart() -> bool:
        # One read per check: the actor may checkpoint again between two reads.
        state.update(agent_state(run_dir))
        return state["counters"]["episodes"] > ends_at_restart

    recorder.spin_until(checkpoint_after_restart, STARTUP, "a checkpoint after the restart")
    # The checkpoint holds every decision up to the last record it took, except that record
    # itself when it is a decision still waiting for its successor (kept as such).
    taken = state["metadata"]["arms"][""]["last_record_stamp"]
    recorder.spin_until(
        lambda: any(r.stamp_ns >= taken for r in recorder.decisions + recorder.ends),
        30,
        "the checkpoint's last record",
    )
    executed = [d for d in recorder.decisions if d.stamp_ns < taken]
    assert state["counters"]["transitions"] == len(executed)  # before, during, after the crash
    assert processes["policy_node"].alive() and processes["franka_sim_node"].alive()


class StandInArm:
    """A perfect arm driven by the probe: it is wherever the last target sent it.

    Publishes joint states, the end-effector pose and (if `object_pose`) an object pose at
    20 Hz, stamped now, and records every target it follows and every pose it published.
    """

    def __init__(self, probe, position, object_pose: bool = True) -> None:
        from geometry_msgs.msg import PoseStamped
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64

        self.probe = probe
        self.position = np.asarray(position, dtype=float)
        self.quaternion = np.array([1.0, 0.0, 0.0, 0.0])
        self.width = 0.0
        self.targets: list[np.ndarray] = []
        self.steps: list[np.ndarray] = []  # target minus the pose it was commanded from
        # the target repeats a pose published before it, or the target before it: no new motion
        self.holds: list[bool] = []
        self.widths: list[float] = []
        self.published: list[np.ndarray] = []
        self.publishers = {
            "joints": probe.create_publisher(JointState, "joint_states", qos_profile_sensor_data),
            "pose": probe.create_publisher(
                PoseStamped, "franka_robot_state_broadcaster/current_pose", qos_profile_sensor_data
            ),
            "object": probe.create_publisher(PoseStamped, "object_pose", qos_profile_sensor_data),
        }
        self.subscriptions = [
            probe.create_subscription(PoseStamped, "target_pose", self._follow, 10),
            probe.create_subscription(
                Float64, "gripper_command", lambda m: self.widths.append(m.data), 10
            ),
        ]
        self.object_pose = object_pose
        self.timer = probe.create_timer(0.05, self._publish)

    def _follow(self, message) -> None:
        from cfgrl_ros.msg_arrays import pose_arrays

        position, self.quaternion = pose_arrays(message)
        previous = self.targets[-1:]
        self.targets.append(position)
        # The node commands from the pose it last measured, which may be a few publications
        # old: the step is measured from the nearest of the recent ones.
        recent = self.published[-10:] or [self.position]
        self.steps.append(min((position - p for p in recent), key=lambda d: np.abs(d).max()))
        self.holds.append(any(np.array_equal(position, p) for p in [*self.published, *previous]))
        self.position = position

    def _publish(self) -> None:
        from sensor_msgs.msg import JointState

        from cfgrl_ros.nodes.arm_interface import pose_message

        stamp = self.probe.get_clock().now().to_msg()
        joints = JointState(
            name=[
                *(f"panda_joint{i}" for i in range(1, 8)),
                "panda_finger_joint1",
                "panda_finger_joint2",
            ],
            position=[0.0] * 7 + [self.width / 2] * 2,
        )
        joints.header.stamp = stamp
        self.publishers["joints"].publish(joints)
        pose = pose_message(self.position, self.quaternion, "panda_link0", stamp)
        self.publishers["pose"].publish(pose)
        self.published.append(self.position.copy())
        if self.object_pose:
            self.publishers["object"].publish(
                pose_message([0.5, 0.0, -0.08], [0.0, 0.0, 0.0, 1.0], "panda_link0", stamp)
            )

    def close(self) -> None:
        self.probe.destroy_timer(self.timer)
        for subscription in self.subscriptions:
            self.probe.destroy_subscription(subscription)
        for publisher in self.publishers.values():
            self.probe.destroy_publisher(publisher)


def test_real_arm_reset_homes_through_the_policy_node_after_the_operator_says_so(
    checkpoint, recorder, ros_nodes, ros_probe
):
    """reset: real — nothing moves before ~/ready; the policy node, the only publisher of
    target_pose and gripper_command, homes the arm in bounded steps; the operator marks the
    episodes; Ctrl-C on the policy node sends a last hold."""
    import rclpy
    from std_srvs.srv import Trigger

    home = [0.45, 0.0, 0.25]
    ros_nodes.start(
        "policy_node",
        parameters={
            "checkpoint": str(checkpoint),
            "device": "cpu",
            "lockstep": False,
            "use_noise_actor": False,
            "home_position": home,
        },
        wait=STARTUP,
    )
    ros_nodes.start(
        "reward_reset_node",
        parameters={
            "reset": "real",
            "home_position": home,
            "stop_timeout": 5.0,  # wait for the policy node's episode end: it refuses homing
            # while an episode runs
            "use_success_topic": False,
        },
        wait=STARTUP,
    )
    # No object pose yet: the policy cannot decide, so whatever moves the arm before the
    # object appears is homing (a started episode only holds the arm).
    arm = StandInArm(ros_probe, [0.5, 0.05, 0.2], object_pose=False)
    clients = {
        name: ros_probe.create_client(Trigger, name)
        for name in (
            "/reward_reset_node/ready",
            "/reward_reset_node/mark_success",
            "/reward_reset_node/mark_failure",
            "/policy_node/home",
        )
    }

    def call(name: str):
        assert clients[name].wait_for_service(timeout_sec=20)
        future = clients[name].call_async(Trigger.Request())
        rclpy.spin_until_future_complete(ros_probe, future, timeout_sec=20)
        return future.result()

    def publishers(topic: str) -> list[str]:
        return sorted(info.node_name for info in ros_probe.get_publishers_info_by_topic(topic))

    try:
        for topic in ("/target_pose", "/gripper_command"):
            recorder.spin_until(lambda t=topic: publishers(t), 20, f"a publisher on {topic}")
            assert publishers(topic) == ["policy_node"]  # crisp ignores a topic with two
        deadline = time.monotonic() + 1.5
        recorder.spin_until(lambda: time.monotonic() > deadline, 5, "a pause")
        assert not arm.targets and "start" not in recorder.events  # nothing before ~/ready
        refused = call("/reward_reset_node/mark_success")
        assert not refused.success and "no episode is running" in refused.message

        assert call("/reward_reset_node/ready").success
        recorder.spin_until(lambda: recorder.events[-1:] == ["start"], 30, "homing, then start")
        homing_steps = np.array(arm.steps)
        assert len(homing_steps) >= 3  # 7 cm at 1.5 cm per axis and step
        assert np.abs(homing_steps).max() <= 0.5 * 0.03 + 1e-9  # home_speed_scale x max step
        assert np.linalg.norm(arm.position - home) <= 0.011
        assert arm.widths[-1] == 0.08  # gripper open

        # The policy node started the episode before "start" was announced: no race.
        refused = call("/policy_node/home")
        assert not refused.success and "an episode is running" in refused.message
        arm.object_pose = True
        recorder.spin_until(lambda: len(recorder.decisions) >= 2, 30, "decisions")
        assert call("/reward_reset_node/mark_success").success
        recorder.spin_until(lambda: "success" in recorder.events, 10, "the success event")
        assert recorder.rewards == [1.0]
        since_success = len(arm.published)
        answers = []

        def ready() -> bool:
            answers.append(call("/reward_reset_node/ready"))
            return answers[-1].success

        recorder.spin_until(ready, 30, "homing, then waiting for ready")
        # Homed before the operator's ready (else the answer says "after homing"); the arm
        # leaves home as soon as the episode starts, so its pose is checked in what it published.
        assert answers[-1].message == "episode 2 starts"
        assert any(np.linalg.norm(p - home) <= 0.01 for p in arm.published[since_success:])
        recorder.spin_until(lambda: recorder.events.count("start") == 2, 10, "the second start")

        decisions = len(recorder.decisions)
        recorder.spin_until(lambda: len(recorder.decisions) > decisions, 30, "a decision")
        policy_node = ros_nodes.nodes[0]
        policy_node.process.send_signal(signal.SIGINT)  # Ctrl-C: a clean exit ...
        recorder.spin_until(lambda: not policy_node.alive(), SIGINT_EXIT, "the policy node's exit")
        assert policy_node.process.returncode == 0
        recorder.spin_until(lambda: not publishers("/target_pose"), 10, "the policy node gone")
        # ... whose last target holds the arm where it is or was sent (it may arrive after the
        # exit is seen)
        recorder.spin_until(lambda: arm.holds[-1], 5, "the last target to hold the arm")
        assert call("/reward_reset_node/mark_failure").success
        recorder.spin_until(lambda: recorder.events[-1:] == ["failure"], 10, "the failure event")
        assert recorder.rewards == [1.0, 0.0]
    finally:
        arm.close()
        for client in clients.values():
            ros_probe.destroy_client(client)


def test_reward_reset_announces_start_only_after_the_policy_node_started_the_episode(
    recorder, ros_nodes, ros_probe
):
    """The authority on episode state calls the policy node's ~/start_episode and publishes
    "start" only after its answer: whoever hears "start" knows the policy node runs the episode
    (its ~/home refuses then). A refusal announces nothing and resets again. The probe stands
    in for the simulator's reset service and for the policy node."""
    from sensor_msgs.msg import JointState
    from std_srvs.srv import Trigger

    resets: list[int] = []
    calls: list[int] = []  # "start" events heard when ~/start_episode was called

    def reset(request, response):
        resets.append(len(recorder.events))
        response.success = True
        return response

    def start_episode(request, response):
        calls.append(recorder.events.count("start"))
        response.success = len(calls) > 1
        response.message = "episode started" if response.success else "not now"
        return response

    services = [
        ros_probe.create_service(Trigger, "/franka_sim_node/reset", reset),
        ros_probe.create_service(Trigger, "/policy_node/start_episode", start_episode),
    ]
    # The reward/reset node resets only once a policy node publishes decision records.
    records = ros_probe.create_publisher(
        JointState, contract.DECISION_TOPIC, contract.exchange_qos()
    )
    try:
        ros_nodes.start("reward_reset_node", parameters={"reset": "sim"}, wait=STARTUP)
        recorder.spin_until(lambda: "start" in recorder.events, STARTUP, "the start event")
        assert calls == [0, 0]  # refused, then accepted; nothing announced before the answer
        assert len(resets) == 2  # the refusal reset the simulator again
        deadline = time.monotonic() + 1.0
        recorder.spin_until(lambda: time.monotonic() > deadline, 5, "a pause")
        assert recorder.events == ["start"]
    finally:
        ros_probe.destroy_publisher(records)
        for service in services:
            ros_probe.destroy_service(service)


def test_policy_node_lowers_the_grasp_force_and_sends_nothing_at_exit_when_blocked(
    checkpoint, ros_probe
):
    """In-process: grasp_force above safety.max_grasp_force is lowered to it; on destroy the
    robot mode guard's reason reaches the envelope (nothing is sent) and the guard is removed
    before the node."""
    from rclpy.parameter import Parameter

    from cfgrl_ros.arm.robot_mode import ModeDecision
    from cfgrl_ros.nodes.policy_node import PolicyNode

    node = PolicyNode(
        parameter_overrides=[
            Parameter("checkpoint", value=str(checkpoint)),
            Parameter("device", value="cpu"),
            Parameter("grasp_force", value=70.0),
            Parameter("safety.max_grasp_force", value=40.0),
        ]
    )

    class ReflexGuard:
        """A robot mode guard that reports a safety reflex."""

        name_when_destroyed = None

        def check(self, now: float) -> ModeDecision:
            return ModeDecision(False, "robot_mode_reflex", "a safety reflex stopped the robot")

        def destroy(self) -> None:
            self.name_when_destroyed = node.get_name()  # raises once the node is destroyed

    assert node.gripper_settings.grasp_force == 40.0
    assert node.envelope.counts["grasp_force_limited"] == 1
    guard = node.mode_guard = ReflexGuard()
    now = node.get_clock().now().nanoseconds * 1e-9
    observation = {
        "joint_pos": np.zeros(7),
        "gripper_width": np.array([0.08]),
        "eef_pos": np.array([0.45, 0.0, 0.25]),
        "eef_quat": np.array([1.0, 0.0, 0.0, 0.0]),
        "object_pos": np.array([0.5, 0.0, -0.08]),
        "object_quat": np.array([0.0, 0.0, 0.0, 1.0]),
    }
    assert node.envelope.check_observation(observation, now, now).ok
    node.destroy_node()
    assert node.envelope.shut_down
    assert node.envelope.counts["robot_mode_reflex"] == 1
    assert node.envelope.status().values["state"] == "stopped"  # no hold was sent
    assert guard.name_when_destroyed == "policy_node"


@pytest.mark.parametrize(
    ("executable", "parameters", "message"),
    [
        (
            "policy_node",
            {"checkpoint": "policy.pt", "guidance_weight": 50.0},
            "parameter guidance_weight out of range: 50.0 is not in [0.0, 10.0]",
        ),
        (
            "reward_reset_node",
            {"home_timeout": 30},
            "parameter home_timeout must be of type double like its default 30.0, got 30 of "
            "type integer; write numbers with a decimal point",
        ),
    ],
)
def test_a_bad_parameter_value_exits_with_one_line_naming_it(
    ros_nodes, executable, parameters, message
):
    node = ros_nodes.start(executable, parameters=parameters, wait=0)
    node.process.wait(STARTUP)
    log = node.log()
    assert node.process.returncode == 1, log
    assert f"cannot start: {message}" in log
    assert "Traceback" not in log


def test_homing_converges_in_bounded_steps_with_the_gripper_open():
    """HomePose.action through the adapter, on a perfect arm, from a tilted pose."""
    from cfgrl_ros.arm.command_adapter import ArmCommandAdapter, quat_multiply, rotvec_to_quat
    from cfgrl_ros.arm.safety import rotation_angle
    from cfgrl_ros.nodes.arm_interface import HomePose

    adapter = ArmCommandAdapter()
    home = HomePose(
        position=np.array([0.45, 0.0, 0.25]),
        orientation=np.array([1.0, 0.0, 0.0, 0.0]),
        tolerance=0.01,
        rotation_tolerance=0.05,
        timeout=30.0,
        speed_scale=0.5,
    )
    position = np.array([0.7, -0.2, 0.0])
    down = np.array([1.0, 0.0, 0.0, 0.0])
    quaternion = quat_multiply(rotvec_to_quat(np.array([0.0, 0.6, 0.0])), down)  # tilted
    steps = 0
    while not home.reached(position, quaternion):
        command = adapter.command(home.action(adapter, position, quaternion), position, quaternion)
        step = np.abs(command.target_pos - position).max()
        assert step <= 0.5 * adapter.config.max_translation + 1e-9
        assert rotation_angle(command.target_quat, quaternion) <= 0.5 * 0.1 * np.sqrt(3) + 1e-9
        assert command.gripper_width == adapter.config.gripper_open_width
        position, quaternion = command.target_pos, command.target_quat
        steps += 1
        assert steps <= 20, f"not home after {steps} steps: {position}"
    assert steps >= 17  # 0.25 m along x and z at 1.5 cm per step


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        # A policy's action of 1 means the step sizes it was trained with (in its checkpoint).
        ("max_translation", 0.05, r"max_translation 0\.03 m .* adapter has 0\.05"),
        # The simulator runs pick_place_can (task:=), the policy was trained on lift.
        ("task", "pick_place_can", r"trained on lift .* launch with task:=lift"),
    ],
)
def test_policy_node_refuses_a_checkpoint_that_does_not_fit(
    checkpoint, ros_probe, name, value, message
):
    from rclpy.parameter import Parameter

    from cfgrl_ros.nodes.policy_node import PolicyNode

    with pytest.raises(ValueError, match=message):
        PolicyNode(
            parameter_overrides=[
                Parameter("checkpoint", value=str(checkpoint)),
                Parameter("device", value="cpu"),
                Parameter(name, value=value),
            ]
        )


def test_param_refuses_a_node_name_two_nodes_share(ros_probe):
    """get and set could each reach another of them: one value set, the other's read."""
    import rclpy
    from rclpy.node import Node

    twins = [Node("param_twin", context=ros_probe.context) for _ in range(2)]
    try:
        deadline = time.monotonic() + STARTUP
        while ros_probe.get_node_names().count("param_twin") < 2:
            assert time.monotonic() < deadline, "the twins were not discovered"
            rclpy.spin_once(ros_probe, timeout_sec=0.1)
        result = cli("param", "get", "param_twin", "use_sim_time")
        assert result.returncode == 1
        assert "2 nodes are named /param_twin" in result.stderr
    finally:
        for twin in twins:
            twin.destroy_node()
