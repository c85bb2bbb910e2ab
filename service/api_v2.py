"""The Open Inference Protocol (KServe v2) over HTTP, so existing clients work.

Inputs are named by modality: images, recordings and text are BYTES tensors of shape [batch] (or
[batch, 1]), with image and recording elements base64-encoded; tensor modalities are FP32 tensors
of shape [batch, length]. A modality that is not sent is missing for every instance. Request
parameters `fusion`, `top_k` (unused here), `on_invalid`, `audio_too_long` and `reliability` work as in `/v1`.
Outputs: `label` (BYTES), `score` (FP32), `probabilities` (FP32 [batch, labels]) and
`fusion_weights` (FP32 [batch, modalities], in the order of the response parameter `modalities`).
Errors are `{"error": "..."}`.
"""

from __future__ import annotations

import math
from importlib.metadata import version as package_version
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from service.decoding import InputError
from service.errors import ApiError, documented
from service.payloads import file_bytes, media_type, validation_error
from service.predictor import Options, Prediction
from service.repository import LoadedModel, UnknownModel
from service.schemas import (
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
from service.security import require_api_key
from service.state import ServiceState, get_state

health = APIRouter(prefix="/v2", tags=["open inference protocol"])
router = APIRouter(prefix="/v2", tags=["open inference protocol"], dependencies=[Depends(require_api_key)])
ERRORS = documented(
    V2Error,
    {
        400: "Invalid request or input",
        401: "Missing or wrong API key",
        404: "Unknown model or version",
        413: "Body over the size limit",
        415: "Not JSON",
        503: "Not ready, or shutting down",
    },
)
NUMERIC = {"FP32", "FP64", "FP16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
OUTPUTS = ("label", "score", "probabilities", "fusion_weights")


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
    return ServerMetadata(name="anymodal", version=package_version("anymodal"), extensions=[])


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


INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}}},
    }
}


@router.post(
    "/models/{model}/infer",
    response_model=InferenceResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
    openapi_extra=INFER_BODY,
    summary="Inference",
)
async def infer(model: str, request: Request, state: ServiceState = Depends(get_state)):
    return await _infer(state, _get(state, model, None), request)


@router.post(
    "/models/{model}/versions/{version}/infer",
    response_model=InferenceResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
    openapi_extra=INFER_BODY,
    summary="Inference",
)
async def infer_version(model: str, version: str, request: Request, state: ServiceState = Depends(get_state)):
    return await _infer(state, _get(state, model, version), request)


def _get(state: ServiceState, model: str, version: str | None) -> LoadedModel:
    if version is not None and not version.isdigit():
        raise UnknownModel(f"model {model!r} has no version {version!r}; versions are whole numbers")
    return state.repository.get(model, None if version is None else int(version))


def _ready(state: ServiceState, model: str, version: str | None) -> JSONResponse:
    loaded = _get(state, model, version)
    ok = state.ready
    return JSONResponse({"name": loaded.name, "ready": ok}, status_code=200 if ok else 503)


def _metadata(state: ServiceState, loaded: LoadedModel) -> ModelMetadata:
    inputs = []
    for name, spec in loaded.manifest.modalities.items():
        if spec.kind == "tensor":
            inputs.append(MetadataTensor(name=name, datatype="FP32", shape=[-1, spec.input.length]))  # type: ignore[union-attr]
        else:
            inputs.append(MetadataTensor(name=name, datatype="BYTES", shape=[-1]))
    classes, count = len(loaded.manifest.labels), len(loaded.modalities)
    return ModelMetadata(
        name=loaded.name,
        versions=[str(v) for v in sorted(state.repository.models[loaded.name])],
        platform="anymodal_onnxruntime",
        inputs=inputs,
        outputs=[
            MetadataTensor(name="label", datatype="BYTES", shape=[-1]),
            MetadataTensor(name="score", datatype="FP32", shape=[-1]),
            MetadataTensor(name="probabilities", datatype="FP32", shape=[-1, classes]),
            MetadataTensor(name="fusion_weights", datatype="FP32", shape=[-1, count]),
        ],
    )


async def _infer(state: ServiceState, loaded: LoadedModel, request: Request):
    media = media_type(request)
    if media != "application/json":
        raise ApiError(415, f"content type {media or '(none)'} is not supported; send application/json")
    try:
        body = InferenceRequest.model_validate_json(await request.body())
    except ValidationError as error:
        raise validation_error(error, status=400) from None
    options = _options(body.parameters or {})
    wanted = [o.name for o in body.outputs] if body.outputs else list(OUTPUTS)
    unknown = [name for name in wanted if name not in OUTPUTS]
    if unknown:
        raise ApiError(
            400, f"outputs: {unknown[0]!r} is not an output of this model; outputs are {', '.join(OUTPUTS)}"
        )
    instances = _instances(body, loaded, state.settings.max_instances)
    fields = [f"instance {i}" for i in range(len(instances))]
    predictions = await state.predictor.predict(loaded, instances, fields, options)
    rule = options.fusion or loaded.manifest.fusion.rule
    return InferenceResponse(
        model_name=loaded.name,
        model_version=str(loaded.version),
        id=body.id,
        parameters={
            "fusion": rule,
            "modalities": ",".join(loaded.modalities),
            "request_id": request.state.request_id,
        },
        outputs=[_output(name, predictions, loaded) for name in wanted],
    )


