"""Bag read speed: messages/s and episodes/s of `read_bag` on a bag shaped like a real recording.

    python bench/bag_read.py --episodes 20 --ticks 100 --camera 640x480 --image-size 84

Writes a bag with EpisodeBagWriter (joint states, poses, commands and one rgb8 camera frame per
control tick, at the camera resolution), then reads it back with and without the camera
(images decoded and resized to --image-size), for each storage. Prints a markdown table; each
time is the best of --repeats reads.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from cfgrl_ros.data.bag_reader import read_bag
from cfgrl_ros.data.bag_writer import EpisodeBagWriter
from cfgrl_ros.data.episode import Episode
from cfgrl_ros.observation import ObservationSpec


def synthetic_episode(rng: np.random.Generator, ticks: int, camera: tuple[int, int]) -> Episode:
    """Random observations and actions (the reader's speed does not depend on their values)."""
    width, height = camera
    eef_pos = np.tile([0.5, 0.0, 0.1], (ticks, 1)) + rng.normal(0, 0.01, (ticks, 3))
    obs = {
        "joint_pos": rng.normal(size=(ticks, 7)),
        "gripper_width": rng.uniform(0, 0.08, (ticks, 1)),
        "eef_pos": eef_pos,
        "eef_quat": np.tile([1.0, 0.0, 0.0, 0.0], (ticks, 1)),
        "object_pos": np.tile([0.55, 0.0, 0.0], (ticks, 1)),
        "object_quat": np.tile([0.0, 0.0, 0.0, 1.0], (ticks, 1)),
        "image": rng.integers(0, 256, (ticks, height, width, 3), dtype=np.uint8),
    }
    actions = rng.uniform(-1, 1, (ticks, 7))
    rewards = np.zeros(ticks)
    rewards[-1] = 1.0
    return Episode(obs, actions, rewards, success=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--ticks", type=int, default=100, help="control ticks per episode")
    parser.add_argument("--camera", default="640x480", help="WIDTHxHEIGHT of the recorded frames")
    parser.add_argument("--image-size", type=int, default=84, help="square side images shrink to")
    parser.add_argument("--storage", nargs="+", default=["sqlite3", "mcap"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    camera = tuple(int(side) for side in args.camera.lower().split("x"))

    rng = np.random.default_rng(0)
    episodes = [synthetic_episode(rng, args.ticks, camera) for _ in range(args.episodes)]
    # Per tick: joint states, current pose, object pose, camera, target pose, gripper command;
    # per episode: start and end events and the success flag.
    messages = args.episodes * (6 * args.ticks + 3)
    print(
        f"{args.episodes} episodes x {args.ticks} ticks, camera {camera[0]}x{camera[1]} rgb8 -> "
        f"{args.image_size} px, {messages} messages; best of {args.repeats}"
    )
    print("| storage | bag MB | cameras read | seconds | messages read/s | episodes/s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for storage in args.storage:
            bag = Path(tmp) / storage
            with EpisodeBagWriter(bag, storage) as writer:
                for episode in episodes:
                    writer.write(episode)
            megabytes = sum(f.stat().st_size for f in bag.iterdir()) / 1e6
            size = (args.image_size, args.image_size)
            camera = ObservationSpec(image_keys=("image",), image_size=size)
            for observation, label in ((camera, "image"), (ObservationSpec(), "none")):
                image_keys = observation.image_keys
                best = float("inf")
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    read = read_bag(bag, observation=observation)
                    best = min(best, time.perf_counter() - start)
                assert len(read) == args.episodes
                # Without the camera its frames are never read.
                read_messages = messages - (0 if image_keys else args.episodes * args.ticks)
                print(
                    f"| {storage} | {megabytes:.0f} | {label} | {best:.2f} | "
                    f"{read_messages / best:,.0f} | {args.episodes / best:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
