"""`cfgrl-ros adapt`: online DSRL in the Lift simulator with a real (tiny) flow policy."""

from __future__ import annotations

import json

import pytest

from cfgrl_ros.arm.command_adapter import ArmCommandAdapter
from cfgrl_ros.cli.main import main
from cfgrl_ros.data.bag_writer import EpisodeBagWriter
from cfgrl_ros.data.topic_map import load_topic_map
from cfgrl_ros.dsrl import NoiseAgent
from cfgrl_ros.observation import IMAGE_KEYS, PROPRIOCEPTION, ObservationSpec
from cfgrl_ros.policy.flow_policy import FlowPolicy, PolicyConfig
from cfgrl_ros.sim.env import FrankaSimEnv
from cfgrl_ros.sim.expert import ScriptedExpert
from cfgrl_ros.sim.rollout import expert_episodes
from cfgrl_ros.sim.tasks import task_adapter_config
from cfgrl_ros.success.detector import DetectorConfig, SuccessDetector

pytestmark = pytest.mark.sim

HORIZON = 12  # control ticks per episode: 3 decisions of 4 ticks
SMALL_AGENT = [
    *("--utd", "2", "--prefill", "4", "--batch-size", "16", "--hidden", "32", "32"),
    *("--exec-horizon", "4"),
]


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    """An untrained flow policy (its weights are random): adapt only needs the interface."""
    path = tmp_path_factory.mktemp("policy") / "policy.pt"
    config = PolicyConfig(
        horizon=8, flow_steps=2, hidden_dims=(32, 32), state_hidden_dims=(32,), state_feature_dim=16
    )
    FlowPolicy(config).save(path)
    return path


def adapt(capsys, policy, out, *extra: str) -> tuple[int, dict | None, str]:
    """Run the command; its exit code, its JSON line (None on failure) and its stderr."""
    code = main(
        [
            "adapt",
            "--policy",
            str(policy),
            "--task",
            "lift",
            "--out",
            str(out),
            "--horizon",
            str(HORIZON),
            "--seed",
            "3",
            "--no-progress",
            "--json",
            *SMALL_AGENT,
            *extra,
        ]
    )
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    return code, (json.loads(lines[-1]) if code == 0 else None), captured.err


def test_adapt_runs_checkpoints_and_resumes(tiny_policy, tmp_path, capsys):
    out = tmp_path / "run"
    code, result, _ = adapt(capsys, tiny_policy, out, "--algo", "dsrl_na", "--episodes", "2")
    assert code == 0
    assert result["algo"] == "dsrl_na" and result["episodes"] == 2
    assert len(result["success_curve"]) == 2
    assert 0.0 <= result["final_success"] <= 1.0 and result["eval_episodes"] == 20
    assert (out / "learning_curve.png").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counters"]["episodes"] == 2 and summary["counters"]["updates"] > 0
    assert len(summary["episode_ticks"]) == 2 and all(t > 0 for t in summary["episode_ticks"])
    assert 0 < summary["learner_seconds"] <= summary["train_seconds"]
    agent = NoiseAgent.load(out / "agent", FlowPolicy.load(tiny_policy, device="cpu"))
    assert agent.episodes == 2 and agent.metadata["success_curve"] == result["success_curve"]
    # The same command with more episodes continues the run where it stopped.
    code, resumed, _ = adapt(capsys, tiny_policy, out, "--algo", "dsrl_na", "--episodes", "3")
    assert code == 0 and resumed["episodes"] == 3
    assert resumed["success_curve"][:2] == result["success_curve"]
    resumed_summary = json.loads((out / "summary.json").read_text())
    assert resumed_summary["episode_ticks"][:2] == summary["episode_ticks"]
    assert NoiseAgent.load(out / "agent", FlowPolicy.load(tiny_policy)).episodes == 3
    # ...but not with other settings, which it names, and it loses nothing.
    code, _, error = adapt(capsys, tiny_policy, out, "--algo", "dsrl_sac", "--episodes", "3")
    assert code == 1 and "--algo: run has 'dsrl_na', command gives 'dsrl_sac'" in error
    code, _, error = adapt(capsys, tiny_policy, out, "--episodes", "4", "--utd", "3")
    assert code == 1 and "--utd: run has 2, command gives 3" in error
    code, _, error = adapt(capsys, tiny_policy, out, "--episodes", "4", "--task", "pick_place_can")
    assert code == 1 and "--task: run has 'lift'" in error
    other_policy = tmp_path / "other.pt"
    FlowPolicy(FlowPolicy.load(tiny_policy).config).save(other_policy)  # new random weights
    code, _, error = adapt(capsys, other_policy, out, "--episodes", "4")
    assert code == 1 and "--policy: a different policy file" in error
    assert NoiseAgent.load(out / "agent", FlowPolicy.load(tiny_policy)).episodes == 3
    # The same weights under another path are the same policy.
    copied = tmp_path / "copy.pt"
    copied.write_bytes(tiny_policy.read_bytes())
    code, resumed, _ = adapt(capsys, copied, out, "--episodes", "3")
    assert code == 0 and resumed["success_curve"][:2] == result["success_curve"]


