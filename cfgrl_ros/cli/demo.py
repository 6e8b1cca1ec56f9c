"""The whole mission in simulation, from nothing to an adapted policy, with a report.

    cfgrl-ros demo [--quick] [--vision] [--out runs/<timestamp>]

1. collect: the noisy scripted expert records pick-and-place demonstrations (--task, default
   pick_place_can: grasp the can, put it in its bin) to a rosbag; with --vision the scene and
   wrist cameras and no object pose, as a real cell records;
2. pretrain: a CFGRL flow policy (Monte-Carlo optimality labels) is trained from that bag, on
   the state with the object pose, or (--vision) on proprioception and the two cameras;
3. eval: the frozen policy is rolled out at several guidance weights w;
4. online: the ROS 2 graph (simulated Franka, policy node, noise actor, reward/reset node, each
   its own process over DDS) runs DSRL-NA online; halfway through, the guidance weight is
   changed live through the parameter interface (`cfgrl-ros param set`);
5. the adapted noise actor and the base policy are evaluated on the same initial states, and
   one episode of each is filmed from the simulator camera, side by side;
6. report: `report.md`, PNG plots and MP4 videos in the output folder, beside the bag and the
   checkpoints.

Every step is the package's own command or node, run as a separate process, so the demo shows
exactly what a user would run. Re-running with the same --out reuses finished steps.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from cfgrl_ros.graph import CONFIG_FILE, node_parameter
from cfgrl_ros.paths import config_path

# The scripted expert's noise per task: demonstrations of mixed quality, about a third of them
# successful (docs/benchmarks.md, "Scripted expert success per noise level").
EXPERT_NOISE = {"pick_place_can": 0.35, "lift": 0.45}
VIDEO_SIZE = 256  # px: large enough to see the gripper and the object
VIDEO = "episode_base_vs_adapted.mp4"
# The noise actor runs the agent's defaults (the DSRL benchmark's settings, docs/benchmarks.md)
# with half the batch, so that between-episode training on a CPU-only laptop stays shorter than
# the episodes themselves.
CPU_AGENT = {"batch_size": 128}


@dataclass(frozen=True)
class DemoPlan:
    """How much of each step to run; --quick trades statistics for time."""

    demos: int
    pretrain_steps: int
    value_steps: int
    eval_episodes: int
    guidance_weights: tuple[float, ...]
    online_episodes: int
    # Base-policy decisions before the learner acts: about 6 / 2 pick_place_can episodes
    # (~21 decisions each, 32 at most), 10 / 3 of Lift (13 each).
    prefill_decisions: int
    final_episodes: int
    batch_size: int = 256  # pretraining samples per step


FULL = DemoPlan(
    demos=100,
    pretrain_steps=8000,
    value_steps=4000,
    eval_episodes=20,
    guidance_weights=(0.0, 1.0, 2.0, 3.0),
    online_episodes=50,
    prefill_decisions=130,
    final_episodes=25,
)
QUICK = DemoPlan(
    demos=20,
    pretrain_steps=1500,
    value_steps=800,
    eval_episodes=6,
    guidance_weights=(0.0, 1.0),
    online_episodes=8,
    prefill_decisions=40,
    final_episodes=4,
)
# --vision: every simulated step renders two cameras (~40 ms of CPU each for pick_place_can),
# and the camera encoders train at a smaller batch for longer (their loss levels off near
# 8,000 steps); about 1.5 hours on 2 cores (docs/benchmarks.md, "Vision").
VISION = DemoPlan(
    demos=100,
    pretrain_steps=8000,
    value_steps=4000,
    eval_episodes=10,
    guidance_weights=(0.0, 1.0, 2.0),
    online_episodes=40,
    prefill_decisions=130,
    final_episodes=15,
    batch_size=64,
)
VISION_QUICK = DemoPlan(
    demos=10,
    pretrain_steps=300,
    value_steps=400,
    eval_episodes=3,
    guidance_weights=(0.0, 1.0),
    online_episodes=4,
    prefill_decisions=20,
    final_episodes=2,
    batch_size=64,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smaller run of every step (minutes instead of half an hour): fewer demos, "
        "training steps, evaluation and online episodes",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report folder (default: runs/<timestamp>); an existing one is resumed: "
        "finished steps are not run again",
    )
    parser.add_argument(
        "--task",
        default="pick_place_can",
        choices=sorted(EXPERT_NOISE),
        help="simulated task: pick_place_can (grasp the can and put it in its bin) or lift "
        "(grasp the cube and lift it)",
    )
    parser.add_argument(
        "--vision",
        action="store_true",
        help="what a real cell sees: record the scene and wrist cameras and no object pose, and "
        "train, evaluate and adapt a policy of proprioception and the two cameras (slower: "
        "every simulated step renders both cameras)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every step")
    parser.add_argument(
        "--online-episodes",
        type=int,
        default=None,
        help="episodes of online DSRL over ROS 2 (default: 50; --quick 8, --vision 40, both 4)",
    )
    parser.add_argument(
        "--guidance-weight",
        type=float,
        default=1.0,
        help="w the online run starts with; halfway through it is set live to the weight that "
        "did best in the evaluation of step 3 (the next best when that is this one)",
    )


def _step(number: int, title: str) -> None:
    print(f"\n==> [{number}/6] {title}", flush=True)


def _cfgrl_ros(*arguments: str, capture: bool = False) -> str:
    """Run `cfgrl-ros ARGUMENTS` as its own process; its output streams to ours."""
    command = [sys.executable, "-m", "cfgrl_ros.cli.main", *arguments]
    print("$ cfgrl-ros " + shlex.join(arguments), flush=True)
    if capture:
        result = subprocess.run(command, stdout=subprocess.PIPE, text=True)
        sys.stdout.write(result.stdout)
    else:
        result = subprocess.run(command)
    if result.returncode != 0:
        raise RuntimeError(f"`cfgrl-ros {shlex.join(arguments)}` failed ({result.returncode})")
    return result.stdout if capture else ""


def _isolated_ros_environment(out: Path) -> None:
    """ROS traffic of the demo stays on loopback, in a domain of its own."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(102, 200)))
    os.environ.setdefault("ROS_LOG_DIR", str(out / "ros_logs"))
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


