"""The API's request and response bodies (pydantic v2), as published in openapi.yaml."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAAAAADhZOFXAAAAJUlEQVR4nGNgYGD4z8DAwMDAwMDAwMDAwMDA"
    "wMDAwMDAwMDAwMDA8x8ABV0F/2jhq4EAAAAASUVORK5CYII="
)


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EncodedFile(_Closed):
    """An image or recording, its bytes base64-encoded."""

    b64: str = Field(description="The file's bytes in base64 (standard alphabet; padding optional)")


InputValue = EncodedFile | str | list[float]


class PredictOptions(_Closed):
    fusion: Literal["entropy", "mean"] | None = Field(
        None,
        description="`entropy` weighs modalities by certainty, `mean` alike; default: the model's rule",
    )
    top_k: int = Field(3, ge=1, le=1000, description="How many labels to list with their probabilities")
    on_invalid: Literal["reject", "drop"] = Field(
        "reject", description="An unusable input rejects the request (`reject`) or is left out (`drop`)"
    )


class PredictRequest(_Closed):
    """One instance in `inputs`, or several in `instances`; each with any non-empty subset of the
    model's modalities: images and recordings as `{"b64": ...}`, text as a string, tensors as lists."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"inputs": {"image": {"b64": PNG_B64}, "text": "sieben"}, "options": {"top_k": 3}},
                {
                    "instances": [{"text": "drei"}, {"image": {"b64": PNG_B64}, "text": "nine"}],
                    "options": {"fusion": "mean", "on_invalid": "drop"},
                },
            ]
        },
    )

    inputs: dict[str, InputValue] | None = Field(None, description="One instance: modality -> input")
    instances: list[dict[str, InputValue]] | None = Field(None, min_length=1, description="Several instances")
    options: PredictOptions = PredictOptions()

    @model_validator(mode="after")
    def _one_form(self) -> PredictRequest:
        if (self.inputs is None) == (self.instances is None):
            raise ValueError(
                "send either `inputs` (one instance) or `instances` (a list), not both or neither"
            )
        return self


class TopLabel(BaseModel):
    label: str
    probability: float


class ModalityReport(BaseModel):
    state: Literal["present", "missing", "dropped"] = Field(
        description="present: used; missing: not sent; dropped: unusable, left out (on_invalid=drop)"
    )
    weight: float = Field(description="Its fusion weight; 0 unless present")
    label: str | None = Field(None, description="Its own prediction")
    confidence: float | None = Field(None, description="Its own calibrated probability of that label")
    entropy: float | None = Field(None, description="Entropy (nats) of its calibrated prediction")
    reason: str | None = Field(None, description="Why it was dropped")


class PredictionBody(BaseModel):
    label: str
    score: float = Field(description="Fused probability of the label")
    top_k: list[TopLabel]
    modalities: dict[str, ModalityReport]


class ModelRef(BaseModel):
    name: str
    version: int


class PredictResponse(PredictionBody):
    request_id: str
    model: ModelRef
    fusion: Literal["entropy", "mean"]


class BatchPredictResponse(BaseModel):
    request_id: str
    model: ModelRef
    fusion: Literal["entropy", "mean"]
    predictions: list[PredictionBody]


class FieldError(BaseModel):
    field: str
    message: str


class ErrorResponse(BaseModel):
    error: str = Field(description="What went wrong and how to fix it")
    field: str | None = Field(None, description="The part of the request at fault")
    errors: list[FieldError] | None = Field(None, description="Every problem found, when there are several")
    request_id: str | None = None


class ModalityInfo(BaseModel):
    kind: Literal["image", "audio", "text", "tensor"]
    input: dict[str, Any] = Field(description="The input contract: size, sample rate, length...")
    temperature: float


class ModelInfo(BaseModel):
    name: str
    version: int
    versions: list[int]
    ready: bool
    labels: list[str]
    modalities: dict[str, ModalityInfo]
    fusion: Literal["entropy", "mean"]
    provider: str = Field(description="onnxruntime execution provider")
    metrics: dict[str, Any] = Field(description="Test metrics from training")


class ModelSummary(BaseModel):
    name: str
    versions: list[int]
    latest_version: int
    ready: bool
    modalities: list[str]


class ModelList(BaseModel):
    models: list[ModelSummary]
    default_model: str | None


class ReloadResponse(BaseModel):
    model: str
    loaded: list[int] = Field(description="Versions (re)loaded and now serving")
    unchanged: list[int]
    removed: list[int]
    failed: dict[int, str] = Field(
        description="Versions that failed to load; what served before still serves"
    )
    serving: list[int]


# -- Open Inference Protocol (KServe v2) -------------------------------------------------------


class V2Error(BaseModel):
    error: str


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class LiveResponse(BaseModel):
    live: bool


class ReadyResponse(BaseModel):
    ready: bool


class ModelReadyResponse(BaseModel):
    name: str
    ready: bool


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "42",
                    "inputs": [
                        {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["sieben", "drei"]},
                        {"name": "image", "shape": [2], "datatype": "BYTES", "data": [PNG_B64, PNG_B64]},
                    ],
                    "parameters": {"fusion": "entropy"},
                }
            ]
        }
    )

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]
