"""Faults against a real server: a worker killed, SIGTERM under load, the model repository deleted,
emptied, unreadable or read-only while serving, and clients that are slow or send too much. Each
test is bounded in time; the misbehaving clients are raw sockets, which send exactly what they say."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import os
import re
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from anymodal.service.app import create_app
from anymodal.service.settings import Settings
from prometheus_client import REGISTRY

from tests.live import LiveServer, copy_repository, metric

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


# -- a worker killed -----------------------------------------------------------------------
def test_a_killed_worker_is_replaced_while_the_other_keeps_answering(tmp_path: Path) -> None:
    with LiveServer(copy_repository(tmp_path / "models"), workers=2) as server:
        first = wait_for(lambda: two_workers(server))
        fresh = httpx.Limits(max_keepalive_connections=0)  # a connection per request: both workers get some
        with traffic(server, 2, limits=fresh) as outcomes:
            held = connect(server)
            held.sendall(HEAD.encode() + BODY[:5])  # a request in flight on the worker to be killed
            victim = wait_for(lambda: holder(first, server.port, held.getsockname()[1]))
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            now = wait_for(lambda: two_workers(server, unlike=first))
            replaced = time.monotonic() - killed
            wait_for(lambda: holder(now - first, server.port))
            serving = time.monotonic() - killed
            time.sleep(0.3)
        assert closed(held)  # the request in flight went with its worker
        failed = [outcome for _, outcome in outcomes if outcome != "200"]
        assert set(failed) <= DROPPED and len(failed) <= 2  # at most one a thread: those in flight there
        assert any(outcome == "200" for at, outcome in outcomes if killed < at < killed + serving)
        assert replaced < 3  # uvicorn's supervisor looks every 0.5 s
        assert scrape(server, "anymodal_requests_in_flight") == 1  # the scrape: the dead worker's are gone
        logging.getLogger(__name__).warning("worker replaced in %.2f s, serving in %.2f s", replaced, serving)


# -- SIGTERM -------------------------------------------------------------------------------
@pytest.mark.parametrize("count", [1, 2])
def test_sigterm_under_load_finishes_what_is_in_flight_and_exits_at_once(tmp_path: Path, count: int) -> None:
    with LiveServer(copy_repository(tmp_path / "models"), workers=count) as server:
        held = [connect(server) for _ in range(3)]
        for sock in held:  # in flight for sure: the server has their heads and waits for their bodies
            sock.sendall(HEAD.encode() + BODY[:5])
        wait_for(lambda: scrape(server, "anymodal_requests_in_flight") == 1 + len(held))
        with traffic(server, 3) as outcomes:
            time.sleep(0.5)
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            time.sleep(1.0)  # with 2 workers the supervisor passes the signal on within 0.5 s
            assert server.process.poll() is None  # the drain waits for those in flight
            for sock in held:
                sock.sendall(BODY[5:])
            answers = [response(sock) for sock in held]
            answered = time.monotonic()
            code = server.process.wait(timeout=5)
            exited = time.monotonic()
        assert [status for status, _ in answers] == [200] * len(held)
        assert exited - answered < 2 and exited - signalled < 5  # drain_seconds is 30
        assert code in (0, -signal.SIGTERM)
        statuses = {outcome for _, outcome in outcomes}
        assert "200" in statuses and statuses <= {"200", "503"} | DROPPED


@pytest.mark.parametrize("second", [None, signal.SIGINT])
def test_the_drain_ends_at_drain_seconds_or_at_a_second_ctrl_c(tmp_path: Path, second: int | None) -> None:
    drain = 30 if second else 1
    with LiveServer(copy_repository(tmp_path / "models"), drain_seconds=drain) as server:
        held = connect(server)
        held.sendall(HEAD.encode() + BODY[:5])  # never finished
        wait_for(lambda: scrape(server, "anymodal_requests_in_flight") == 2)
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        if second:
            time.sleep(1.0)
            assert server.process.poll() is None
            server.process.send_signal(second)
            signalled = time.monotonic()
        server.process.wait(timeout=5)
        assert time.monotonic() - signalled < (2 if second else 3)
        left = leftover(held)  # cancelled when the drain time was up: 503, not 500
        assert (left.startswith(b"HTTP/1.1 503") and b"ANYMODAL_DRAIN_SECONDS is 1 s" in left) or (
            second and not left
        )


# -- the model repository ------------------------------------------------------------------
def readable(server: LiveServer) -> float:
    return scrape(server, "anymodal_repository_readable")


@pytest.mark.parametrize("fault", ["deleted", "emptied"])
def test_a_deleted_or_emptied_repository_keeps_the_loaded_models_serving(tmp_path: Path, fault: str) -> None:
    repository = copy_repository(tmp_path / "models")
    with LiveServer(repository, repository_poll_seconds=0.2) as server:
        assert readable(server) == 1
        for folder in [repository] if fault == "deleted" else list(repository.iterdir()):
            shutil.rmtree(folder)
        wait_for(lambda: readable(server) == 0)
        time.sleep(1.0)  # five more polls
        assert server.client.post("/v1/predict", json=TEXT).status_code == 200
        assert server.client.get("/v2/health/ready").status_code == 200
        assert server.client.get("/v1/models/digits").json()["versions"] == [1]
        assert scrape(server, "anymodal_repository_errors_total") >= 5
        shutil.rmtree(repository, ignore_errors=True)
        copy_repository(tmp_path / "restored").rename(repository)  # back as it was, at once
        wait_for(lambda: readable(server) == 1)
        assert server.client.post("/v1/predict", json=TEXT).status_code == 200
    assert server.output().count("cannot read the model repository") == 1  # one warning, not one a poll


def test_an_unreadable_repository_keeps_the_loaded_models_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """In-process: a test run as root reads any folder, whatever its mode."""
    root = copy_repository(tmp_path / "models")
    repository = create_app(Settings(model_repository=root, grpc_port=0)).state.service.repository
    repository.load_all()
    listing = Path.iterdir

    def refused(path: Path) -> Iterator[Path]:
        if path == root:
            raise PermissionError(13, "Permission denied", str(path))
        return listing(path)

    monkeypatch.setattr(Path, "iterdir", refused)
    for _ in range(3):
        asyncio.run(repository.poll())
    assert sorted(repository.models["digits"]) == [1] and not repository.readable
    assert REGISTRY.get_sample_value("anymodal_repository_readable") == 0
    warnings = [r for r in caplog.records if r.name.endswith("repository") and r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "cannot read the model repository ([Errno 13] Permission denied:"
        f" '{root}'); the models loaded keep serving: {{'digits': [1]}}"
    ]
    monkeypatch.undo()
    asyncio.run(repository.poll())
    assert repository.readable and REGISTRY.get_sample_value("anymodal_repository_readable") == 1


def test_a_read_only_repository_serves_and_is_never_written(tmp_path: Path) -> None:
    repository = copy_repository(tmp_path / "models")
    paths = [repository, *repository.rglob("*")]
    for path in paths:
        path.chmod(path.stat().st_mode & ~0o222)

    def snapshot() -> dict[str, tuple[int, int, int]]:
        found = [repository, *repository.rglob("*")]
        return {str(p): (p.stat().st_mode, p.stat().st_size, p.stat().st_mtime_ns) for p in found}

    before = snapshot()
    try:
        with LiveServer(repository, repository_poll_seconds=0.2) as server:
            for _ in range(5):
                assert server.client.post("/v1/predict", json=TEXT).status_code == 200
            assert server.client.post("/v1/models/digits/reload").json()["unchanged"] == [1]
            time.sleep(1.0)  # polls
            assert readable(server) == 1
        assert snapshot() == before  # not a file added, changed or touched
    finally:
        for path in paths:
            path.chmod(path.stat().st_mode | 0o200)


def test_a_removed_model_is_unloaded_and_the_others_keep_serving(tmp_path: Path) -> None:
    """As in Triton's poll mode; only a repository with no model left is taken for a fault."""
    repository = copy_repository(tmp_path / "models")
    other = repository / "other" / "1"
    shutil.copytree(repository / "digits" / "1", other)
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps(manifest | {"name": "other"}))
    with LiveServer(repository, repository_poll_seconds=0.2) as server:
        assert server.client.get("/v1/models/other").status_code == 200
        shutil.rmtree(repository / "other")
        wait_for(lambda: server.client.get("/v1/models/other").status_code == 404)
        assert server.client.post("/v1/predict", json=TEXT).status_code == 200
        assert readable(server) == 1 and scrape(server, "anymodal_repository_errors_total") == 0


