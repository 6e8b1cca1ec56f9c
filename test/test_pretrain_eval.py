"""From simulated Lift demonstrations in a rosbag to a trained policy evaluated in simulation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cfgrl_ros import evaluation
from cfgrl_ros.arm.command_adapter import ArmCommandAdapter
from cfgrl_ros.cli.main import main
from cfgrl_ros.data.bag_writer import EpisodeBagWriter
from cfgrl_ros.data.topic_map import load_topic_map
from cfgrl_ros.evaluation import evaluate
from cfgrl_ros.observation import IMAGE_KEYS, PROPRIOCEPTION, ObservationSpec
from cfgrl_ros.policy.flow_policy import FlowPolicy, PolicyConfig
from cfgrl_ros.policy.training import training_state_path
from cfgrl_ros.sim.env import FrankaSimEnv
from cfgrl_ros.sim.expert import ScriptedExpert
from cfgrl_ros.sim.rollout import expert_episodes
from cfgrl_ros.sim.tasks import task_adapter_config

pytestmark = pytest.mark.sim

# Another recorder's names, given to pretrain as command-line overrides.
RENAMED = {
    "joint_states": "/arm/joint_states",
    "current_pose": "/arm/ee_pose",
    "object_pose": "/perception/cube_pose",
    "target_pose": "/arm/target",
    "gripper_command": "/arm/gripper_target_width",
    "episode_event": "/operator/event",
}
SMALL_POLICY = """\
value_hidden_dims: [64, 64]
batch_size: 64
policy:
  horizon: 4
  flow_steps: 4
  hidden_dims: [64, 64]
  state_hidden_dims: [64]
  image_channels: 8
