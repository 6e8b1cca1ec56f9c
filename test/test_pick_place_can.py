"""pick_place_can from demonstrations to an adapted policy, and the task a policy carries.

collect -> pretrain -> eval -> adapt through the real command line, the simulator and rosbag
files, with tiny sizes; a policy evaluated or adapted on a task it was not trained on is refused.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cfgrl_ros.cli.main import main
from cfgrl_ros.data.bag_reader import read_bag
from cfgrl_ros.data.episode import Episode, episodes_task
from cfgrl_ros.evaluation import check_task, policy_task
from cfgrl_ros.policy.flow_policy import FlowPolicy, PolicyConfig

SMALL_POLICY = """\
value_hidden_dims: [32, 32]
batch_size: 32
policy:
  horizon: 4
  flow_steps: 2
  hidden_dims: [32, 32]
  state_hidden_dims: [32]
"""
SMALL_AGENT = ["--utd", "1", "--prefill", "2", "--batch-size", "8", "--hidden", "16", "16"]


@pytest.fixture(scope="module")
def pick_place_policy(tmp_path_factory):
    """Two pick_place_can episodes recorded by `collect`, and a policy pretrained from them."""
    root = tmp_path_factory.mktemp("pick_place_can")
    bag = root / "demos"
    argv = ["collect", "--task", "pick_place_can", "--episodes", "2", "--horizon", "30"]
    assert main([*argv, "--noise", "0.3", "--out", str(bag)]) == 0
    config = root / "small.yaml"
    config.write_text(SMALL_POLICY)
    policy = root / "policy.pt"
    small = ["--config", str(config), "--steps", "5", "--value-steps", "5", "--device", "cpu"]
    assert main(["pretrain", "--bag", str(bag), "--out", str(policy), *small]) == 0
    return {"root": root, "bag": bag, "policy": policy, "config": config}


@pytest.mark.sim
def test_pick_place_can_from_collect_to_adapt(pick_place_policy, tmp_path, capsys):
    assert {episode.metadata["task"] for episode in read_bag(pick_place_policy["bag"])} == {
        "pick_place_can"
    }
    policy = pick_place_policy["policy"]
    assert FlowPolicy.load(policy).config.task == "pick_place_can"
    capsys.readouterr()

    # eval takes the policy's task when --task is left out
    argv = ["eval", "--policy", str(policy), "--episodes", "1", "--w", "1", "--horizon", "8"]
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["task"] == "pick_place_can"

    out = tmp_path / "adapt"
    # adapt too
    argv = ["adapt", "--policy", str(policy), "--episodes", "2"]
    argv += ["--out", str(out), "--horizon", "8", "--eval-episodes", "20", "--exec-horizon", "2"]
    assert main([*argv, "--no-progress", "--json", *SMALL_AGENT]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["task"] == "pick_place_can" and summary["episodes"] == 2
    assert 0.0 <= summary["final_success"] <= 1.0


@pytest.mark.sim
def test_a_policy_is_refused_on_another_task(pick_place_policy, tmp_path, capsys):
    policy = str(pick_place_policy["policy"])
    assert main(["eval", "--policy", policy, "--task", "lift", "--episodes", "1"]) == 1
    error = capsys.readouterr().err
    assert "trained on pick_place_can demonstrations, not lift" in error
    assert "--task pick_place_can" in error
    argv = ["adapt", "--policy", policy, "--task", "lift", "--out", str(tmp_path / "a")]
    assert main([*argv, "--exec-horizon", "2", "--no-progress"]) != 0
    assert "trained on pick_place_can demonstrations, not lift" in capsys.readouterr().err
    assert not (tmp_path / "a" / "summary.json").exists()


@pytest.mark.sim
def test_pretrain_refuses_bags_of_two_tasks(pick_place_policy, tmp_path, capsys):
    lift = tmp_path / "lift"
    argv = ["collect", "--task", "lift", "--episodes", "1", "--horizon", "10"]
    assert main([*argv, "--out", str(lift)]) == 0
    bags = ["--bag", str(pick_place_policy["bag"]), "--bag", str(lift)]
    argv = ["pretrain", *bags, "--out", str(tmp_path / "p.pt"), "--device", "cpu"]
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert "different tasks" in error and "lift" in error and "pick_place_can" in error
    assert not (tmp_path / "p.pt").exists()


def _episode(task: str | None) -> Episode:
    metadata = {"bag": f"bag_{task}"} | ({} if task is None else {"task": task})
    return Episode(
        {}, np.zeros((1, 7), np.float32), np.zeros(1, np.float32), False, False, metadata
    )


def test_the_task_of_episodes():
    assert episodes_task([_episode("lift"), _episode("lift")]) == "lift"
    assert episodes_task([_episode(None), _episode("")]) == ""  # a real arm's recording
    assert episodes_task([_episode(None), _episode("lift")]) == "lift"
    with pytest.raises(ValueError, match="different tasks"):
        episodes_task([_episode("lift"), _episode("pick_place_can")])


def test_policy_task_check():
    lift = FlowPolicy(PolicyConfig(task="lift", hidden_dims=(8,), state_hidden_dims=(8,)))
    untagged = FlowPolicy(PolicyConfig(hidden_dims=(8,), state_hidden_dims=(8,)))
    check_task(lift, "lift")
    check_task(untagged, "pick_place_can")  # nothing to compare with
    with pytest.raises(ValueError, match="trained on lift demonstrations, not pick_place_can"):
        check_task(lift, "pick_place_can")
    assert policy_task(lift, None) == "lift"
    assert policy_task(untagged, "lift") == "lift"
    with pytest.raises(ValueError, match="pass --task"):
        policy_task(untagged, None)
