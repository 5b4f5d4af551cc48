"""`tunesmith serve`: every kind of run behind HTTP, called the way users call it (the official `openai`
client, httpx), bad requests of every kind answered with a 4xx naming the field, and a clean SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
import torch
import uvicorn
from fastapi import FastAPI

from conftest import INTENTS, Result, build_tiny_tokenizer, fast_intents_run, one_error_line, train_args
from test_generative_run import sft_config, write_pairs
from tunesmith.cli import main
from tunesmith.config import RunConfig
from tunesmith.evaluate.generate import sampling_kwargs
from tunesmith.evaluate.scores import length_batches
from tunesmith.inference import Sampling, generate_answers, predict_texts
from tunesmith.recipes.generative import train_generative
from tunesmith.serve import ServeConfig, bind_socket, build_app, load_served
from tunesmith.serve.batcher import Busy, MicroBatcher
from tunesmith.serve.generation import Detokenizer
from tunesmith.serve.models import Served, parse_spec

KEY = "test-key-123"


# --- runs, served once per module --------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tiny_model: str, tiny_lm: str, tiny_t5: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("serve")
    out = {"intents": fast_intents_run(tiny_model, folder, "intents")}
    rng = random.Random(0)
    words = " ".join(t for texts in INTENTS.values() for t in texts).split()
    lines = ["text,score"] + [
        f"{' '.join(rng.choice(words) for _ in range(n))},{n / 2}" for n in (rng.randint(1, 12) for _ in range(40))
    ]
    (folder / "lengths.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    fast = ["--epochs", "1", "--batch-size", "8", "--lr", "1e-3", "--no-baseline"]
    reg = train_args(tiny_model, folder / "lengths.csv", str(folder / "lengths"), "--task", "regression", *fast)
    assert main([*reg, "--label-column", "score"]) == 0
    out["lengths"] = folder / "lengths"
    labels = list(INTENTS)
    ml = ["text,labels"] + [
        f"{' and '.join(rng.choice(INTENTS[x]) for x in picked)},{'|'.join(picked)}"
        for picked in (sorted(rng.sample(labels, rng.choice([1, 2]))) for _ in range(40))
    ]
    (folder / "ml.csv").write_text("\n".join(ml) + "\n", encoding="utf-8")
    assert (
        main(
            [
                *train_args(tiny_model, folder / "ml.csv", str(folder / "tags"), "--task", "multilabel", *fast),
                "--label-column",
                "labels",
                "--label-separator",
                "|",
            ]
        )
        == 0
    )
    out["tags"] = folder / "tags"
    for name, method in (("chat", "full"), ("chat-lora", "lora")):  # full: the tiny model learns to say something
        (folder / name).mkdir()
        sft = sft_config(tiny_lm, folder / name, method=method)
        train_generative(sft)
        out[name] = Path(sft.output)
    s2s = RunConfig(task="seq2seq", output=str(folder / "s2s"))
    s2s.data.train = str(write_pairs(folder / "pairs.csv", 40))
    s2s.data.text_columns, s2s.data.label_column, s2s.data.max_length = ["src"], "tgt", 64
    s2s.model.name, s2s.method.method = tiny_t5, "full"
    s2s.train.epochs, s2s.train.lr, s2s.train.batch_size = 1, 5e-3, 8
    s2s.eval.max_new_tokens, s2s.eval.baseline = 8, False
    train_generative(s2s)
    out["s2s"] = Path(s2s.output)
    return out


@pytest.fixture(scope="module")
def served(runs: dict[str, Path]) -> dict[str, Served]:
    return load_served([f"{name}={path}" for name, path in runs.items()], "cpu")


@contextlib.contextmanager
def live(served: dict[str, Served], **settings: object) -> Iterator[tuple[str, FastAPI]]:
    """The app on uvicorn in a thread, on a free port: real HTTP, as a user's client sees it."""
    app = build_app(served, ServeConfig(**settings).validate())  # type: ignore[arg-type]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    sock = bind_socket("127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), 30, "the server did not start")
    assert server.started, "the server did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", app
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module")
def server(served: dict[str, Served]) -> Iterator[tuple[str, FastAPI]]:
    with live(
        served, max_texts=8, max_text_chars=500, max_messages=6, max_tokens=64, max_body_bytes=20_000, max_wait_ms=20
    ) as running:
        yield running


