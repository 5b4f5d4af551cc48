"""The page's FastAPI app: the page itself, and the JSON and event-stream routes its script calls.

GET / the page; GET /api/runs the runs; POST /api/runs start one (400 with the reason for a bad form, 409
when --max-running trainings are under way); GET /api/runs/NAME its state; POST /api/runs/NAME/stop;
GET /api/runs/NAME/events server-sent events as log.jsonl grows (`train` and `eval` lines, `status`
changes, one `end`); POST /api/runs/NAME/try a finished run labels a text or answers a chat turn;
GET /runs/NAME/report its report.html. Only runs under the runs folder, or started by
the page, are ever read: a name is never a path.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from tunesmith.errors import TunesmithError
from tunesmith.models.config import METHODS
from tunesmith.models.registry import ALIASES
from tunesmith.tasks import TASK_NAMES
from tunesmith.ui.page import PAGE
from tunesmith.ui.runs import RunManager, RunsBusy, StartRequest
from tunesmith.ui.trying import LoadedRuns

_MAX_BODY = 64 * 1024  # a form, not a data file: the data stays on the machine, named by its path
_POLL_S = 0.5
_MAX_TEXT = 20_000  # characters in one text or message, as `serve` bounds them
Text = Annotated[str, Field(max_length=512)]


class StartBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=64)]
    train: Annotated[str, Field(min_length=1, max_length=4096)]
    task: Text = "classification"
    model: Annotated[str, Field(min_length=1, max_length=512)] = "multilingual-e5-small"
    method: Text = "full"
    text_column: Text | None = None
    label_column: Text | None = None
    epochs: Annotated[float, Field(gt=0, le=100)] | None = None
    lr: Annotated[float, Field(gt=0, le=1)] | None = None
    batch_size: Annotated[int, Field(ge=1, le=4096)] | None = None


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: Annotated[str, Field(max_length=_MAX_TEXT)]


class TryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, Field(min_length=1, max_length=_MAX_TEXT)]
    history: Annotated[list[Turn], Field(max_length=64)] = []


def build_ui_app(manager: RunManager, loaded: LoadedRuns | None = None) -> FastAPI:
    loaded = loaded or LoadedRuns()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(manager.close)

    app = FastAPI(title="tunesmith ui", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def bounded(request: Request, call_next: Any) -> Any:
        if int(request.headers.get("content-length") or 0) > _MAX_BODY:
            return JSONResponse({"error": f"request body over {_MAX_BODY} bytes"}, status_code=413)
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    @app.get("/api/choices")
    async def choices() -> dict[str, Any]:
        return {"tasks": list(TASK_NAMES), "methods": list(METHODS), "models": sorted(ALIASES)}

    @app.get("/api/runs")
    async def runs() -> dict[str, Any]:
        return {"runs": await asyncio.to_thread(manager.runs)}

    @app.post("/api/runs", status_code=201)
    async def start(body: StartBody) -> dict[str, Any]:
        if body.task not in TASK_NAMES:
            raise HTTPException(400, f"task: one of {', '.join(TASK_NAMES)}")
        if body.method not in METHODS:
            raise HTTPException(400, f"method: one of {', '.join(METHODS)}")
        try:
            return manager.start(StartRequest(**body.model_dump()))
        except RunsBusy as e:
            raise HTTPException(409, str(e)) from None
        except TunesmithError as e:
            raise HTTPException(400, str(e)) from None

    @app.get("/api/runs/{name}")
    async def status(name: str) -> dict[str, Any]:
        return manager.status(_known(manager, name))

    @app.post("/api/runs/{name}/stop")
    async def stop(name: str) -> dict[str, Any]:
        try:
            return manager.stop(_known(manager, name))
        except TunesmithError as e:
            raise HTTPException(409, str(e)) from None

    @app.get("/api/runs/{name}/events")
    async def events(name: str, request: Request) -> StreamingResponse:
        stream = _events(manager, _known(manager, name), request)
        return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/api/runs/{name}/try")
    async def try_run(name: str, body: TryBody) -> dict[str, Any]:
        if manager.status(_known(manager, name))["state"] != "finished":
            raise HTTPException(409, f"{name} has not finished: only a finished run can be tried")
        history = [t.model_dump() for t in body.history]
        try:
            return await asyncio.to_thread(loaded.reply, manager.root / name, body.text, history)
        except TunesmithError as e:
            raise HTTPException(400, str(e)) from None

    @app.get("/runs/{name}/report")
    async def report(name: str) -> FileResponse:
        path = manager.root / _known(manager, name) / "report.html"
        if not path.is_file():
            raise HTTPException(404, f"{name} has no report.html yet")
        return FileResponse(path, media_type="text/html")

    @app.exception_handler(HTTPException)
    async def error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        return JSONResponse({"error": f"{field}: {first['msg']}"}, status_code=400)

    return app


def _known(manager: RunManager, name: str) -> str:
    if not manager.known(name):
        raise HTTPException(404, f"no run named {name!r} under {manager.root}")
    return name


async def _events(manager: RunManager, name: str, request: Request) -> AsyncIterator[str]:
    """Every log line so far, then each new one as the run writes it, until the run is no longer running."""
    offset, last = 0, None
    while True:
        lines, offset = await asyncio.to_thread(manager.log_lines, name, offset)
        for line in lines:
            yield _event(line.get("type", "train"), line)
        state = await asyncio.to_thread(manager.status, name)
        if state != last:
            yield _event("status", state)
            last = state
        if state["state"] != "running":
            lines, offset = await asyncio.to_thread(manager.log_lines, name, offset)  # what it wrote as it ended
            for line in lines:
                yield _event(line.get("type", "train"), line)
            yield _event("end", state)
            return
        if await request.is_disconnected():
            return
        await asyncio.sleep(_POLL_S)


def _event(kind: str, payload: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n"
