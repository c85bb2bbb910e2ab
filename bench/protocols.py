"""Protocol benchmark: the same 3-modality request through every way in, side by side in one run.

    python bench/protocols.py [--repository models] [--seconds 8] [--concurrency 1,32]

For a scan, a recording and a typed word of the digits test split (tests/fixtures/digit_7.*), it
measures, against one live server:
- `/v1` JSON with base64 files (httpx);
- the Open Inference Protocol over REST in JSON mode (base64 files) and in binary mode, with the
  stock `tritonclient.http` client;
- the Open Inference Protocol over gRPC, with the stock `tritonclient.grpc` client.

For each: p50 and p99 latency and throughput at each concurrency (client threads), and the
server's CPU time per request (user + system, read from /proc before and after). The clients run
in this process and share the 2 cores with the server, so throughput is a lower bound; CPU per
request is the server's own and comparable across protocols.

perf_analyzer is not used: the `perf-analyzer` package on PyPI is an empty placeholder, and the
real binary ships in Triton's SDK container, which this project cannot fetch at run time.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.live import LiveServer  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"
MODEL = "digits"


def files() -> dict[str, bytes]:
    return {
        "image": (FIXTURES / "digit_7.png").read_bytes(),
        "audio": (FIXTURES / "digit_7.wav").read_bytes(),
        "text": b"sieben",
    }


def v1_call(url: str) -> Callable[[], str]:
    raw = files()
    body = {
        "inputs": {
            "image": {"b64": base64.b64encode(raw["image"]).decode()},
            "audio": {"b64": base64.b64encode(raw["audio"]).decode()},
            "text": raw["text"].decode(),
        }
    }
    local = threading.local()

    def call() -> str:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=30)
        answer = local.client.post(f"/v1/models/{MODEL}/predict", json=body)
        answer.raise_for_status()
        return answer.json()["label"]

    return call


def triton_inputs(module: types.ModuleType, binary: bool) -> list:
    """The three inputs for `tritonclient.http` or `tritonclient.grpc`."""
    raw = files()
    inputs = []
    for name, value in raw.items():
        if not binary and name != "text":
            value = base64.b64encode(value)
        tensor = module.InferInput(name, [1], "BYTES")
        data = np.array([value], dtype=object)
        if module is httpclient:
            tensor.set_data_from_numpy(data, binary_data=binary)
        else:
            tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    return inputs


def http_call(url: str, binary: bool) -> Callable[[], str]:
    host = url.removeprefix("http://")
    local = threading.local()
    inputs = triton_inputs(httpclient, binary)
    outputs = [httpclient.InferRequestedOutput("label", binary_data=binary)]

    def call() -> str:
        if not hasattr(local, "client"):
            local.client = httpclient.InferenceServerClient(host)
        result = local.client.infer(MODEL, inputs, outputs=outputs)
        return _text(result.as_numpy("label")[0])

    return call


def grpc_call(address: str) -> Callable[[], str]:
    local = threading.local()
    inputs = triton_inputs(grpcclient, binary=True)
    outputs = [grpcclient.InferRequestedOutput("label")]

    def call() -> str:
        if not hasattr(local, "client"):
            local.client = grpcclient.InferenceServerClient(address)
        result = local.client.infer(MODEL, inputs, outputs=outputs)
        return _text(result.as_numpy("label")[0])

    return call


def _text(label: bytes | str) -> str:
    """A BYTES element: bytes from binary outputs, str from JSON ones."""
    return label.decode() if isinstance(label, bytes) else str(label)


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the server process and its children (the workers)."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for candidate in [pid, *_children(pid)]:
        fields = Path(f"/proc/{candidate}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def load(call: Callable[[], str], concurrency: int, seconds: float, pid: int) -> dict[str, float]:
    for _ in range(20):  # warm up connections and the server's batchers
        assert call() == "7"
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        mine = []
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            call()
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    cpu_before, started = server_cpu_seconds(pid), time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed, cpu = time.perf_counter() - started, server_cpu_seconds(pid) - cpu_before
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        "per_second": len(latencies) / elapsed,
        "server_cpu_ms": 1000 * cpu / len(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=ROOT / "models")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", default="1,32")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    with LiveServer(args.repository) as server:
        calls = {
            "/v1 JSON, base64 files": v1_call(server.url),
            "v2 REST JSON, base64 files": http_call(server.url, binary=False),
            "v2 REST binary": http_call(server.url, binary=True),
            "v2 gRPC": grpc_call(server.grpc_url),
        }
        rows = []
        for name, call in calls.items():
            for concurrency in levels:
                rows.append((name, concurrency, load(call, concurrency, args.seconds, server.process.pid)))
    print(f"{'protocol':<28} {'conc':>4} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>7} {'server CPU ms/req':>18}")
    for name, concurrency, result in rows:
        print(
            f"{name:<28} {concurrency:>4} {result['p50_ms']:>7.2f} {result['p99_ms']:>7.2f}"
            f" {result['per_second']:>7.0f} {result['server_cpu_ms']:>18.2f}"
        )
    print(f"command: python bench/protocols.py --seconds {args.seconds:g} --concurrency {args.concurrency}")


if __name__ == "__main__":
    main()