@pytest.fixture(scope="module")
def url(server: tuple[str, FastAPI]) -> str:
    return server[0]


@pytest.fixture(scope="module")
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def wait_until(done: Callable[[], bool], seconds: float, failure: str | Callable[[], str]) -> None:
    """Poll `done` until it holds; fail with `failure` (a text, or a function making one then) past `seconds`."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, failure() if callable(failure) else failure
        time.sleep(0.02)


def post(url: str, route: str, body: object, **kwargs: object) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body, ensure_ascii=False)
    headers = {"content-type": "application/json", **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    return httpx.post(f"{url}{route}", content=content, headers=headers, timeout=60, **kwargs)  # type: ignore[arg-type]


def refused(response: httpx.Response, status: int, param: str | None, *words: str) -> str:
    """A JSON error in OpenAI's shape, with this status, naming this field."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    for word in words:
        assert word in error["message"], error
    return error["message"]


# --- classifiers ---------------------------------------------------------------------------------------


def test_classify_answers_what_predict_answers(url: str, served: dict[str, Served]) -> None:
    texts = ["where is my parcel", "我想退款", "reset my password please"]
    expected = predict_texts(served["intents"].run, texts)  # type: ignore[arg-type]
    one = post(url, "/v1/classify", {"model": "intents", "input": texts[0]}).json()
    assert one["model"] == "intents" and one["task"] == "classification"
    assert one["data"][0]["label"] == expected[0]["label"]
    assert one["data"][0]["probs"] == pytest.approx(expected[0]["probs"], abs=1e-5)
    batch = post(url, "/v1/classify", {"model": "intents", "input": texts}).json()
    assert [d["index"] for d in batch["data"]] == [0, 1, 2]
    for got, want in zip(batch["data"], expected, strict=True):
        assert got["label"] == want["label"]
        assert sum(got["probs"].values()) == pytest.approx(1, abs=1e-5)
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)


def test_regression_and_multilabel_answer_in_their_own_shape(url: str, served: dict[str, Served]) -> None:
    value = post(url, "/v1/classify", {"model": "lengths", "input": ["parcel late refund"]}).json()
    assert value["task"] == "regression" and isinstance(value["data"][0]["value"], float)
    want = predict_texts(served["lengths"].run, ["parcel late refund"])[0]["value"]  # type: ignore[arg-type]
    assert value["data"][0]["value"] == pytest.approx(want, abs=1e-5)
    tags = post(url, "/v1/classify", {"model": "tags", "input": "refund my purchase and reset my password"}).json()
    row = tags["data"][0]
    assert tags["task"] == "multilabel" and set(row["probs"]) == set(INTENTS)
    assert isinstance(row["labels"], list) and set(row["labels"]) <= set(INTENTS)


def test_concurrent_requests_share_model_calls(url: str, server: tuple[str, FastAPI], served) -> None:
    texts = [f"{t} {i}" for i, t in enumerate(t for group in INTENTS.values() for t in group)][:24]
    batcher = server[1].state.workers.batchers["intents"]
    before = batcher.calls

    async def fire() -> list[dict]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            replies = await asyncio.gather(
                *(http.post("/v1/classify", json={"model": "intents", "input": t}) for t in texts)
            )
        return [r.json()["data"][0] for r in replies]

    answers = asyncio.run(fire())
    expected = predict_texts(served["intents"].run, texts)
    assert [a["label"] for a in answers] == [e["label"] for e in expected]  # each request got its own rows
    for a, e in zip(answers, expected, strict=True):
        assert a["probs"] == pytest.approx(e["probs"], abs=1e-4)
    calls = batcher.calls - before
    assert 1 <= calls < len(texts), f"{len(texts)} concurrent requests took {calls} model calls"


