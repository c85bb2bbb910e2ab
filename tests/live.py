"""A real anymodal server in a subprocess on a loopback port, for integration tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
FIXTURES = Path(__file__).with_name("fixtures")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def copy_repository(target: Path) -> Path:
    """A private copy of the bundled model repository that a test may change."""
    shutil.copytree(MODELS, target)
    return target


class LiveServer:
    """`url` is its HTTP base URL; `grpc_url` its gRPC address (`host:port`): on a free port unless
    `grpc_port` names one (0: no gRPC)."""

    def __init__(
        self, repository: Path = MODELS, workers: int = 1, grpc_port: int | None = None, **settings: object
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        while grpc_port is None or grpc_port == self.port:
            grpc_port = free_port()
        self.grpc_port = grpc_port
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("ANYMODAL_") and k != "PROMETHEUS_MULTIPROC_DIR"
        }
        env |= {"ANYMODAL_REPOSITORY_POLL_SECONDS": "0", "ANYMODAL_LOG_LEVEL": "warning"}
        env |= {f"ANYMODAL_{k.upper()}": str(v) for k, v in settings.items()}
        command = [
            sys.executable,
            "-m",
            "anymodal.service",
            "serve",
            "--port",
            str(self.port),
            "--grpc-port",
            str(self.grpc_port),
            "--workers",
            str(workers),
        ]
        command += ["--repository", str(repository)]
        self.started = time.perf_counter()
        # A file, not a pipe: a long run can log more than a pipe holds, and a full pipe that nobody
        # reads blocks the server the next time it writes.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (read after the server stops; gone with it)
        self.process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Seconds from start until /v2/health/ready answered 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.output()}")
            try:
                if self.client.get("/v2/health/ready").status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"the server was not ready in {timeout} s: {self.output()}")

    def output(self) -> str:
        """Everything the server has logged so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> int:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> LiveServer:
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`, from a /metrics page."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()
