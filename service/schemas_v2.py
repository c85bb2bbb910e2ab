"""The Open Inference Protocol's (KServe v2) request and response bodies, as published in
openapi.yaml; with the binary tensor data extension, an inference request or response is this
JSON header followed by the binary tensors (see `service/binary_data.py`)."""

from __future__ import annotations

from typing import Any

from anymodal.service.schemas import PNG_B64
from pydantic import BaseModel, ConfigDict, Field


class V2Error(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"error": "inputs[0] (smell): is not an input of 'digits'; its inputs are image, audio, text"}
            ]
        }
    )

    error: str


class ServerMetadata(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "anymodal", "version": "0.1.0", "extensions": ["binary_tensor_data"]}]
        }
    )

    name: str
    version: str
    extensions: list[str]


class LiveResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"live": True}]})

    live: bool


class ReadyResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"ready": True}]})

    ready: bool


class ModelReadyResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "digits", "ready": True}]})

    name: str
    ready: bool


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "digits",
                    "versions": ["1"],
                    "platform": "anymodal_onnxruntime",
                    "inputs": [
                        {"name": "image", "datatype": "BYTES", "shape": [-1]},
                        {"name": "audio", "datatype": "BYTES", "shape": [-1]},
                        {"name": "text", "datatype": "BYTES", "shape": [-1]},
                    ],
                    "outputs": [
                        {"name": "label", "datatype": "BYTES", "shape": [-1]},
                        {"name": "score", "datatype": "FP32", "shape": [-1]},
                        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
                        {"name": "top_k_labels", "datatype": "BYTES", "shape": [-1, -1]},
                        {"name": "top_k_probabilities", "datatype": "FP32", "shape": [-1, -1]},
                        {"name": "fusion_weights", "datatype": "FP32", "shape": [-1, 3]},
                        {"name": "modality_states", "datatype": "BYTES", "shape": [-1, 3]},
                        {"name": "modality_labels", "datatype": "BYTES", "shape": [-1, 3]},
                        {"name": "modality_confidences", "datatype": "FP32", "shape": [-1, 3]},
                        {"name": "reliable", "datatype": "BOOL", "shape": [-1]},
                    ],
                }
            ]
        }
    )

    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = Field(
        None,
        description="`binary_data_size`: the input's data is that many bytes after the JSON header"
        " (binary tensor data extension) instead of `data`",
    )
    data: list[Any] | None = Field(
        None,
        description="The elements, flat or nested in row-major order. BYTES elements are strings: text"
        " as it is, images and recordings base64-encoded",
    )


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(
        None, description="`binary_data`: true to get this output as binary data after the JSON header"
    )


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
    parameters: dict[str, Any] | None = Field(
        None,
        description="`fusion`, `top_k`, `on_invalid`, `audio_too_long`, `reliability` as in `/v1`;"
        " `binary_data_output`: true to get every output as binary data",
    )
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = Field(None, description="The outputs wanted; all when absent")


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = Field(
        None, description="`binary_data_size`: the output is that many bytes of binary data instead of `data`"
    )
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model_name": "digits",
                    "model_version": "1",
                    "id": "42",
                    "parameters": {
                        "fusion": "entropy",
                        "modalities": "image,audio,text",
                        "request_id": "f5f823211d494d3284d85ea7fe1e764c",
                    },
                    "outputs": [
                        {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["7", "3"]},
                        {"name": "score", "shape": [2], "datatype": "FP32", "data": [0.998, 0.996]},
                        {
                            "name": "modality_states",
                            "shape": [2, 3],
                            "datatype": "BYTES",
                            "data": ["present", "missing", "present", "present", "missing", "present"],
                        },
                        {"name": "reliable", "shape": [2], "datatype": "BOOL", "data": [True, True]},
                    ],
                }
            ]
        }
    )

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        None,
        description="`fusion`: the rule used; `modalities`: every modality of the model, comma-separated,"
        " in the order of the columns of the [batch, modalities] outputs; `request_id`",
    )
    outputs: list[ResponseOutput]