def graph_exec_horizon() -> int:
    """Actions per decision of the graph's policy node (its parameter file); the frozen policy
    is evaluated as the graph will run it."""
    return int(node_parameter((config_path(CONFIG_FILE),), "", "policy_node", "exec_horizon"))


def _graph_config(out: Path, plan: DemoPlan, seed: int) -> Path:
    """The package's dsrl_franka.yaml with this run's folder, seed and prefill."""
    parameters = yaml.safe_load(config_path("dsrl_franka.yaml").read_text())
    actor = parameters["/**/noise_actor_node"]["ros__parameters"]
    actor["run_dir"] = str(out / "dsrl")
    actor["agent"].update(CPU_AGENT, prefill_decisions=plan.prefill_decisions, seed=seed)
    parameters["/**/franka_sim_node"]["ros__parameters"]["seed"] = 10_000 + seed
    parameters["/**/policy_node"]["ros__parameters"]["seed"] = seed
    path = out / "dsrl_franka.yaml"
    path.write_text(yaml.safe_dump(parameters, sort_keys=False))
    return path


def run_online(
    out: Path,
    task: str,
    policy: Path,
    plan: DemoPlan,
    seed: int,
    weights: tuple[float, float],
    episodes: list[dict[str, Any]],
    cameras: bool,
) -> list[dict[str, Any]]:
    """Run the ROS 2 graph until `plan.online_episodes` episodes ended; per-episode results.

    `episodes`: those an interrupted run logged already (`_online_log`); the log continues
    from them, and the agent resumes from its checkpoint. The demo watches `episode_event` like
    any other node would, starts at guidance weight weights[0] and sets the policy node's
    guidance_weight to weights[1] halfway with `cfgrl-ros param set`. `cameras`: the simulator
    publishes its cameras (use_camera:=true), for a vision policy.
    """
    start_weight, live_weight = weights
    import rclpy
    from std_msgs.msg import String
    from tqdm import tqdm

    from cfgrl_ros.nodes.decision_messages import EPISODE_EVENT_TOPIC, event_qos

    log_path = out / "online.jsonl"
    episodes = list(episodes)
    if len(episodes) >= plan.online_episodes:
        print(f"(already done: {log_path})")
        return episodes
    weight = episodes[-1]["guidance_weight"] if episodes else start_weight
    config = _graph_config(out, plan, seed)
    launch_log = (out / "graph.log").open("a")
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cfgrl_ros.cli.main",
            "launch",
            "dsrl_franka",
            f"policy:={policy}",
            f"task:={task}",
            f"config:={config}",
            f"guidance_weight:={weight}",
            f"use_camera:={str(cameras).lower()}",
        ],
        stdout=launch_log,
        stderr=subprocess.STDOUT,
    )
    print(f"graph started (nodes' output in {out / 'graph.log'})", flush=True)
    rclpy.init(args=["--ros-args", "--disable-rosout-logs"])
    node = rclpy.create_node("cfgrl_ros_demo_observer")
    events: list[str] = []
    node.create_subscription(
        String, EPISODE_EVENT_TOPIC, lambda m: events.append(m.data), event_qos(50)
    )
    changed = weight != start_weight
    started = time.monotonic()
    try:
        with tqdm(
            total=plan.online_episodes,
            initial=len(episodes),
            desc="online DSRL episodes",
            unit="ep",
        ) as bar:
            while len(episodes) < plan.online_episodes:
                rclpy.spin_once(node, timeout_sec=0.2)
                if launcher.poll() is not None:
                    raise RuntimeError(f"the node graph stopped early; see {out / 'graph.log'}")
                while events:
                    event = events.pop(0)
                    if event not in ("success", "failure"):
                        continue
                    record = {
                        "episode": len(episodes) + 1,
                        "success": event == "success",
                        "guidance_weight": weight,
                        "seconds": round(time.monotonic() - started, 1),
                    }
                    episodes.append(record)
                    with log_path.open("a") as log:
                        log.write(json.dumps(record) + "\n")
                    bar.update(1)
                    rate = sum(e["success"] for e in episodes[-10:]) / min(len(episodes), 10)
                    bar.set_postfix(success_last10=f"{rate:.0%}", w=weight)
                if not changed and len(episodes) >= plan.online_episodes // 2:
                    weight = live_weight
                    tqdm.write(f"setting guidance_weight to {weight} on the running policy node")
                    _cfgrl_ros("param", "set", "/policy_node", "guidance_weight", str(weight))
                    changed = True
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        launcher.send_signal(signal.SIGINT)
        try:
            launcher.wait(60)
        except subprocess.TimeoutExpired:
            launcher.kill()
        launch_log.close()
    return episodes


