"""The runs the page lists, starts, watches and stops.

A run the page starts is `tunesmith train` in a process of its own (its own session, so a stop reaches the
whole process tree), writing into RUNS_DIR/NAME exactly as the command line would; its output goes to
RUNS_DIR/.ui/NAME.log, whose last `tunesmith: error:` line is the reason a failed run gives. The page never
replaces a folder: a name that exists is refused. Stopping sends SIGTERM, which `tunesmith train` takes as
Ctrl-C: the run ends interrupted, with a checkpoint `--resume` continues.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.errors import TunesmithError
from tunesmith.outputs import read_marker
from tunesmith.ui.config import UiConfig

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_LOGS = ".ui"
# A run's headline score in the list: the first of these its fine-tuned test scores hold.
_HEADLINE = ("macro_f1", "micro_f1", "spearman", "perplexity")


class RunsBusy(TunesmithError):
    """As many trainings as --max-running are under way."""


@dataclass
class StartRequest:
    """What the page's form sends; checked by the app's schema before it gets here."""

    name: str
    train: str
    task: str
    model: str
    method: str
    text_column: str | None = None
    label_column: str | None = None
    epochs: float | None = None
    lr: float | None = None
    batch_size: int | None = None

    def argv(self, output: Path) -> list[str]:
        """`tunesmith train`'s command line for this request: the same flags a user would type."""
        args = ["train", "--train", self.train, "--output", str(output), "--task", self.task, "--model", self.model]
        args += ["--method", self.method]
        flags = {
            "--text-column": self.text_column,
            "--label-column": self.label_column,
            "--epochs": self.epochs,
            "--lr": self.lr,
            "--batch-size": self.batch_size,
        }
        for flag, value in flags.items():
            if value is not None and value != "":
                args += [flag, str(value)]
        return args


@dataclass
class _Started:
    process: subprocess.Popen
    log: Path
    stopped: bool = False


class RunManager:
    def __init__(self, cfg: UiConfig) -> None:
        self.root = Path(cfg.runs_dir)
        self.max_running = cfg.max_running
        self.started: dict[str, _Started] = {}
        self._lock = threading.Lock()  # two form posts at once must not both pass the checks

    def start(self, request: StartRequest) -> dict[str, Any]:
        if not NAME.fullmatch(request.name):
            raise TunesmithError("name: letters, digits, '.', '_' or '-', up to 64, starting with a letter or digit")
        if not Path(request.train).is_file():
            raise TunesmithError(f"train: {request.train} is not a file on the machine the page runs on")
        output = self.root / request.name
        with self._lock:
            if output.exists() or request.name in self.started:
                raise TunesmithError(f"name: {output} exists; pick another name (the page never replaces a run)")
            if sum(self._alive(s) for s in self.started.values()) >= self.max_running:
                raise RunsBusy(f"{self.max_running} training(s) already running: wait, or stop one")
            log = self.root / _LOGS / f"{request.name}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "tunesmith", *request.argv(output)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env={**os.environ, "TQDM_DISABLE": "1"},
                )
            self.started[request.name] = _Started(process, log)
        return self.status(request.name)

    def stop(self, name: str) -> dict[str, Any]:
        started = self.started.get(name)
        if started is None or not self._alive(started):
            raise TunesmithError(f"{name} is not running")
        started.stopped = True
        os.killpg(started.process.pid, signal.SIGTERM)  # train takes it as Ctrl-C: resumable, and ends
        return self.status(name)

    def status(self, name: str) -> dict[str, Any]:
        folder = self.root / name
        started = self.started.get(name)
        state = "finished" if (folder / "metrics.json").is_file() else "incomplete"
        out: dict[str, Any] = {"name": name}
        if started is not None:
            code = started.process.poll()
            if code is None:
                state = "running"
            elif code != 0:
                state = "stopped" if started.stopped else "failed"
                out["error"] = _last_error(started.log)
            out["code"] = code
        out["state"] = state
        if state == "finished":
            out |= _summary(folder)
        out["report"] = (folder / "report.html").is_file()
        return out

    def runs(self) -> list[dict[str, Any]]:
        """Every run folder under the runs folder, and the runs started here, newest first."""
        names = set(self.started)
        if self.root.is_dir():
            names |= {p.name for p in self.root.iterdir() if p.is_dir() and (read_marker(p) or {}).get("kind") == "run"}
        listed = [self.status(name) | _marker(self.root / name) for name in names]
        return sorted(listed, key=lambda r: r.get("created", "~"), reverse=True)

    def known(self, name: str) -> bool:
        """A run this page may show: started here, or a run folder under the runs folder (never another path)."""
        return NAME.fullmatch(name) is not None and (
            name in self.started or (read_marker(self.root / name) or {}).get("kind") == "run"
        )

    def log_lines(self, name: str, offset: int) -> tuple[list[dict[str, Any]], int]:
        """log.jsonl's whole lines after byte `offset`, and the offset after them."""
        path = self.root / name / "log.jsonl"
        try:
            with path.open("rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except OSError:
            return [], offset
        whole = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next poll
        lines = []
        for raw in whole.splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
        return lines, offset + len(whole)

    def close(self) -> None:
        """Stop what is still running when the page's server stops: nothing trains on unasked."""
        for started in self.started.values():
            if self._alive(started):
                os.killpg(started.process.pid, signal.SIGTERM)
        for started in self.started.values():
            try:
                started.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(started.process.pid, signal.SIGKILL)

    @staticmethod
    def _alive(started: _Started) -> bool:
        return started.process.poll() is None


def _last_error(log: Path) -> str:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    said = [line for line in lines if line.startswith(("tunesmith: error:", "tunesmith: interrupted"))]
    return said[-1] if said else (lines[-1] if lines else "")


def _marker(folder: Path) -> dict[str, Any]:
    marker = read_marker(folder) or {}
    return {k: marker[k] for k in ("task", "created") if k in marker}


def _summary(folder: Path) -> dict[str, Any]:
    try:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    test = metrics.get("finetuned", {}).get("test", {})
    key = next((k for k in _HEADLINE if isinstance(test.get(k), int | float)), None)
    return {"metric": key, "score": test[key]} if key else {}
