"""Micro-batching: texts from concurrent requests scored by one model call.

Each model has one worker. It takes the oldest waiting request, gathers whatever else is waiting (up to
`max_batch` texts, waiting at most `max_wait` seconds for more), scores them in a worker thread, and hands
each request its own rows back. While the model computes one batch the next one fills, so throughput
grows with concurrency instead of queueing one request per model call. The queue is bounded: past it, a
request is refused at once (503) rather than waiting without end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class Busy(Exception):
    """The model's queue is full; the caller should retry later."""


@dataclass
class _Job:
    texts: list[str]
    done: asyncio.Future = field(repr=False)


class MicroBatcher:
    def __init__(
        self, score: Callable[[list[str]], list[Any]], max_batch: int, max_wait: float, max_queued_texts: int
    ) -> None:
        self.score, self.max_batch, self.max_wait, self.max_queued = score, max_batch, max_wait, max_queued_texts
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.queued_texts = 0
        self.calls = self.texts = 0  # model calls made and texts scored: /health shows how well requests share calls
        self.worker: asyncio.Task | None = None
        self.carried: _Job | None = None
        # One thread, always the same, runs the model: torch keeps a pool of compute threads per calling thread,
        # and a new caller each time would build a new pool while the old one still spins.
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="tunesmith-score")

    def start(self) -> None:
        self.worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.worker:
            self.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker
        self.thread.shutdown(wait=True)

    async def submit(self, texts: list[str]) -> list[Any]:
        if self.queued_texts + len(texts) > self.max_queued:
            raise Busy(f"{self.queued_texts} texts are waiting for this model (--max-queue {self.max_queued})")
        job = _Job(texts, asyncio.get_running_loop().create_future())
        self.queued_texts += len(texts)
        self.queue.put_nowait(job)
        return await job.done

    async def _run(self) -> None:
        while True:
            jobs = await self._gather()
            self.queued_texts -= sum(len(j.texts) for j in jobs)
            live = [j for j in jobs if not j.done.cancelled()]  # a client gone before its turn costs nothing
            if not live:
                continue
            texts = [t for j in live for t in j.texts]
            try:
                rows = await asyncio.get_running_loop().run_in_executor(self.thread, self.score, texts)
            except Exception as e:  # one bad batch must not stop the worker; each caller gets the error
                for j in live:
                    if not j.done.done():
                        j.done.set_exception(e)
                continue
            self.calls, self.texts = self.calls + 1, self.texts + len(texts)
            start = 0
            for j in live:
                if not j.done.done():
                    j.done.set_result(rows[start : start + len(j.texts)])
                start += len(j.texts)

    async def _gather(self) -> list[_Job]:
        first, self.carried = self.carried or await self.queue.get(), None
        jobs, count = [first], len(first.texts)
        deadline = time.monotonic() + self.max_wait
        while count < self.max_batch:
            job = await self._next(deadline)
            if job is None:
                break
            if count + len(job.texts) > self.max_batch:
                self.carried = job  # it would overfill this batch: it opens the next one, ahead of later arrivals
                break
            jobs.append(job)
            count += len(job.texts)
        return jobs

    async def _next(self, deadline: float) -> _Job | None:
        with contextlib.suppress(asyncio.QueueEmpty):
            return self.queue.get_nowait()
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            return await asyncio.wait_for(self.queue.get(), left)
        except asyncio.TimeoutError:
            return None
