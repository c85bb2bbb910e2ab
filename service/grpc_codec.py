"""gRPC's Open Inference Protocol messages to and from what the protocol-neutral core takes and
gives (`service/inference.py`): input tensors, parameters, output tensors.

A request's inputs are either all raw (`raw_input_contents`, one entry per input, in the order of
`inputs`: the layout of `service/tensors.py`) or all typed (each input's `contents`, in the field
of its datatype), as the protocol says. The response answers in kind: raw outputs
(`raw_output_contents`) for raw inputs, which is what Triton does and all that
`tritonclient.grpc`'s `InferResult.as_numpy` reads for numbers; typed `contents` otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from anymodal.service.errors import ApiError
from anymodal.service.proto import grpc_predict_v2_pb2 as pb
from anymodal.service.tensors import Tensor, checked_shape, from_raw, from_values, to_raw

# The InferTensorContents field that holds the elements of each datatype; FP16 has none (raw only).
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameters(entries: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    """Request parameters as plain values (a parameter with no value set is left out)."""
    values: dict[str, Any] = {}
    for key, parameter in entries.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is not None:
            values[key] = getattr(parameter, choice)
    return values


def read_inputs(request: pb.ModelInferRequest) -> tuple[list[Tensor], bool]:
    """The request's input tensors, and whether they came raw."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ApiError(
            400,
            f"raw_input_contents: has {len(raw)} entries for {len(request.inputs)} inputs; send one per"
            " input, in the order of inputs",
        )
    tensors = []
    for position, tensor in enumerate(request.inputs):
        where = f"inputs[{position}] ({tensor.name})"
        shape = list(tensor.shape)
        if not raw:
            tensors.append(_typed(tensor, shape, where))
            continue
        if tensor.contents.ListFields():
            raise ApiError(
                400,
                f"{where}: has contents, but the request has raw_input_contents; send every input raw"
                " or every input in contents",
            )
        tensors.append(from_raw(tensor.name, tensor.datatype, shape, raw[position], where))
    return tensors, bool(raw)


def write_outputs(response: pb.ModelInferResponse, outputs: Sequence[Tensor], raw: bool) -> None:
    for tensor in outputs:
        output = response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        if raw:
            response.raw_output_contents.append(to_raw(tensor))
            continue
        elements = tensor.data if isinstance(tensor.data, list) else tensor.data.reshape(-1).tolist()
        getattr(output.contents, CONTENTS[tensor.datatype]).extend(elements)


def _typed(tensor: pb.ModelInferRequest.InferInputTensor, shape: list[int], where: str) -> Tensor:
    checked_shape(tensor.datatype, shape, where)
    field = CONTENTS.get(tensor.datatype)
    if field is None:
        raise ApiError(
            400, f"{where}: {tensor.datatype} has no typed contents; send it in raw_input_contents"
        )
    stray = [descriptor.name for descriptor, _ in tensor.contents.ListFields() if descriptor.name != field]
    if stray:
        raise ApiError(
            400, f"{where}: {tensor.datatype} elements go in contents.{field}, not in {', '.join(stray)}"
        )
    return from_values(tensor.name, tensor.datatype, shape, getattr(tensor.contents, field), where)