def test_length_batches_sort_cap_and_never_pad_past_the_spread() -> None:
    lengths = [10, 3, 4, 30, 5, 11, 12, 6]
    assert length_batches(lengths, 64) == [[1, 2, 4, 7, 0, 5, 6, 3]]
    assert length_batches(lengths, 3) == [[1, 2, 4], [7, 0, 5], [6, 3]]
    assert length_batches(lengths, 8, max_spread=2.0) == [[1, 2, 4, 7], [0, 5, 6], [3]]


def test_an_onnx_export_is_served_through_onnx_runtime(runs: dict[str, Path], tmp_path: Path) -> None:
    export = tmp_path / "intents-onnx"
    assert main(["export", str(runs["intents"]), "--format", "onnx", "--output", str(export)]) == 0
    texts = ["where is my parcel", "我想退款", "reset my password please"]
    served = load_served([f"int8={export}"], "cpu")
    assert type(served["int8"].run.model).__name__ == "OnnxClassifier"
    expected = predict_texts(load_served([str(runs["intents"])], "cpu")["intents"].run, texts)  # type: ignore[arg-type]
    with live(served) as (url, _):
        rows = post(url, "/v1/classify", {"input": texts}).json()["data"]
    assert [r["label"] for r in rows] == [e["label"] for e in expected]
    for r, e in zip(rows, expected, strict=True):
        assert r["probs"] == pytest.approx(e["probs"], abs=1e-4)


def test_micro_batcher_bounds_its_queue_and_survives_a_failing_batch() -> None:
    async def scenario() -> None:
        gate = threading.Event()

        def score(texts: list[str]) -> list[str]:
            gate.wait(5)
            if "boom" in texts:
                raise RuntimeError("model failed")
            return [t.upper() for t in texts]

        batcher = MicroBatcher(score, max_batch=2, max_wait=0.001, max_queued_texts=3)
        batcher.start()
        first = asyncio.create_task(batcher.submit(["a", "b"]))  # taken at once: the model is busy with it
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(batcher.submit(["c", "d", "e"]))
        await asyncio.sleep(0.01)
        with pytest.raises(Busy, match="--max-queue 3"):
            await batcher.submit(["f"])
        gate.set()
        assert await first == ["A", "B"] and await waiting == ["C", "D", "E"]  # a request is never split
        with pytest.raises(RuntimeError, match="model failed"):
            await batcher.submit(["boom"])
        assert await batcher.submit(["ok"]) == ["OK"]  # the worker goes on after a failed batch
        await batcher.stop()

    asyncio.run(scenario())


# --- generative runs through the official openai client ------------------------------------------------


def test_chat_plain_and_streamed_equal_tunesmith_generate(client: openai.OpenAI, served: dict[str, Served]) -> None:
    question = "hello how are you 3"
    want = generate_answers(served["chat"].run, [question], Sampling(max_new_tokens=16))[0]  # type: ignore[arg-type]
    messages = [{"role": "user", "content": question}]
    plain = client.chat.completions.create(model="chat", messages=messages, max_tokens=16)
    assert plain.object == "chat.completion" and plain.model == "chat"
    assert plain.choices[0].message.role == "assistant"
    assert want and plain.choices[0].message.content == want
    assert plain.choices[0].finish_reason in ("stop", "length")
    assert plain.usage.prompt_tokens > 0 and 1 <= plain.usage.completion_tokens <= 16
    stream = client.chat.completions.create(
        model="chat", messages=messages, max_tokens=16, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == want
    finished = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finished == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_a_lora_run_answers_as_generate_does(client: openai.OpenAI, served: dict[str, Served]) -> None:
    want = generate_answers(served["chat-lora"].run, ["你好 2"], Sampling(max_new_tokens=8))[0]  # type: ignore[arg-type]
    reply = client.chat.completions.create(
        model="chat-lora", messages=[{"role": "user", "content": "你好 2"}], max_tokens=8
    )
    assert reply.choices[0].message.content == want


def test_max_tokens_reached_is_finish_reason_length(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "你好 7"}], max_tokens=1, temperature=0
    )
    assert reply.usage.completion_tokens == 1
    assert reply.choices[0].finish_reason == "length"