# -- slow clients, large heads -------------------------------------------------------------
@pytest.fixture(scope="module")
def guarded() -> Iterator[LiveServer]:
    """One worker, so that a client that held it up would hold everything up; timeouts of 1 s."""
    with LiveServer(header_timeout_seconds=1, body_timeout_seconds=1) as server:
        yield server


def trickle(sock: socket.socket, data: bytes, stop: threading.Event) -> threading.Thread:
    """Send `data` a byte every 0.2 s, in a thread, until it is all sent, refused or `stop`."""

    def send() -> None:
        for byte in data:
            if stop.wait(0.2):
                return
            try:
                sock.send(bytes([byte]))
            except OSError:
                return

    thread = threading.Thread(target=send)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("opening", "rest", "field", "setting"),
    [
        (HEAD.encode(), BODY, "body", "ANYMODAL_BODY_TIMEOUT_SECONDS"),
        (
            b"GET /v2/health/ready HTTP/1.1\r\n",
            b"X-Slow: 1\r\n" * 100,
            "headers",
            "ANYMODAL_HEADER_TIMEOUT_SECONDS",
        ),
    ],
    ids=["body", "headers"],
)
def test_a_request_sent_slowly_gets_408_and_holds_nothing_up(
    guarded: LiveServer, opening: bytes, rest: bytes, field: str, setting: str
) -> None:
    sock = connect(guarded)
    sock.sendall(opening)
    started = time.monotonic()
    stop = threading.Event()
    thread = trickle(sock, rest, stop)
    try:
        assert prompt(guarded) < 1
        status, body = response(sock)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join()
    assert status == 408 and body["field"] == field and setting in body["error"]
    assert 0.9 < elapsed < 3 and closed(sock)


