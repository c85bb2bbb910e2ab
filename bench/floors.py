"""The floors of the serving benchmarks: the 3-modality request (bench/loadgen.py) without HTTP.

    python bench/floors.py pipeline|onnxruntime [--repository models] [--seconds 10] [--concurrency 1,8,32]

- `pipeline`: anymodal's in-process pipeline, `Predictor.predict` called in a loop (decode,
  features, encoders, head, reliability gate, fusion), that many calls at a time on one event loop;
- `onnxruntime`: the encoders and the head alone, on features decoded once beforehand, that many
  threads calling them in a loop: what no server of this model can beat.

Prints one JSON object: for each concurrency, throughput, p50/p99 latency and this process's CPU
time per request; its resident memory; and the seconds from `--since` (a time.time(); default:
when loading began) until the model was loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from anymodal.service.decoding import decode_input
from anymodal.service.features import features
from anymodal.service.manifest import read_manifest
from anymodal.service.predictor import Options, Predictor
from anymodal.service.repository import ModelRepository
from anymodal.service.runtime import CPU, load_session
from anymodal.service.settings import Settings
from loadgen import ROOT, default_bundle, request_inputs, summarize, tree_rss_mb
from threadpoolctl import threadpool_limits


async def measure_tasks(call: Callable[[], Awaitable[object]], concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    before, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result = summarize(latencies, time.perf_counter() - started)
    return result | {"cpu_ms": 1000 * (time.process_time() - before) / max(1, len(latencies))}


def measure_threads(call: Callable[[], object], concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    def worker() -> None:
        mine = []
        while time.perf_counter() < stop:
            started = time.perf_counter()
            call()
            mine.append(time.perf_counter() - started)
        latencies.extend(mine)  # list.extend is atomic under the GIL

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    before, started = time.process_time(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = summarize(latencies, time.perf_counter() - started)
    return result | {"cpu_ms": 1000 * (time.process_time() - before) / max(1, len(latencies))}


async def pipeline(
    repository: Path, seconds: float, levels: tuple[int, ...], since: float | None = None
) -> dict[str, object]:
    """anymodal's pipeline without HTTP: raw bytes -> decode -> encoders -> head -> gate -> fusion,
    set up as the service's app sets it up."""
    since = time.time() if since is None else since
    threadpool_limits(limits=1, user_api="blas")
    settings = Settings(model_repository=repository, repository_poll_seconds=0)
    with ThreadPoolExecutor(max_workers=settings.concurrency) as executor:
        repo = ModelRepository(settings)
        repo.load_all()
        model = repo.get(repo.default_name() or "digits")
        ready = time.time() - since
        predictor = Predictor(executor, settings)
        instance = request_inputs()

        async def call() -> object:
            return await predictor.predict(model, [instance], ["inputs"], Options())

        for _ in range(50):
            await call()
        results: dict[str, object] = {f"c{c}": await measure_tasks(call, c, seconds) for c in levels}
    return results | {"ready_seconds": ready, "rss_mb": tree_rss_mb(os.getpid())}


def onnxruntime(
    repository: Path, seconds: float, levels: tuple[int, ...], since: float | None = None
) -> dict[str, object]:
    """The encoders and the head on pre-decoded features, with the service's session options."""
    since = time.time() if since is None else since
    bundle = default_bundle(repository)
    manifest = read_manifest(bundle)
    sessions = {m: load_session(bundle / spec.file, [CPU], 1) for m, spec in manifest.modalities.items()}
    head = load_session(bundle / manifest.head.file, [CPU], 1)
    ready = time.time() - since
    contracts = {m: spec.input for m, spec in manifest.modalities.items()}
    inputs = {
        m: features(decode_input(raw, contracts[m], m).signal, contracts[m])[None]
        for m, raw in request_inputs().items()
    }
    width = manifest.head.feature_dim

    def call() -> np.ndarray:
        return head.run(np.concatenate([sessions[m].run(x)[:, :width] for m, x in inputs.items()]))

    for _ in range(50):
        call()
    results: dict[str, object] = {f"c{c}": measure_threads(call, c, seconds) for c in levels}
    return results | {"ready_seconds": ready, "rss_mb": tree_rss_mb(os.getpid())}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("floor", choices=["pipeline", "onnxruntime"])
    parser.add_argument("--repository", type=Path, default=ROOT / "models")
    parser.add_argument("--seconds", type=float, default=10.0, help="Length of each measurement")
    parser.add_argument("--concurrency", default="1,8,32", help="Comma-separated concurrency levels")
    parser.add_argument("--since", type=float, help="time.time() to count the seconds to ready from")
    args = parser.parse_args()
    levels = tuple(int(c) for c in args.concurrency.split(","))
    if args.floor == "pipeline":
        result = asyncio.run(pipeline(args.repository, args.seconds, levels, args.since))
    else:
        result = onnxruntime(args.repository, args.seconds, levels, args.since)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
