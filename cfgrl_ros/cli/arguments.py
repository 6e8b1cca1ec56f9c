"""argparse types shared by the commands: a bad number is refused at parsing, with the flag's
name in the message (``argument --seed: must be >= 0, got -1``), before any work starts."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def integer_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An integer >= `minimum` (and <= `maximum` when given)."""
    bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


def finite_number(
    minimum: float | None = None, *, above: bool = False, maximum: float | None = None
) -> Callable[[str], float]:
    """A finite float (nan passes every comparison, so it is refused by name), >= `minimum`
    (> with `above`) and <= `maximum` when given."""
    bounds = []
    if minimum is not None:
        bounds.append(f"{'>' if above else '>='} {minimum:g}")
    if maximum is not None:
        bounds.append(f"<= {maximum:g}")
    bound = "".join(f" {text}" for text in (" and ".join(bounds),) if text)

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_small = minimum is not None and (value <= minimum if above else value < minimum)
        too_large = maximum is not None and value > maximum
        if not math.isfinite(value) or too_small or too_large:
            raise argparse.ArgumentTypeError(f"must be a finite number{bound}, got {text}")
        return value

    return parse


def add_topic_map_arguments(parser: argparse.ArgumentParser, purpose: str) -> None:
    """--topics FILE and --topic KEY=VALUE (repeatable): the topic map `purpose` uses (read by
    cfgrl_ros.data.topic_map.load_topic_map(args.topics, parse_overrides(args.topic)))."""
    parser.add_argument(
        "--topics", metavar="FILE", help=f"topic map file {purpose} (default: config/topics.yaml)"
    )
    parser.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"topic map override {purpose}, e.g. joint_states=/robot/joint_states; KEY= "
        "switches an optional topic off (repeatable)",
    )


def camera_keys(text: str) -> tuple[str, ...]:
    """A comma-separated list of observation image keys: "image,wrist_image"."""
    from cfgrl_ros.observation import IMAGE_KEYS

    keys = tuple(key.strip() for key in text.split(",") if key.strip())
    unknown = [key for key in keys if key not in IMAGE_KEYS]
    if unknown or not keys or len(set(keys)) != len(keys):
        raise argparse.ArgumentTypeError(
            f"expected distinct cameras of {', '.join(IMAGE_KEYS)} separated by commas, got "
            f"{text!r}"
        )
    return keys
