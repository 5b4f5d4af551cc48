"""`option`: a dataclass field that carries its CLI help, flag name and choices; `check_range` for its value.

It lives apart from config.py so that modules owning a config section (data cleaning, dedup,
augmentation) can declare their dataclass beside their code without importing config.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import field
from typing import Any

from tunesmith.errors import TunesmithError


def option(default: Any, help: str, flag: str | None = None, choices: Sequence[str] | None = None) -> Any:
    meta = {"help": help, "flag": flag, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def check_range(
    flag: str,
    value: float | None,
    *,
    at_least: float | None = None,
    above: float | None = None,
    at_most: float | None = None,
    below: float | None = None,
    hint: str = "",
) -> None:
    """One line for a number outside its range; NaN and infinity are never in range."""
    if value is None:
        return
    bounds = [
        (at_least, lambda v, b: v >= b, "at least {}"),
        (above, lambda v, b: v > b, "above {}"),
        (at_most, lambda v, b: v <= b, "at most {}"),
        (below, lambda v, b: v < b, "below {}"),
    ]
    finite = value == value and value not in (float("inf"), float("-inf"))
    if finite and all(b is None or ok(value, b) for b, ok, _ in bounds):
        return
    wanted = " and ".join(text.format(b) for b, _, text in bounds if b is not None)
    raise TunesmithError(f"--{flag} must be {wanted}, got {value}" + (f"; {hint}" if hint else ""))