def test_a_stop_string_ends_the_answer_before_it(client: openai.OpenAI) -> None:
    questions = [
        "hello how are you 3",
        "translate to English: 我喜欢这本书 2",
        "你好 7",
        "what is the capital of France? 1",
    ]
    for question in questions:  # the first the tiny model answers at some length
        messages = [{"role": "user", "content": question}]
        full = client.chat.completions.create(model="chat", messages=messages, max_tokens=24).choices[0].message.content
        if len(full) >= 4:
            break
    assert len(full) >= 4, f"the tiny model answered too little to test a stop string: {full!r}"
    stop = full[2:4]
    expected = full[: full.find(stop)].rstrip()
    cut = client.chat.completions.create(model="chat", messages=messages, max_tokens=24, stop=[stop])
    assert cut.choices[0].message.content == expected and cut.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model="chat", messages=messages, max_tokens=24, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == expected


def test_sampling_with_a_seed_repeats(client: openai.OpenAI) -> None:
    ask = {
        "model": "chat",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 12,
        "temperature": 1.5,
        "top_p": 0.9,
        "seed": 5,
    }
    first = client.chat.completions.create(**ask).choices[0].message.content
    assert client.chat.completions.create(**ask).choices[0].message.content == first


def test_models_lists_every_run_with_its_routes(client: openai.OpenAI, runs: dict[str, Path]) -> None:
    models = {m.id: m for m in client.models.list()}
    assert set(models) == set(runs)
    assert models["chat"].owned_by == "tunesmith" and models["chat"].model_extra["task"] == "sft"
    assert models["intents"].model_extra["routes"] == ["/v1/classify"]
    assert client.models.retrieve("s2s").model_extra["task"] == "seq2seq"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_completions_for_seq2seq_and_sft_runs(client: openai.OpenAI, served: dict[str, Served]) -> None:
    prompts = ["hello how are you 1", "你好 2"]
    for name in ("s2s", "chat"):
        want = generate_answers(served[name].run, prompts, Sampling(max_new_tokens=10))  # type: ignore[arg-type]
        reply = client.completions.create(model=name, prompt=prompts, max_tokens=10)
        assert reply.object == "text_completion"
        assert [c.index for c in reply.choices] == [0, 1]
        assert [c.text for c in reply.choices] == want
        streamed = client.completions.create(model=name, prompt=prompts[1], max_tokens=10, stream=True)
        assert "".join(c.choices[0].text for c in streamed) == want[1]


def test_seq2seq_chat_takes_one_user_turn(client: openai.OpenAI) -> None:
    one = client.chat.completions.create(model="s2s", messages=[{"role": "user", "content": "你好 2"}], max_tokens=6)
    assert one.choices[0].message.content is not None
    with pytest.raises(openai.BadRequestError, match="one source and one target"):
        client.chat.completions.create(
            model="s2s",
            messages=[
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "user", "content": "c"},
            ],
            max_tokens=6,
        )


class SlowAnswer:
    """Stands in for the model's generation on a `Generator`: one token every 10 ms until `stop` is set or
    max_tokens is reached, recording how far it got. A tiny model answers too fast to see a generation cut."""

    def __init__(self, generator: object) -> None:
        self.tokens = generator.run.lm.tokenizer.encode(" hello", add_special_tokens=False)  # type: ignore[attr-defined]
        self.asked: int | None = None
        self.made = 0
        self.cut = False
        self.fail_after: int | None = None  # raise, as a model out of memory would, after this many tokens

    def __call__(self, prompt: list[int], sampling: Sampling, on_token: Callable, stop: threading.Event) -> None:
        self.asked = sampling.max_new_tokens
        for n in range(sampling.max_new_tokens):
            if stop.is_set():
                self.cut = True
                return
            if n == self.fail_after:
                raise RuntimeError("out of memory")
            on_token(self.tokens[n % len(self.tokens)])
            self.made += 1
            time.sleep(0.01)


