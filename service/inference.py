"""The Open Inference Protocol's inference, whatever carries it: request tensors and parameters to
the predictor's instances and options, and predictions to output tensors. The REST routes
(`service/api_v2.py`) call `find_model`, `infer`, `input_specs` and `output_specs`; the gRPC
server (`service/grpc_server.py`) calls the same.

Inputs are named by modality: images, recordings and text are BYTES of shape [batch] or
[batch, 1]; tensor modalities are numeric (FP32 or any other) of shape [batch, length]. A modality
not sent is missing for every instance. Parameters `fusion`, `top_k`, `on_invalid`,
`audio_too_long` and `reliability` work as the `/v1` options do; others are ignored.

Outputs; the columns of those shaped [batch, modalities] are every modality of the model, in the
order of the response parameter `modalities`, as `/v1` reports every modality:
- `label` (BYTES [batch]), `score` (FP32 [batch]): the fused label and its calibrated probability;
- `probabilities` (FP32 [batch, labels]), in the model's label order;
- `top_k_labels` (BYTES [batch, k]), `top_k_probabilities` (FP32 [batch, k]): k is `top_k`, at
  most the number of labels;
- `fusion_weights` (FP32 [batch, modalities]): 0 for a modality left out of the fusion;
- `modality_states` (BYTES [batch, modalities]): present, missing, dropped or unreliable;
- `modality_labels` (BYTES [batch, modalities]), `modality_confidences` (FP32 [batch,
  modalities]): each modality's own prediction and its calibrated probability; "" and 0 where the
  modality gave none (missing or dropped: a probability is never 0, so 0 cannot be mistaken);
- `reliable` (BOOL [batch]): false when every input failed the reliability gate.
Every client error is an `ApiError` naming the field and the fix, but for an unknown model or
version: `UnknownModel` (404, gRPC's NOT_FOUND).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from anymodal.service.decoding import InputError
from anymodal.service.errors import ApiError
from anymodal.service.payloads import file_bytes
from anymodal.service.predictor import InvalidInputs, Options, Prediction, Predictor
from anymodal.service.repository import LoadedModel, ModelRepository, UnknownModel
from anymodal.service.tensors import NUMERIC, Tensor

# The protocol extensions this server supports, whichever transport asks (Triton lists the same
# ones over HTTP and gRPC), and the platform its model metadata names.
EXTENSIONS = ["binary_tensor_data"]
PLATFORM = "anymodal_onnxruntime"
OUTPUTS = (
    "label",
    "score",
    "probabilities",
    "top_k_labels",
    "top_k_probabilities",
    "fusion_weights",
    "modality_states",
    "modality_labels",
    "modality_confidences",
    "reliable",
)


@dataclass(frozen=True)
class TensorSpec:
    """A tensor of a model's metadata; -1 is a dimension of any size."""

    name: str
    datatype: str
    shape: list[int]


@dataclass(frozen=True)
class Inference:
    """An answer: the requested outputs, and the parameters that say how to read them (`fusion`,
    the rule used; `modalities`, the order of the modality columns, comma-separated)."""

    outputs: list[Tensor]
    parameters: dict[str, str]


def find_model(repository: ModelRepository, name: str, version: str | None) -> LoadedModel:
    """The model a request names: its newest version when `version` is None or "" (as gRPC's
    `model_version` says it), else that version; UnknownModel (a 404) if it is not served."""
    if not version:
        return repository.get(name, None)
    if not version.isdigit():
        raise UnknownModel(f"model {name!r} has no version {version!r}; versions are whole numbers")
    return repository.get(name, int(version))


def input_specs(loaded: LoadedModel) -> list[TensorSpec]:
    specs = []
    for name, spec in loaded.manifest.modalities.items():
        if spec.kind == "tensor":
            specs.append(TensorSpec(name, "FP32", [-1, spec.input.length]))  # type: ignore[union-attr]
        else:
            specs.append(TensorSpec(name, "BYTES", [-1]))
    return specs


def output_specs(loaded: LoadedModel) -> list[TensorSpec]:
    classes, count = len(loaded.manifest.labels), len(loaded.modalities)
    return [
        TensorSpec("label", "BYTES", [-1]),
        TensorSpec("score", "FP32", [-1]),
        TensorSpec("probabilities", "FP32", [-1, classes]),
        TensorSpec("top_k_labels", "BYTES", [-1, -1]),
        TensorSpec("top_k_probabilities", "FP32", [-1, -1]),
        TensorSpec("fusion_weights", "FP32", [-1, count]),
        TensorSpec("modality_states", "BYTES", [-1, count]),
        TensorSpec("modality_labels", "BYTES", [-1, count]),
        TensorSpec("modality_confidences", "FP32", [-1, count]),
        TensorSpec("reliable", "BOOL", [-1]),
    ]


async def infer(
    predictor: Predictor,
    loaded: LoadedModel,
    inputs: Sequence[Tensor],
    parameters: Mapping[str, Any],
    requested: Sequence[str] | None,
    max_instances: int,
) -> Inference:
    """Predict every instance of the batch the input tensors hold. `requested`: the output names
    wanted, in order; None for all of them."""
    options = parse_options(parameters)
    wanted = _wanted(requested)
    instances = _instances(loaded, inputs, max_instances)
    fields = [f"instance {i}" for i in range(len(instances))]
    try:
        predictions = await predictor.predict(loaded, instances, fields, options)
    except InvalidInputs as error:
        raise ApiError(400, str(error), errors=error.errors) from None
    return Inference(
        outputs=[_output(name, predictions, loaded) for name in wanted],
        parameters={
            "fusion": options.fusion or loaded.manifest.fusion.rule,
            "modalities": ",".join(loaded.modalities),
        },
    )