def test_idle_connections_are_closed_and_hold_nothing_up(guarded: LiveServer) -> None:
    silent = [connect(guarded) for _ in range(100)]  # never send a byte
    kept = [connect(guarded) for _ in range(100)]  # keep-alive, idle after one request
    for sock in kept:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n\r\n")
    assert all(response(sock)[0] == 200 for sock in kept)
    assert prompt(guarded) < 1
    started = time.monotonic()
    assert all(closed(sock) for sock in silent + kept)
    assert time.monotonic() - started < 3


def test_headers_over_the_limit_get_431_and_are_not_read_whole(guarded: LiveServer) -> None:
    sock = connect(guarded)
    padding = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(100))  # 100 KB
    sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: test\r\n" + padding + b"\r\n")
    status, body = response(sock)
    assert status == 431 and body["field"] == "headers" and "ANYMODAL_MAX_HEADER_BYTES" in body["error"]
    assert closed(sock)
    before = rss_kb(guarded)
    for _ in range(10):  # one header line without end, 10 MB: cut off, not kept
        endless = connect(guarded)
        endless.sendall(b"GET / HTTP/1.1\r\nX-Endless: ")
        with pytest.raises(OSError):
            for _ in range(100):
                endless.sendall(b"a" * 100_000)
    assert rss_kb(guarded) - before < 30_000
    assert prompt(guarded) < 1
