"""Only until `workbench` calls `prepare.prepare_files` for every table: it reads a large file in chunks too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.data.prepare import prepare_files


def prepare_stream(cfg: Any, folder: Path) -> dict[str, Any]:
    return prepare_files(cfg.data, cfg.task, cfg.train.seed, folder).manifest
