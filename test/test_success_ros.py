"""The learned success detector in the graph: success_detector_node ends episodes over DDS."""

from __future__ import annotations

import pytest
from test_nodes_ros import VISION, first_episode_of_a_graph, small_graph_settings, tiny_checkpoint

from cfgrl_ros.cli.main import main
from cfgrl_ros.observation import IMAGE_KEYS, PROPRIOCEPTION, ObservationSpec
from cfgrl_ros.success.detector import SuccessDetector

pytestmark = [pytest.mark.ros, pytest.mark.sim]


def test_the_detector_ends_an_episode_in_success_instead_of_the_simulator(tmp_path, ros_probe):
    """A detector trained (briefly) on a bag that `collect --camera` recorded watches the
    simulated cameras; threshold 0 makes every score a success, so after hold_ticks scores the
    reward/reset node ends the episode in success, although the simulator's own success
    signal (moved to sim/success) never came."""
    checkpoint = tiny_checkpoint(tmp_path / "vision.pt", observation=VISION)
    bag, detector = tmp_path / "cameras", tmp_path / "detector.pt"
    collect = ["collect", "--episodes", "4", "--noise", "0.2", "--seed", "3", "--horizon", "60"]
    assert main([*collect, "--camera", "--image-size", "32", "--out", str(bag)]) == 0
    flags = ["--image-size", "32", "--steps", "20", "--holdout", "0.5", "--no-progress"]
    assert main(["train-success", "--bag", str(bag), "--out", str(detector), *flags]) == 0
    assert SuccessDetector.load(detector).config.observation == ObservationSpec(
        PROPRIOCEPTION, IMAGE_KEYS, (32, 32)
    )
    settings = small_graph_settings(tmp_path, episodes=1, max_decisions=0)
    settings["/**/franka_sim_node"]["ros__parameters"]["image_size"] = 48  # resized to 32
    settings["/**/success_detector_node"] = {"ros__parameters": {"threshold": 0.0, "hold_ticks": 2}}
    recorder, log = first_episode_of_a_graph(
        tmp_path,
        ros_probe,
        checkpoint,
        settings,
        "use_camera:=true",
        f"success_detector:={detector}",
    )
    assert recorder.ends[0].success, log
    assert "success (success topic)" in log and "success detected" in log
    assert "reads 4 state fields (no object pose) + cameras image, wrist_image at 32x32" in log
