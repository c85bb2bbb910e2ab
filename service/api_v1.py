"""The anymodal API (`/v1`): predictions from any subset of modalities, as JSON or multipart
form data, with an account of how each modality voted; model listing, details and reload."""

from __future__ import annotations

import json
from typing import Any

from anymodal.service.decoding import InputError
from anymodal.service.errors import ApiError, documented
from anymodal.service.lineage import growth, lineage
from anymodal.service.payloads import file_bytes, media_type, validation_error
from anymodal.service.predictor import Options, Prediction
from anymodal.service.repository import LoadedModel, RepositoryUnreadable, UnknownModel
from anymodal.service.schemas import (
    BatchPredictResponse,
    EncodedFile,
    ErrorResponse,
    ModalityInfo,
    ModelInfo,
    ModelList,
    ModelSummary,
    PredictOptions,
    PredictRequest,
    PredictResponse,
    ReloadResponse,
)
from anymodal.service.security import require_api_key
from anymodal.service.state import ServiceState, get_state
from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError
from pydantic_core import to_json
from starlette.datastructures import UploadFile

router = APIRouter(prefix="/v1", tags=["anymodal"], dependencies=[Depends(require_api_key)])

ERRORS = documented(
    ErrorResponse,
    {
        400: "Malformed body (not JSON, broken multipart)",
        401: "Missing or wrong API key",
        404: "Unknown model or version",
        413: "Body over the size limit",
        415: "Content type other than JSON or a form",
        422: "An input is unusable or the request is invalid; `field` names it",
        503: "Not ready, or shutting down",
    },
)
PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "description": "One field per modality: images and recordings as files (curl -F"
                    " image=@digit.png -F audio=@seven.wav), text as text, tensors as a JSON list; options"
                    " as fields `fusion`, `top_k`, `on_invalid`, `audio_too_long`, `reliability`.",
                    "additionalProperties": {
                        "anyOf": [{"type": "string", "format": "binary"}, {"type": "string"}]
                    },
                },
                "example": {"text": "sieben", "top_k": "2"},
            },
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "description": "Text and tensor modalities and options as form fields (no files).",
                    "additionalProperties": {"type": "string"},
                },
                "example": {"text": "sieben", "top_k": "1"},
            },
        },
    }
}
FORM_OPTIONS = ("fusion", "top_k", "on_invalid", "audio_too_long", "reliability")
PREDICT_ROUTE: dict[str, Any] = {
    "response_model": PredictResponse | BatchPredictResponse,
    "response_model_exclude_none": True,
    "responses": ERRORS,
    "openapi_extra": PREDICT_BODY,
}


def _default(state: ServiceState) -> str:
    name = state.repository.default_name()
    if name is None:
        raise ApiError(503, "no model is loaded; check the model repository and the server log")
    return name


@router.post("/models/{model}/predict", summary="Predict with the newest version of a model", **PREDICT_ROUTE)
async def predict(model: str, request: Request):
    state = request.app.state.service
    return await _predict(request, state, state.repository.get(model))


@router.post(
    "/models/{model}/versions/{version}/predict",
    summary="Predict with a given version of a model",
    **PREDICT_ROUTE,
)
async def predict_version(model: str, version: int, request: Request):
    state = request.app.state.service
    return await _predict(request, state, state.repository.get(model, version))


@router.post("/predict", summary="Predict with the default model", **PREDICT_ROUTE)
async def predict_default(request: Request):
    state = request.app.state.service  # not a dependency: the hot path skips FastAPI's resolver
    return await _predict(request, state, state.repository.get(_default(state)))


@router.get("/models", response_model=ModelList, responses=ERRORS, summary="Served models")
async def list_models(state: ServiceState = Depends(get_state)) -> ModelList:
    models = state.repository.models
    return ModelList(
        models=[
            ModelSummary(
                name=name,
                versions=sorted(versions),
                latest_version=max(versions),
                ready=not state.draining,
                modalities=versions[max(versions)].modalities,
            )
            for name, versions in sorted(models.items())
        ],
        default_model=state.repository.default_name(),
    )


