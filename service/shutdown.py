"""A worker's shutdown on SIGTERM or SIGINT (Ctrl-C): stop taking work, finish what is in flight, exit.

At the first signal readiness turns 503 (false over gRPC) and the signal goes straight on to
uvicorn, which closes the listening socket and the idle keep-alive connections and gives the
requests in flight up to `drain_seconds` to finish (its `timeout_graceful_shutdown`); at the same
moment the gRPC server stops taking calls and gives those in flight as long. A request still
running when that time is up is cancelled and answered 503 (`Unfinished`), not uvicorn's 500. Then
the lifespan ends and the worker exits. (Waiting instead until no request is in flight, with the
socket still open, lasts as long as clients keep sending: up to `drain_seconds` under load.)

A second Ctrl-C exits at once without waiting for anything (uvicorn's rule). A second SIGTERM does
not cut the drain short: with several workers, systemd sends one to every process of the service
and uvicorn's supervisor another to each worker.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from anymodal.service.errors import ApiError, error_response
from anymodal.service.state import ServiceState
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


def on_signals(state: ServiceState, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
    """Handle SIGTERM and SIGINT in this worker, in front of uvicorn's handlers. The event returned
    is set in `loop` at the first signal: transports other than uvicorn's stop on it."""
    stopping = asyncio.Event()
    if threading.current_thread() is not threading.main_thread():
        return stopping  # an embedded or test server: signals are not ours to handle
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: FrameType | None, previous: Callable = previous) -> None:
            if not state.draining:
                state.draining = True
                log.info(
                    "signal %d: not ready any more; finishing %d request(s) in flight, then exiting",
                    signum,
                    state.in_flight,
                )
                loop.call_soon_threadsafe(stopping.set)
            previous(signum, frame)

        signal.signal(sig, handler)
    return stopping


class Unfinished:
    """503 for a request that uvicorn cancels because the drain time is up, rather than its 500:
    the request may be sent again, to another server."""

    def __init__(self, app: ASGIApp, drain_seconds: float) -> None:
        self.app = app
        self.message = (
            f"the server shut down before this request finished (ANYMODAL_DRAIN_SECONDS is"
            f" {drain_seconds:g} s); send it again"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except asyncio.CancelledError:
            if started:
                raise  # uvicorn closes the connection
            error = ApiError(503, self.message, headers={"connection": "close"})
            await error_response(Request(scope), error)(scope, receive, send)
            # Answered: the request ends here, without uvicorn's traceback for a cancelled request.