def test_adapt_interrupted_resumes_from_its_last_episode(
    tiny_policy, tmp_path, capsys, monkeypatch
):
    from cfgrl_ros.dsrl import rollout

    out = tmp_path / "run"
    run_episode = rollout.run_episode
    calls = []

    def interrupted_second_episode(*args, **kwargs):
        calls.append(kwargs.get("seed"))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return run_episode(*args, **kwargs)

    monkeypatch.setattr(rollout, "run_episode", interrupted_second_episode)
    code, _, error = adapt(capsys, tiny_policy, out, "--episodes", "3")
    assert code == 130 and "run the same command to resume" in error
    assert "Traceback" not in error
    first = NoiseAgent.load(out / "agent", FlowPolicy.load(tiny_policy)).metadata
    assert len(first["success_curve"]) == 1
    monkeypatch.setattr(rollout, "run_episode", run_episode)
    code, result, _ = adapt(capsys, tiny_policy, out, "--episodes", "3")
    assert code == 0 and result["success_curve"][:1] == first["success_curve"]
    assert result["episodes"] == 3


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda agent: (agent / "latest.json").write_text("{}"), "latest.json"),
        (
            lambda agent: next(agent.glob("checkpoint-*/replay_buffer.pkl")).write_bytes(b"\x80"),
            "replay_buffer.pkl",
        ),
        (lambda agent: next(agent.glob("checkpoint-*/model.zip")).write_bytes(b"PK"), "model.zip"),
    ],
    ids=["pointer", "replay_buffer", "model"],
)
def test_adapt_names_a_damaged_checkpoint_and_the_way_out(
    tiny_policy, tmp_path, capsys, damage, named
):
    out = tmp_path / "run"
    assert adapt(capsys, tiny_policy, out, "--episodes", "0")[0] == 0
    damage(out / "agent")
    code, _, error = adapt(capsys, tiny_policy, out, "--episodes", "1")
    assert code == 1 and named in error and f"Delete {out} or use another --out" in error
    assert "Traceback" not in error


def test_adapt_dsrl_sac(tiny_policy, tmp_path, capsys):
    code, result, _ = adapt(
        capsys, tiny_policy, tmp_path / "sac", "--algo", "dsrl_sac", "--episodes", "2"
    )
    assert code == 0 and result["algo"] == "dsrl_sac" and len(result["success_curve"]) == 2