def _online_log(out: Path) -> list[dict[str, Any]]:
    """The episodes of the online step recorded so far (online.jsonl)."""
    log_path = out / "online.jsonl"
    if not log_path.is_file():
        return []
    return [json.loads(line) for line in log_path.read_text().splitlines()]


def evaluate_adapted(
    out: Path, task: str, policy_path: Path, episodes: int, seed: int
) -> tuple[dict[str, float], float]:
    """Success of the base policy, of zero noise and of the adapted noise actor on the same
    initial states.

    Zero noise (w0 = 0 always) is the deterministic policy that needs no learning: the adapted
    actor, also deterministic, has to beat it too. Films the adapted actor's first successful
    episode again, and the base policy from the same initial state, side by side in one MP4
    (VIDEO).
    Returns ({"base": rate, "zero noise": rate, "adapted": rate}, guidance weight used).
    """
    import gymnasium as gym
    from tqdm import tqdm

    from cfgrl_ros.dsrl import NoiseAgent, ZeroNoise, make_noise_env, run_episode
    from cfgrl_ros.evaluation import make_env
    from cfgrl_ros.policy import FlowPolicy

    class FrameRecorder(gym.Wrapper):
        """Keeps a VIDEO_SIZE view of the scene camera at every control tick of the latest
        episode in `frames` (besides the policy's own, smaller, camera images)."""

        frames: list

        def reset(self, **kwargs):
            result = self.env.reset(**kwargs)
            self.frames = [self.env.unwrapped.render("image", VIDEO_SIZE)]
            return result

        def step(self, action):
            result = self.env.step(action)
            self.frames.append(self.env.unwrapped.render("image", VIDEO_SIZE))
            return result

    policy = FlowPolicy.load(policy_path, device="cpu")
    agent = NoiseAgent.load(out / "dsrl" / "agent", policy, device="cpu")
    weight = agent.guidance_weight
    camera_env = FrameRecorder(make_env(policy, task))
    filmed = make_noise_env(camera_env, policy, weight, agent.config)
    plain = make_noise_env(make_env(policy, task), policy, weight, agent.config)
    rates, films = {}, {}
    zero = ZeroNoise(policy.noise_shape, weight)
    seeds = [50_000 + seed + episode for episode in range(episodes)]
    adapted_successes = []
    for name, actor in (("adapted", agent), ("zero noise", zero), ("base", None)):
        successes = 0
        for seed_i in tqdm(seeds, desc=f"evaluating {name}", unit="ep"):
            result = run_episode(plain, actor, deterministic=True, seed=seed_i)
            successes += result.success
            if name == "adapted" and result.success:
                adapted_successes.append(seed_i)
        rates[name] = successes / episodes
    # Filmed again from the initial state of the adapted actor's first success (else the first
    # one): the deterministic actor repeats its episode, so the video shows the task done, and
    # the base policy from the same state shows what changed.
    film_seed = (adapted_successes or seeds)[0]
    for name, actor in (("adapted", agent), ("base", None)):
        result = run_episode(filmed, actor, deterministic=True, seed=film_seed)
        films[name] = (camera_env.frames, result.success)
    filmed.close()
    plain.close()
    write_side_by_side(out / VIDEO, [(name, *films[name]) for name in ("base", "adapted")])
    return rates, weight


