"""The Open Inference Protocol (KServe v2) over HTTP, so that stock clients (tritonclient, KServe's)
work unchanged: health, metadata and inference, with the binary tensor data extension.

What inputs, parameters and outputs mean is `service/inference.py`, which any transport shares;
this module reads and writes HTTP bodies: JSON, or binary tensor data (`service/binary_data.py`).
Errors are `{"error": "..."}`.
"""

from __future__ import annotations

import json
from importlib.metadata import version as package_version
from typing import Any

from anymodal.service import inference
from anymodal.service.binary_data import (
    BINARY,
    HEADER,
    check_media,
    encode_response,
    output_formats,
    read_inputs,
    split_body,
)
from anymodal.service.errors import documented
from anymodal.service.payloads import media_type, validation_error
from anymodal.service.repository import LoadedModel
from anymodal.service.schemas_v2 import (
    InferenceRequest,
    InferenceResponse,
    LiveResponse,
    MetadataTensor,
    ModelMetadata,
    ModelReadyResponse,
    ReadyResponse,
    ServerMetadata,
    V2Error,
)
from anymodal.service.security import require_api_key
from anymodal.service.state import ServiceState, get_state
from anymodal.service.tensors import Tensor, to_raw
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

health = APIRouter(prefix="/v2", tags=["open inference protocol"])
router = APIRouter(prefix="/v2", tags=["open inference protocol"], dependencies=[Depends(require_api_key)])
ERRORS = documented(
    V2Error,
    {
        400: "Invalid request or input",
        401: "Missing or wrong API key",
        404: "Unknown model or version",
        413: "Body over the size limit",
        415: "Neither JSON nor binary tensor data, or a compressed body",
        503: "Not ready, or shutting down",
    },
)


@health.get("/health/live", response_model=LiveResponse, summary="Server live")
async def live() -> LiveResponse:
    return LiveResponse(live=True)


@health.get(
    "/health/ready",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse, "description": "Starting, no model loaded, or draining"}},
    summary="Server ready",
)
async def ready(state: ServiceState = Depends(get_state)):
    return JSONResponse({"ready": state.ready}, status_code=200 if state.ready else 503)


@health.get(
    "/models/{model}/ready", response_model=ModelReadyResponse, responses=ERRORS, summary="Model ready"
)
async def model_ready(model: str, state: ServiceState = Depends(get_state)):
    return _ready(state, model, None)


@health.get(
    "/models/{model}/versions/{version}/ready",
    response_model=ModelReadyResponse,
    responses=ERRORS,
    summary="Model version ready",
)
async def model_version_ready(model: str, version: str, state: ServiceState = Depends(get_state)):
    return _ready(state, model, version)


@router.get("", response_model=ServerMetadata, responses=ERRORS, summary="Server metadata")
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(
        name="anymodal", version=package_version("anymodal"), extensions=inference.EXTENSIONS
    )


@router.get("/models/{model}", response_model=ModelMetadata, responses=ERRORS, summary="Model metadata")
async def model_metadata(model: str, state: ServiceState = Depends(get_state)) -> ModelMetadata:
    return _metadata(state, _get(state, model, None))


@router.get(
    "/models/{model}/versions/{version}",
    response_model=ModelMetadata,
    responses=ERRORS,
    summary="Model metadata",
)
async def model_version_metadata(
    model: str, version: str, state: ServiceState = Depends(get_state)
) -> ModelMetadata:
    return _metadata(state, _get(state, model, version))


def _binary_examples() -> tuple[str, int, str]:
    """A binary request (the text "sieben" as binary data), the length of its JSON header, and a
    binary response (the label "7"), for the OpenAPI document."""
    text = to_raw(Tensor("text", "BYTES", (1,), [b"sieben"]))
    size = {"binary_data_size": len(text)}
    header = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "parameters": size}]})
    answer = {"model_name": "digits", "model_version": "1", "parameters": {"fusion": "entropy"}}
    response, _ = encode_response(answer, [Tensor("label", "BYTES", (1,), [b"7"])], {}, True)
    return header + text.decode("ascii"), len(header), response.decode("ascii")


