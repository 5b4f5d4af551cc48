"""The runs a server answers with, each under a name, loaded the way `predict` and `chat` load them
(`inference.open_run`): run folders and export folders (ONNX through ONNX Runtime, GGUF) alike."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.inference import ClassifierRun, GenerativeRun, open_run

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/=-]{0,127}$")


@dataclass
class Served:
    name: str
    path: Path
    run: ClassifierRun | GenerativeRun
    created: int  # when the run finished, as OpenAI's `created`: seconds since 1970

    @property
    def task(self) -> str:
        return self.run.cfg.task

    @property
    def generative(self) -> bool:
        return isinstance(self.run, GenerativeRun)

    def routes(self) -> list[str]:
        return ["/v1/chat/completions", "/v1/completions"] if self.generative else ["/v1/classify"]


def parse_spec(spec: str) -> tuple[str, Path]:
    """`RUN` (named after its folder) or `NAME=RUN`."""
    if "=" in spec and not Path(spec).exists():
        name, path = spec.split("=", 1)
    else:
        path = spec
        name = Path(spec.rstrip("/\\")).name
    if not _NAME.match(name):
        raise TunesmithError(
            f"{spec}: {name!r} cannot name a model (letters, digits and . _ : / = -, up to 128); give one as NAME=RUN"
        )
    return name, Path(path)


def load_served(specs: list[str], device: str = "auto", trust_remote_code: bool = False) -> dict[str, Served]:
    named = [parse_spec(s) for s in specs]
    seen: dict[str, Path] = {}
    for name, path in named:
        if name in seen:
            raise TunesmithError(f"two runs are named {name!r} ({seen[name]} and {path}); name one as NAME=RUN")
        seen[name] = path
    served = {}
    for name, path in named:
        if not path.is_dir():
            raise TunesmithError(f"{path} is not a folder; give a run folder or an export folder")
        run = open_run(path, device, trust_remote_code)
        finished = path / "metrics.json"
        stamp = finished if finished.exists() else path
        served[name] = Served(name, path, run, int(stamp.stat().st_mtime))
    return served
