"""`cfgrl-ros demo` report pieces, and `cfgrl-ros bench` listing (the full demo is a benchmark)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from cfgrl_ros.cli import demo


def test_success_rate_is_read_from_collect_output():
    output = "lift: 100%|####| 40/40\nsuccess rate 45% (18/40)\n"
    assert demo._success_rate_from(output) == pytest.approx(0.45)
    with pytest.raises(RuntimeError, match="did not report"):
        demo._success_rate_from("nothing useful")


def test_report_and_plots_are_written(tmp_path):
    online = [
        {"episode": i + 1, "success": i % 3 != 0, "guidance_weight": 1.0 if i < 4 else 2.0}
        for i in range(8)
    ]
    demo.write_plots(tmp_path, {"0": 0.3, "1": 0.5, "3": 0.4}, online)
    args = argparse.Namespace(
        quick=True, vision=True, task="pick_place_can", seed=3, guidance_weight=1.0
    )
    report = demo.write_report(
        tmp_path,
        demo.VISION_QUICK,
        args,
        demo_success=0.4,
        eval_success={"0": 0.3, "1": 0.5, "3": 0.4},
        online=online,
        final={"base": 0.3, "zero noise": 0.45, "adapted": 0.7},
        final_weight=2.0,
        seconds={"pretrain": 90.0, "evaluate guidance weights": 30.0},
    )
    for name in ("success_vs_guidance.png", "online_success.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    text = report.read_text()
    assert "cfgrl-ros demo --quick --vision --task pick_place_can --seed 3" in text
    assert "pick_place_can episodes of the scripted expert with noise\n0.35," in text
    assert "with the scene and wrist cameras (no object pose)" in text
    assert "reads proprioception and the two cameras; trained for 300 steps of\n64" in text
    assert "| 1 | 50% |" in text
    assert "same initial states, 8 actions\nper decision as in the graph" in text
    assert "**30%**" in text and "**45%**" in text and "**70%**" in text
    assert "| all steps | 2.0 min |" in text


def test_side_by_side_video_holds_the_longer_episode_and_both_panels(tmp_path):
    import imageio.v2 as imageio
    import numpy as np

    short = [np.full((32, 32, 3), 10 * i, dtype=np.uint8) for i in range(5)]
    long = [np.full((32, 32, 3), 200, dtype=np.uint8)] * 9
    path = tmp_path / "video.mp4"
    demo.write_side_by_side(path, [("base", short, False), ("adapted", long, True)])
    frames = imageio.mimread(path)
    assert len(frames) == 9
    assert frames[0].shape == (32, 32 + 4 + 32, 3)
    # The shorter episode holds its last frame (10 * 4 = 40, video compression aside).
    assert abs(float(frames[-1][20:, :32].mean()) - 40) < 8


def test_the_live_weight_is_the_best_evaluated_other_than_the_start():
    assert demo.best_other_weight({"0": 0.6, "1": 0.4, "2": 0.3}, 1.0) == 0.0
    assert demo.best_other_weight({"0": 0.3, "1": 0.5, "2": 0.5, "3": 0.4}, 0.0) == 1.0
    assert demo.best_other_weight({"0": 0.3, "1": 0.9, "2": 0.5}, 1.0) == 2.0
    with pytest.raises(ValueError, match=r"no guidance weight other than 1\.0"):
        demo.best_other_weight({"1": 0.5}, 1.0)


def test_resuming_a_demo_of_another_task_is_refused_before_any_step(tmp_path, capsys, monkeypatch):
    for name, value in (("ROS_DOMAIN_ID", "150"), ("ROS_LOG_DIR", str(tmp_path / "logs"))):
        monkeypatch.setenv(name, value)
    (tmp_path / "demos.json").write_text('{"output": "success rate 40% (40/100)"}')  # lift's
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    assert demo.run(parser.parse_args(["--out", str(tmp_path)])) == 1
    error = capsys.readouterr().err
    assert "holds a lift demo: resume it with --task lift" in error
    (tmp_path / "demos.json").write_text('{"task": "pick_place_can", "vision": true}')
    assert demo.run(parser.parse_args(["--out", str(tmp_path)])) == 1
    assert "was recorded with --vision: resume it the same way" in capsys.readouterr().err
    assert not (tmp_path / "policy.pt").exists()


def test_bench_lists_the_benchmark_scripts():
    result = subprocess.run(
        [sys.executable, "-m", "cfgrl_ros.cli.main", "bench"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "decision_latency" in result.stdout
    assert "sim_speed" in result.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "cfgrl_ros.cli.main", "bench", "nonexistent"],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2
    assert "no benchmark 'nonexistent'" in missing.stderr
