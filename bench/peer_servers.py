"""The servers bench/peers.py measures, each started on free loopback ports and stopped, with every
process it spawned, before the next one starts:

- anymodal (`anymodal serve`, tests/live.py's LiveServer), dynamic batching on or off;
- the naive FastAPI + onnxruntime server (bench/naive_server.py) under uvicorn;
- MLServer, with a custom runtime (bench/mlserver_runtime.py), from its own virtual environment
  (bench/.venv-mlserver, made on first use: MLServer's dependencies are not this project's).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
from loadgen import ROOT, default_bundle, process_tree, request_body, v2_request_body

sys.path.insert(0, str(ROOT))
from tests.live import LiveServer, free_port

BENCH = ROOT / "bench"
MLSERVER_VENV = BENCH / ".venv-mlserver"
# MLServer, and what the runtime needs beside it: onnxruntime, and this repository without extras
# (installed editable: the decoding, features, gate and fusion are imported from this checkout).
# uvloop 0.22 broke MLServer 1.7.1's inference workers (SeldonIO/MLServer#2286).
MLSERVER_PACKAGES = ["mlserver", "uvloop<0.22", "onnxruntime", "-e", str(ROOT)]


@dataclass(frozen=True)
class Running:
    """A server that answered ready: the root of its process tree, where to send the request,
    the request's body, and the seconds from its start to ready."""

    pid: int
    url: str
    body: bytes
    ready_seconds: float


def _started(pid: int) -> str | None:
    """When the process began (clock ticks after boot), which tells it from a later one of its pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


def _members(pid: int) -> dict[int, str | None]:
    """The processes below `pid`, each with when it began."""
    return {member: _started(member) for member in process_tree(pid)[1:]}


def _reap(members: dict[int, str | None]) -> None:
    """SIGKILL whatever is left of a stopped server's tree: the processes it spawned, by their
    ids, that are still the same processes."""
    for pid, started in members.items():
        if started is not None and _started(pid) == started:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextmanager
def anymodal(repository: Path, workers: int, batching: bool) -> Iterator[Running]:
    server = LiveServer(repository, workers=workers, batching=str(batching).lower(), log_level="warning")
    try:
        ready = server.wait_ready(timeout=60)
        yield Running(server.process.pid, f"{server.url}/v1/predict", request_body(), ready)
    finally:
        members = _members(server.process.pid)
        server.stop()
        _reap(members)


@contextmanager
def _spawned(
    command: list[str], env: dict[str, str], ready_url: str, log: IO[bytes], cwd: Path = ROOT
) -> Iterator[tuple[int, float]]:
    """Run `command` until the `with` ends: its pid and its seconds to ready (`ready_url` answers
    200). It runs in a session of its own; SIGTERM stops it, SIGKILL what it left behind."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"{command[0]} exited: {log.read().decode(errors='replace')[-2000:]}")
            try:
                if httpx.get(ready_url, timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{command[0]} was not ready in 120 s")
            time.sleep(0.02)
        yield process.pid, time.perf_counter() - started
    finally:
        members = _members(process.pid)
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        _reap(members)


@contextmanager
def naive(repository: Path, workers: int) -> Iterator[Running]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "naive_server:app", "--app-dir", str(BENCH)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    command += ["--log-level", "warning"]
    env = os.environ | {"NAIVE_BUNDLE": str(default_bundle(repository))}
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log, _spawned(command, env, f"{url}/health", log) as (pid, ready):
        yield Running(pid, f"{url}/v1/predict", request_body(), ready)


def mlserver_install() -> tuple[Path | None, str]:
    """MLServer's virtual environment, made on first use: its `mlserver` executable and MLServer's
    version, or None and why it could not be made."""
    executable, marker = MLSERVER_VENV / "bin" / "mlserver", MLSERVER_VENV / "installed"
    wanted = " ".join(MLSERVER_PACKAGES[:3])
    if not marker.exists() or marker.read_text() != wanted:
        print(f"making {MLSERVER_VENV.relative_to(ROOT)}: pip install {wanted} -e . ...", flush=True)
        shutil.rmtree(MLSERVER_VENV, ignore_errors=True)
        pip = [str(MLSERVER_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        steps = [[sys.executable, "-m", "venv", str(MLSERVER_VENV)], pip + MLSERVER_PACKAGES]
        for step in steps:
            try:
                done = subprocess.run(step, capture_output=True, text=True, timeout=900)
            except subprocess.TimeoutExpired:
                return None, f"`{' '.join(step[:5])}` took over 900 s"
            if done.returncode != 0:
                return None, f"`{' '.join(step[:5])}` failed: {(done.stderr or done.stdout).strip()[-1500:]}"
        marker.write_text(wanted)
    python = MLSERVER_VENV / "bin" / "python"
    done = subprocess.run(
        [str(python), "-c", "import mlserver; print(mlserver.__version__)"], capture_output=True, text=True
    )
    if done.returncode != 0:
        return None, f"MLServer does not import in {MLSERVER_VENV.relative_to(ROOT)}: {done.stderr[-1500:]}"
    return executable, done.stdout.strip()


@contextmanager
def mlserver(repository: Path, executable: Path, parallel_workers: int) -> Iterator[Running]:
    """MLServer serving the default model as `digits` on its HTTP port, its gRPC and metrics
    servers on free ports too. `parallel_workers` 0 runs inference in the server's own process;
    N runs it in N worker processes beside it (MLServer's default: 1)."""
    http, grpc, metrics = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryFile() as log:
        settings = {"host": "127.0.0.1", "http_port": http, "grpc_port": grpc, "metrics_port": metrics}
        settings |= {"parallel_workers": parallel_workers, "debug": False}
        (Path(folder) / "settings.json").write_text(json.dumps(settings))
        model = {
            "name": "digits",
            "implementation": "mlserver_runtime.AnymodalRuntime",
            "parameters": {"uri": str(default_bundle(repository))},
        }
        (Path(folder) / "model-settings.json").write_text(json.dumps(model))
        env = os.environ | {"PYTHONPATH": str(BENCH)}
        url = f"http://127.0.0.1:{http}/v2/models/digits"
        command = [str(executable), "start", folder]
        # in its folder: MLServer keeps its workers' metrics in .metrics/ under the working directory
        with _spawned(command, env, f"{url}/ready", log, Path(folder)) as (pid, ready):
            yield Running(pid, f"{url}/infer", v2_request_body(), ready)