@pytest.fixture
def slow_chat(served: dict[str, Served], monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, SlowAnswer]]:
    with live({"chat": served["chat"]}, max_tokens=1000) as (url, app):
        generator = app.state.workers.generators["chat"]
        slow = SlowAnswer(generator)
        monkeypatch.setattr(generator, "_generate", slow)
        yield url, slow
        wait_until(lambda: not generator.lock.locked(), 20, "the model was still held after the test")


def test_a_client_gone_mid_stream_stops_its_generation(slow_chat: tuple[str, SlowAnswer]) -> None:
    url, slow = slow_chat
    body = {"model": "chat", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 200, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        next(response.iter_lines())  # the stream started; now the client leaves
    wait_until(lambda: slow.cut, 10, lambda: f"generation went on after the client left ({slow.made} tokens)")
    assert slow.made < 150


def test_a_client_gone_before_a_plain_answer_stops_its_generation(slow_chat: tuple[str, SlowAnswer]) -> None:
    url, slow = slow_chat
    body = {"model": "chat", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 200}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/chat/completions", json=body, timeout=0.5)
    wait_until(lambda: slow.cut, 10, lambda: f"generation went on after the client left ({slow.made} tokens)")
    assert slow.made < 150


def test_a_generation_that_fails_mid_stream_ends_the_stream_with_an_error(slow_chat: tuple[str, SlowAnswer]) -> None:
    url, slow = slow_chat

    slow.fail_after = 6
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0)
    stream = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=50, stream=True
    )
    with pytest.raises(openai.APIError, match="out of memory"):
        list(stream)
    plain = post(url, "/v1/chat/completions", {**CHAT, "max_tokens": 20})
    assert plain.status_code == 500 and "RuntimeError" in plain.json()["error"]["message"]


def test_the_room_left_counts_a_prompt_tunings_virtual_tokens(tiny_lm: str) -> None:
    import peft
    from transformers import AutoModelForCausalLM

    from tunesmith.evaluate.generative import LanguageModel

    base = AutoModelForCausalLM.from_pretrained(tiny_lm)
    tuned = peft.get_peft_model(base, peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5))
    plain = LanguageModel(base, None, "sft", 64, torch.device("cpu"))
    assert plain.room(10) == 256 - 10  # the tiny Llama's 256 positions
    assert LanguageModel(tuned, None, "sft", 64, torch.device("cpu")).room(10) == 256 - 5 - 10


def test_an_answer_is_cut_to_the_positions_the_model_has_left(slow_chat: tuple[str, SlowAnswer]) -> None:
    url, slow = slow_chat
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0)
    reply = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=900)
    limit = 256  # the tiny Llama's max_position_embeddings
    assert slow.asked == limit - reply.usage.prompt_tokens == reply.usage.completion_tokens
    assert reply.choices[0].finish_reason == "length"


# --- bad requests: a 4xx naming the field, and the server goes on ------------------------------------

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}

BAD_CLASSIFY = {
    "no input": ({"model": "intents"}, 400, "input"),
    "input of the wrong type": ({"model": "intents", "input": 5}, 400, "input"),
    "a text of the wrong type": ({"model": "intents", "input": ["ok", 5]}, 400, "input[1]"),
    "a misspelt field": ({"model": "intents", "inputs": ["x"]}, 400, "inputs"),
    "no texts": ({"model": "intents", "input": []}, 400, "input"),
    "too many texts": ({"model": "intents", "input": ["a"] * 9}, 400, "input"),
    "a text too long": ({"model": "intents", "input": ["ok", "x" * 501]}, 400, "input[1]"),
    "an empty text": ({"model": "intents", "input": "   "}, 400, "input"),
    "an unknown model": ({"model": "nope", "input": "x"}, 404, "model"),
    "a generative model": ({"model": "chat", "input": "x"}, 400, "model"),
    "no model, with three classifiers served": ({"input": "x"}, 400, "model"),
}


@pytest.mark.parametrize("case", BAD_CLASSIFY)
def test_bad_classify_requests(url: str, case: str) -> None:
    body, status, param = BAD_CLASSIFY[case]
    refused(post(url, "/v1/classify", body), status, param)


def _chat(**changes: object) -> dict:
    return {**CHAT, **changes}


