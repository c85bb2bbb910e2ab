"""Batching only when it pays: requests that arrive while the pipeline is busy run together.

One `Batcher` per served model version. A request that finds a free slot (fewer than
`concurrency` runs under way) starts at once, alone: a lone request never waits for company. A
request that finds every slot busy queues, and when a run ends, everything queued by then goes into
the next run as one batch, up to `max_batch_size` instances. So an idle server answers each request
with no added delay, and a busy one fills its batches from the queue it already has, without a timer.

On CPU, with small encoders, this is what makes batching pay: a run costs one thread hop, one
onnxruntime call per session and one pass of the gate and the fusion, however many requests it
carries; a timer that waits for company would cost latency at low load and buy nothing at high load.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")


class BatchObserver(Protocol):
    def batch(self, jobs: int, queue_waits: list[float]) -> None: ...


@dataclass
class _Item(Generic[Job, Result]):
    job: Job
    size: int
    future: asyncio.Future[Result]
    arrived: float = field(default_factory=time.perf_counter)


class Batcher(Generic[Job, Result]):
    """Runs `run(jobs) -> results` (one result, or the exception to raise, per job, in order) in
    `executor`, at most `concurrency` runs at once. Without batching (`enabled=False`) every run
    carries one job."""

    def __init__(
        self,
        run: Callable[[list[Job]], list[Result | Exception]],
        executor: Executor,
        observer: BatchObserver,
        enabled: bool = True,
        max_batch_size: int = 32,
        concurrency: int = 1,
    ) -> None:
        self._run = run
        self._executor = executor
        self._observer = observer
        self.enabled = enabled
        self.max_batch_size = max_batch_size
        self.concurrency = concurrency
        self._queue: deque[_Item[Job, Result]] = deque()
        self._running = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def submit(self, job: Job, size: int = 1) -> Result:
        """Run `job` (of `size` instances) as soon as a slot is free; returns its result."""
        loop = asyncio.get_running_loop()
        item: _Item[Job, Result] = _Item(job, size, loop.create_future())
        self._queue.append(item)
        if self._running < self.concurrency:
            self._start(loop)
        return await item.future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        items = self._take()
        if not items:
            return
        self._running += 1
        started = time.perf_counter()
        self._observer.batch(len(items), [started - item.arrived for item in items])
        run = loop.run_in_executor(self._executor, self._run, [item.job for item in items])
        run.add_done_callback(lambda done: self._finish(loop, items, done))

    def _finish(
        self, loop: asyncio.AbstractEventLoop, items: list[_Item[Job, Result]], done: asyncio.Future
    ) -> None:
        self._running -= 1
        if done.cancelled():  # the executor was shut down: the server is stopping
            outcomes: list[Result | Exception] = [RuntimeError("the server is stopping")] * len(items)
        elif done.exception() is not None:  # a failed run fails the requests in it, not the batcher
            outcomes = [done.exception()] * len(items)  # type: ignore[list-item]
        else:
            outcomes = done.result()
        for item, outcome in zip(items, outcomes, strict=True):
            if item.future.done():  # its client went away
                continue
            if isinstance(outcome, Exception):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(outcome)
        while self._queue and self._running < self.concurrency:
            self._start(loop)

    def _take(self) -> list[_Item[Job, Result]]:
        """The oldest waiting jobs, up to `max_batch_size` instances; an oversized job goes alone.
        Jobs whose caller has gone away are dropped, not run."""
        items: list[_Item[Job, Result]] = []
        size = 0
        while self._queue:
            item = self._queue[0]
            if item.future.done():
                self._queue.popleft()
                continue
            if items and (not self.enabled or size + item.size > self.max_batch_size):
                break
            items.append(self._queue.popleft())
            size += item.size
        return items