def test_adapt_from_an_offline_bag(tiny_policy, tmp_path, capsys):
    """A bag recorded with the object's pose on a topic of its own, mapped with --topic."""
    env = FrankaSimEnv("lift", horizon=HORIZON)
    try:
        episodes = list(expert_episodes(env, ScriptedExpert("lift", noise=0.3, seed=0), 2))
    finally:
        env.close()
    bag = tmp_path / "demos"
    renamed = load_topic_map(overrides={"object_pose": "/perception/cube_pose"})
    adapter = ArmCommandAdapter(task_adapter_config("lift"))
    with EpisodeBagWriter(bag, topic_map=renamed, adapter=adapter) as writer:
        for episode in episodes:
            writer.write(episode)
    out = tmp_path / "offline"
    offline = ["--episodes", "1", "--offline-bag", str(bag), "--offline-updates", "5"]
    code, _, error = adapt(capsys, tiny_policy, out, *offline)
    assert code == 1 and "/object_pose" in error
    mapped = ["--topic", "object_pose=/perception/cube_pose"]
    code, result, _ = adapt(capsys, tiny_policy, out, *offline, *mapped)
    assert code == 0 and result["episodes"] == 1
    counters = json.loads((out / "summary.json").read_text())["counters"]
    assert counters["offline_transitions"] > 0
    code, _, error = adapt(
        capsys, tiny_policy, tmp_path / "bad", "--algo", "dsrl_sac", "--offline-bag", str(bag)
    )
    assert code == 1 and "dsrl_na" in error


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--w", "nan"], "argument --w: must be a finite number >= 0, got nan"),
        (["--seed", "-1"], "argument --seed: must be >= 0, got -1"),
        (["--offline-updates", "-5"], "argument --offline-updates: must be >= 0, got -5"),
        (["--eval-episodes", "5"], "argument --eval-episodes: must be >= 20, got 5"),
    ],
)
def test_adapt_refuses_bad_numbers_at_parsing(tiny_policy, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_code:
        adapt(capsys, tiny_policy, tmp_path / "out", *flags)
    assert exit_code.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--exec-horizon", "99"], "exec_horizon 99 is longer than the policy's chunks (8)"),
        (["--topic", "object_pose=/cube"], "map the topics of --offline-bag"),
    ],
)
def test_adapt_refuses_bad_flags_before_any_work(tiny_policy, tmp_path, capsys, flags, message):
    code, _, error = adapt(capsys, tiny_policy, tmp_path / "out", *flags)
    assert code == 1 and message in error and "Traceback" not in error
    assert not (tmp_path / "out").exists()