"""


def write_bag(path, episodes, storage="sqlite3", topic_map=None):
    adapter = ArmCommandAdapter(task_adapter_config("lift"))
    with EpisodeBagWriter(
        path, storage, topic_map=topic_map, adapter=adapter, task="lift"
    ) as writer:
        for episode in episodes:
            writer.write(episode)
    return path


@pytest.fixture(scope="module")
def lift_bags(tmp_path_factory):
    """Four noisy-expert Lift episodes as an sqlite3 bag (default topics) and an mcap bag
    (another recorder's topic names), no cameras; and small training configs."""
    root = tmp_path_factory.mktemp("lift")
    env = FrankaSimEnv("lift", horizon=60)
    try:
        episodes = list(expert_episodes(env, ScriptedExpert("lift", noise=0.3, seed=0), 4))
    finally:
        env.close()
    write_bag(root / "lift_sqlite", episodes)
    write_bag(root / "lift_mcap", episodes, "mcap", load_topic_map(overrides=RENAMED))
    config = root / "small.yaml"
    config.write_text(SMALL_POLICY)
    return {"root": root, "config": config}


def pretrain(bag, out, *extra: str) -> int:
    return main(["pretrain", "--bag", str(bag), "--out", str(out), "--device", "cpu", *extra])


def eval_json(capsys, policy, *extra: str) -> dict:
    code = main(["eval", "--policy", str(policy), "--seed", "3", "--json", *extra])
    assert code == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_sqlite_bag_to_evaluated_policy(lift_bags, tmp_path, capsys):
    out = tmp_path / "policy.pt"
    small = ("--config", str(lift_bags["config"]), "--steps", "20", "--value-steps", "10")
    assert pretrain(lift_bags["root"] / "lift_sqlite", out, *small) == 0
    assert "4 episodes" in capsys.readouterr().err
    assert (tmp_path / "policy.curves.png").read_bytes()[:4] == b"\x89PNG"
    assert FlowPolicy.load(out).config.condition == "optimality"

    summary = eval_json(capsys, out, "--episodes", "2", "--w", "0,1,3", "--horizon", "12")
    assert summary["task"] == "lift" and summary["episodes"] == 2
    assert set(summary["success"]) == {"0", "1", "3"}
    assert all(rate in (0.0, 0.5, 1.0) for rate in summary["success"].values())


def test_vision_policy_from_a_recording_without_object_pose(lift_bags, tmp_path, capsys):
    """What a real cell records: the scene and wrist cameras (40 px here) and no /object_pose.
    collect -> pretrain --observation vision (32 px) -> eval -> adapt, all on that bag."""
    bag = tmp_path / "cell"
    collect = ["collect", "--episodes", "2", "--noise", "0.3", "--seed", "1", "--horizon", "15"]
    camera = ["--camera", "--image-size", "40", "--topic", "object_pose=", "--out", str(bag)]
    assert main([*collect, *camera]) == 0
    metadata = (bag / "metadata.yaml").read_text()
    assert "/wrist_camera/camera/color/image_raw" in metadata and "/object_pose" not in metadata

    state = tmp_path / "state.pt"
    small = ("--config", str(lift_bags["config"]), "--steps", "5", "--value-steps", "5")
    assert pretrain(bag, state, *small) == 1  # the state observation needs the object pose
    assert "does not read the object pose (pretrain --observation vision)" in (
        capsys.readouterr().err
    )

    out = tmp_path / "vision.pt"
    assert pretrain(bag, out, *small, "--observation", "vision", "--image-size", "32") == 0
    spec = FlowPolicy.load(out).config.observation
    assert spec == ObservationSpec(PROPRIOCEPTION, IMAGE_KEYS, (32, 32))
    summary = eval_json(capsys, out, "--episodes", "1", "--w", "0,1.5", "--horizon", "8")
    assert set(summary["success"]) == {"0", "1.5"}

    agent = ("--utd", "1", "--prefill", "2", "--batch-size", "4", "--hidden", "16")
    run = ("--episodes", "1", "--eval-episodes", "20", "--exec-horizon", "4", "--horizon", "8")
    code = main(
        ["adapt", "--policy", str(out), "--out", str(tmp_path / "adapt"), *run, *agent, "--json"]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["episodes"] == 1


def test_mcap_bag_with_other_topic_names_and_resume(lift_bags, tmp_path, capsys):
    bag = lift_bags["root"] / "lift_mcap"
    out = tmp_path / "policy.pt"
    overrides = [item for key, value in RENAMED.items() for item in ("--topic", f"{key}={value}")]
    small = ("--config", str(lift_bags["config"]), "--labels", "iql", "--value-steps", "10")

    assert pretrain(bag, out, *small, "--steps", "5") == 1
    assert "lacks topics" in capsys.readouterr().err  # default names are not in this bag
    assert not out.exists() and not training_state_path(out).exists()

    assert pretrain(bag, out, *small, *overrides, "--steps", "5") == 0
    first = torch.load(training_state_path(out), weights_only=True)
    assert pretrain(bag, out, *small, *overrides, "--steps", "5") == 1
    assert "pass --resume" in capsys.readouterr().err

    assert pretrain(bag, out, *small, *overrides, "--steps", "12", "--resume") == 0
    state = torch.load(training_state_path(out), weights_only=True)
    assert state["step"] == 10 + 12
    # The resumed run continued the first one's history instead of starting over.
    assert state["history"]["policy_loss"][:5] == first["history"]["policy_loss"]
    assert len(state["history"]["q_loss"]) == 10
    assert FlowPolicy.load(out).config.horizon == 4


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--method", "cfgrl", "--labels", "none"), "needs advantages from a value function"),
        (("--method", "bc", "--labels", "mc"), "trains no value function"),
        (("--topic", "joint_states"), "not of the form key=value"),
        (("--image-size", "8", "--observation", "vision"), "both >= 32"),
        (("--config", "MISSING"), "does not exist"),
        (("--config", "BLIND"), "state_fields is empty: a policy needs at least one state"),
    ],
)
def test_pretrain_rejects_bad_settings_without_writing(lift_bags, tmp_path, capsys, flags, message):
    out = tmp_path / "policy.pt"
    blind = tmp_path.parent / f"{tmp_path.name}_blind.yaml"  # not in tmp_path: nothing written
    blind.write_text("policy:\n  observation: {state_fields: [], image_keys: [image]}\n")
    paths = {"BLIND": str(blind), "MISSING": str(tmp_path / "none.yaml")}
    flags = [paths.get(flag, flag) for flag in flags]
    assert pretrain(lift_bags["root"] / "lift_sqlite", out, *flags) == 1
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("config", "flags", "message"),
    [
        ("learning_rate: 3e-4\n", (), "learning_rate is '3e-4' (str), expected a number; YAML"),
        ("batch_size: abc\n", (), "batch_size is 'abc' (str), expected an integer"),
        ("policy: [1]\n", (), "policy is [1] (list), expected a mapping"),
        ("", ("--device", "gpu"), "device 'gpu' is not one of"),
        ("", ("--out", "{tmp}/folder"), "{tmp}/folder is a folder"),
        ("", ("--out", "{tmp}/kept/policy.pt"), "{tmp}/kept is a file, not a folder"),
        ("", ("--out", "{tmp}/kept", "--resume"), "cannot resume {tmp}/kept: its training state"),
    ],
)
def test_pretrain_refuses_bad_inputs_before_reading_bags(tmp_path, capsys, config, flags, message):
    """The bag does not exist: an error about it would mean the bags were read first."""
    (tmp_path / "config.yaml").write_text(config)
    (tmp_path / "folder").mkdir()
    (tmp_path / "kept").write_text("the only copy")
    before = sorted(tmp_path.rglob("*"))
    settings = ("--method", "bc", "--config", str(tmp_path / "config.yaml"))
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    assert pretrain(tmp_path / "no_bag", tmp_path / "p.pt", *settings, *flags) == 1
    assert message.format(tmp=tmp_path) in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before
    assert (tmp_path / "kept").read_text() == "the only copy"