def _options(parameters: dict[str, Any]) -> Options:
    fusion = parameters.get("fusion")
    if fusion is not None and fusion not in ("entropy", "mean"):
        raise ApiError(400, "parameters.fusion: must be 'entropy' or 'mean'")
    on_invalid = parameters.get("on_invalid", "reject")
    if on_invalid not in ("reject", "drop"):
        raise ApiError(400, "parameters.on_invalid: must be 'reject' or 'drop'")
    audio_too_long = parameters.get("audio_too_long")
    if audio_too_long is not None and audio_too_long not in ("crop", "reject"):
        raise ApiError(400, "parameters.audio_too_long: must be 'crop' or 'reject'")
    top_k = parameters.get("top_k", 3)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ApiError(400, "parameters.top_k: must be a positive integer")
    reliability = parameters.get("reliability", "gate")
    if reliability not in ("gate", "off"):
        raise ApiError(400, "parameters.reliability: must be 'gate' or 'off'")
    return Options(
        fusion=fusion,
        top_k=top_k,
        on_invalid=on_invalid,
        audio_too_long=audio_too_long,
        reliability=reliability,
    )


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _instances(body: InferenceRequest, loaded: LoadedModel, max_instances: int) -> list[dict[str, object]]:
    if not body.inputs:
        raise ApiError(400, f"inputs: send at least one of {', '.join(loaded.modalities)}")
    batch: int | None = None
    columns: dict[str, list[object]] = {}
    for position, tensor in enumerate(body.inputs):
        where = f"inputs[{position}] ({tensor.name})"
        spec = loaded.manifest.modalities.get(tensor.name)
        if spec is None:
            raise ApiError(
                400,
                f"{where}: is not an input of {loaded.name!r}; its inputs are {', '.join(loaded.modalities)}",
            )
        if tensor.name in columns:
            raise ApiError(400, f"{where}: is sent twice")
        if any(not isinstance(d, int) or d < 0 for d in tensor.shape):
            raise ApiError(400, f"{where}: shape must be non-negative integers")
        values = _flatten(tensor.data)
        if len(values) != math.prod(tensor.shape):
            raise ApiError(
                400,
                f"{where}: shape {tensor.shape} needs {math.prod(tensor.shape)} values, not {len(values)}",
            )
        if spec.kind == "tensor":
            length = spec.input.length  # type: ignore[union-attr]
            if tensor.datatype not in NUMERIC:
                raise ApiError(
                    400, f"{where}: datatype must be FP32 (or another numeric type), not {tensor.datatype}"
                )
            if len(tensor.shape) != 2 or tensor.shape[1] != length:
                raise ApiError(400, f"{where}: shape must be [batch, {length}], not {tensor.shape}")
            rows = [values[i * length : (i + 1) * length] for i in range(tensor.shape[0])]
        else:
            if tensor.datatype != "BYTES":
                raise ApiError(400, f"{where}: datatype must be BYTES, not {tensor.datatype}")
            if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
                raise ApiError(400, f"{where}: shape must be [batch] or [batch, 1], not {tensor.shape}")
            rows = [_bytes_element(v, spec.kind, f"{tensor.name}[{i}]") for i, v in enumerate(values)]
        if batch is not None and len(rows) != batch:
            raise ApiError(400, f"{where}: has a batch of {len(rows)}, other inputs have {batch}")
        batch = len(rows)
        columns[tensor.name] = rows
    if not batch:
        raise ApiError(400, "inputs: the batch is empty")
    if batch > max_instances:
        raise ApiError(400, f"inputs: a batch of {batch} is over the limit of {max_instances}; split it")
    return [{name: rows[i] for name, rows in columns.items()} for i in range(batch)]


def _bytes_element(value: object, kind: str, field: str) -> object:
    if not isinstance(value, str):
        return InputError(field, "must be a string (BYTES elements are JSON strings)")
    return value if kind == "text" else file_bytes(value, field)


def _output(name: str, predictions: list[Prediction], loaded: LoadedModel) -> dict[str, Any]:
    batch = len(predictions)
    if name == "label":
        return {"name": name, "datatype": "BYTES", "shape": [batch], "data": [p.label for p in predictions]}
    if name == "score":
        return {"name": name, "datatype": "FP32", "shape": [batch], "data": [p.score for p in predictions]}
    if name == "probabilities":
        classes = len(loaded.manifest.labels)
        data = [float(v) for p in predictions for v in p.probabilities]
        return {"name": name, "datatype": "FP32", "shape": [batch, classes], "data": data}
    data = [p.modalities[m].weight for p in predictions for m in loaded.modalities]
    return {"name": name, "datatype": "FP32", "shape": [batch, len(loaded.modalities)], "data": data}
