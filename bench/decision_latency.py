"""Decision latency of the flow policy: encode + decode of one observation (batch 1).

Measures p50/p99 over many decisions for K Euler steps, for three observations: the state
with the object pose, the same with the scene camera, and the vision observation (proprioception
with the scene and wrist cameras, --image-size px), the last with each image encoder
(PolicyConfig.image_encoder); with guidance (both velocity branches in one
batched pass, w = 2); and decode alone at the distillation batch size. Decisions are paced
like a control loop (--period); weights are freshly initialised: latency does not depend on
them.

    python bench/decision_latency.py --device cpu --threads 1
    python bench/decision_latency.py --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from cfgrl_ros.observation import OBSERVATIONS, ObservationSpec
from cfgrl_ros.policy import FlowPolicy, PolicyConfig, resolve_device
from cfgrl_ros.policy.networks import IMAGE_ENCODERS


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def decide(policy: FlowPolicy, obs: dict, noise: torch.Tensor, weight: float, steps: int) -> None:
    """One control-loop decision: observation -> chunk in host memory."""
    with torch.inference_mode():
        policy.sample(obs, noise, weight, steps).cpu().numpy()


def decode_batch(
    policy: FlowPolicy, features: torch.Tensor, noise: torch.Tensor, weight: float
) -> None:
    """One distillation-sized decode (as a DSRL learner calls it: no_grad)."""
    with torch.no_grad():
        policy.decode(features, noise, weight).cpu().numpy()


def measure(call: Callable[[], None], repeats: int, warmup: int, period: float) -> list[float]:
    """p50 and p99 milliseconds of call() (which ends with a copy to host memory): wall clock,
    then this thread's CPU time (wall minus the time the scheduler gave to other processes).

    Calls start every `period` seconds, as in a control loop that sleeps between decisions
    (a busy loop is scheduled differently on a shared machine).
    """
    for _ in range(warmup):
        call()
    wall, cpu = np.empty(repeats), np.empty(repeats)
    for i in range(repeats):
        start, start_cpu = time.perf_counter(), time.thread_time()
        call()
        wall[i], cpu[i] = time.perf_counter() - start, time.thread_time() - start_cpu
        time.sleep(max(0.0, period - wall[i]))
    return [float(np.percentile(times, q) * 1e3) for times in (wall, cpu) for q in (50, 99)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 16], help="flow steps K")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--guidance-weight", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--distill-batch", type=int, default=256)
    parser.add_argument(
        "--period", type=float, default=0.02, help="seconds between decision starts"
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rng = np.random.default_rng(0)
    size = (args.image_size, args.image_size)
    vision = dataclasses.replace(OBSERVATIONS["vision"], image_size=size)
    configs = {
        "state-only": PolicyConfig(observation=OBSERVATIONS["state"]),
        f"state + {args.image_size} px image": PolicyConfig(
            observation=ObservationSpec(image_keys=("image",), image_size=size)
        ),
        **{
            f"vision: proprioception + 2 x {args.image_size} px, {encoder} encoder": PolicyConfig(
                observation=vision, image_encoder=encoder
            )
            for encoder in IMAGE_ENCODERS
        },
    }
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(
        f"device {device} ({name}), torch {torch.__version__}, threads {args.threads}, "
        f"w = {args.guidance_weight}, {args.repeats} decisions each, one every {args.period} s"
    )
    print("| inputs | K | batch | p50 ms | p99 ms | CPU p50 ms | CPU p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for label, config in configs.items():
        spec = config.observation
        obs = {"state": rng.standard_normal((1, spec.state_dim)).astype(np.float32)}
        obs |= {key: rng.integers(0, 256, (1, *size, 3), dtype=np.uint8) for key in spec.image_keys}
        policy = FlowPolicy(config).to(device).eval()
        noise = torch.randn(1, *policy.noise_shape, device=device)
        for steps in args.steps:
            call = partial(decide, policy, obs, noise, args.guidance_weight, steps)
            times = measure(call, args.repeats, args.warmup, args.period)
            print(f"| {label} | {steps} | 1 | " + " | ".join(f"{t:.2f}" for t in times) + " |")
        if not spec.image_keys:
            batch = args.distill_batch
            features = policy.encode({"state": np.repeat(obs["state"], batch, 0)})
            batch_noise = torch.randn(batch, *policy.noise_shape, device=device)
            call = partial(decode_batch, policy, features, batch_noise, args.guidance_weight)
            times = measure(call, max(args.repeats // 10, 20), 5, args.period)
            print(
                f"| {label}, decode only | {config.flow_steps} | {batch} | "
                + " | ".join(f"{t:.2f}" for t in times)
                + " |"
            )


if __name__ == "__main__":
    main()