@router.get("/models/{model}", response_model=ModelInfo, responses=ERRORS, summary="A model's newest version")
async def model_info(model: str, state: ServiceState = Depends(get_state)) -> ModelInfo:
    return _info(state, state.repository.get(model))


@router.get(
    "/models/{model}/versions/{version}",
    response_model=ModelInfo,
    responses=ERRORS,
    summary="A model version",
)
async def model_version_info(model: str, version: int, state: ServiceState = Depends(get_state)) -> ModelInfo:
    return _info(state, state.repository.get(model, version))


@router.post(
    "/models/{model}/reload",
    response_model=ReloadResponse,
    responses=ERRORS,
    summary="Reload a model from the repository",
    description="New or changed versions are verified and warmed up before they are swapped in;"
    " a version that fails keeps what served before. With several workers, each reloads on its own"
    " when it polls the repository; this route reloads the worker that answers it.",
)
async def reload_model(model: str, state: ServiceState = Depends(get_state)) -> ReloadResponse:
    try:
        report = await state.repository.reload(model)
    except UnknownModel as error:
        raise ApiError(404, str(error), field="model") from None
    except RepositoryUnreadable as error:
        raise ApiError(503, f"{error}; check the repository's mount and permissions") from None
    return ReloadResponse(**report)


def _info(state: ServiceState, loaded: LoadedModel) -> ModelInfo:
    manifest = loaded.manifest
    return ModelInfo(
        name=loaded.name,
        version=loaded.version,
        manifest_version=manifest.version,
        versions=sorted(state.repository.models[loaded.name]),
        ready=not state.draining,
        labels=manifest.labels,
        modalities={
            m: ModalityInfo(kind=spec.kind, input=spec.input.model_dump(), temperature=spec.temperature)
            for m, spec in manifest.modalities.items()
        },
        fusion=manifest.fusion.rule,
        provider=loaded.provider,
        metrics=manifest.metrics,
        lineage=lineage(manifest),
        growth=growth(manifest),
    )


# -- reading a prediction request -------------------------------------------------------------


async def _predict(request: Request, state: ServiceState, loaded: LoadedModel):
    media = media_type(request)
    if media == "application/json":
        instances, fields, options, batch = await _read_json(request, loaded, state.settings.max_instances)
    elif media in ("multipart/form-data", "application/x-www-form-urlencoded"):
        instances, fields, options, batch = await _read_form(request, loaded)
    else:
        raise ApiError(
            415,
            f"content type {media or '(none)'} is not supported; send JSON or a form (multipart/form-data)",
            field="content-type",
        )
    predictions = await state.predictor.predict(loaded, instances, fields, options)
    rule = options.fusion or loaded.manifest.fusion.rule
    common = {
        "request_id": request.state.request_id,
        "model": loaded.ref,
    }
    if batch:
        body = {**common, "fusion": rule, "predictions": [_body(p, loaded) for p in predictions]}
    else:
        body = {**common, "fusion": rule, **_body(predictions[0], loaded)}
    # Serialized here, not by FastAPI: `response_model` documents the body, but checking this dict
    # against it again on every answer would cost more than building it.
    return Response(to_json(body), media_type="application/json")


def _body(prediction: Prediction, loaded: LoadedModel) -> dict[str, Any]:
    """A prediction as the API answers it; `cropped` only where it can be true: per modality for
    the audio that is present, and for the instance when one of its inputs was cropped."""
    modalities = {}
    for m, outcome in prediction.modalities.items():
        report = {k: v for k, v in outcome.__dict__.items() if v is not None and k != "cropped"}
        if outcome.reliability is not None:
            report["reliability"] = outcome.reliability.__dict__
        if outcome.state in ("present", "unreliable") and loaded.manifest.modalities[m].kind == "audio":
            report["cropped"] = outcome.cropped
        modalities[m] = report
    body = {
        "label": prediction.label,
        "score": prediction.score,
        "top_k": [{"label": label, "probability": p} for label, p in prediction.top_k],
        "modalities": modalities,
        "reliable": prediction.reliable,
    }
    if prediction.cropped:
        body["cropped"] = True
    return body


