"""Dynamic batching: concurrent submissions share one run, a lone request never waits, results and
failures reach the right callers."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from anymodal.service.batching import Batcher


class Recorder:
    def __init__(self) -> None:
        self.batches: list[int] = []
        self.waits: list[float] = []

    def batch(self, rows: int, run_seconds: float, queue_waits: list[float]) -> None:
        self.batches.append(rows)
        self.waits.extend(queue_waits)


def slow_double(delay: float):
    calls = []

    def run(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        time.sleep(delay)
        return x * 2

    return run, calls


@pytest.fixture
def executor():
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


def test_concurrent_submissions_are_batched_and_get_their_own_rows(executor) -> None:
    run, calls = slow_double(0.02)
    recorder = Recorder()

    async def main() -> list[np.ndarray]:
        batcher = Batcher(run, executor, recorder, max_batch_size=64, max_queue_delay=0.05)
        for _ in range(20):
            batcher.expect()
        return await asyncio.gather(
            *(batcher.submit(np.full((i % 3 + 1, 2), i, np.float32)) for i in range(20))
        )

    results = asyncio.run(main())
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result, np.full((i % 3 + 1, 2), 2 * i))
    assert sum(calls) == sum(i % 3 + 1 for i in range(20))
    assert len(calls) < 5  # 20 requests, a handful of runs
    assert recorder.batches == calls


def test_a_lone_request_does_not_wait_for_company(executor) -> None:
    run, _ = slow_double(0.0)
    recorder = Recorder()

    async def main() -> float:
        batcher = Batcher(run, executor, recorder, max_batch_size=32, max_queue_delay=1.0)
        batcher.expect()
        started = time.perf_counter()
        await batcher.submit(np.ones((1, 2), np.float32))
        return time.perf_counter() - started

    assert asyncio.run(main()) < 0.5  # nothing else was announced: no waiting for the 1 s delay


def test_announced_rows_are_waited_for_up_to_the_delay(executor) -> None:
    run, calls = slow_double(0.0)

    async def main() -> None:
        batcher = Batcher(run, executor, Recorder(), max_batch_size=32, max_queue_delay=0.5)
        batcher.expect(2)
        first = asyncio.create_task(batcher.submit(np.ones((1, 2), np.float32)))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(batcher.submit(np.ones((1, 2), np.float32)))
        await asyncio.gather(first, second)

    asyncio.run(main())
    assert calls == [2]


def test_withdrawn_announcements_stop_the_wait(executor) -> None:
    run, calls = slow_double(0.0)

    async def main() -> float:
        batcher = Batcher(run, executor, Recorder(), max_batch_size=32, max_queue_delay=5.0)
        batcher.expect(2)
        started = time.perf_counter()
        task = asyncio.create_task(batcher.submit(np.ones((1, 2), np.float32)))
        await asyncio.sleep(0.05)
        batcher.withdraw()  # the other request's input was invalid: it will never come
        await task
        return time.perf_counter() - started

    assert asyncio.run(main()) < 1.0
    assert calls == [1]


def test_batches_respect_the_maximum_size(executor) -> None:
    run, calls = slow_double(0.01)

    async def main() -> None:
        batcher = Batcher(run, executor, Recorder(), max_batch_size=4, max_queue_delay=0.01)
        await asyncio.gather(
            *(batcher.submit(np.ones((1, 1), np.float32), announced=False) for _ in range(10))
        )
        await batcher.submit(np.ones((9, 1), np.float32), announced=False)  # oversized: runs alone

    asyncio.run(main())
    assert max(calls[:-1]) <= 4 and sum(calls[:-1]) == 10 and calls[-1] == 9


def test_a_failed_run_fails_only_its_requests(executor) -> None:
    failing = threading.Event()

    def run(x: np.ndarray) -> np.ndarray:
        if failing.is_set():
            raise ValueError("broken session")
        return x

    async def main() -> None:
        batcher = Batcher(run, executor, Recorder(), max_batch_size=8)
        failing.set()
        with pytest.raises(ValueError, match="broken session"):
            await batcher.submit(np.ones((1, 1), np.float32), announced=False)
        failing.clear()
        np.testing.assert_array_equal(
            await batcher.submit(np.ones((1, 1), np.float32), announced=False), [[1]]
        )

    asyncio.run(main())


def test_without_batching_each_request_runs_alone(executor) -> None:
    run, calls = slow_double(0.01)

    async def main() -> None:
        batcher = Batcher(run, executor, Recorder(), enabled=False)
        await asyncio.gather(*(batcher.submit(np.ones((1, 1), np.float32)) for _ in range(6)))

    asyncio.run(main())
    assert calls == [1] * 6