BAD_CHAT = {
    "no messages": (_chat(messages=[]), "messages"),
    "an unknown role": (_chat(messages=[{"role": "tool", "content": "x"}]), "messages[0].role"),
    "a message without content": (_chat(messages=[{"role": "user"}]), "messages[0].content"),
    "an image part": (
        _chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
        "messages[0].content[0].type",
    ),
    "the last message not the user's": (
        _chat(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]),
        "messages",
    ),
    "a system message after the user's": (
        _chat(messages=[{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]),
        "messages",
    ),
    "too many messages": (_chat(messages=[{"role": "user", "content": "a"}] * 7), "messages"),
    "a message too long": (_chat(messages=[{"role": "user", "content": "x" * 501}]), "messages[0].content"),
    "a prompt longer than the run's max_length": (
        _chat(messages=[{"role": "user", "content": "hello how are you today " * 20}]),
        "messages",
    ),
    "max_tokens 0": (_chat(max_tokens=0), "max_tokens"),
    "max_tokens above the server's cap": (_chat(max_tokens=65), "max_tokens"),
    "max_completion_tokens above the cap": (_chat(max_completion_tokens=100), "max_completion_tokens"),
    "a negative temperature": (_chat(temperature=-1), "temperature"),
    "a temperature above 2": (_chat(temperature=2.5), "temperature"),
    "top_p 0": (_chat(top_p=0), "top_p"),
    "a temperature that is text": (_chat(temperature="hot"), "temperature"),
    "n of 2": (_chat(n=2), "n"),
    "tools": (_chat(tools=[{"type": "function", "function": {"name": "f"}}]), "tools"),
    "a frequency penalty": (_chat(frequency_penalty=0.5), "frequency_penalty"),
    "json mode": (_chat(response_format={"type": "json_object"}), "response_format"),
    "five stop strings": (_chat(stop=["a", "b", "c", "d", "e"]), "stop"),
    "no model": ({k: v for k, v in CHAT.items() if k != "model"}, "model"),
    "a classifier": (_chat(model="intents"), "model"),
}


@pytest.mark.parametrize("case", BAD_CHAT)
def test_bad_chat_requests(url: str, case: str) -> None:
    body, param = BAD_CHAT[case]
    refused(post(url, "/v1/chat/completions", body), 400, param)


def test_classify_on_a_server_of_chat_runs_names_what_is_served(served: dict[str, Served]) -> None:
    with live({"chat": served["chat"]}) as (url, _):
        refused(post(url, "/v1/classify", {"input": "x"}), 400, "model", "no classifier run", "chat (sft)")


def test_bad_completion_requests(url: str) -> None:
    ok = {"model": "s2s", "prompt": "hi", "max_tokens": 4}
    refused(post(url, "/v1/completions", {**ok, "prompt": []}), 400, "prompt")
    refused(post(url, "/v1/completions", {**ok, "prompt": ["ok", ""]}), 400, "prompt[1]")
    refused(post(url, "/v1/completions", {**ok, "echo": True}), 400, "echo")
    refused(post(url, "/v1/completions", {**ok, "max_tokens": 1000}), 400, "max_tokens")


def test_malformed_bodies_routes_and_methods(url: str) -> None:
    refused(post(url, "/v1/classify", b'{"input": ["unclosed"'), 400, None, "not valid JSON")
    refused(post(url, "/v1/classify", b"[1, 2]"), 400, None)
    refused(post(url, "/v1/classify", "你好".encode()), 400, None, "not valid JSON")
    refused(httpx.get(f"{url}/v1/classify"), 405, None, "GET")
    refused(httpx.get(f"{url}/v1/embeddings"), 404, None, "/v1/embeddings")


def test_bodies_over_the_limit_get_413_declared_or_chunked(url: str) -> None:
    big = {"model": "intents", "input": ["x" * 400] * 60}
    refused(post(url, "/v1/classify", big), 413, None, "--max-body-bytes")

    def chunks() -> Iterator[bytes]:
        data = json.dumps(big).encode()
        for start in range(0, len(data), 4096):
            yield data[start : start + 4096]

    response = httpx.post(f"{url}/v1/classify", content=chunks(), headers={"content-type": "application/json"})
    refused(response, 413, None, "--max-body-bytes")
    assert post(url, "/v1/classify", {"model": "intents", "input": "still serving"}).status_code == 200


