"""Answers for the chat and completion routes, streamed as they are generated.

A generative model answers one request at a time (a lock per model, a bounded count of requests waiting
for it). Generation runs on the model's own thread, which also turns tokens into text (`Detokenizer`) and
hands the pieces to the event loop; prompts are built on a second thread with a copy of the tokenizer, so
the event loop never waits on a tokenizer and no tokenizer is used by two threads at once. Streamed or not,
an answer is the text `tunesmith generate` prints for the same prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import re
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from tunesmith.data.chat import Conversation
from tunesmith.evaluate.generate import generate_stream, stop_ids
from tunesmith.inference import GenerativeRun, Sampling
from tunesmith.serve.batcher import Busy


@dataclass(frozen=True)
class Finished:
    text: str  # the whole answer, decoded at once as `generate` decodes it, ended before any stop string
    reason: str  # "stop": the model's stop token or a stop string; "length": max_tokens reached
    prompt_tokens: int
    completion_tokens: int


_SEEDED = threading.Lock()
_SPACE = re.compile(r"\s")
_CJK = re.compile(
    "[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\U00020000-\U0002ffff]"
)


def _last(pattern: re.Pattern[str], text: str) -> int:
    """Index of the last character matching `pattern`, -1 if none."""
    found = -1
    for m in pattern.finditer(text):
        found = m.start()
    return found


class Detokenizer:
    """Token ids in, text out in pieces as they settle. `answer()` is the whole answer as `generate` decodes
    it (special tokens skipped, outer whitespace stripped), cut before the first stop string. A piece never
    ends in half a character (a byte-level token holding part of a Chinese character), inside a word that
    may go on, or in what may be the start of a stop string: English goes out a word at a time, Chinese a
    character at a time. Once text is sent, later text must extend it, or waits for the end."""

    def __init__(self, tokenizer: Any, stops: list[str]) -> None:
        self.tokenizer, self.stops = tokenizer, [s for s in stops if s]
        self.ids: list[int] = []
        self.sent = ""
        self.stopped = False

    def add(self, token: int) -> str:
        if self.stopped:
            return ""
        self.ids.append(token)
        text = self._text()
        return self._send(text if self.stopped else self._settled(text))

    def answer(self) -> str:
        return self._text().rstrip()

    def finish(self) -> str:
        """The rest of the answer. Should a tokenizer have rewritten text already sent, the rest is what
        follows the sent length: what went out cannot be taken back."""
        answer = self.answer()
        rest = answer[len(self.sent) :]
        self.sent = answer
        return rest

    def _text(self) -> str:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True).lstrip()
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return text[:cut].rstrip()
        return text

    def _settled(self, text: str) -> str:
        """The part of `text` later tokens cannot change: up to the last whitespace or CJK character (a word
        may go on, or a clean-up may drop the space before it), and not the start of a stop string."""
        text = text.rstrip("\ufffd")
        end = max(_last(_SPACE, text), _last(_CJK, text) + 1)
        text = text[:end].rstrip()
        return text[: len(text) - self._stop_prefix(text)].rstrip()

    def _stop_prefix(self, text: str) -> int:
        """Length of the longest end of `text` that a stop string starts with."""
        return max((n for s in self.stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)

    def _send(self, text: str) -> str:
        if len(text) <= len(self.sent) or not text.startswith(self.sent):
            return ""
        delta, self.sent = text[len(self.sent) :], text
        return delta


class Generator:
    """One generative run behind a lock: requests take turns, at most `max_waiting` of them queued."""

    def __init__(self, run: GenerativeRun, max_waiting: int) -> None:
        self.run, self.max_waiting = run, max_waiting
        self.lock = asyncio.Lock()
        self.waiting = 0
        # One thread, always the same, generates: torch keeps a pool of compute threads per calling thread.
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="tunesmith-generate")
        self.prompter = ThreadPoolExecutor(1, thread_name_prefix="tunesmith-prompt")
        self.prompt_lm = dataclasses.replace(run.lm, tokenizer=copy.deepcopy(run.lm.tokenizer))
        self.eos = set(stop_ids(run.lm.model, run.lm.tokenizer, run.lm.seq2seq))

    async def prompt(self, history: Conversation) -> list[int]:
        """The prompt's token ids, every one of them (the caller refuses one too long)."""
        build = lambda: self.prompt_lm.prompt(history, truncate=False)  # noqa: E731
        return await asyncio.get_running_loop().run_in_executor(self.prompter, build)

    def room(self, prompt: list[int]) -> int | None:
        return self.run.lm.room(len(prompt))

    async def stream(
        self, prompt: list[int], sampling: Sampling, stops: list[str], seed: int | None = None
    ) -> AsyncGenerator[str | Finished, None]:
        """Text pieces as they come, then one `Finished`. Leaving early (a client gone) stops generation."""
        await self._take_turn()
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def hand_over(item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed under a killed server: nobody is listening
                loop.call_soon_threadsafe(pieces.put_nowait, item)

        def work() -> None:
            try:
                hand_over(self._answer(prompt, sampling, stops, seed, stop, hand_over))
            except Exception as e:  # reaches the request as its error; the model stays up
                hand_over(e)
            finally:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self.lock.release)

        self.thread.submit(work)
        try:
            while True:
                item = await pieces.get()
                if isinstance(item, Exception):
                    raise item
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            stop.set()

    def _answer(
        self,
        prompt: list[int],
        sampling: Sampling,
        stops: list[str],
        seed: int | None,
        stop: threading.Event,
        hand_over: Callable[[Any], None],
    ) -> Finished:
        """On the model's thread: generate, turn tokens into pieces, end at a stop string."""
        detok = Detokenizer(self.run.lm.tokenizer, stops)
        counted: list[int] = []

        def on_token(token: int) -> None:
            if detok.stopped:
                return  # a step already under way when the stop string appeared
            counted.append(token)
            if piece := detok.add(token):
                hand_over(piece)
            if detok.stopped:
                stop.set()

        if seed is not None and sampling.temperature > 0:
            with _SEEDED:  # torch's random state is one per process: another run sampling meanwhile would draw from it
                torch.manual_seed(seed)
                self._generate(prompt, sampling, on_token, stop)
        else:
            self._generate(prompt, sampling, on_token, stop)
        if rest := detok.finish():
            hand_over(rest)
        hit_length = len(counted) >= sampling.max_new_tokens and counted[-1] not in self.eos
        reason = "length" if hit_length and not detok.stopped else "stop"
        return Finished(detok.answer(), reason, len(prompt), len(counted))

    def _generate(
        self, prompt: list[int], sampling: Sampling, on_token: Callable[[int], None], stop: threading.Event
    ) -> None:
        lm = self.run.lm
        generate_stream(
            lm.model, lm.tokenizer, prompt, lm.seq2seq, lm.device, on_token, stop,
            sampling.max_new_tokens, sampling.temperature, sampling.top_p,
        )  # fmt: skip

    def close(self) -> None:
        """Past the shutdown timeout an answer may still run: it ends at its max_tokens, not waited for here."""
        self.thread.shutdown(wait=False, cancel_futures=True)
        self.prompter.shutdown(wait=False, cancel_futures=True)

    async def _take_turn(self) -> None:
        if self.waiting >= self.max_waiting:
            raise Busy(f"{self.waiting} requests are waiting for this model (--max-queue {self.max_waiting})")
        self.waiting += 1
        try:
            await self.lock.acquire()
        finally:
            self.waiting -= 1
