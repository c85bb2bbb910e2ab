"""The FastAPI application: lifecycle, middleware, routes.

Start: every bundle is verified, loaded and warmed up before readiness turns 200; then the gRPC
server (`service/grpc_server.py`) starts in the same event loop. SIGTERM (or Ctrl-C): readiness
turns 503, HTTP and gRPC take no new work and finish what is in flight (up to `drain_seconds`),
then the worker exits (`service/shutdown.py`). `create_app` is the factory uvicorn imports in every
worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from anymodal.service import api_v1, api_v2, metrics, payloads, shutdown
from anymodal.service.binary_data import HEADER
from anymodal.service.errors import ApiError, error_response, install_handlers
from anymodal.service.predictor import Predictor
from anymodal.service.repository import ModelRepository
from anymodal.service.schemas import PredictRequest
from anymodal.service.schemas_v2 import InferenceRequest
from anymodal.service.settings import Settings, get_settings
from anymodal.service.state import ServiceState
from fastapi import FastAPI, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)
DEMO = Path(__file__).with_name("demo")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logging.getLogger("anymodal").setLevel(settings.log_level.upper())  # in every worker process
    # The decoders' matrix products are tiny (the mel filterbank): extra BLAS threads only spin and
    # steal the cores that requests need.
    threadpool_limits(limits=1, user_api="blas")
    pipeline = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="pipeline")
    state = ServiceState(
        settings=settings,
        repository=ModelRepository(settings),
        predictor=Predictor(pipeline, settings),
        executors=[pipeline],
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = time.perf_counter()
        await asyncio.to_thread(state.repository.load_all)
        state.started = True
        log.info("ready in %.2f s", time.perf_counter() - started)
        watcher = None
        if settings.repository_poll_seconds > 0:
            watcher = asyncio.create_task(state.repository.watch(settings.repository_poll_seconds))
        stopping = shutdown.on_signals(state, asyncio.get_running_loop())
        try:
            async with AsyncExitStack() as transports:
                if settings.grpc_port:
                    # Imported here, not at the top: the gRPC stubs register the protocol's
                    # `inference.*` messages in protobuf's default pool, where no other copy of
                    # them (tritonclient's, KServe's) can sit beside them; a process that only
                    # builds the app (`anymodal openapi`, tests) need not load them.
                    from anymodal.service import grpc_server

                    await transports.enter_async_context(grpc_server.serving(state, stopping))
                yield
        finally:
            if watcher is not None:
                watcher.cancel()
            for executor in state.executors:
                executor.shutdown(wait=False, cancel_futures=True)
            metrics.worker_exited(os.getpid())

    app = FastAPI(
        title="anymodal",
        version=package_version("anymodal"),
        summary="Robust multimodal prediction from any subset of modalities",
        description="Send whatever inputs you have; get the best prediction they allow, with an account"
        " of how each modality voted. `/v1` is anymodal's own API; `/v2` is the Open Inference Protocol.",
        lifespan=lifespan,
    )
    app.state.service = state
    install_handlers(app)
    app.include_router(api_v1.router)
    app.include_router(api_v2.health)
    app.include_router(api_v2.router)

    if settings.demo:  # the browser demo page: static files calling the /v1 API
        app.mount("/demo", StaticFiles(directory=DEMO, html=True), name="demo")

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-Request-ID", HEADER],
                           expose_headers=[HEADER])  # fmt: skip
    app.add_middleware(shutdown.Unfinished, drain_seconds=settings.drain_seconds)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, timeout=settings.body_timeout_seconds)
    app.add_middleware(RequestContext, state=state)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, plus the request bodies the predict and infer routes read themselves
    (they parse JSON and multipart by hand, to answer 415 and 413 before parsing)."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                if operation.get("security"):  # keys are optional: off unless ANYMODAL_API_KEYS is set
                    operation["security"] = [*operation["security"], {}]
                # FastAPI's own 422 body is never sent: errors are ErrorResponse (v1) or 400 (v2).
                responses = operation.get("responses", {})
                if "HTTPValidationError" in str(responses.get("422", "")):
                    if path.startswith("/v2"):
                        del responses["422"]
                    else:
                        responses["422"] = {
                            "description": api_v1.ERRORS[422]["description"],
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
                            },
                        }
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        for model in (PredictRequest, InferenceRequest):
            definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(definition.pop("$defs", {}))
            components[model.__name__] = definition
        app.openapi_schema = schema
    return app.openapi_schema


class RequestContext:
    """Request ids, in-flight accounting, and the request metrics (count and latency by model,
    route and status)."""

    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = payloads.request_id(offered)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()
        self.state.in_flight += 1
        metrics.IN_FLIGHT.inc()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.state.in_flight -= 1
            metrics.IN_FLIGHT.dec()
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            model = self._model_label(scope)
            metrics.child(metrics.REQUESTS, model, path, str(status)).inc()
            metrics.child(metrics.REQUEST_DURATION, model, path).observe(time.perf_counter() - started)

    def _model_label(self, scope: Scope) -> str:
        """The model a request was for, if it is served (clients cannot mint label values)."""
        name = scope.get("path_params", {}).get("model")
        if name is None and getattr(scope.get("route"), "path", "") == "/v1/predict":
            name = self.state.repository.default_name()
        return name if name in self.state.repository.models else ""


class BodyLimit:
    """413 for a body over the limit, by its Content-Length or, if chunked, as it arrives; 408 for a
    body not all received `timeout` seconds after the request began (uvicorn has no such limit: a
    client sending a byte a second would hold its request for ever). A refusal while the body is
    still coming closes the connection, so that the rest of it is not read."""

    def __init__(self, app: ASGIApp, limit: int, timeout: float) -> None:
        self.app = app
        self.limit = limit
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = (
            f"the body is over the limit of {self.limit} bytes; send less, or raise ANYMODAL_MAX_BODY_BYTES"
        )
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            response = error_response(Request(scope), ApiError(413, message, field="body"))
            await response(scope, receive, send)
            return
        late = (
            f"the body did not all arrive within {self.timeout:g} s of the request; send it faster, or"
            " raise ANYMODAL_BODY_TIMEOUT_SECONDS"
        )
        close = {"connection": "close"}
        deadline = asyncio.get_running_loop().time() + self.timeout
        received = 0
        complete = False

        async def counting_receive() -> Message:
            nonlocal received, complete
            if complete:  # after the body only a disconnect can come, whenever it does
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message_ = await receive()
            except TimeoutError:
                raise ApiError(408, late, field="body", headers=close) from None
            if message_["type"] == "http.request":
                received += len(message_.get("body", b""))
                if received > self.limit:
                    raise ApiError(413, message, field="body", headers=close)
                complete = not message_.get("more_body", False)
            return message_

        await self.app(scope, counting_receive, send)