BINARY_REQUEST, BINARY_HEADER_LENGTH, BINARY_RESPONSE = _binary_examples()
INFER_ROUTE: dict[str, Any] = {
    "response_model": InferenceResponse,
    "responses": {
        **ERRORS,
        200: {
            "description": "The outputs: JSON, or with binary tensor data a JSON header of"
            f" {HEADER} bytes followed by the outputs whose `parameters` have `binary_data_size`",
            "content": {
                BINARY: {"schema": {"type": "string", "format": "binary", "examples": [BINARY_RESPONSE]}}
            },
            "headers": {
                HEADER: {
                    "description": "Binary responses only: the length of the JSON header",
                    "schema": {"type": "integer", "minimum": 0},
                }
            },
        },
    },
    "openapi_extra": {
        "parameters": [
            {
                "name": HEADER,
                "in": "header",
                "required": False,
                "description": "Binary tensor data: the length of the JSON header that starts the body",
                "schema": {"type": "integer", "minimum": 0},
                "example": BINARY_HEADER_LENGTH,
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
                BINARY: {
                    "schema": {
                        "type": "string",
                        "format": "binary",
                        "description": f"Binary tensor data: an InferenceRequest as JSON, {HEADER} bytes"
                        " long, then the data of every input whose `parameters` have `binary_data_size`,"
                        " in the order of the inputs: little-endian, row-major; each BYTES element is its"
                        " length (4 bytes, little-endian) then its bytes, images and recordings as the"
                        " files' own bytes",
                    },
                    "example": BINARY_REQUEST,
                },
            },
        },
    },
}


@router.post("/models/{model}/infer", summary="Inference", **INFER_ROUTE)
async def infer(model: str, request: Request) -> Response:
    state = request.app.state.service  # not a dependency: the hot path skips FastAPI's resolver
    return await _infer(state, _get(state, model, None), request)


@router.post("/models/{model}/versions/{version}/infer", summary="Inference", **INFER_ROUTE)
async def infer_version(model: str, version: str, request: Request) -> Response:
    state = request.app.state.service
    return await _infer(state, _get(state, model, version), request)


def _get(state: ServiceState, model: str, version: str | None) -> LoadedModel:
    return inference.find_model(state.repository, model, version)


def _ready(state: ServiceState, model: str, version: str | None) -> JSONResponse:
    loaded = _get(state, model, version)
    ok = state.ready
    return JSONResponse({"name": loaded.name, "ready": ok}, status_code=200 if ok else 503)


def _metadata(state: ServiceState, loaded: LoadedModel) -> ModelMetadata:
    return ModelMetadata(
        name=loaded.name,
        versions=[str(v) for v in sorted(state.repository.models[loaded.name])],
        platform=inference.PLATFORM,
        inputs=[MetadataTensor(**spec.__dict__) for spec in inference.input_specs(loaded)],
        outputs=[MetadataTensor(**spec.__dict__) for spec in inference.output_specs(loaded)],
    )


async def _infer(state: ServiceState, loaded: LoadedModel, request: Request) -> Response:
    declared = request.headers.get(HEADER)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    check_media(media_type(request), encoding, framed=declared is not None)
    header, binary = split_body(await request.body(), declared)
    try:
        body = InferenceRequest.model_validate_json(header)
    except ValidationError as error:
        raise validation_error(error, status=400) from None
    inputs = read_inputs(body, binary)
    chosen, default = output_formats(body)
    requested = [output.name for output in body.outputs] if body.outputs else None
    result = await inference.infer(
        state.predictor, loaded, inputs, body.parameters or {}, requested, state.settings.max_instances
    )
    answer: dict[str, Any] = {"model_name": loaded.name, "model_version": str(loaded.version)}
    if body.id is not None:
        answer["id"] = body.id
    answer["parameters"] = {**result.parameters, "request_id": request.state.request_id}
    content, length = encode_response(answer, result.outputs, chosen, default)
    if length is None:
        return Response(content, media_type="application/json")
    return Response(content, media_type=BINARY, headers={HEADER: str(length)})
