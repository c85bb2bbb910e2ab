"""HTTP connections: uvicorn's httptools protocol, with the two guards it lacks.

uvicorn times a connection out only while it idles between requests. A client that connects and
sends nothing, or sends its request line and headers a byte at a time (slowloris), holds the
connection for ever, and the headers have no size limit (ten megabytes of them are read, kept and
answered). Here each request's head (request line and headers) must arrive within
`header_timeout_seconds` of the connection opening or of the previous response, and be at most
`max_header_bytes` long; else the answer is 408 or 431 and the connection closes (one that has sent
nothing is just closed). A body that arrives too slowly is the app's to refuse (`BodyLimit`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from anymodal.service.settings import get_settings
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = get_settings()
        self.header_timeout = settings.header_timeout_seconds
        self.max_header_bytes = settings.max_header_bytes
        self.head_timer: asyncio.TimerHandle | None = None
        self.in_head = False  # a request's head has begun and is not complete yet
        self.head_bytes = 0  # received while in the head: what httptools may be holding
        self.head_size = 0  # of the URL and headers parsed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.in_head and not self.transport.is_closing():
            # A head still unfinished after this chunk: counted as received, since httptools keeps
            # an unfinished header line itself.
            self.head_bytes += len(data)
            if self.head_bytes > self.max_header_bytes:
                self._too_large()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head = True
        self.head_bytes = self.head_size = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self.head_size += len(name) + len(value)

    # After a refusal the parser still reads the rest of the chunk: what follows is nobody's.
    def on_headers_complete(self) -> None:
        self._stop_waiting()
        self.in_head = False
        if self.transport.is_closing():
            return
        if self.head_size > self.max_header_bytes:  # a head that came whole in one chunk
            self._too_large()
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.transport.is_closing():
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.transport.is_closing():
            super().on_message_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # the next request's head is already here
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._await_head()

    def _await_head(self) -> None:
        self._stop_waiting()
        self.head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _stop_waiting(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.transport.is_closing():
            return
        if not self.in_head:  # nothing sent: an idle connection, closed without an answer
            self.transport.close()
            return
        self._refuse(
            408,
            f"the request line and headers did not all arrive within {self.header_timeout:g} s; send them"
            " at once, or raise ANYMODAL_HEADER_TIMEOUT_SECONDS",
        )

    def _too_large(self) -> None:
        self._refuse(
            431,
            f"the request line and headers are over {self.max_header_bytes} bytes; send fewer or shorter"
            " headers, or raise ANYMODAL_MAX_HEADER_BYTES",
        )

    def _refuse(self, status: int, message: str) -> None:
        """Answer before the app sees the request, and close the connection."""
        self._stop_waiting()
        self.in_head = False
        body = json.dumps({"error": message, "field": "headers"}).encode()
        head = [STATUS_LINE[status]]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