def test_an_error_of_ours_is_a_500_and_the_server_goes_on(
    url: str, server: tuple[str, FastAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    batcher = server[1].state.workers.batchers["intents"]
    score = batcher.score
    monkeypatch.setattr(batcher, "score", lambda texts: 1 / 0)
    response = post(url, "/v1/classify", {"model": "intents", "input": "x"})
    assert response.status_code == 500 and "ZeroDivisionError" in response.json()["error"]["message"]
    monkeypatch.setattr(batcher, "score", score)
    assert post(url, "/v1/classify", {"model": "intents", "input": "x"}).status_code == 200


def test_a_full_generation_queue_answers_503(served: dict[str, Served]) -> None:
    with live({"chat": served["chat"]}, max_queue=1, max_texts=1, max_tokens=200) as (url, app):
        generator = app.state.workers.generators["chat"]
        body = {"model": "chat", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 200}

        async def scenario() -> tuple[int, int, int]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                first = asyncio.create_task(http.post("/v1/chat/completions", json=body))
                while not generator.lock.locked():
                    await asyncio.sleep(0.005)
                second = asyncio.create_task(http.post("/v1/chat/completions", json={**body, "max_tokens": 2}))
                while generator.waiting < 1:
                    await asyncio.sleep(0.005)
                third = await http.post("/v1/chat/completions", json=body)
                assert third.headers["retry-after"] == "1"
                assert "--max-queue 1" in third.json()["error"]["message"]
                return (await first).status_code, (await second).status_code, third.status_code

        assert asyncio.run(scenario()) == (200, 200, 503)


def test_the_api_key_guards_v1_but_not_health(served: dict[str, Served], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNESMITH_API_KEY", KEY)
    with live({"intents": served["intents"], "chat": served["chat"]}) as (url, _):
        health = httpx.get(f"{url}/health").json()
        assert health["status"] == "ok" and health["models"] == ["intents", "chat"]
        assert health["batching"] == {"intents": {"texts": 0, "model_calls": 0, "waiting": 0}}
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": KEY}):
            response = httpx.get(f"{url}/v1/models", headers=headers)
            assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
        refused(post(url, "/v1/classify", b"{not json"), 401, None, "API key")  # before the body is read
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        reply = good.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
        assert reply.choices[0].message.content is not None
        auth = {"authorization": f"Bearer {KEY}"}
        assert post(url, "/v1/classify", {"input": "refund"}, headers=auth).status_code == 200  # the only classifier


# --- streaming text: whole characters, nothing past a stop string -------------------------------------


def test_detokenizer_never_splits_a_character_and_adds_up_to_the_answer() -> None:
    tokenizer = build_tiny_tokenizer()
    text = "  你好龍鳳 world, 再见！ "
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) > len(text.strip())  # 龍 and 鳳 are not in the tiny vocabulary: several byte tokens each
    detok = Detokenizer(tokenizer, [])
    pieces = [detok.add(i) for i in ids] + [detok.finish()]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True).strip()
    assert not pieces[0]  # leading whitespace never goes out


def test_detokenizer_holds_back_a_possible_stop_string() -> None:
    tokenizer = build_tiny_tokenizer()
    ids = tokenizer.encode("hello world and more", add_special_tokens=False)
    detok = Detokenizer(tokenizer, ["wor", "xyz"])
    pieces = []
    for i in ids:
        pieces.append(detok.add(i))
        assert not "".join(pieces).endswith("w")  # "w" may start "wor": held until it cannot
    pieces.append(detok.finish())
    assert "".join(pieces) == "hello" and detok.stopped


class CleanUpTokenizer:
    """Decodes like a WordPiece tokenizer with clean-up on: "it ' s" comes back as "it's", so decoding more
    tokens rewrites text decoded before."""

    words = ("it", "'", "s", "good", ".", "你", "好")

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return " ".join(self.words[i] for i in ids).replace(" ' ", "'").replace(" .", ".")


def test_detokenizer_never_sends_text_a_later_token_rewrites() -> None:
    detok = Detokenizer(CleanUpTokenizer(), [])
    pieces = [detok.add(i) for i in [0, 1, 2, 3, 4, 5, 6]] + [detok.finish()]
    assert detok.answer() == "it's good. 你 好"
    assert "".join(pieces) == detok.answer()


def test_tiny_temperatures_are_greedy_and_huge_seeds_refused(client: openai.OpenAI, url: str) -> None:
    assert sampling_kwargs(1e-30, 0.9) == {"do_sample": False}
    ask = {"model": "chat", "messages": [{"role": "user", "content": "hello how are you 3"}], "max_tokens": 8}
    greedy = client.chat.completions.create(**ask).choices[0].message.content
    assert client.chat.completions.create(**ask, temperature=1e-30).choices[0].message.content == greedy
    refused(post(url, "/v1/chat/completions", {**ask, "seed": 2**64}), 400, "seed")
    refused(post(url, "/v1/chat/completions", {**ask, "seed": -1}), 400, "seed")


# --- names, the command line, and a real process stopped by SIGTERM ------------------------------------


def test_runs_are_named_after_their_folder_or_as_given(tmp_path: Path) -> None:
    assert parse_spec("runs/intents/") == ("intents", Path("runs/intents/"))
    assert parse_spec("bot=runs/x") == ("bot", Path("runs/x"))
    (tmp_path / "a=b").mkdir()
    assert parse_spec(str(tmp_path / "a=b"))[0] == "a=b"  # an existing folder whose name holds "="


def test_replies_on_a_kept_alive_connection_are_not_held_back_by_nagle() -> None:
    """The listening socket says it is TCP, so asyncio sets TCP_NODELAY on each connection; left at protocol 0
    it did not, and every reply after a connection's first waited 40 ms for the client's delayed ACK."""
    sock = bind_socket("127.0.0.1", 0)

    async def nodelay_of_accepted() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_connect(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        value = await asyncio.wait_for(accepted, 10)
        writer.close()
        server.close()
        return value

    assert asyncio.run(nodelay_of_accepted()) != 0


def test_serve_refuses_in_one_line(cli: Callable[..., Result], runs: dict[str, Path], tmp_path: Path) -> None:
    one_error_line(cli("serve", str(tmp_path / "missing")), "missing", "not a folder")
    one_error_line(cli("serve", str(runs["intents"]), f"x={runs['lengths']}", f"x={runs['tags']}"), "two runs", "'x'")
    one_error_line(cli("serve", str(runs["intents"]), "--max-batch-size", "0"), "--max-batch-size")
    one_error_line(cli("serve", "bad name!=" + str(runs["intents"])), "cannot name a model")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = str(taken.getsockname()[1])
        one_error_line(cli("serve", str(runs["intents"]), "--port", port), f"127.0.0.1:{port}", "--port")
    finally:
        taken.close()


@pytest.mark.slow
def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(runs: dict[str, Path]) -> None:
    env = {**os.environ, "TUNESMITH_API_KEY": KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunesmith.cli", "serve", f"chat={runs['chat']}", "--port", "0", "--device", "cpu"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        url = None
        lines = []
        while url is None:
            line = proc.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
            if "listening on " in line:
                url = line.split("listening on ")[1].split()[0]
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        stream = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hello"}], max_tokens=200, stream=True
        )
        chunks = iter(stream)
        first = next(chunks)
        proc.send_signal(signal.SIGTERM)
        rest = list(chunks)
        assert first.choices[0].delta.role == "assistant"
        assert rest and rest[-1].choices[0].finish_reason in ("stop", "length")  # the answer ran to its end
        assert proc.wait(60) == 0
        err = "".join(lines) + proc.stderr.read()
        assert "stopped on SIGTERM" in err and "Traceback" not in err
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/health")
    finally:
        if proc.poll() is None:
            proc.kill()
