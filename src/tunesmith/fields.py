"""`option`: a dataclass field that carries its CLI help, flag name and choices.

It lives apart from config.py so that modules owning a config section (data cleaning, dedup,
augmentation) can declare their dataclass beside their code without importing config.py.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any


def option(default: Any, help: str, flag: str | None = None, choices: tuple[str, ...] | None = None) -> Any:
    meta = {"help": help, "flag": flag, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)
