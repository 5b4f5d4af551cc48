"""`tunesmith ui`'s settings: where runs live, where the page listens, how many trainings run at once.

One dataclass is both the command's flags and the Python API (`tunesmith.ui.run_ui(UiConfig(port=0))`).
"""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.fields import check_range, option


@dataclass
class UiConfig:
    runs_dir: str = option("runs", "folder whose runs the page lists, and where the runs it starts are written")
    host: str = option("127.0.0.1", "address to listen on; the page starts trainings, so keep it on this machine")
    port: int = option(7860, "port to listen on (0: any free port, printed at start)")
    max_running: int = option(1, "trainings at once (each more shares the same cores and all run slower)")

    def validate(self) -> UiConfig:
        check_range("port", self.port, at_least=0, at_most=65535)
        check_range("max-running", self.max_running, at_least=1, at_most=16)
        return self