def parse_options(parameters: Mapping[str, Any]) -> Options:
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


def _wanted(requested: Sequence[str] | None) -> list[str]:
    if requested is None:
        return list(OUTPUTS)
    for position, name in enumerate(requested):
        if name not in OUTPUTS:
            raise ApiError(
                400, f"outputs: {name!r} is not an output of this model; outputs are {', '.join(OUTPUTS)}"
            )
        if name in requested[:position]:
            raise ApiError(400, f"outputs: {name!r} is requested twice; request each output once")
    return list(requested)


def _instances(loaded: LoadedModel, inputs: Sequence[Tensor], max_instances: int) -> list[dict[str, object]]:
    if not inputs:
        raise ApiError(400, f"inputs: send at least one of {', '.join(loaded.modalities)}")
    batch: int | None = None
    columns: dict[str, list[object]] = {}
    for position, tensor in enumerate(inputs):
        where = f"inputs[{position}] ({tensor.name})"
        spec = loaded.manifest.modalities.get(tensor.name)
        if spec is None:
            raise ApiError(
                400,
                f"{where}: is not an input of {loaded.name!r}; its inputs are {', '.join(loaded.modalities)}",
            )
        if tensor.name in columns:
            raise ApiError(400, f"{where}: is sent twice")
        shape = list(tensor.shape)
        if spec.kind == "tensor":
            length = spec.input.length  # type: ignore[union-attr]
            if tensor.datatype not in NUMERIC:
                raise ApiError(
                    400, f"{where}: datatype must be FP32 (or another numeric type), not {tensor.datatype}"
                )
            if len(shape) != 2 or shape[1] != length:
                raise ApiError(400, f"{where}: shape must be [batch, {length}], not {shape}")
            assert isinstance(tensor.data, np.ndarray)
            rows: list[object] = tensor.data.tolist()
        else:
            if tensor.datatype != "BYTES":
                raise ApiError(400, f"{where}: datatype must be BYTES, not {tensor.datatype}")
            if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
                raise ApiError(400, f"{where}: shape must be [batch] or [batch, 1], not {shape}")
            assert isinstance(tensor.data, list)
            rows = [_element(v, spec.kind, f"{tensor.name}[{i}]") for i, v in enumerate(tensor.data)]
        if batch is not None and len(rows) != batch:
            raise ApiError(400, f"{where}: has a batch of {len(rows)}, other inputs have {batch}")
        batch = len(rows)
        columns[tensor.name] = rows
    if not batch:
        raise ApiError(400, "inputs: the batch is empty")
    if batch > max_instances:
        raise ApiError(400, f"inputs: a batch of {batch} is over the limit of {max_instances}; split it")
    return [{name: rows[i] for name, rows in columns.items()} for i in range(batch)]


def _element(value: bytes | str, kind: str, field: str) -> object:
    """A BYTES element as the predictor takes it: text as a string, files as their bytes. A JSON
    string is the text itself, or a file's base64; raw bytes are the text's UTF-8, or the file.
    An unusable element becomes an InputError, so that `on_invalid=drop` can leave it out."""
    if kind == "text":
        if isinstance(value, str):
            return value
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return InputError(field, "is not UTF-8 text; send text encoded as UTF-8")
    return file_bytes(value, field) if isinstance(value, str) else value


def _output(name: str, predictions: list[Prediction], loaded: LoadedModel) -> Tensor:
    batch, modalities = len(predictions), loaded.modalities
    grid = (batch, len(modalities))
    outcomes = [[p.modalities[m] for m in modalities] for p in predictions]
    match name:
        case "label":
            return Tensor(name, "BYTES", (batch,), [p.label.encode() for p in predictions])
        case "score":
            return Tensor(name, "FP32", (batch,), np.array([p.score for p in predictions], np.float32))
        case "probabilities":
            data = np.stack([p.probabilities for p in predictions]).astype(np.float32)
            return Tensor(name, "FP32", data.shape, data)
        case "top_k_labels":
            k = len(predictions[0].top_k)
            return Tensor(
                name, "BYTES", (batch, k), [label.encode() for p in predictions for label, _ in p.top_k]
            )
        case "top_k_probabilities":
            data = np.array([[q for _, q in p.top_k] for p in predictions], np.float32)
            return Tensor(name, "FP32", data.shape, data)
        case "fusion_weights":
            data = np.array([[o.weight for o in row] for row in outcomes], np.float32)
            return Tensor(name, "FP32", grid, data)
        case "modality_states":
            return Tensor(name, "BYTES", grid, [o.state.encode() for row in outcomes for o in row])
        case "modality_labels":
            return Tensor(name, "BYTES", grid, [(o.label or "").encode() for row in outcomes for o in row])
        case "modality_confidences":
            data = np.array([[o.confidence or 0.0 for o in row] for row in outcomes], np.float32)
            return Tensor(name, "FP32", grid, data)
        case "reliable":
            return Tensor(name, "BOOL", (batch,), np.array([p.reliable for p in predictions], bool))
    raise ValueError(f"unknown output {name!r}")
