"""The `/v1` API's request and response bodies (pydantic v2), as published in openapi.yaml; the Open
Inference Protocol's are in `service/schemas_v2.py`."""

from __future__ import annotations

from typing import Any, Literal

from anymodal.service.lineage import GrowthInfo, LineageStep
from pydantic import BaseModel, ConfigDict, Field, model_validator

# A scan of a 7 from the digits test split (tests/fixtures/digit_7.png), for the examples.
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAACAAAAAgCAAAAABWESUoAAAEBklEQVR4nAXBbVDTdQAH8O//xza28YeNsdHYBjhksrE1YCgN"
    "0cOIM8EHEPToojtKy666Li670xfd6dWdL0qv0oredBZnUKh4hSkdkc5EVMRtxpCnDebA7fbAYBtj7LHPh4oxbAXzuW5FgEmG"
    "Su/wyjuPfAmU6IQyV9P4SzCXUcN1U8oQDQD2wqNdDbWOhJvlxhvVCyze9psNAElBieV1ABGrk3Xs412ZZGV9Dy65fL9mXGlw"
    "A1TKmxLFlwpxK6vSnz0wYq20zL89dVdYNfWdYaevCCAQejAtBna4h902Rb42XpolpdE433zq1mIRXCkS9lJx9WIETGcJYyln"
    "llt+LDBg4o48ZTzkGP24ESTcv1UR0DHgiMxET7dGi786K8wKWyu+OMe74sKRLDKSZ6JvrkQBRGQL6k3l5qY/qUP5YMmP889P"
    "IgyyUFs+6cjJgc9yLlOznFdXKv9ce+b9na0031MgBhfUVD73Gx7r9cuHrx1c5wCIG4pPs5WGpBfX+RNCZg6jZIyj2wno8AI4"
    "YS4iP3ReLA6m0eKCxoNv7YmI75Pn1PhjuHDJav8aLg/+qL85xwxOqlSLvjct5gLoGRJ/BwJ+8UfTsY1ZQ1ITPt/o4IjmBpHQ"
    "RDt8WLESqC8mhlT/8n2RExPBX+zdW3/fNLaXl0hgqRQPu/mVVMoj6m/p5Z05/SBUZHQez7h8B9hrs2208LLLmHEJmzwWxfSI"
    "Rj4ZcgjsT8jJD9kQwsJjgnqW3PxExt4guejhnu5wnc19eYAJ3n6MvZOrpe6H2hu3EOxjBdKJ39wRnRt51ha4kJzdMjOp8N+Y"
    "Vc4D7qNO3QxgBpWaEzDto/GrhdIaS7/wtW9ZWWqnM8gpkOZauq6mNT8iE8UCW6iGdISIaLxakH1Y6L07E0OUr1K0jbdaTVsZ"
    "pcuCsvCJ5lfYh6z70h72/rT2PFFmQaLs+Ysa9H/QV04t5TIWZR7RXzI1etM5kd2valYdwvjK5tbaW5IqAIS5fE8WjW/ExD1Y"
    "awnsQNeK40Dzu9JOtqE5MguAutIKa1IBAIskjzIarak7+umq7NW0k8HM0eplHyn5GZvpx3iUWJBJKO+n7TYT1FI7Q99+LxOs"
    "gEDB0GhmmLN1qa3YBIQpvdcB2qb7b7tb8j1bN5dhyiTAFvnuB0+AYd/E0yZBW0UDd609S1v/WVPeRhutjJP+1R6ghn8fWqe0"
    "69RUiZHLXRuNmofl+hvhf2T2bVQKAOAV4nZFwhAxPkglsX9bvkGfEYlpcZ3aS+BACBDi2i5ysMJzoGJHEaTbRBKNvEh7D/sU"
    "YCAf9OjaekYdGHSw73bjYDy9vrulFh6RMx0zcjP5DeOothEVD5d+NL8XGggqxRcG+zIgwljlkpFZ9j/nordTH2TfaAAAAABJ"
    "RU5ErkJggg=="
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
    audio_too_long: Literal["crop", "reject"] | None = Field(
        None,
        description="A recording longer than the model accepts is cropped to its loudest window (`crop`)"
        " or is an unusable input (`reject`); default: the model's setting (its audio contract's"
        " `too_long`)",
    )
    reliability: Literal["gate", "off"] = Field(
        "gate",
        description="`gate`: inputs that fail the model's reliability gate are left out of the fusion"
        " and reported as `unreliable`; `off`: every decodable input is fused",
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


class GateReport(BaseModel):
    score: float = Field(
        description="The reliability gate's score: 0 is typical of clean inputs, higher is stranger"
    )
    p_value: float = Field(description="The share of clean validation inputs that score at least as high")
    threshold: float = Field(description="The model's alpha: a p-value below it is unreliable")


class ModalityReport(BaseModel):
    state: Literal["present", "missing", "dropped", "unreliable"] = Field(
        description="present: used; missing: not sent; dropped: unusable, left out (on_invalid=drop);"
        " unreliable: decodable but unlike the inputs the model knows (failed the reliability gate),"
        " left out unless every input is unreliable"
    )
    weight: float = Field(description="Its fusion weight; 0 unless used")
    label: str | None = Field(None, description="Its own prediction")
    confidence: float | None = Field(None, description="Its own calibrated probability of that label")
    entropy: float | None = Field(None, description="Entropy (nats) of its calibrated prediction")
    reason: str | None = Field(None, description="Why it was dropped")
    cropped: bool | None = Field(
        None,
        description="Audio modalities that are present only: whether the recording was longer than the"
        " model accepts and was cropped to its loudest window",
    )
    reliability: GateReport | None = Field(
        None, description="The reliability gate's verdict, where the model has one"
    )


class PredictionBody(BaseModel):
    label: str
    score: float = Field(description="Fused probability of the label")
    top_k: list[TopLabel]
    modalities: dict[str, ModalityReport]
    reliable: bool = Field(
        True,
        description="`false` when every input sent failed the reliability gate and the answer was fused"
        " from them anyway: treat it with suspicion",
    )
    cropped: bool | None = Field(
        None,
        description="`true` when an input of this instance was cropped to fit the model (see each"
        " modality's `cropped`); absent otherwise",
    )


class ModelRef(BaseModel):
    name: str
    version: int
    step: Literal["extend", "update"] | None = Field(
        None, description="How this version grew from another; absent for a version trained from scratch"
    )
    grew_from: int | None = Field(None, description="The version it grew from; absent when not grown")
    added: list[str] | None = Field(
        None, description="The modalities it added when it grew (none for an `update`); absent when not grown"
    )


# One prediction as the examples show it: a 7, seen and typed, not heard.
PREDICTION_EXAMPLE = {
    "label": "7",
    "score": 0.998,
    "top_k": [
        {"label": "7", "probability": 0.998},
        {"label": "9", "probability": 0.001},
        {"label": "1", "probability": 0.0004},
    ],
    "modalities": {
        "image": {"state": "present", "weight": 0.41, "label": "7", "confidence": 0.98, "entropy": 0.12},
        "audio": {"state": "missing", "weight": 0.0},
        "text": {"state": "present", "weight": 0.59, "label": "7", "confidence": 0.99, "entropy": 0.06},
    },
}
ANSWER_EXAMPLE = {
    "request_id": "4c1f0e9b2a7d4f0c8e3b5a6d7c8e9f01",
    "model": {"name": "digits", "version": 1},
    "fusion": "entropy",
}


class PredictResponse(PredictionBody):
    model_config = ConfigDict(json_schema_extra={"examples": [ANSWER_EXAMPLE | PREDICTION_EXAMPLE]})

    request_id: str
    model: ModelRef
    fusion: Literal["entropy", "mean"]


class BatchPredictResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [ANSWER_EXAMPLE | {"predictions": [PREDICTION_EXAMPLE]}]}
    )

    request_id: str
    model: ModelRef
    fusion: Literal["entropy", "mean"]
    predictions: list[PredictionBody]


