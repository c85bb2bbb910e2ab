"""Dynamic batching: concurrent requests that need the same ONNX session are run as one batch.

One `Batcher` per session. A request submits its rows and awaits its own slice of the output.
The batcher runs whatever is queued as one batch as soon as the session is free. It waits for more
only when requests have announced that rows are on their way (they are still being decoded, or
their encoders are still running when this is the head) and only up to `max_queue_delay`: a lone
request never waits, while a busy server fills its batches.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class BatchObserver(Protocol):
    def batch(self, rows: int, run_seconds: float, queue_waits: list[float]) -> None: ...


@dataclass
class _Item:
    rows: np.ndarray
    future: asyncio.Future[np.ndarray]
    arrived: float = field(default_factory=time.perf_counter)


class Batcher:
    """Batches for one session, run in `executor`, or on the event loop itself when it is None
    (for a session so small, like the linear head, that a thread hop would cost more than the run)."""

    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        executor: Executor | None,
        observer: BatchObserver,
        enabled: bool = True,
        max_batch_size: int = 32,
        max_queue_delay: float = 0.005,
    ) -> None:
        self._run = run
        self._executor = executor
        self._observer = observer
        self.enabled = enabled
        self.max_batch_size = max_batch_size
        self.max_queue_delay = max_queue_delay
        self._queue: deque[_Item] = deque()
        self._arrival = asyncio.Event()
        self._expected = 0
        self._worker: asyncio.Task[None] | None = None

    def expect(self, count: int = 1) -> None:
        """Announce `count` submissions that are on their way."""
        self._expected += count

    def withdraw(self, count: int = 1) -> None:
        """Take back announced submissions that will not come (their input was invalid)."""
        self._expected = max(0, self._expected - count)
        self._arrival.set()  # a waiting batch re-checks whether anything is still on its way

    async def submit(self, rows: np.ndarray, announced: bool = True) -> np.ndarray:
        """Run `rows` (batch axis first) through the session; returns the matching output rows."""
        if announced:
            self.withdraw()
        if not self.enabled:
            started = time.perf_counter()
            output = await self._execute(rows)
            self._observer.batch(len(rows), time.perf_counter() - started, [0.0])
            return output
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(rows, future))
        self._arrival.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work())
        return await future

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(RuntimeError("the model was unloaded"))

    async def _execute(self, batch: np.ndarray) -> np.ndarray:
        if self._executor is None:
            return self._run(batch)
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, batch)

    async def _work(self) -> None:
        while self._queue:
            await self._fill()
            items = self._take()
            batch = items[0].rows if len(items) == 1 else np.concatenate([i.rows for i in items])
            started = time.perf_counter()
            try:
                output = await self._execute(batch)
            except Exception as error:  # a failed run fails the requests in it, not the batcher
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            finished = time.perf_counter()
            self._observer.batch(len(batch), finished - started, [started - i.arrived for i in items])
            offset = 0
            for item in items:
                if not item.future.done():
                    item.future.set_result(output[offset : offset + len(item.rows)])
                offset += len(item.rows)

    async def _fill(self) -> None:
        """Wait for announced rows while the batch has room and the oldest item may still wait."""
        deadline = self._queue[0].arrived + self.max_queue_delay
        while self._expected > 0 and self._queued_rows() < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._arrival.clear()
            try:
                await asyncio.wait_for(self._arrival.wait(), remaining)
            except TimeoutError:
                return

    def _queued_rows(self) -> int:
        return sum(len(item.rows) for item in self._queue)

    def _take(self) -> list[_Item]:
        """The oldest items up to `max_batch_size` rows; an oversized item goes alone."""
        items = [self._queue.popleft()]
        rows = len(items[0].rows)
        while self._queue and rows + len(self._queue[0].rows) <= self.max_batch_size:
            rows += len(self._queue[0].rows)
            items.append(self._queue.popleft())
        return items
