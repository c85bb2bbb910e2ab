"""What the serving benchmarks share: the 3-modality request, the load generators, and the CPU
time and memory of a server's process tree.

Load comes from wrk (Debian package `wrk`) when it is installed: a C client leaves the cores to
the server. Without it, an asyncio client in the benchmark's process is used, and says so: it
competes with the server for the CPU, so its throughput numbers are lower bounds.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from anymodal.service.repository import version_folders

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
TEXT = "sieben"

Load = Callable[[str, bytes, int, float], dict[str, float]]


def default_bundle(repository: Path) -> Path:
    """The bundle the service answers `/v1/predict` with: the newest version of the first model."""
    models = sorted(p for p in repository.iterdir() if version_folders(p))
    if not models:
        raise SystemExit(f"{repository}: no model bundle (<name>/<version>/manifest.json) in it")
    folders = version_folders(models[0])
    return folders[max(folders)]


def request_inputs() -> dict[str, object]:
    """A scan, a recording and a typed word of the digits test split: a 7."""
    return {
        "image": (FIXTURES / "digit_7.png").read_bytes(),
        "audio": (FIXTURES / "digit_7.wav").read_bytes(),
        "text": TEXT,
    }


def _b64(name: str) -> str:
    return base64.b64encode((FIXTURES / name).read_bytes()).decode()


def request_body() -> bytes:
    """The request as `/v1/predict` takes it: files base64-encoded in JSON."""
    inputs = {"image": {"b64": _b64("digit_7.png")}, "audio": {"b64": _b64("digit_7.wav")}, "text": TEXT}
    return json.dumps({"inputs": inputs}).encode()


def v2_request_body() -> bytes:
    """The same request in the Open Inference Protocol's JSON: BYTES inputs, files in base64."""
    values = {"image": _b64("digit_7.png"), "audio": _b64("digit_7.wav"), "text": TEXT}
    inputs = [{"name": k, "datatype": "BYTES", "shape": [1], "data": [v]} for k, v in values.items()]
    return json.dumps({"inputs": inputs}).encode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summarize(latencies: list[float], elapsed: float, errors: int = 0) -> dict[str, float]:
    """Throughput and latency percentiles (ms) of a run from its latencies (s)."""
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 99),
        "errors": errors,
    }


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("{body}", "rb"):read("*all")
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %f %f %f\\n", summary.requests, summary.errors.status
    + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), summary.duration))
end
"""


def load_wrk(url: str, body: bytes, connections: int, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "body.json").write_bytes(body)
        script = Path(folder) / "post.lua"
        script.write_text(WRK_SCRIPT.replace("{body}", str(Path(folder) / "body.json")))
        command = ["wrk", "-t", str(min(2, connections)), "-c", str(connections)]
        command += ["-d", f"{max(1, round(seconds))}s", "-s", str(script), url]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    requests, errors, p50, p99, duration = re.search(r"RESULT (\S+) (\S+) (\S+) (\S+) (\S+)", output).groups()  # type: ignore[union-attr]
    return {
        "requests": int(requests),
        "rps": int(requests) / (float(duration) / 1e6),
        "p50_ms": float(p50) / 1000,
        "p99_ms": float(p99) / 1000,
        "errors": int(errors),
    }


def load_python(url: str, body: bytes, connections: int, seconds: float) -> dict[str, float]:
    async def run() -> dict[str, float]:
        latencies: list[float] = []
        errors = 0
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            stop = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal errors
                while time.perf_counter() < stop:
                    started = time.perf_counter()
                    answer = await client.post(
                        url, content=body, headers={"content-type": "application/json"}
                    )
                    latencies.append(time.perf_counter() - started)
                    errors += answer.status_code != 200

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(connections)))
            return summarize(latencies, time.perf_counter() - started, errors)

    return asyncio.run(run())


def load_generator() -> tuple[str, Load]:
    """wrk when installed, else the asyncio client: its name (saying when it is a lower bound)."""
    if shutil.which("wrk"):
        return "wrk", load_wrk
    return "python (shares the CPU with the server: throughput is a lower bound)", load_python


def process_tree(pid: int) -> list[int]:
    """`pid` and every process below it (uvicorn's and MLServer's workers), read from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):  # it exited meanwhile
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(parents.get(current, []))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the processes of the tree (those still running)."""
    total, ticks = 0.0, os.sysconf("SC_CLK_TCK")
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def tree_rss_mb(pid: int) -> float:
    """Resident memory of the tree's processes, summed (pages they share count in each)."""
    total = 0.0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        found = re.search(r"VmRSS:\s+(\d+)", status)
        total += int(found.group(1)) / 1024 if found else 0.0
    return total