def test_wilson_interval_of_success_rates():
    low, high = evaluation.wilson_interval(45, 50)
    assert (round(low, 3), round(high, 3)) == (0.786, 0.957)
    assert evaluation.wilson_interval(0, 20)[0] == 0.0
    assert evaluation.wilson_interval(20, 20)[1] == 1.0
    low, high = evaluation.wilson_interval(160, 200)  # 80%: narrower with more episodes
    assert 0.73 < low < 0.75 and 0.84 < high < 0.85


def test_every_weight_sees_the_same_episodes(lift_bags, tmp_path, monkeypatch):
    """Episode i of every w starts from reset seed + i and draws the same start noises."""
    bag = lift_bags["root"] / "lift_sqlite"
    small = ("--config", str(lift_bags["config"]), "--steps", "10")
    assert pretrain(bag, tmp_path / "bc.pt", "--method", "bc", *small) == 0
    policy = FlowPolicy.load(tmp_path / "bc.pt")

    noises: dict[float, list[np.ndarray]] = {}
    seeds: list[int] = []
    decode, reset = FlowPolicy.decode, FrankaSimEnv.reset

    def recording_decode(self, features, noise=None, guidance_weight=1.0, steps=None, goal=None):
        noises.setdefault(guidance_weight, []).append(np.array(noise))
        return decode(self, features, noise, guidance_weight, steps, goal)

    def recording_reset(self, *, seed=None, options=None):
        seeds.append(seed)
        return reset(self, seed=seed, options=options)

    monkeypatch.setattr(FlowPolicy, "decode", recording_decode)
    monkeypatch.setattr(FrankaSimEnv, "reset", recording_reset)
    result = evaluate(policy, "lift", 2, [0.0, 3.0], seed=5, horizon=10, exec_horizon=2)
    assert seeds == [5, 6, 5, 6]
    assert len(noises[0.0]) == len(noises[3.0]) == 2 * 5  # 2 episodes of 10 ticks, 2 per chunk
    for first, second in zip(noises[0.0], noises[3.0], strict=True):
        np.testing.assert_array_equal(first, second)
    assert not np.array_equal(noises[0.0][0], noises[0.0][5])  # episodes differ from each other
    # A BC policy ignores w: same states and noise give the same episodes.
    assert result.mean_length[0.0] == result.mean_length[3.0]


def test_eval_reports_bad_inputs(tmp_path, capsys):
    assert main(["eval", "--policy", str(tmp_path / "missing.pt")]) == 1
    assert "no policy checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--policy", "x.pt", "--w", "0,one"])
    assert "comma-separated numbers" in capsys.readouterr().err
    for flag, value, message in (
        ("--seed", "-1", ">= 0"),
        ("--flow-steps", "0", ">= 1"),
        ("--episodes", "0", ">= 1"),
        ("--exec-horizon", "0", ">= 1"),
    ):
        with pytest.raises(SystemExit):
            main(["eval", "--policy", "x.pt", flag, value])
        assert f"argument {flag}: must be {message}, got {value}" in capsys.readouterr().err


def test_eval_interrupted_reports_the_episodes_so_far(tmp_path, capsys, monkeypatch):
    path = tmp_path / "policy.pt"
    FlowPolicy(PolicyConfig(hidden_dims=(8,), state_hidden_dims=(8,), task="lift")).save(path)

    def interrupted(policy, task, episodes, weights, report, **settings):
        for success in (True, False, True):
            report(0.0, 0, success)
        report(1.0, 0, True)
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation, "evaluate", interrupted)
    assert main(["eval", "--policy", str(path), "--w", "0,1", "--episodes", "5", "--json"]) == 130
    out, err = capsys.readouterr()
    assert "interrupted after 4 episodes" in err
    assert out.splitlines() == [
        "w=    0  success  66.7%  PARTIAL: 3 of 5 episodes",
        "w=    1  success 100.0%  PARTIAL: 1 of 5 episodes",
    ]
