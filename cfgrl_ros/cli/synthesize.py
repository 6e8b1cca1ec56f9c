"""Policy-guided diffusion: synthetic on-policy experience from recorded bags, written as a bag.

Reads the episodes of every --bag (low-dimensional observations; cameras are not read), trains
a flow-matching model of their sub-trajectories (state, action, reward, done) of --horizon
ticks and writes it to --model, or loads it from --model when that file exists (a file that is
not a trajectory model, or one trained on other data or settings, is refused, never
overwritten), then samples --trajectories windows whose actions are guided toward the target
policy with strength --guidance (lambda; 0 gives plain behaviour-distribution samples). The
target is the frozen --policy decoding zero start noise, or the noise that the DSRL --agent
chooses; the guidance pulls toward its first chunk action with a Gaussian of --target-std
(default: the spread of the recorded actions, which makes lambda the rate at which guided
actions relax toward the target's).

Each window becomes one episode: it ends at the first tick the model marks done (a success) or
runs --horizon ticks (a truncated, unsuccessful episode). The bag --out is marked synthetic in
its metadata (custom_data cfgrl_ros.synthetic = "true"); `pretrain` and `adapt --offline-bag`
read it like a recording (Episode.synthetic is True for its episodes).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cfgrl_ros.cli.arguments import add_topic_map_arguments, finite_number, integer_at_least

if TYPE_CHECKING:  # imported lazily at run time: `--help` stays instant
    from collections.abc import Callable

    import numpy as np
    import torch

    from cfgrl_ros.data.episode import Episode
    from cfgrl_ros.data.topic_map import TopicMap
    from cfgrl_ros.dsrl.agent import NoiseAgent
    from cfgrl_ros.pgd.diffusion import TrajectoryModel, TrajectoryModelConfig

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cfgrl_ros" / "pgd"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cfgrl_ros.pgd.diffusion import TrajectoryModelConfig

    defaults = TrajectoryModelConfig()
    parser.add_argument(
        "--bag", action="append", required=True, metavar="DIR", help="rosbag2 bag (repeatable)"
    )
    parser.add_argument("--policy", required=True, metavar="CKPT", help="target policy checkpoint")
    parser.add_argument(
        "--agent", metavar="DIR", help="DSRL noise agent folder steering the target policy"
    )
    parser.add_argument(
        "--guidance",
        type=finite_number(0.0),
        default=1.0,
        metavar="L",
        help="policy guidance lambda (>= 0)",
    )
    parser.add_argument(
        "--trajectories",
        type=integer_at_least(1),
        default=256,
        metavar="N",
        help="synthetic windows to write",
    )
    parser.add_argument("--out", required=True, type=Path, help="synthetic bag directory to write")
    parser.add_argument(
        "--horizon", type=int, default=defaults.horizon, help="ticks per synthetic trajectory"
    )
    parser.add_argument(
        "--model",
        type=Path,
        help="trajectory model file: loaded when it exists (it must have been trained on the "
        "same data and settings), else trained and written there (default: a file per data set "
        f"in {DEFAULT_CACHE})",
    )
    parser.add_argument(
        "--train-steps", type=int, default=defaults.train_steps, help="trajectory model steps"
    )
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument(
        "--denoising-steps", type=integer_at_least(1), default=64, help="Euler steps of the sampler"
    )
    parser.add_argument(
        "--target-std",
        type=finite_number(0.0, above=True),
        help="std of the Gaussian around the target action (default: the recorded actions' "
        "per-dimension std)",
    )
    parser.add_argument(
        "--policy-guidance-weight",
        type=finite_number(),
        help="CFG weight w the target policy decodes at (default: the agent's, else 1.0)",
    )
    parser.add_argument(
        "--decode-steps",
        type=integer_at_least(1),
        help="Euler steps of the target policy (default: its own)",
    )
    parser.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    add_topic_map_arguments(parser, "of the bags read and written")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _fail(message: str) -> int:
    print(f"cfgrl-ros synthesize: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    from cfgrl_ros.data.bag_reader import BagError
    from cfgrl_ros.data.bag_writer import BagWriteError

    try:
        inputs = _read_inputs(args)
    except (BagError, BagWriteError, ValueError, FileNotFoundError) as error:
        return _fail(str(error))
    successes = sum(episode.success for episode in inputs.episodes)
    print(
        f"{len(inputs.episodes)} episodes ({successes} successful) -> {len(inputs.windows)} "
        f"windows of {args.horizon} ticks",
        file=sys.stderr,
    )
    model_path: Path | None = None  # set once the trajectory model is on disk
    try:
        if inputs.given_model is not None:
            model, model_path = inputs.given_model, args.model
            print(f"loaded the trajectory model {model_path}", file=sys.stderr)
        else:
            model, model_path = _trajectory_model(
                inputs.windows,
                inputs.config,
                args.model,
                inputs.device,
                args.seed,
                not args.no_progress,
            )
        synthetic_episodes = _write_synthetic(args, inputs, model)
    except (BagWriteError, ValueError) as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        # The bag writer removes its partial bag: a bag that exists is complete.
        kept = (
            f"; the trajectory model {model_path} is kept and the same command reuses it"
            if model_path is not None
            else "; no trajectory model was written"
        )
        print(
            f"cfgrl-ros synthesize: interrupted; {args.out} was not written{kept}", file=sys.stderr
        )
        return 130
    successes = sum(episode.success for episode in synthetic_episodes)
    ticks = sum(len(episode) for episode in synthetic_episodes)
    print(
        f"wrote {len(synthetic_episodes)} synthetic episodes ({successes} successful, {ticks} "
        f"ticks, guidance {args.guidance:g}) to {args.out}"
    )
    return 0


@dataclass
class _Inputs:
    """What the command reads before any training: checked data, settings and target."""

    episodes: list[Episode]  # recorded ones only
    windows: np.ndarray
    config: TrajectoryModelConfig
    device: torch.device
    topic_map: TopicMap
    given_model: TrajectoryModel | None  # the --model file, when it exists
    target_action: Callable[[np.ndarray], np.ndarray]
    task: str  # of the recorded episodes, written to the synthetic bag


def _read_inputs(args: argparse.Namespace) -> _Inputs:
    """Everything that can be refused before training (ValueError, BagError, ...)."""
    from cfgrl_ros.data.bag_reader import read_bags
    from cfgrl_ros.data.bag_writer import check_new_bag_dir
    from cfgrl_ros.data.episode import episodes_task
    from cfgrl_ros.data.topic_map import load_topic_map, parse_overrides
    from cfgrl_ros.pgd.diffusion import TrajectoryModelConfig
    from cfgrl_ros.pgd.target import flow_policy_action
    from cfgrl_ros.pgd.trajectories import sub_trajectories
    from cfgrl_ros.policy.checkpoint import resolve_device
    from cfgrl_ros.policy.flow_policy import FlowPolicy

    check_new_bag_dir(args.out)
    device = resolve_device(args.device)
    config = TrajectoryModelConfig(
        horizon=args.horizon, train_steps=args.train_steps, batch_size=args.batch_size
    )
    given_model = _given_model(args.model, device)
    topic_map = load_topic_map(args.topics, parse_overrides(args.topic))
    episodes = read_bags(args.bag, topic_map)
    recorded = [episode for episode in episodes if not episode.synthetic]
    if len(recorded) < len(episodes):
        # A model of its own samples would drift further from the real dynamics each round.
        print(
            f"ignoring {len(episodes) - len(recorded)} synthetic episodes: the trajectory model "
            "learns from recorded ones only",
            file=sys.stderr,
        )
    if not recorded:
        raise ValueError(f"the bags {args.bag} hold no recorded (non-synthetic) episodes")
    task = episodes_task(recorded)
    windows = sub_trajectories(recorded, args.horizon)
    if given_model is not None:
        _check_given_model(given_model, args.model, windows, config)
    policy = FlowPolicy.load(args.policy, device=device)
    noise_agent = None
    if args.agent:
        from cfgrl_ros.dsrl.agent import NoiseAgent

        noise_agent = NoiseAgent.load(args.agent, policy, device=str(device))
    target_action = flow_policy_action(
        policy,
        noise_agent,
        guidance_weight=_policy_guidance_weight(args, noise_agent),
        decode_steps=args.decode_steps,
    )
    return _Inputs(recorded, windows, config, device, topic_map, given_model, target_action, task)


def _write_synthetic(
    args: argparse.Namespace, inputs: _Inputs, model: TrajectoryModel
) -> list[Episode]:
    """Sample the guided windows and write them to the bag --out; its episodes."""
    from tqdm.auto import tqdm

    from cfgrl_ros.data.bag_writer import EpisodeBagWriter
    from cfgrl_ros.pgd.target import GaussianTarget
    from cfgrl_ros.pgd.trajectories import episodes_from_windows

    progress = not args.no_progress
    target = GaussianTarget(
        inputs.target_action, model.action_std if args.target_std is None else args.target_std
    )
    synthetic = model.sample(
        args.trajectories,
        denoising_steps=args.denoising_steps,
        guidance=args.guidance,
        target_log_prob=target.log_prob,
        seed=args.seed,
        progress=progress,
    )
    episodes = episodes_from_windows(synthetic, args.horizon)
    with EpisodeBagWriter(
        args.out,
        storage=args.storage,
        topic_map=inputs.topic_map,
        synthetic=True,
        task=inputs.task or None,
    ) as writer:
        for episode in tqdm(episodes, desc="write bag", disable=not progress):
            writer.write(episode)
    return episodes


def _policy_guidance_weight(args: argparse.Namespace, noise_agent: NoiseAgent | None) -> float:
    """--policy-guidance-weight, else the weight the noise agent was trained for, else 1.0."""
    if args.policy_guidance_weight is not None:
        return args.policy_guidance_weight
    return noise_agent.guidance_weight if noise_agent is not None else 1.0


def _given_model(path: Path | None, device: torch.device) -> TrajectoryModel | None:
    """The trajectory model in the --model file, or None when there is nothing to load (no
    --model, or a file still to be written). ValueError for a path that cannot be used: a
    --model file is never overwritten, since it may be something else the user keeps."""
    if path is None:
        return None
    from cfgrl_ros.paths import file_in_the_way
    from cfgrl_ros.pgd.diffusion import TrajectoryModel

    keep = (
        "it is left as it is: pass another --model path (a new file is trained there), or delete it"
    )
    if path.is_file():
        try:
            return TrajectoryModel.load(path, device)
        except ValueError as error:
            raise ValueError(f"--model: {error}; {keep}") from error
    if path.exists():
        raise ValueError(
            f"--model {path} exists and is not a file; name a file to load or write the "
            f"trajectory model, e.g. {path / 'pgd_model.pt'}"
        )
    blocking = file_in_the_way(path)
    if blocking is not None:
        raise ValueError(
            f"--model {path} cannot be written: {blocking} is a file, not a directory; choose "
            "another --model path"
        )
    return None


def _check_given_model(
    model: TrajectoryModel, path: Path, windows: np.ndarray, config: TrajectoryModelConfig
) -> None:
    """ValueError unless the --model file was trained on these windows with this config."""
    from dataclasses import asdict

    from cfgrl_ros.pgd.diffusion import data_fingerprint

    if model.fingerprint == data_fingerprint(windows, config):
        return
    saved, wanted = asdict(model.config), asdict(config)
    flags = {"horizon", "train_steps", "batch_size"}  # the rest of the config has no flag
    changed = [
        f"{'--' + name.replace('_', '-') if name in flags else name} {saved[name]} "
        f"(now {wanted[name]})"
        for name in wanted
        if saved[name] != wanted[name]
    ]
    trained_on = f"with {', '.join(changed)}" if changed else "on other bags"
    raise ValueError(
        f"--model {path} holds a trajectory model trained {trained_on}; it is left as it is: "
        "pass another --model path to train one for this data and these settings, or delete it"
    )


def _trajectory_model(
    windows: np.ndarray,
    config: TrajectoryModelConfig,
    path: Path | None,
    device: torch.device,
    seed: int,
    progress: bool,
) -> tuple[TrajectoryModel, Path]:
    """A model trained on these windows with this config and the file it is in: the cached
    one when `path` is None and the cache (one file per data set) has it, else a newly
    trained one written to `path` (a new file: `_given_model` refuses existing ones) or the
    cache."""
    import numpy as np

    from cfgrl_ros.pgd.diffusion import TrajectoryModel, data_fingerprint

    if path is None:
        fingerprint = data_fingerprint(windows, config)
        path = DEFAULT_CACHE / f"{fingerprint[:16]}.pt"
        if path.is_file():  # the package's own cache: a stale or broken entry is replaced
            try:
                cached = TrajectoryModel.load(path, device)
            except ValueError as error:
                print(f"{error}; retraining", file=sys.stderr)
            else:
                if cached.fingerprint == fingerprint:
                    print(f"loaded the trajectory model {path}", file=sys.stderr)
                    return cached, path
                print(f"{path} was trained on other data or settings; retraining", file=sys.stderr)
    model, losses = TrajectoryModel.fit(windows, config, device, seed, progress)
    model.save(path)
    print(
        f"trained the trajectory model (final loss {np.mean(losses[-100:]):.3f}), wrote {path}",
        file=sys.stderr,
    )
    return model, path
