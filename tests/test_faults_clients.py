"""Clients that are slow or send too much, as raw sockets: bounded time and memory, a 4xx or a
closed connection, and never a request held up."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.faults import (
    BODY,
    HEAD,
    closed,
    connect,
    prompt,
    response,
    rss_kb,
)
from tests.live import LiveServer


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
