"""The FastAPI app: routes, the API key, body limits, and the per-model workers started and stopped with it.

Routes (all JSON; errors in OpenAI's shape, see `serve/errors.py`):
- `GET /health`: always open, for load balancers.
- `GET /v1/models`, `GET /v1/models/{name}`: the served runs, OpenAI's list shape plus task and routes.
- `POST /v1/classify`: classification, regression and multilabel runs; one text or a list.
- `POST /v1/chat/completions`: sft runs (and seq2seq, one user turn), OpenAI's chat API, streaming included.
- `POST /v1/completions`: generative runs; each prompt is asked as `tunesmith generate` asks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from tunesmith.data.chat import Conversation
from tunesmith.errors import TunesmithError
from tunesmith.inference import ClassifierRun, GenerativeRun, Sampling, predict_texts
from tunesmith.serve.batcher import MicroBatcher
from tunesmith.serve.config import ServeConfig
from tunesmith.serve.errors import ApiError, ClientGone, error_body, error_response, install_handlers
from tunesmith.serve.generation import Finished, Generator
from tunesmith.serve.models import Served
from tunesmith.serve.schemas import ChatRequest, ClassifyRequest, CompletionRequest, Message

# How a classifier's call is cut into forward passes on a CPU: length-sorted passes of at most 8 texts, none
# padded past twice its shortest text. `python bench/serve_passes.py` on the demo classifier (2-core Xeon; 12
# calls of 14 reviews drawn at random, as the service gathers them, median of 3): PyTorch 66.8 texts/s, against
# 60.4 in passes of 8 without the length rule, 45.5 in passes of 16 and 40.8 one text at a time; its ONNX int8
# export 85.2, against 74.1, 47.1 and 84.1. On a GPU the whole call is one pass.
CPU_FORWARD_BATCH = 8
CPU_LENGTH_SPREAD = 2.0


T = TypeVar("T")


class Workers:
    """What each served run needs at request time: a micro-batcher for a classifier, a generator otherwise."""

    def __init__(self, served: dict[str, Served], cfg: ServeConfig) -> None:
        self.served, self.cfg = served, cfg
        self.batchers: dict[str, MicroBatcher] = {}
        self.generators: dict[str, Generator] = {}

    def start(self) -> None:
        for name, s in self.served.items():
            if isinstance(s.run, GenerativeRun):
                self.generators[name] = Generator(s.run, self.cfg.max_queue)
            else:
                batcher = MicroBatcher(
                    _scorer(s.run, self.cfg), self.cfg.max_batch_size, self.cfg.max_wait_ms / 1000, self.cfg.max_queue
                )
                batcher.start()
                self.batchers[name] = batcher

    async def stop(self) -> None:
        for batcher in self.batchers.values():
            await batcher.stop()
        for generator in self.generators.values():
            generator.close()

    def generator(self, name: str | None) -> tuple[Served, Generator]:
        """The generative run a request names (or the only one), and the generator that answers with it."""
        served = self.pick(name, generative=True)
        return served, self.generators[served.name]

    def pick(self, name: str | None, generative: bool) -> Served:
        """The run a request names, or the only one of its kind when it names none."""
        kind = [s for s in self.served.values() if s.generative == generative]
        what = "generative" if generative else "classifier"
        if not kind:
            others = ", ".join(f"{s.name} ({s.task})" for s in self.served.values())
            raise ApiError(400, f"model: no {what} run is served here; served: {others}", "model")
        if name is None:
            if len(kind) == 1:
                return kind[0]
            names = ", ".join(s.name for s in kind)
            raise ApiError(400, f"model: name one of the {what} runs served ({names})", "model")
        served = self.served.get(name)
        if served is None:
            names = ", ".join(self.served)
            raise ApiError(404, f"model: no run named {name!r} is served; served: {names}", "model", "model_not_found")
        if served.generative != generative:
            routes = " and ".join(served.routes())
            raise ApiError(400, f"model: {name} is a {served.task} run; it answers {routes}", "model")
        return served


def _scorer(run: ClassifierRun, cfg: ServeConfig) -> Callable[[list[str]], list[dict[str, Any]]]:
    gpu = run.device.type == "cuda"
    forward = cfg.forward_batch_size or (max(cfg.max_batch_size, cfg.max_texts) if gpu else CPU_FORWARD_BATCH)
    spread = None if gpu else CPU_LENGTH_SPREAD
    return lambda texts: predict_texts(run, texts, forward, spread)


def build_app(served: dict[str, Served], cfg: ServeConfig) -> FastAPI:
    """The service for `served`; the caller runs it (uvicorn, or httpx's ASGI transport in tests)."""
    workers = Workers(served, cfg)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        workers.start()
        yield
        await workers.stop()

    app = FastAPI(title="tunesmith", summary="fine-tuned runs behind an OpenAI-compatible API", lifespan=lifespan)
    app.state.workers = workers
    install_handlers(app)
    app.add_middleware(Gate, limit=cfg.max_body_bytes, key=cfg.key())

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Open without a key, for load balancers; the counters say how the classifiers batch."""
        batching = {
            name: {"texts": b.texts, "model_calls": b.calls, "waiting": b.queued_texts}
            for name, b in workers.batchers.items()
        }
        return {"status": "ok", "models": list(served), "batching": batching}

    v1 = APIRouter(prefix="/v1")
    _model_routes(v1, workers)
    _classify_route(v1, workers, cfg)
    _generation_routes(v1, workers, cfg)
    app.include_router(v1)
    return app


def _model_routes(router: APIRouter, workers: Workers) -> None:
    def card(s: Served) -> dict[str, Any]:
        return {
            "id": s.name,
            "object": "model",
            "created": s.created,
            "owned_by": "tunesmith",
            "task": s.task,
            "routes": s.routes(),
        }

    @router.get("/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [card(s) for s in workers.served.values()]}

    @router.get("/models/{name:path}")
    async def model(name: str) -> dict[str, Any]:
        if name not in workers.served:
            raise ApiError(404, f"no run named {name!r} is served", "model", "model_not_found")
        return card(workers.served[name])


def _classify_route(router: APIRouter, workers: Workers, cfg: ServeConfig) -> None:
    @router.post("/classify")
    async def classify(body: ClassifyRequest) -> dict[str, Any]:
        served = workers.pick(body.model, generative=False)
        texts = [body.input] if isinstance(body.input, str) else body.input
        param = "input" if isinstance(body.input, str) else None
        if not texts:
            raise ApiError(400, "input: give a text or a non-empty list of texts", "input")
        if len(texts) > cfg.max_texts:
            raise ApiError(400, f"input: {len(texts)} texts, more than --max-texts {cfg.max_texts}", "input")
        for i, text in enumerate(texts):
            _check_text(text, param or f"input[{i}]", cfg)
        rows = await workers.batchers[served.name].submit(texts)
        return {
            "object": "list",
            "model": served.name,
            "task": served.task,
            "data": [{"index": i, **row} for i, row in enumerate(rows)],
        }


def _check_text(text: str, param: str, cfg: ServeConfig, empty_ok: bool = False) -> None:
    if len(text) > cfg.max_text_chars:
        raise ApiError(400, f"{param}: {len(text)} characters, more than --max-text-chars {cfg.max_text_chars}", param)
    if not empty_ok and not text.strip():
        raise ApiError(400, f"{param}: the text is empty", param)


# --- generation ---------------------------------------------------------------------------------------


def _sampling(body: ChatRequest | CompletionRequest, cfg: ServeConfig) -> Sampling:
    asked = body.answer_tokens()
    if asked is not None and asked > cfg.max_tokens:
        param = "max_completion_tokens" if getattr(body, "max_completion_tokens", None) else "max_tokens"
        raise ApiError(400, f"{param}: {asked} is more than this server allows (--max-tokens {cfg.max_tokens})", param)
    # Left out, temperature is 0 (greedy) as in `generate`, `chat` and the run's own evaluation: the answers its
    # scores measured, the same for the same question. OpenAI's default of 1 would sample.
    temperature = body.temperature or 0.0
    return Sampling(asked or cfg.max_tokens, temperature, 1.0 if body.top_p is None else body.top_p).validate()


def _conversation(run: GenerativeRun, messages: list[Message], cfg: ServeConfig) -> Conversation:
    """The request's messages as the run was trained to read them: its system prompt when the request has
    none, each user message through its prompt template."""
    if len(messages) > cfg.max_messages:
        raise ApiError(400, f"messages: {len(messages)}, more than --max-messages {cfg.max_messages}", "messages")
    system: list[str] = []
    turns: Conversation = []
    for i, m in enumerate(messages):
        text = m.text()
        _check_text(text, f"messages[{i}].content", cfg, empty_ok=m.role != "user")
        if m.role in ("system", "developer"):
            if turns:
                raise ApiError(400, f"messages[{i}]: a system message must come before the conversation", "messages")
            system.append(text)
        else:
            turns.append(run.user_turn(text) if m.role == "user" else {"role": "assistant", "content": text})
    if not turns or turns[-1]["role"] != "user":
        raise ApiError(400, "messages: the last message must be the user's", "messages")
    return [*run.opening("\n\n".join(system) if system else None), *turns]


async def _prompt(generator: Generator, history: Conversation, param: str) -> list[int]:
    try:
        ids = await generator.prompt(history)
    except TunesmithError as e:  # e.g. a seq2seq run given a conversation of several user turns
        raise ApiError(400, f"{param}: {e}", param) from None
    limit = generator.run.lm.max_length
    if len(ids) > limit:
        raise ApiError(
            400,
            f"{param}: the prompt is {len(ids)} tokens, more than the {limit} this run was trained on "
            "(its max_length); send a shorter one",
            param,
        )
    return ids


def _fit(generator: Generator, prompt: list[int], sampling: Sampling, param: str) -> Sampling:
    """`sampling` with max_tokens cut to the positions the model has left after this prompt."""
    room = generator.room(prompt)
    if room is None or room >= sampling.max_new_tokens:
        return sampling
    if room < 1:
        raise ApiError(400, f"{param}: the prompt leaves the model no positions to answer in", param)
    return dataclasses.replace(sampling, max_new_tokens=room)


async def _unless_gone(request: Request, work: Awaitable[T]) -> T:
    """`work`, cancelled if the client leaves first: uvicorn does not cancel a handler whose client left,
    and an abandoned answer would hold the model for up to max_tokens."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientGone
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _generation_routes(router: APIRouter, workers: Workers, cfg: ServeConfig) -> None:
    @router.post("/chat/completions", response_model=None)
    async def chat(body: ChatRequest, request: Request) -> dict[str, Any] | StreamingResponse:
        served, generator = workers.generator(body.model)
        run = generator.run
        try:
            history = _conversation(run, body.messages, cfg)
        except TunesmithError as e:
            raise ApiError(400, f"messages: {e}", "messages") from None
        prompt = await _prompt(generator, history, "messages")
        sampling = _fit(generator, prompt, _sampling(body, cfg), "messages")
        call = _Call("chatcmpl", "chat.completion", served.name)
        answer = generator.stream(prompt, sampling, body.stops(), body.seed)
        if body.stream:
            return await _stream(call, _indexed([(0, answer)]), body, request, chat=True)
        done = await _unless_gone(request, _finish(answer))
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": done.text},
            "finish_reason": done.reason,
            "logprobs": None,
        }
        return call.body([choice], _usage(done.prompt_tokens, done.completion_tokens))

    @router.post("/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> dict[str, Any] | StreamingResponse:
        served, generator = workers.generator(body.model)
        run = generator.run
        sampling = _sampling(body, cfg)
        prompts = body.prompts()
        if not prompts or len(prompts) > cfg.max_texts:
            raise ApiError(400, f"prompt: give 1 to {cfg.max_texts} prompts (--max-texts)", "prompt")
        answers = []
        for i, text in enumerate(prompts):
            param = "prompt" if isinstance(body.prompt, str) else f"prompt[{i}]"
            _check_text(text, param, cfg)
            try:
                history = [*run.opening(), run.user_turn(text)]
            except TunesmithError as e:
                raise ApiError(400, f"{param}: {e}", param) from None
            ids = await _prompt(generator, history, param)
            answers.append((i, generator.stream(ids, _fit(generator, ids, sampling, param), body.stops(), body.seed)))
        call = _Call("cmpl", "text_completion", served.name)
        if body.stream:
            return await _stream(call, _indexed(answers), body, request, chat=False)
        choices, prompt_tokens, answer_tokens = [], 0, 0
        for i, answer in answers:
            done = await _unless_gone(request, _finish(answer))
            choices.append({"index": i, "text": done.text, "finish_reason": done.reason, "logprobs": None})
            prompt_tokens, answer_tokens = prompt_tokens + done.prompt_tokens, answer_tokens + done.completion_tokens
        return call.body(choices, _usage(prompt_tokens, answer_tokens))


async def _finish(answer: AsyncGenerator[str | Finished, None]) -> Finished:
    """The whole answer at once: the stream run to its end."""
    async with contextlib.aclosing(answer) as pieces:
        async for item in pieces:
            if isinstance(item, Finished):
                return item
    raise RuntimeError("generation ended without finishing")  # Generator.stream always ends with Finished


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class _Call:
    """One response's id, object type and time, shared by all its chunks."""

    def __init__(self, prefix: str, kind: str, model: str) -> None:
        self.id, self.kind, self.model = f"{prefix}-{uuid.uuid4().hex[:24]}", kind, model
        self.created = int(time.time())

    def body(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None, chunk: bool = False) -> dict:
        kind = f"{self.kind}.chunk" if chunk and self.kind == "chat.completion" else self.kind
        out: dict[str, Any] = {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if usage is not None or not chunk:
            out["usage"] = usage
        return out


async def _indexed(
    answers: list[tuple[int, AsyncGenerator[str | Finished, None]]],
) -> AsyncGenerator[tuple[int, str | Finished], None]:
    """Each answer's pieces in turn, tagged with its choice index; each is closed (its generation stopped)
    when this is, however it ends."""
    for index, answer in answers:
        async with contextlib.aclosing(answer) as pieces:
            async for item in pieces:
                yield index, item


async def _stream(
    call: _Call,
    indexed: AsyncGenerator[tuple[int, str | Finished], None],
    body: ChatRequest | CompletionRequest,
    request: Request,
    chat: bool,
) -> StreamingResponse:
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`. The first piece is awaited
    before the response starts, so a full queue still answers 503 and not a broken stream."""
    try:
        first: tuple[int, str | Finished] | None = await _unless_gone(request, anext(indexed))
    except StopAsyncIteration:
        first = None
    except BaseException:
        await indexed.aclose()
        raise

    def chunk(index: int, item: str | Finished) -> str:
        done = isinstance(item, Finished)
        if chat:
            choice: dict[str, Any] = {"index": index, "delta": {} if done else {"content": item}}
        else:
            choice = {"index": index, "text": "" if done else item}
        choice.update(finish_reason=item.reason if done else None, logprobs=None)
        return _event(call.body([choice], chunk=True))

    async def events() -> AsyncGenerator[str, None]:
        prompt_tokens = answer_tokens = 0
        try:
            if chat:
                start = {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "finish_reason": None,
                    "logprobs": None,
                }
                yield _event(call.body([start], chunk=True))
            pending = [] if first is None else [first]
            while True:
                for index, item in pending:
                    if isinstance(item, Finished):
                        prompt_tokens += item.prompt_tokens
                        answer_tokens += item.completion_tokens
                    yield chunk(index, item)
                try:
                    pending = [await anext(indexed)]
                except StopAsyncIteration:
                    break
            if body.wants_usage_chunk():
                yield _event(call.body([], _usage(prompt_tokens, answer_tokens), chunk=True))
            yield "data: [DONE]\n\n"
        except Exception as e:  # the status line is sent: the error goes in the stream, as OpenAI sends it
            yield _event(error_body(500, f"generation failed ({type(e).__name__}: {e})"))
        finally:
            await indexed.aclose()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return _EventStream(events(), media_type="text/event-stream", headers=headers)


class _EventStream(StreamingResponse):
    """A stream whose events are always closed, and so its generation stopped, when the response ends:
    Starlette leaves the body iterator paused where a client that left interrupted it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


class Gate:
    """Before any body is read: a `/v1` request without the API key gets 401, and a body over the limit 413,
    by its Content-Length, or as a chunked body passes the limit."""

    def __init__(self, app: ASGIApp, limit: int, key: str | None) -> None:
        self.app, self.limit, self.key = app, limit, key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        refusal = self._refusal(scope["path"], headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"the body is more than --max-body-bytes {self.limit} bytes")
            return message

        await self.app(scope, limited, send)

    def _refusal(self, path: str, headers: dict[bytes, bytes]) -> JSONResponse | None:
        if self.key is not None and path.startswith("/v1") and not _has_key(headers, self.key):
            message = "a valid API key is required: send `Authorization: Bearer KEY`"
            return error_response(401, message, code="invalid_api_key")
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            size = declared.decode(errors="replace")
            return error_response(413, f"the body is {size} bytes, more than --max-body-bytes {self.limit}")
        return None


def _has_key(headers: dict[bytes, bytes], key: str) -> bool:
    scheme, _, token = headers.get(b"authorization", b"").decode(errors="replace").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())
