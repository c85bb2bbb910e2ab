"""The Open Inference Protocol (KServe v2) over gRPC, `inference.GRPCInferenceService`, so that
stock clients (`tritonclient.grpc`, KServe's) work unchanged: health, metadata and inference.

Each worker process runs one `grpc.aio` server in its own event loop, started by the app's
lifespan once the models are loaded, beside the HTTP server, and sharing its predictor, batching,
settings and lifecycle. With several workers each one binds the gRPC port with SO_REUSEPORT and the
kernel spreads connections over them; a lone worker binds it exclusively (gRPC's default would be
SO_REUSEPORT), so that a port already in use fails the start rather than being shared with a
stranger.

What REST does, gRPC does: calls are counted in the same metrics (route `grpc/<method>`, code the
HTTP status REST answers for the same outcome, 499 for a call the client cancelled) and in the
requests in flight; the API keys guard every call but the health ones (ServerLive, ServerReady,
ModelReady), as `authorization: Bearer <key>` metadata; a message over `max_body_bytes` is refused
(RESOURCE_EXHAUSTED, by gRPC itself, before any handler runs); on SIGTERM the server stops taking
calls when HTTP stops taking requests, and the calls in flight get as long as HTTP's requests
(`drain_seconds`, `service/shutdown.py`). Errors carry REST's messages, with the status codes of
`STATUS`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.metadata import version as package_version
from typing import Any, TypeVar

import grpc
from anymodal.service import grpc_codec, inference, metrics, payloads
from anymodal.service.decoding import InputError
from anymodal.service.errors import ApiError
from anymodal.service.proto import grpc_predict_v2_pb2 as pb
from anymodal.service.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from anymodal.service.repository import UnknownModel
from anymodal.service.security import bearer_token, check_api_key
from anymodal.service.state import ServiceState

log = logging.getLogger(__name__)
Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[["InferenceService", Request, str], Awaitable[Response]]
Method = Callable[["InferenceService", Request, grpc.aio.ServicerContext], Awaitable[Response]]

# gRPC status codes for the HTTP statuses of the errors a call can end in.
STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}
CANCELLED = 499  # the metrics' code for a call the client cancelled or let time out


@asynccontextmanager
async def serving(state: ServiceState, stopping: asyncio.Event) -> AsyncIterator[None]:
    """A gRPC server on `grpc_port` (at `host`) in the running event loop, for the duration. Once
    `stopping` is set it takes no new call and gives those in flight up to `drain_seconds`."""
    settings = state.settings
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.so_reuseport", int(settings.workers > 1)),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(state), server)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    address = f"{host}:{settings.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError:
        raise RuntimeError(
            f"gRPC cannot listen on {address}: is the port in use? Choose another with --grpc-port or"
            " ANYMODAL_GRPC_PORT, or 0 for no gRPC"
        ) from None
    await server.start()
    log.info("gRPC on %s", address)

    async def stop() -> None:
        await stopping.wait()
        await server.stop(settings.drain_seconds)

    stopped = asyncio.create_task(stop())
    try:
        yield
    finally:
        stopping.set()  # the lifespan also ends without a signal: an embedded server, a test client
        await stopped


def rpc(
    public: bool = False, model: Callable[[Any], str] = lambda request: ""
) -> Callable[[Handler], Method]:
    """A handler `(self, request, request_id) -> response` as the servicer's method, run as REST's
    middleware and error handlers run a route: API key (unless `public`), request id
    (`x-request-id` metadata, both ways), requests in flight, metrics (for the model `model` names
    when it is served), and every error as a status code with its message."""

    def decorate(handler: Handler) -> Method:
        route = f"grpc/{handler.__name__}"

        @functools.wraps(handler)
        async def method(self: InferenceService, request: Any, context: grpc.aio.ServicerContext) -> Any:
            state = self.state
            started = time.perf_counter()
            metadata = {item.key: item.value for item in context.invocation_metadata() or ()}
            request_id = payloads.request_id(_text(metadata, "x-request-id"))
            context.set_trailing_metadata((("x-request-id", request_id),))
            status, message = CANCELLED, ""
            state.in_flight += 1
            metrics.IN_FLIGHT.inc()
            try:
                if not public:
                    check_api_key(state.settings.api_keys, bearer_token(_text(metadata, "authorization")))
                response = await handler(self, request, request_id)
                status = 200
                return response
            except ApiError as error:
                status, message = error.status, error.message
            except UnknownModel as error:
                status, message = 404, str(error)
            except InputError as error:
                status, message = 400, str(error)
            except Exception:
                log.exception("internal error answering %s (request %s)", route, request_id)
                status, message = 500, f"internal error; report request id {request_id} to the operator"
            finally:
                state.in_flight -= 1
                metrics.IN_FLIGHT.dec()
                name = model(request)
                labels = {"model": name if name in state.repository.models else "", "route": route}
                metrics.REQUESTS.labels(**labels, code=str(status)).inc()
                metrics.REQUEST_DURATION.labels(**labels).observe(time.perf_counter() - started)
            await context.abort(STATUS.get(status, grpc.StatusCode.INTERNAL), message)

        return method

    return decorate


def _text(metadata: dict[str, str | bytes], key: str) -> str:
    """A metadata value as text; "" when absent (or binary, which these keys never are)."""
    value = metadata.get(key, "")
    return value if isinstance(value, str) else ""


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, state: ServiceState) -> None:
        self.state = state

    @rpc(public=True)
    async def ServerLive(self, request: pb.ServerLiveRequest, request_id: str) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @rpc(public=True)
    async def ServerReady(self, request: pb.ServerReadyRequest, request_id: str) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.state.ready)

    @rpc(public=True, model=lambda request: request.name)
    async def ModelReady(self, request: pb.ModelReadyRequest, request_id: str) -> pb.ModelReadyResponse:
        """Not ready, rather than an error, for a model that is not served: what REST's 404 means
        to `tritonclient.http`'s `is_model_ready`, and what Triton answers."""
        try:
            inference.find_model(self.state.repository, request.name, request.version)
        except UnknownModel:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=self.state.ready)

    @rpc()
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, request_id: str
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name="anymodal", version=package_version("anymodal"), extensions=inference.EXTENSIONS
        )

    @rpc(model=lambda request: request.name)
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, request_id: str
    ) -> pb.ModelMetadataResponse:
        repository = self.state.repository
        loaded = inference.find_model(repository, request.name, request.version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=loaded.name,
            versions=[str(v) for v in sorted(repository.models[loaded.name])],
            platform=inference.PLATFORM,
            inputs=[tensor(**spec.__dict__) for spec in inference.input_specs(loaded)],
            outputs=[tensor(**spec.__dict__) for spec in inference.output_specs(loaded)],
        )

    @rpc(model=lambda request: request.model_name)
    async def ModelInfer(self, request: pb.ModelInferRequest, request_id: str) -> pb.ModelInferResponse:
        state = self.state
        loaded = inference.find_model(state.repository, request.model_name, request.model_version)
        inputs, raw = grpc_codec.read_inputs(request)
        result = await inference.infer(
            state.predictor,
            loaded,
            inputs,
            grpc_codec.parameters(request.parameters),
            [output.name for output in request.outputs] or None,
            state.settings.max_instances,
        )
        response = pb.ModelInferResponse(
            model_name=loaded.name, model_version=str(loaded.version), id=request.id
        )
        for key, value in {**result.parameters, "request_id": request_id}.items():
            response.parameters[key].string_param = value
        grpc_codec.write_outputs(response, result.outputs, raw)
        return response