def write_side_by_side(path: Path, films: list[tuple[str, list, bool]]) -> None:
    """One MP4 of several episodes side by side, each labelled with its name and outcome; an
    episode that ended earlier holds its last frame."""
    import imageio.v2 as imageio
    import numpy as np
    from PIL import Image, ImageDraw

    length = max(len(frames) for _, frames, _ in films)
    gap = np.full((films[0][1][0].shape[0], 4, 3), 255, dtype=np.uint8)
    with imageio.get_writer(path, fps=20, macro_block_size=1) as writer:
        for tick in range(length):
            panels = []
            for name, frames, success in films:
                image = Image.fromarray(frames[min(tick, len(frames) - 1)])
                label = (
                    name
                    if tick < len(frames) - 1
                    else f"{name}: {'success' if success else 'failure'}"
                )
                ImageDraw.Draw(image).text((6, 4), label, fill=(255, 255, 255))
                panels += [np.asarray(image), gap]
            writer.append_data(np.concatenate(panels[:-1], axis=1))


def write_plots(out: Path, eval_success: dict[str, float], online: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    weights = [float(w) for w in eval_success]
    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.plot(weights, list(eval_success.values()), "o-")
    axis.set(xlabel="guidance weight w", ylabel="success rate", ylim=(0, 1.02))
    axis.set_title("Frozen CFGRL policy: success vs guidance weight")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out / "success_vs_guidance.png", dpi=120)
    plt.close(figure)

    success = np.array([e["success"] for e in online], dtype=float)
    episode = np.arange(1, len(success) + 1)
    window = min(10, len(success))
    rolling = np.convolve(success, np.ones(window) / window, mode="valid")
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.scatter(episode, success, s=12, alpha=0.5, label="episode success")
    axis.plot(episode[window - 1 :], rolling, color="C1", label=f"rolling mean ({window})")
    changes = [
        e["episode"]
        for a, e in itertools.pairwise(online)
        if a["guidance_weight"] != e["guidance_weight"]
    ]
    for change in changes:
        axis.axvline(change - 0.5, color="gray", linestyle="--", label="guidance weight changed")
    axis.set(xlabel="online episode", ylabel="success", ylim=(-0.05, 1.05))
    axis.set_title("Online DSRL-NA over ROS 2 (simulated Franka)")
    axis.legend(loc="lower right", fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out / "online_success.png", dpi=120)
    plt.close(figure)