class FieldError(BaseModel):
    field: str
    message: str


class ErrorResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": "inputs.audio: is 3.00 s long; this model accepts at most 1.5 s: trim it,"
                    " or set the request option audio_too_long=crop to keep its loudest 1.5 s",
                    "field": "inputs.audio",
                    "request_id": "0c90157cee5e4b4fb86b087cb897d554",
                }
            ]
        }
    )

    error: str = Field(description="What went wrong and how to fix it")
    field: str | None = Field(None, description="The part of the request at fault")
    errors: list[FieldError] | None = Field(None, description="Every problem found, when there are several")
    request_id: str | None = None


class ModalityInfo(BaseModel):
    kind: Literal["image", "audio", "text", "tensor"]
    input: dict[str, Any] = Field(description="The input contract: size, sample rate, length...")
    temperature: float


class ModelInfo(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "digits",
                    "version": 1,
                    "manifest_version": 1,
                    "versions": [1],
                    "ready": True,
                    "labels": ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
                    "modalities": {
                        "image": {
                            "kind": "image",
                            "input": {
                                "kind": "image",
                                "width": 16,
                                "height": 16,
                                "mode": "L",
                                "mean": 0.76,
                                "std": 0.23,
                            },
                            "temperature": 1.74,
                        },
                        "text": {
                            "kind": "text",
                            "input": {"kind": "text", "max_length": 32},
                            "temperature": 1.48,
                        },
                    },
                    "fusion": "entropy",
                    "provider": "CPUExecutionProvider",
                    "metrics": {"test_accuracy": 0.963, "test_samples": 1797},
                    "lineage": [
                        {
                            "step": "train",
                            "version": 1,
                            "from_version": None,
                            "modalities": ["image", "text"],
                            "added": [],
                            "trained": ["image", "text"],
                            "samples": {"train": 3823, "validation": 1000},
                            "at": "2025-06-01T12:00:00+00:00",
                        }
                    ],
                    "growth": {"replay_size": 512, "replay_kind": "features"},
                }
            ]
        }
    )

    name: str
    version: int = Field(description="The version served: the name of the bundle's folder")
    manifest_version: int = Field(
        description="The version its manifest was written as (provenance): differs from `version`"
        " when a bundle was published by copying it into a new version folder"
    )
    versions: list[int]
    ready: bool
    labels: list[str]
    modalities: dict[str, ModalityInfo]
    fusion: Literal["entropy", "mean"]
    provider: str = Field(description="onnxruntime execution provider")
    metrics: dict[str, Any] = Field(description="Test metrics from training")
    lineage: list[LineageStep] = Field(
        description="How this version came to be, oldest step first: `train`, then each `extend` (which"
        " added modalities) or `update` (which trained on new data); empty for a bundle without a history"
    )
    growth: GrowthInfo | None = Field(
        description="What it keeps to grow (`anymodal extend`, `anymodal update`); null: it cannot grow"
    )


class ModelSummary(BaseModel):
    name: str
    versions: list[int]
    latest_version: int
    ready: bool
    modalities: list[str]


class ModelList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "models": [
                        {
                            "name": "digits",
                            "versions": [1],
                            "latest_version": 1,
                            "ready": True,
                            "modalities": ["image", "audio", "text"],
                        }
                    ],
                    "default_model": "digits",
                }
            ]
        }
    )

    models: list[ModelSummary]
    default_model: str | None


class ReloadResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "digits",
                    "loaded": [2],
                    "unchanged": [1],
                    "removed": [],
                    "failed": {},
                    "serving": [1, 2],
                }
            ]
        }
    )

    model: str
    loaded: list[int] = Field(description="Versions (re)loaded and now serving")
    unchanged: list[int]
    removed: list[int]
    failed: dict[int, str] = Field(
        description="Versions that failed to load; what served before still serves"
    )
    serving: list[int]