async def _read_json(
    request: Request, loaded: LoadedModel, max_instances: int
) -> tuple[list[dict[str, object]], list[str], Options, bool]:
    body = await request.body()
    try:
        parsed = PredictRequest.model_validate_json(body)
    except ValidationError as error:
        raise validation_error(error) from None
    if parsed.instances is not None:
        if len(parsed.instances) > max_instances:
            raise ApiError(
                422,
                f"has {len(parsed.instances)} instances, over the limit of {max_instances}; split it",
                "instances",
            )
        fields = [f"instances[{i}]" for i in range(len(parsed.instances))]
        instances = [_raw_instance(inst, loaded, f) for inst, f in zip(parsed.instances, fields, strict=True)]
        return instances, fields, _options(parsed.options), True
    assert parsed.inputs is not None
    return [_raw_instance(parsed.inputs, loaded, "inputs")], ["inputs"], _options(parsed.options), False


def _options(options: PredictOptions) -> Options:
    return Options(
        fusion=options.fusion,
        top_k=options.top_k,
        on_invalid=options.on_invalid,
        audio_too_long=options.audio_too_long,
        reliability=options.reliability,
    )


def _check_names(names: list[str], loaded: LoadedModel, field: str) -> None:
    known = ", ".join(loaded.modalities)
    unknown = [n for n in names if n not in loaded.manifest.modalities]
    if unknown:
        raise ApiError(
            422,
            f"{field}.{unknown[0]}: is not a modality of model {loaded.name!r}; its modalities are {known}",
            field=f"{field}.{unknown[0]}",
        )
    if not names:
        raise ApiError(422, f"{field}: has no input; send at least one of {known}", field=field)


def _raw_instance(instance: dict[str, Any], loaded: LoadedModel, field: str) -> dict[str, object]:
    """JSON values -> raw inputs; a value of the wrong shape becomes an InputError for the predictor."""
    _check_names(list(instance), loaded, field)
    raw: dict[str, object] = {}
    for name, value in instance.items():
        kind = loaded.manifest.modalities[name].kind
        where = f"{field}.{name}"
        if kind in ("image", "audio"):
            raw[name] = (
                file_bytes(value.b64, f"{where}.b64")
                if isinstance(value, EncodedFile)
                else InputError(where, 'must be {"b64": "<the file\'s bytes in base64>"}')
            )
        elif kind == "text":
            raw[name] = value if isinstance(value, str) else InputError(where, "must be a string")
        else:
            raw[name] = value if isinstance(value, list) else InputError(where, "must be a list of numbers")
    return raw


async def _read_form(
    request: Request, loaded: LoadedModel
) -> tuple[list[dict[str, object]], list[str], Options, bool]:
    limit = len(loaded.modalities) + len(FORM_OPTIONS)
    form = await request.form(max_files=limit, max_fields=limit)
    try:
        names = [key for key in form if key not in FORM_OPTIONS]
        _check_names(names, loaded, "form")
        raw: dict[str, object] = {}
        for name in names:
            if len(form.getlist(name)) > 1:
                raise ApiError(
                    422, f"form.{name}: is sent twice; send each modality once", field=f"form.{name}"
                )
            raw[name] = await _form_value(form[name], loaded.manifest.modalities[name].kind, f"form.{name}")
        option_values = {key: form[key] for key in FORM_OPTIONS if key in form}
        try:
            options = PredictOptions.model_validate(option_values)
        except ValidationError as error:
            raise validation_error(error) from None
        return [raw], ["form"], _options(options), False
    finally:
        await form.close()


async def _form_value(value: UploadFile | str, kind: str, field: str) -> object:
    if kind in ("image", "audio"):
        if isinstance(value, str):
            return InputError(field, f"must be a file upload, as in curl -F {field.split('.')[-1]}=@file")
        return await value.read()
    if isinstance(value, UploadFile):
        try:
            text = (await value.read()).decode("utf-8")
        except UnicodeDecodeError:
            return InputError(field, "is not UTF-8 text")
    else:
        text = value
    if kind == "text":
        return text
    try:
        numbers = json.loads(text) if text.strip().startswith("[") else [float(v) for v in text.split(",")]
    except ValueError:
        return InputError(field, "must be a JSON list of numbers, or numbers separated by commas")
    return numbers if isinstance(numbers, list) else InputError(field, "must be a list of numbers")
