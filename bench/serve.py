"""Serving benchmark: the in-process pipeline and the HTTP service side by side, in one run.

    python bench/serve.py [--repository models] [--seconds 10] [--json results.json]

Prints, for a 3-modality request (a scan, a recording and a typed word of the digits test split):
- p50/p99 latency at concurrency 1, in-process (decode + onnxruntime + fusion, no HTTP) and over
  HTTP, and their ratio;
- HTTP throughput at concurrency 1 and 32, with dynamic batching on and off;
- the server's resident memory (peak), and the time from its start to ready.

Load comes from wrk (Debian package `wrk`) when it is installed: a C client leaves the cores to
the server. Without it, an asyncio client in this process is used, and says so: it competes with
the server for the CPU, so its throughput numbers are lower bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anymodal.service.predictor import Options, Predictor  # noqa: E402
from anymodal.service.repository import ModelRepository  # noqa: E402
from anymodal.service.settings import Settings  # noqa: E402
from loadgen import load_python, load_wrk, percentile, request_body, request_inputs  # noqa: E402

from tests.live import LiveServer  # noqa: E402

TARGETS = {"p50_ratio": 2.0, "batching_speedup": 3.0, "rss_mb": 300.0, "ready_seconds": 3.0}


async def in_process(repository: Path, seconds: float) -> dict[str, float]:
    """The pipeline without HTTP: raw bytes -> decode -> encoders -> head -> fusion."""
    settings = Settings(model_repository=repository, repository_poll_seconds=0)
    with ThreadPoolExecutor(max_workers=settings.concurrency) as pipeline:
        repo = ModelRepository(settings)
        repo.load_all()
        model = repo.get(repo.default_name() or "digits")
        predictor = Predictor(pipeline, settings)
        instance = request_inputs()
        for _ in range(50):
            await predictor.predict(model, [instance], ["inputs"], Options())
        latencies = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await predictor.predict(model, [instance], ["inputs"], Options())
            latencies.append(time.perf_counter() - started)

        async def worker(stop: float, counter: list[int]) -> None:
            while time.perf_counter() < stop:
                await predictor.predict(model, [instance], ["inputs"], Options())
                counter[0] += 1

        counter = [0]
        stop = time.perf_counter() + seconds
        started = time.perf_counter()
        await asyncio.gather(*(worker(stop, counter) for _ in range(32)))
        concurrent_rps = counter[0] / (time.perf_counter() - started)
    return {
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 99),
        "rps_c1": len(latencies) / seconds,
        "rps_c32": concurrent_rps,
    }


def rss_mb(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    value = {k: int(re.search(rf"{k}:\s+(\d+)", status).group(1)) / 1024 for k in ("VmRSS", "VmHWM")}  # type: ignore[union-attr]
    return {"rss_mb": value["VmRSS"], "peak_rss_mb": value["VmHWM"]}


def serve_and_load(
    repository: Path, batching: bool, seconds: float, load, workers: int = 1
) -> dict[str, object]:
    server = LiveServer(repository, workers=workers, batching=str(batching).lower(), log_level="warning")
    try:
        ready = server.wait_ready()
        url = f"{server.url}/v1/predict"
        body = request_body()
        assert (
            server.client.post(url, content=body, headers={"content-type": "application/json"}).status_code
            == 200
        )
        load(url, body, 4, 2.0)  # warm up
        result: dict[str, object] = {"ready_seconds": ready}
        for connections in (1, 32):
            result[f"c{connections}"] = load(url, body, connections, seconds)
        result |= rss_mb(server.process.pid)  # with one worker, the server process itself
        return result
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=ROOT / "models")
    parser.add_argument("--seconds", type=float, default=10.0, help="Length of each measurement")
    parser.add_argument("--json", type=Path, help="Also write the results here")
    parser.add_argument("--workers", type=int, default=0, help="Also measure HTTP with this many workers")
    args = parser.parse_args()

    client = "wrk" if shutil.which("wrk") else "python (shares the CPU with the server)"
    load = load_wrk if shutil.which("wrk") else load_python
    print(f"machine: {os.cpu_count()} cores; load generator: {client}; {args.seconds:g} s per measurement")
    results = {
        "in_process": asyncio.run(in_process(args.repository, args.seconds)),
        "http_batching_on": serve_and_load(args.repository, True, args.seconds, load),
        "http_batching_off": serve_and_load(args.repository, False, args.seconds, load),
        "client": client,
    }
    if args.workers > 1:
        results["http_workers"] = serve_and_load(args.repository, True, args.seconds, load, args.workers)
        results["http_workers"]["workers"] = args.workers
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def report(results: dict) -> None:
    inproc, on, off = results["in_process"], results["http_batching_on"], results["http_batching_off"]
    print("\n3-modality request (image + audio + text), default model")
    print(f"{'':34}{'p50 ms':>10}{'p99 ms':>10}{'req/s c=1':>12}{'req/s c=32':>12}")
    print(f"{'in-process (no HTTP)':34}{inproc['p50_ms']:>10.2f}{inproc['p99_ms']:>10.2f}"
          f"{inproc['rps_c1']:>12.0f}{inproc['rps_c32']:>12.0f}")  # fmt: skip
    for name, run in (("HTTP, dynamic batching on", on), ("HTTP, dynamic batching off", off)):
        print(f"{name:34}{run['c1']['p50_ms']:>10.2f}{run['c1']['p99_ms']:>10.2f}"
              f"{run['c1']['rps']:>12.0f}{run['c32']['rps']:>12.0f}")  # fmt: skip
    if "http_workers" in results:
        many = results["http_workers"]
        name = f"HTTP, batching on, {many['workers']} workers"
        print(f"{name:34}{many['c1']['p50_ms']:>10.2f}{many['c1']['p99_ms']:>10.2f}"
              f"{many['c1']['rps']:>12.0f}{many['c32']['rps']:>12.0f}")  # fmt: skip
    errors = sum(run[c]["errors"] for run in (on, off) for c in ("c1", "c32"))
    print(f"HTTP errors during load: {errors}")
    print(f"HTTP p99 at c=32, batching on / off: {on['c32']['p99_ms']:.1f} / {off['c32']['p99_ms']:.1f} ms")
    print(f"server RSS after load: {on['rss_mb']:.0f} MB (peak {on['peak_rss_mb']:.0f} MB)")
    print(f"start to ready: {on['ready_seconds']:.2f} s (batching off run: {off['ready_seconds']:.2f} s)")
    checks = [
        ("HTTP p50 / in-process p50", on["c1"]["p50_ms"] / inproc["p50_ms"], "<=", TARGETS["p50_ratio"]),
        (
            "c=32 / c=1 throughput, batching on",
            on["c32"]["rps"] / on["c1"]["rps"],
            ">=",
            TARGETS["batching_speedup"],
        ),
        ("peak RSS MB", on["peak_rss_mb"], "<=", TARGETS["rss_mb"]),
        ("start to ready s", on["ready_seconds"], "<=", TARGETS["ready_seconds"]),
    ]
    print("\ntargets:")
    for name, value, op, target in checks:
        ok = value <= target if op == "<=" else value >= target
        print(f"  {name:38} {value:8.2f}  (target {op} {target:g})  {'met' if ok else 'NOT MET'}")


if __name__ == "__main__":
    main()