def write_report(
    out: Path,
    plan: DemoPlan,
    args: argparse.Namespace,
    demo_success: float,
    eval_success: dict[str, float],
    online: list[dict[str, Any]],
    final: dict[str, float],
    final_weight: float,
    seconds: dict[str, float],
) -> Path:
    first = online[: max(1, len(online) // 4)]
    last = online[-max(1, len(online) // 4) :]
    rows = "\n".join(f"| {w} | {rate:.0%} |" for w, rate in eval_success.items())
    timing = "\n".join(f"| {name} | {value / 60:.1f} min |" for name, value in seconds.items())
    timing += f"\n| all steps | {sum(seconds.values()) / 60:.1f} min |"
    flags = "".join(f" --{flag}" for flag in ("quick", "vision") if getattr(args, flag))
    command = f"cfgrl-ros demo{flags} --task {args.task} --seed {args.seed}"
    seen = (
        "the scene and wrist cameras (no object pose), as a real cell records"
        if args.vision
        else "the arm's state and the object pose"
    )
    observation = (
        "proprioception and the two cameras" if args.vision else "the state and the object pose"
    )
    text = f"""# cfgrl_ros demo report

Run on {datetime.now().strftime("%Y-%m-%d %H:%M")} with `{command}`; output in `{out}`.

## 1. Demonstrations
{plan.demos} {args.task} episodes of the scripted expert with noise
{EXPERT_NOISE[args.task]}, recorded to the rosbag `demos/` with {seen}:
**{demo_success:.0%}** of them succeed.

## 2-3. CFGRL policy from the bag, at several guidance weights
`policy.pt` reads {observation}; trained for {plan.pretrain_steps} steps of
{plan.batch_size} samples (value function {plan.value_steps} steps, Monte-Carlo optimality
labels); curves in `policy.curves.png`. Success over
{plan.eval_episodes} episodes per weight, same initial states, {graph_exec_horizon()} actions
per decision as in the graph:

| w | success |
|---|---|
{rows}

![success vs w](success_vs_guidance.png)

## 4. Online DSRL-NA over ROS 2
{len(online)} episodes of the node graph (franka_sim_node in lockstep, policy_node,
noise_actor_node, reward_reset_node; separate processes over DDS), starting at
w = {args.guidance_weight}, changed live to w = {online[-1]["guidance_weight"]} (the best
other weight of step 3) after episode
{plan.online_episodes // 2}. Success over the first quarter of the episodes:
**{sum(e["success"] for e in first) / len(first):.0%}**, over the last quarter:
**{sum(e["success"] for e in last) / len(last):.0%}**. Per-episode log: `online.jsonl`;
agent and replay buffer checkpoints: `dsrl/`.

![online success](online_success.png)

## 5. Adapted vs base policy
{plan.final_episodes} episodes each on the same initial states, at w = {final_weight},
noise actor deterministic: base policy (w0 ~ N(0, I)) **{final["base"]:.0%}**, zero noise
(w0 = 0, no learning) **{final["zero noise"]:.0%}**, adapted **{final["adapted"]:.0%}**.
Video: `{VIDEO}`, base policy (left) and adapted actor (right) from the same initial state,
the first on which the adapted actor succeeded (if it did).

## Time

| step | wall clock |
|---|---|
{timing}
"""
    path = out / "report.md"
    path.write_text(text)
    return path


def run(args: argparse.Namespace) -> int:
    plans = {
        (False, False): FULL,
        (True, False): QUICK,
        (False, True): VISION,
        (True, True): VISION_QUICK,
    }
    plan = plans[(args.quick, args.vision)]
    if args.online_episodes is not None:
        if args.online_episodes < 2:
            print("error: --online-episodes must be at least 2", file=sys.stderr)
            return 2
        plan = DemoPlan(**{**plan.__dict__, "online_episodes": args.online_episodes})
    out = args.out or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    _isolated_ros_environment(out)
    # Wall clock per step, kept across resumed runs: a reused step keeps the time it took.
    timing = out / "timing.json"
    seconds: dict[str, float] = json.loads(timing.read_text()) if timing.is_file() else {}
    clock = time.monotonic()

    def lap(name: str, ran: bool = True) -> None:
        nonlocal clock
        if ran or name not in seconds:
            seconds[name] = time.monotonic() - clock
            timing.write_text(json.dumps(seconds, indent=1))
        clock = time.monotonic()

    try:
        _step(1, f"recording {plan.demos} noisy expert demonstrations to a rosbag")
        bag = out / "demos"
        summary = out / "demos.json"
        ran = not summary.is_file()
        if ran:
            text = _cfgrl_ros(
                "collect",
                "--task",
                args.task,
                "--episodes",
                str(plan.demos),
                "--noise",
                str(EXPERT_NOISE[args.task]),
                "--seed",
                str(args.seed),
                "--out",
                str(bag),
                # A real cell's recording: both cameras, no object pose.
                *(["--camera", "--topic", "object_pose="] if args.vision else []),
                capture=True,
            )
            summary.write_text(
                json.dumps({"task": args.task, "vision": args.vision, "output": text})
            )
        recorded = json.loads(summary.read_text())
        recorded_task = recorded.get("task", "lift")  # demos before the task was recorded
        if recorded_task != args.task:
            raise ValueError(
                f"{out} holds a {recorded_task} demo: resume it with --task {recorded_task}, "
                f"or use another --out for {args.task}"
            )
        if recorded.get("vision", False) != args.vision:
            flag = "with" if recorded.get("vision") else "without"
            raise ValueError(f"{out} was recorded {flag} --vision: resume it the same way")
        demo_success = _success_rate_from(recorded["output"])
        lap("record demonstrations", ran)

        _step(2, "pretraining the CFGRL policy from the bag")
        policy = out / "policy.pt"
        ran = not policy.is_file()
        if ran:
            _cfgrl_ros(
                "pretrain",
                "--bag",
                str(bag),
                "--out",
                str(policy),
                "--labels",
                "mc",
                "--steps",
                str(plan.pretrain_steps),
                "--value-steps",
                str(plan.value_steps),
                "--batch-size",
                str(plan.batch_size),
                "--observation",
                "vision" if args.vision else "state",
                "--seed",
                str(args.seed),
                "--device",
                "cpu",
                *(["--resume"] if policy.with_suffix(".train_state.pt").exists() else []),
            )
        lap("pretrain", ran)

        _step(3, "evaluating the frozen policy at several guidance weights")
        evaluation = out / "eval.json"
        ran = not evaluation.is_file()
        if ran:
            weights = ",".join(str(w) for w in plan.guidance_weights)
            text = _cfgrl_ros(
                "eval",
                "--policy",
                str(policy),
                "--task",
                args.task,
                "--episodes",
                str(plan.eval_episodes),
                "--w",
                weights,
                "--exec-horizon",
                str(graph_exec_horizon()),
                "--seed",
                str(args.seed),
                "--json",
                capture=True,
            )
            evaluation.write_text(text.strip().splitlines()[-1])
        eval_success = json.loads(evaluation.read_text())["success"]
        lap("evaluate guidance weights", ran)

        _step(4, f"online DSRL over ROS 2 for {plan.online_episodes} episodes")
        logged = _online_log(out)
        ran = len(logged) < plan.online_episodes
        live_weight = best_other_weight(eval_success, args.guidance_weight)
        online = run_online(
            out,
            args.task,
            policy,
            plan,
            args.seed,
            (args.guidance_weight, live_weight),
            logged,
            args.vision,
        )
        lap("online DSRL (ROS 2 graph)", ran)

        _step(5, "adapted vs base policy, and videos")
        final, final_weight = evaluate_adapted(
            out, args.task, policy, plan.final_episodes, args.seed
        )
        lap("final evaluation and videos")

        _step(6, "writing the report")
        write_plots(out, eval_success, online)
        report = write_report(
            out, plan, args, demo_success, eval_success, online, final, final_weight, seconds
        )
    except (RuntimeError, FileNotFoundError, ValueError) as error:
        print(f"\nerror: {error}\nRe-run with --out {out} to resume.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted; re-run with --out {out} to resume", file=sys.stderr)
        return 130
    print(
        f"\nbase policy {final['base']:.0%}, zero noise {final['zero noise']:.0%}, "
        f"adapted {final['adapted']:.0%} success"
    )
    print(f"report: {report}")
    print(f"plots and videos: {out}")
    return 0


def best_other_weight(eval_success: dict[str, float], start_weight: float) -> float:
    """The evaluated guidance weight with the highest success other than `start_weight` (the
    lower weight on ties: closer to the data)."""
    others = {float(w): rate for w, rate in eval_success.items() if float(w) != start_weight}
    if not others:
        raise ValueError(f"step 3 evaluated no guidance weight other than {start_weight}")
    return max(sorted(others), key=lambda w: others[w])


def _success_rate_from(collect_output: str) -> float:
    """`collect` ends with 'success rate X% (k/N)'."""
    for line in reversed(collect_output.splitlines()):
        if "success rate" in line and "(" in line:
            successes, total = line.rsplit("(", 1)[1].rstrip(")").split("/")
            return int(successes) / int(total)
    raise RuntimeError("`cfgrl-ros collect` did not report its success rate")