def test_adapt_refuses_an_out_that_is_a_file_or_a_bag(tiny_policy, tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("keep me")
    code, _, error = adapt(capsys, tiny_policy, file)
    assert code == 1 and "is a file" in error and file.read_text() == "keep me"
    code, _, error = adapt(capsys, tiny_policy, file / "run")
    assert code == 1 and "notes.txt is a file, not a folder" in error and "Traceback" not in error
    bag = tmp_path / "bag"
    bag.mkdir()
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: {}")
    code, _, error = adapt(capsys, tiny_policy, bag)
    assert code == 1 and "is a rosbag" in error and sorted(bag.iterdir()) == [bag / "metadata.yaml"]


def test_adapt_reports_bad_inputs(tmp_path, capsys):
    code, _, error = adapt(capsys, tmp_path / "missing.pt", tmp_path / "out")
    assert code == 1 and "no policy checkpoint" in error


def test_adapt_defaults_are_the_documented_benchmark_settings():
    """Without agent flags, adapt runs the agent docs/benchmarks.md measured (DSRL on Lift: 8
    actions per decision, discount 0.92, UTD 10, batch 256, 256x256, prefill 130, magnitude
    1.5, full noise, noise prior 0.1), from the agent's own defaults."""
    import argparse

    from cfgrl_ros.cli import adapt as command
    from cfgrl_ros.dsrl import DsrlConfig

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    config = command._config(parser.parse_args(["--policy", "p.pt", "--out", "run"]))
    benchmark = dict(
        algo="dsrl_na",
        exec_horizon=8,
        gamma=0.92,
        utd=10,
        batch_size=256,
        hidden_sizes=(256, 256),
        prefill_decisions=130,
        magnitude=1.5,
        noise_mode="full",
        noise_prior_weight=0.1,
        target_entropy=0.0,
        initial_entropy_coef=0.01,
    )
    assert config == DsrlConfig(**benchmark, seed=0, device="cpu")
    assert config == DsrlConfig(device="cpu")


def test_adapt_with_the_scripted_operator_counts_its_interventions(tiny_policy, tmp_path, capsys):
    out = tmp_path / "operator"
    flags = ("--algo", "dsrl_na", "--operator", "scripted", "--operator-patience", "1")
    code, result, _ = adapt(capsys, tiny_policy, out, *flags, "--episodes", "1")
    assert code == 0
    code, result, _ = adapt(capsys, tiny_policy, out, *flags, "--episodes", "2")  # resumed
    assert code == 0
    interventions = result["interventions"]
    assert len(interventions["per_episode"]) == 2 == len(interventions["operator_ticks"])
    assert interventions["total"] == sum(interventions["per_episode"]) > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["operator"] == "scripted"
    assert summary["counters"]["operator_transitions"] > 0
    code, _, err = adapt(capsys, tiny_policy, out, "--algo", "dsrl_na", "--episodes", "3")
    assert code == 1 and "--operator: run has 'scripted', command gives None" in err


@pytest.fixture(scope="module")
def untrained_detector(tmp_path_factory):
    """A success detector of both cameras at 32 px whose scores are near 0.5: thresholds 0
    and 1 make it fire at once or never."""
    path = tmp_path_factory.mktemp("detector") / "detector.pt"
    config = DetectorConfig(
        observation=ObservationSpec(PROPRIOCEPTION, IMAGE_KEYS, (32, 32)),
        image_channels=4,
        image_feature_dim=8,
        state_hidden_dims=(16,),
        state_feature_dim=8,
        hidden_dims=(16,),
        task="lift",
    )
    SuccessDetector(config).save(path)
    return path


def test_adapt_with_a_success_detector_ends_episodes_by_its_verdicts(
    tiny_policy, untrained_detector, tmp_path, capsys
):
    """The detector, not the simulator, ends the training episodes; the summary sets its
    verdicts beside the ground truth, and a resumed run must keep its rule."""
    out = tmp_path / "fires_at_once"
    detector = ("--success-detector", str(untrained_detector), "--detector-hold", "3")
    detector += ("--episodes", "2")
    code, result, err = adapt(capsys, tiny_policy, out, *detector, "--detector-threshold", "0")
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episode_ticks"] == [3, 3]  # hold_ticks 3 scores >= 0: detected at tick 3
    assert result["success_curve"] == [0, 0]  # the task was not done by then
    verdicts = result["success_detector"]
    assert verdicts["detected_curve"] == [1, 1]
    assert verdicts["verdicts"]["false success"] == 2 == verdicts["wrong"]
    code, _, err = adapt(capsys, tiny_policy, out, *detector, "--detector-threshold", "1")
    assert code == 1 and "--detector-threshold: run has 0.0, command gives 1.0" in err

    out = tmp_path / "never_fires"
    code, result, err = adapt(capsys, tiny_policy, out, *detector, "--detector-threshold", "1")
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["episode_ticks"] == [HORIZON] * 2
    assert result["success_detector"]["detected_curve"] == [0, 0]


def test_adapt_refuses_a_detector_of_another_task(tiny_policy, tmp_path, capsys):
    path = tmp_path / "can_detector.pt"
    config = DetectorConfig(
        observation=ObservationSpec(PROPRIOCEPTION, IMAGE_KEYS, (32, 32)), task="pick_place_can"
    )
    SuccessDetector(config).save(path)
    code, _, err = adapt(capsys, tiny_policy, tmp_path / "run", "--success-detector", str(path))
    assert code == 1 and "was trained on 'pick_place_can' episodes; this run is 'lift'" in err
