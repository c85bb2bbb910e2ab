"""What the fault tests (tests/test_faults_*.py) share: waiting, raw sockets that send exactly what
they say, steady traffic from client threads, and a look at a server's worker processes."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx

from tests.live import LiveServer, metric

T = TypeVar("T")
TEXT = {"inputs": {"text": "drei"}}
BODY = json.dumps(TEXT).encode()
HEAD = f"POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
DROPPED = {"ConnectError", "ReadError", "RemoteProtocolError", "WriteError"}  # connections, not answers


def wait_for(check: Callable[[], T | None], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.01)
    raise AssertionError(f"not so within {timeout} s")


def connect(server: LiveServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def response(sock: socket.socket) -> tuple[int, dict]:
    reply = http.client.HTTPResponse(sock)
    reply.begin()
    return reply.status, json.loads(reply.read())


def closed(sock: socket.socket, timeout: float = 5.0) -> bool:
    """Whether the server closes the connection within `timeout`, sending nothing more."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def leftover(sock: socket.socket) -> bytes:
    """All the server sends until it closes the connection."""
    sock.settimeout(5)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def prompt(server: LiveServer) -> float:
    """Seconds a new client waits for a prediction."""
    started = time.perf_counter()
    with httpx.Client(base_url=server.url, timeout=5) as client:
        assert client.post("/v1/predict", json=TEXT).status_code == 200
    return time.perf_counter() - started


def scrape(server: LiveServer, name: str) -> float:
    return metric(server.client.get("/metrics").text, name)


@contextlib.contextmanager
def traffic(server: LiveServer, threads: int, **client: object) -> Iterator[list[tuple[float, str]]]:
    """Predictions one after another in `threads` threads while in the block, each outcome (a status
    or an error) timed."""
    outcomes: list[tuple[float, str]] = []
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(base_url=server.url, timeout=10, **client) as session:  # type: ignore[arg-type]
            while not stop.is_set():
                try:
                    outcome = str(session.post("/v1/predict", json=TEXT).status_code)
                except httpx.TransportError as error:
                    outcome = type(error).__name__
                    time.sleep(0.01)
                outcomes.append((time.monotonic(), outcome))

    senders = [threading.Thread(target=send) for _ in range(threads)]
    for sender in senders:
        sender.start()
    try:
        yield outcomes
    finally:
        stop.set()
        for sender in senders:
            sender.join()


def rss_kb(server: LiveServer) -> int:
    return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{server.process.pid}/status").read_text())[1])  # type: ignore[index]


def workers(server: LiveServer) -> set[int]:
    """The worker processes uvicorn's supervisor spawned (a killed one not yet reaped has no command line)."""
    children: set[int] = set()
    for path in Path(f"/proc/{server.process.pid}/task").glob("*/children"):
        children |= {int(pid) for pid in path.read_text().split()}
    found = set()
    for pid in children:
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.add(pid)
        except OSError:
            pass
    return found


def two_workers(server: LiveServer, unlike: set[int] | None = None) -> set[int] | None:
    found = workers(server)
    return found if len(found) == 2 and found != unlike else None


def holder(pids: set[int], port: int, client_port: int | None = None) -> int | None:
    """Which of `pids` holds a connection accepted on `port` (from `client_port`, if given)."""
    established = {}  # socket inode: (local port, remote port)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01":
                ports = (int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16))
                established[f"socket:[{fields[9]}]"] = ports
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                ports = established.get(os.readlink(fd))
            except OSError:
                continue
            if ports and ports[0] == port and client_port in (None, ports[1]):
                return pid
    return None
