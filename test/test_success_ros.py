"""The learned success detector in the graph: success_detector_node ends episodes over DDS."""

from __future__ import annotations

import pytest
from test_nodes_ros import VISION, first_episode_of_a_graph, small_graph_settings, tiny_checkpoint

from cfgrl_ros.observation import IMAGE_KEYS, PROPRIOCEPTION, ObservationSpec
from cfgrl_ros.success.detector import DetectorConfig, SuccessDetector

pytestmark = [pytest.mark.ros, pytest.mark.sim]


def test_the_detector_ends_an_episode_in_success_instead_of_the_simulator(tmp_path, ros_probe):
    """A detector (untrained; threshold 0 makes every score a success) watches the simulated
    cameras; after hold_ticks scores the reward/reset node ends the episode in success, although
    the simulator's own success signal (moved to sim/success) never came."""
    checkpoint = tiny_checkpoint(tmp_path / "vision.pt", observation=VISION)
    detector = tmp_path / "detector.pt"
    config = DetectorConfig(
        observation=ObservationSpec(PROPRIOCEPTION, IMAGE_KEYS, (32, 32)),
        image_channels=4,
        hidden_dims=(8,),
    )
    SuccessDetector(config).save(detector)
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
