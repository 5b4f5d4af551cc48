"""`tunesmith ui`: a page to start runs from a form, watch them train, stop them, and open their reports.

`run_ui(UiConfig(port=0))` binds the port (a taken port is one clear error), serves until SIGTERM or Ctrl-C,
then stops any training it started: nothing trains on after the page is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tunesmith.serve import bind_socket, signals_end_quietly
from tunesmith.ui.app import build_ui_app
from tunesmith.ui.config import UiConfig
from tunesmith.ui.runs import RunManager

__all__ = ["RunManager", "UiConfig", "build_ui_app", "run_ui"]

log = logging.getLogger("tunesmith")


def run_ui(cfg: UiConfig, on_ready: Callable[[str], None] | None = None) -> None:
    import uvicorn

    cfg.validate()
    sock = bind_socket(cfg.host, cfg.port)
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
    if host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("listening on %s: anyone who can reach it can start trainings on this machine", host)
    server = uvicorn.Server(uvicorn.Config(build_ui_app(RunManager(cfg)), log_level="warning", lifespan="on"))
    log.info("tunesmith ui on %s (runs in %s; Ctrl-C stops it)", url, cfg.runs_dir)
    if on_ready:
        on_ready(url)
    with signals_end_quietly():
        server.run(sockets=[sock])
