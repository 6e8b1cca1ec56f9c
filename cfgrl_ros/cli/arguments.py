"""argparse types shared by the commands: a bad number is refused at parsing, with the flag's
name in the message (``argument --seed: must be >= 0, got -1``), before any work starts."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def integer_at_least(minimum: int) -> Callable[[str], int]:
    """An integer >= `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def finite_number(minimum: float | None = None, *, above: bool = False) -> Callable[[str], float]:
    """A finite float (nan passes every comparison, so it is refused by name), >= `minimum`
    (> with `above`) when given."""
    bound = "" if minimum is None else f" {'>' if above else '>='} {minimum:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_small = minimum is not None and (value <= minimum if above else value < minimum)
        if not math.isfinite(value) or too_small:
            raise argparse.ArgumentTypeError(f"must be a finite number{bound}, got {text}")
        return value

    return parse
