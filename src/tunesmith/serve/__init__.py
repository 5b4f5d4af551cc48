"""`tunesmith serve`: finished runs behind an HTTP service (FastAPI on uvicorn), with OpenAI's chat API.

`serve(["runs/x", "chat=runs/chat"], ServeConfig(port=8000))` loads each run as `predict` and `chat` do,
binds the port (a taken port is one clear error, before any request), and serves until SIGTERM or Ctrl-C,
when requests in flight get `shutdown_timeout` seconds to finish.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator

from tunesmith.errors import TunesmithError
from tunesmith.serve.app import build_app
from tunesmith.serve.config import ServeConfig
from tunesmith.serve.models import Served, load_served

__all__ = ["ServeConfig", "Served", "bind_socket", "build_app", "load_served", "serve", "signals_end_quietly"]

log = logging.getLogger("tunesmith")


def serve(specs: list[str], cfg: ServeConfig, on_ready: Callable[[str], None] | None = None) -> None:
    import uvicorn

    cfg.validate()
    if not specs:
        raise TunesmithError("name at least one run folder to serve")
    served = load_served(specs, cfg.device, cfg.trust_remote_code)
    sock = bind_socket(cfg.host, cfg.port)
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
    for s in served.values():
        log.info("serving %s (%s, %s) from %s", s.name, s.task, " ".join(s.routes()), s.path)
    if cfg.key() is None and host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("listening on %s without an API key: anyone who can reach it can use it", host)
    config = uvicorn.Config(
        build_app(served, cfg),
        log_level="warning",
        access_log=cfg.access_log,
        timeout_graceful_shutdown=cfg.shutdown_timeout,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    log.info("listening on %s (Ctrl-C or SIGTERM stops it)", url)
    if on_ready:
        on_ready(url)
    with signals_end_quietly() as caught:
        server.run(sockets=[sock])
    log.info("stopped%s", f" on {signal.Signals(caught[0]).name}" if caught else "")


@contextlib.contextmanager
def signals_end_quietly() -> Iterator[list[int]]:
    """uvicorn drains the requests in flight on SIGTERM or Ctrl-C, then raises the signal again under the
    handler it found. Found here, the signal is noted and `serve` returns: the command exits 0 after a
    clean shutdown, instead of dying by the signal or reporting an interrupted training run."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    previous = {sig: signal.signal(sig, lambda s, _: caught.append(s)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not left 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say they are TCP,
    # and with Nagle on, every reply on a kept-alive connection waited 40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise TunesmithError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
