"""Batching only when it pays: a lone request runs at once, requests that queue while the pipeline is
busy share the next run, and results and failures reach the right callers."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from anymodal.service.batching import Batcher


class Recorder:
    def __init__(self) -> None:
        self.runs: list[int] = []
        self.waits: list[float] = []

    def batch(self, jobs: int, queue_waits: list[float]) -> None:
        self.runs.append(jobs)
        self.waits.extend(queue_waits)


class Doubler:
    """A pipeline that doubles each job (a number), taking `delay` per run, and records its runs."""

    def __init__(self, delay: float, fail_on: int | None = None) -> None:
        self.delay = delay
        self.fail_on = fail_on
        self.runs: list[list[int]] = []
        self.lock = threading.Lock()
        self.busy = 0
        self.most_busy = 0

    def __call__(self, jobs: list[int]) -> list[int | Exception]:
        with self.lock:
            self.runs.append(jobs)
            self.busy += 1
            self.most_busy = max(self.most_busy, self.busy)
        time.sleep(self.delay)
        with self.lock:
            self.busy -= 1
        return [ValueError(f"job {j} is bad") if j == self.fail_on else 2 * j for j in jobs]


@pytest.fixture
def executor():
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield pool


async def submit_all(batcher: Batcher, jobs: list[int], gap: float = 0.0) -> list[object]:
    async def one(job: int, delay: float) -> object:
        await asyncio.sleep(delay)
        return await batcher.submit(job)

    return await asyncio.gather(*(one(j, i * gap) for i, j in enumerate(jobs)), return_exceptions=True)


def test_a_lone_request_runs_at_once(executor) -> None:
    pipeline, recorder = Doubler(0.0), Recorder()
    batcher = Batcher(pipeline, executor, recorder)
    assert asyncio.run(submit_all(batcher, [21])) == [42]
    assert pipeline.runs == [[21]] and recorder.waits[0] < 0.05


def test_requests_that_queue_while_busy_share_the_next_run(executor) -> None:
    pipeline, recorder = Doubler(0.1), Recorder()
    batcher = Batcher(pipeline, executor, recorder, concurrency=1)
    results = asyncio.run(submit_all(batcher, list(range(8)), gap=0.005))
    assert results == [2 * j for j in range(8)]
    assert pipeline.runs == [[0], [1, 2, 3, 4, 5, 6, 7]]  # the first alone; the rest queued behind it
    assert recorder.runs == [1, 7]


def test_runs_respect_the_maximum_batch_size(executor) -> None:
    pipeline = Doubler(0.1)
    batcher = Batcher(pipeline, executor, Recorder(), max_batch_size=3, concurrency=1)
    results = asyncio.run(submit_all(batcher, list(range(8)), gap=0.005))
    assert results == [2 * j for j in range(8)]
    assert [len(run) for run in pipeline.runs] == [1, 3, 3, 1]


def test_a_job_larger_than_the_batch_runs_alone(executor) -> None:
    pipeline = Doubler(0.05)
    batcher = Batcher(pipeline, executor, Recorder(), max_batch_size=4, concurrency=1)

    async def main() -> list[int]:
        first = asyncio.ensure_future(batcher.submit(1, size=1))
        await asyncio.sleep(0.01)
        return await asyncio.gather(first, batcher.submit(2, size=10), batcher.submit(3, size=1))

    assert asyncio.run(main()) == [2, 4, 6]
    assert pipeline.runs == [[1], [2], [3]]


def test_a_failure_reaches_only_its_own_request(executor) -> None:
    pipeline = Doubler(0.05, fail_on=3)
    batcher = Batcher(pipeline, executor, Recorder(), concurrency=1)
    results = asyncio.run(submit_all(batcher, [1, 2, 3, 4], gap=0.005))
    assert results[:2] == [2, 4] and results[3] == 8
    assert isinstance(results[2], ValueError) and "job 3" in str(results[2])


def test_a_run_that_raises_fails_its_requests_and_not_the_next(executor) -> None:
    calls = []

    def broken_then_fine(jobs: list[int]) -> list[int | Exception]:
        calls.append(jobs)
        if len(calls) == 1:
            raise RuntimeError("onnxruntime failed")
        return [2 * j for j in jobs]

    batcher = Batcher(broken_then_fine, executor, Recorder())
    first = asyncio.run(submit_all(batcher, [1]))
    assert isinstance(first[0], RuntimeError)
    assert asyncio.run(submit_all(batcher, [5])) == [10]


def test_without_batching_each_run_carries_one_request(executor) -> None:
    pipeline = Doubler(0.02)
    batcher = Batcher(pipeline, executor, Recorder(), enabled=False, concurrency=1)
    assert asyncio.run(submit_all(batcher, list(range(5)), gap=0.002)) == [0, 2, 4, 6, 8]
    assert pipeline.runs == [[j] for j in range(5)]


def test_concurrency_bounds_the_runs_at_once(executor) -> None:
    pipeline = Doubler(0.05)
    batcher = Batcher(pipeline, executor, Recorder(), enabled=False, concurrency=2)
    assert asyncio.run(submit_all(batcher, list(range(6)))) == [2 * j for j in range(6)]
    assert pipeline.most_busy == 2


def test_a_request_whose_caller_left_is_not_run(executor) -> None:
    pipeline = Doubler(0.1)
    batcher = Batcher(pipeline, executor, Recorder(), concurrency=1)

    async def main() -> list[object]:
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.01)
        abandoned = asyncio.ensure_future(batcher.submit(2))
        kept = asyncio.ensure_future(batcher.submit(3))
        await asyncio.sleep(0.01)
        abandoned.cancel()
        return await asyncio.gather(first, kept)

    assert asyncio.run(main()) == [2, 6]
    assert pipeline.runs == [[1], [3]]
