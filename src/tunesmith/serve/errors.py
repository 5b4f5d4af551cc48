"""Every error the service answers, in OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`), so the
official clients raise their usual exceptions with our message. A bad request is a 4xx naming the field; an
error of ours is a 500 that is logged, and the server goes on serving."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from tunesmith.errors import TunesmithError
from tunesmith.serve.batcher import Busy

log = logging.getLogger("tunesmith")

_TYPES = {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error", 503: "overloaded_error"}


class ClientGone(Exception):
    """The client closed its connection before its answer was ready."""


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def field_path(loc: tuple[Any, ...]) -> str | None:
    """pydantic's ("body", "messages", 0, "content") as "messages[0].content"."""
    path = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in _BRANCHES or "[" in str(part):
            continue  # the branch of a union pydantic tried ("str", "list[str]"), not a field the caller wrote
        else:
            path += f".{part}" if path else str(part)
    return path or None


_BRANCHES = {"str", "int", "float", "bool"}


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """The most telling error: a field that should not be there (a misspelling), else the one pydantic got
    deepest into (in `str | list[str]`, the list item that is not a string, not "input is not a string")."""
    errors = exc.errors()
    first = max(errors, key=lambda e: (e.get("type") == "extra_forbidden", len(e.get("loc", ()))))
    if first.get("type") == "json_invalid":
        return f"the body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')})", None
    param = field_path(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if param is None and ": " in message:  # a check across fields names its field first ("n: ...")
        return message, message.split(": ", 1)[0]
    if param is None:
        return f"body: {message}", None
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{param}: {message}{more}", param


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.param, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(exc)
        return error_response(400, message, param)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.url.path}; see GET /v1/models and the README's serve section"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return error_response(exc.status_code, message)

    @app.exception_handler(Busy)
    async def _busy(_: Request, exc: Busy) -> JSONResponse:
        return error_response(503, f"the server is busy: {exc}; retry shortly", code="overloaded")

    @app.exception_handler(ClientGone)
    async def _gone(_: Request, exc: ClientGone) -> JSONResponse:
        return error_response(499, "the client closed the connection; its generation was stopped")

    @app.exception_handler(TunesmithError)
    async def _refused(_: Request, exc: TunesmithError) -> JSONResponse:
        return error_response(400, str(exc))

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        log.error("request failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        return error_response(500, f"the server failed on this request ({type(exc).__name__}); see its log")
