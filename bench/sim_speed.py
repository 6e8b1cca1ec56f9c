"""Simulator speed: control steps per second without cameras and with rendered cameras.

    MUJOCO_GL=egl python bench/sim_speed.py --steps 500

Each configuration runs one warm-up episode (robosuite compiles numba functions on the first
one), then `--steps` control steps of random actions, resetting at each episode end. Prints a
markdown table: configuration, steps/s and ms per step (wall clock), CPU ms per step (all
threads), ms per reset. Set LP_NUM_THREADS=0 to render on the calling thread (Mesa llvmpipe
otherwise spawns one render thread per core, which only adds waiting on a busy machine).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from cfgrl_ros.sim.env import FrankaSimEnv

CONFIGURATIONS = {  # name -> FrankaSimEnv keyword arguments
    "no camera": {},
    "scene 84 px": {"cameras": ("image",), "image_size": 84},
    "scene 128 px": {"cameras": ("image",), "image_size": 128},
    **{
        f"scene + wrist {size} px": {"cameras": ("image", "wrist_image"), "image_size": size}
        for size in (64, 84, 96)
    },
}


def measure(env: FrankaSimEnv, steps: int, seed: int) -> tuple[float, float, float]:
    """(wall seconds per step, CPU seconds per step, wall seconds per reset).

    CPU time (all threads of this process) is what a step costs on an idle core; on a shared
    machine the wall time also holds the waits for a core.
    """
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    for _ in range(env.horizon):  # warm-up episode
        env.step(rng.uniform(-1, 1, 7))
    step_time = cpu_time = reset_time = 0.0
    resets = 0
    env.reset(seed=seed + 1)
    for _ in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        _, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 7))
        step_time += time.perf_counter() - start
        cpu_time += time.process_time() - start_cpu
        if terminated or truncated:
            start = time.perf_counter()
            env.reset(seed=seed + 2 + resets)
            reset_time += time.perf_counter() - start
            resets += 1
    return step_time / steps, cpu_time / steps, reset_time / max(resets, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="lift")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--configs", nargs="+", default=list(CONFIGURATIONS), choices=list(CONFIGURATIONS)
    )
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    print(f"task {args.task}, {args.steps} steps, MUJOCO_GL={os.environ.get('MUJOCO_GL')}")
    print(
        "| configuration | steps/s (wall) | ms per step (wall) | CPU ms per step | ms per reset |"
    )
    print("|---|---|---|---|---|")
    for name in args.configs:
        env = FrankaSimEnv(args.task, horizon=50, **CONFIGURATIONS[name])
        try:
            per_step, cpu_per_step, per_reset = measure(env, args.steps, args.seed)
        finally:
            env.close()
        print(
            f"| {name} | {1 / per_step:.0f} | {1e3 * per_step:.1f} | {1e3 * cpu_per_step:.1f} "
            f"| {1e3 * per_reset:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
