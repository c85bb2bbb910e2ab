"""The REST binary tensor data extension of the Open Inference Protocol, as Triton specifies it:
https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md

A request with the header `Inference-Header-Content-Length: N` is N bytes of JSON header, then
the raw data of every input whose `parameters` have `binary_data_size`, in the order of the inputs
(the layout is in `service/tensors.py`). In binary data, image and recording elements are the
files' own bytes; in JSON `data` they are base64, because JSON strings cannot carry arbitrary bytes
(tritonclient sends a JSON BYTES element as its bytes read as UTF-8). Outputs come back as binary
data where the request output's `binary_data` says so, or, for outputs that do not say, where the
request parameter `binary_data_output` does; the response is then framed the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from anymodal.service.errors import ApiError
from anymodal.service.schemas_v2 import InferenceRequest
from anymodal.service.tensors import Tensor, from_raw, from_values, to_raw, to_values

HEADER = "Inference-Header-Content-Length"
BINARY = "application/octet-stream"


def check_media(media: str, encoding: str, framed: bool) -> None:
    """The body's Content-Type and Content-Encoding. A binary body may come as JSON, as octet-stream
    or without a type (tritonclient sends none); a JSON body as JSON or without a type."""
    if encoding not in ("", "identity"):
        raise ApiError(415, f"content encoding {encoding} is not supported; send the body uncompressed")
    if media in ("", "application/json") or (framed and media == BINARY):
        return
    if media == BINARY:
        raise ApiError(
            400, f"{HEADER}: is missing; a binary body starts with a JSON header of that many bytes"
        )
    raise ApiError(
        415,
        f"content type {media} is not supported; send application/json, or binary tensor data"
        f" ({BINARY} with the header {HEADER})",
    )


def split_body(body: bytes, declared: str | None) -> tuple[bytes, bytes | None]:
    """The JSON header, and the binary data after it (None: the body is JSON alone)."""
    if declared is None:
        return body, None
    declared = declared.strip()
    if not (declared.isascii() and declared.isdigit()):
        raise ApiError(400, f"{HEADER}: {declared!r} is not a byte count; send the JSON header's length")
    length = int(declared)
    if length > len(body):
        raise ApiError(
            400,
            f"{HEADER}: is {length}, larger than the body ({len(body)} bytes); it must be the length of"
            " the JSON header alone, with the binary data after it",
        )
    return body[:length], body[length:]


def read_inputs(request: InferenceRequest, binary: bytes | None) -> list[Tensor]:
    """Every input as a tensor: from its JSON `data`, or from its slice of the binary data."""
    tensors, offset = [], 0
    for position, item in enumerate(request.inputs):
        where = f"inputs[{position}] ({item.name})"
        parameters = item.parameters or {}
        if "shared_memory_region" in parameters:
            raise ApiError(
                400,
                f"{where}: parameters.shared_memory_region: shared memory is not supported; send the data",
            )
        size = parameters.get("binary_data_size")
        if size is None:
            if item.data is None:
                raise ApiError(
                    400,
                    f"{where}: has no data; send `data`, or `parameters.binary_data_size` and the bytes"
                    f" after the JSON header (with the header {HEADER})",
                )
            tensors.append(from_values(item.name, item.datatype, item.shape, item.data, where))
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ApiError(
                400,
                f"{where}: parameters.binary_data_size must be the length of its data in bytes, not {size!r}",
            )
        if item.data is not None:
            raise ApiError(400, f"{where}: has both `data` and parameters.binary_data_size; send one of them")
        if binary is None:
            raise ApiError(
                400,
                f"{where}: parameters.binary_data_size needs binary data after the JSON header, and the"
                f" header {HEADER} giving the JSON header's length",
            )
        if size > len(binary) - offset:
            raise ApiError(
                400,
                f"{where}: parameters.binary_data_size is {size}, but only {len(binary) - offset} bytes of"
                " binary data are left for it; the binary inputs' data follow the JSON header in the order"
                " of the inputs, each binary_data_size bytes long",
            )
        tensors.append(from_raw(item.name, item.datatype, item.shape, binary[offset : offset + size], where))
        offset += size
    if binary is not None and offset != len(binary):
        raise ApiError(
            400,
            f"body: {len(binary)} bytes follow the JSON header, but the inputs' binary_data_size add up to"
            f" {offset}; {HEADER} must be the JSON header's length, and each binary_data_size the length"
            " of that input's data",
        )
    return tensors


def output_formats(request: InferenceRequest) -> tuple[dict[str, bool], bool]:
    """Which requested outputs go as binary data, by name, and the choice for all others."""
    default = (request.parameters or {}).get("binary_data_output", False)
    if not isinstance(default, bool):
        raise ApiError(400, f"parameters.binary_data_output: must be true or false, not {default!r}")
    chosen = {}
    for position, output in enumerate(request.outputs or []):
        where = f"outputs[{position}] ({output.name})"
        parameters = output.parameters or {}
        if "classification" in parameters:
            raise ApiError(
                400,
                f"{where}: parameters.classification is not supported; request the outputs top_k_labels"
                " and top_k_probabilities, with the request parameter top_k",
            )
        if "shared_memory_region" in parameters:
            raise ApiError(
                400, f"{where}: parameters.shared_memory_region: shared memory is not supported; leave it out"
            )
        flag = parameters.get("binary_data", default)
        if not isinstance(flag, bool):
            raise ApiError(400, f"{where}: parameters.binary_data must be true or false, not {flag!r}")
        chosen[output.name] = flag
    return chosen, default


def encode_response(
    header: Mapping[str, Any], outputs: list[Tensor], chosen: Mapping[str, bool], default: bool
) -> tuple[bytes, int | None]:
    """The response body: `header` with the outputs, JSON or binary as chosen; and the length of the
    JSON header when binary data follows it (None: the body is JSON alone)."""
    described: list[dict[str, Any]] = []
    chunks: list[bytes] | None = None  # None until an output goes as binary data
    for tensor in outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "shape": list(tensor.shape),
            "datatype": tensor.datatype,
        }
        if chosen.get(tensor.name, default):
            raw = to_raw(tensor)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks = [*(chunks or []), raw]
        else:
            entry["data"] = to_values(tensor)
        described.append(entry)
    text = json.dumps({**header, "outputs": described}, separators=(",", ":"), allow_nan=False).encode()
    if chunks is None:
        return text, None
    return text + b"".join(chunks), len(text)
