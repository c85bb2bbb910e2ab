"""Open Inference Protocol tensors, whatever carried them: a JSON `data` list, the REST binary
tensor data extension, or gRPC's typed or raw contents.

Raw tensor data is the protocol's one binary layout, shared by the REST extension and gRPC's
`raw_input_contents`: little-endian, row-major, no padding; BOOL elements are single bytes 0 or 1;
each BYTES element is its length as a 4-byte little-endian unsigned integer, then its bytes.
Every malformed tensor is an `ApiError` 400 naming the input (`where`) and the fix.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from anymodal.service.errors import ApiError

NUMPY_TYPES: dict[str, np.dtype] = {
    name: np.dtype(code)
    for name, code in (
        ("BOOL", "?"),
        ("UINT8", "<u1"),
        ("UINT16", "<u2"),
        ("UINT32", "<u4"),
        ("UINT64", "<u8"),
        ("INT8", "<i1"),
        ("INT16", "<i2"),
        ("INT32", "<i4"),
        ("INT64", "<i8"),
        ("FP16", "<f2"),
        ("FP32", "<f4"),
        ("FP64", "<f8"),
    )
}
DATATYPES = (*NUMPY_TYPES, "BYTES")
NUMERIC = frozenset(NUMPY_TYPES) - {"BOOL"}
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class Tensor:
    """One named tensor of a request or a response.

    `data` is an ndarray of `shape` for numeric and BOOL tensors. For BYTES it lists the elements
    in row-major order, each `bytes` (raw: binary REST data, gRPC) or `str` (a JSON string, as the
    REST JSON form carries it: text as it is, images and recordings base64-encoded, because JSON
    cannot carry a file's bytes). Outputs hold `bytes`.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray | list[bytes | str]


def checked_shape(datatype: str, shape: Sequence[object], where: str) -> tuple[int, ...]:
    """The datatype is one this server reads and the shape is non-negative integers."""
    if datatype not in DATATYPES:
        raise ApiError(
            400, f"{where}: datatype {datatype!r} is not supported; use one of {', '.join(DATATYPES)}"
        )
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
        raise ApiError(400, f"{where}: shape must be non-negative integers")
    return tuple(shape)  # type: ignore[arg-type]


def from_values(
    name: str, datatype: str, shape: Sequence[object], values: Iterable[Any], where: str
) -> Tensor:
    """A tensor from element values: a JSON `data` list (flat or nested row-major, as the protocol
    allows) or gRPC's typed contents. BYTES elements are `str` (JSON) or `bytes` (gRPC)."""
    dims = checked_shape(datatype, shape, where)
    flat = _flatten(values)
    if len(flat) != math.prod(dims):
        raise ApiError(400, f"{where}: shape {list(dims)} needs {math.prod(dims)} values, not {len(flat)}")
    if datatype == "BYTES":
        for i, value in enumerate(flat):
            if not isinstance(value, str | bytes):
                raise ApiError(
                    400,
                    f"{where}: data[{i}] must be a string (BYTES elements are JSON strings),"
                    f" not {type(value).__name__}",
                )
        return Tensor(name, datatype, dims, flat)
    dtype = NUMPY_TYPES[datatype]
    for i, value in enumerate(flat):
        if not _fits(value, dtype):
            shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:37]}..."
            raise ApiError(400, f"{where}: data[{i}] is {shown}, not {_describe(dtype)}")
    return Tensor(name, datatype, dims, np.array(flat, dtype=dtype).reshape(dims))


def from_raw(name: str, datatype: str, shape: Sequence[object], raw: bytes, where: str) -> Tensor:
    """A tensor from raw tensor data (see the module's docstring for the layout)."""
    dims = checked_shape(datatype, shape, where)
    count = math.prod(dims)
    if datatype == "BYTES":
        return Tensor(name, datatype, dims, _split_bytes(raw, count, dims, where))
    dtype = NUMPY_TYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise ApiError(
            400,
            f"{where}: has {len(raw)} bytes of data; shape {list(dims)} of {datatype} needs"
            f" {count * dtype.itemsize} ({count} elements of {dtype.itemsize} bytes):"
            " fix the shape or the data",
        )
    if datatype == "BOOL":
        octets = np.frombuffer(raw, np.uint8)
        if np.any(octets > 1):
            raise ApiError(400, f"{where}: BOOL elements are single bytes, 0 (false) or 1 (true)")
        return Tensor(name, datatype, dims, octets.astype(bool).reshape(dims))
    return Tensor(name, datatype, dims, np.frombuffer(raw, dtype).reshape(dims))


def to_raw(tensor: Tensor) -> bytes:
    """The tensor's raw tensor data."""
    if isinstance(tensor.data, list):
        elements = [e.encode() if isinstance(e, str) else e for e in tensor.data]
        return b"".join(_LENGTH.pack(len(e)) + e for e in elements)
    return np.ascontiguousarray(tensor.data, dtype=NUMPY_TYPES[tensor.datatype]).tobytes()


def to_values(tensor: Tensor) -> list[Any]:
    """The tensor's elements as a flat JSON list; BYTES elements must be UTF-8 (outputs are)."""
    if isinstance(tensor.data, list):
        return [e.decode() if isinstance(e, bytes) else e for e in tensor.data]
    return tensor.data.reshape(-1).tolist()


def _flatten(data: Iterable[Any]) -> list[Any]:
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


def _fits(value: object, dtype: np.dtype) -> bool:
    """Whether a JSON value is an element of `dtype`: a boolean for BOOL, an integer in range for
    the integer types, a number (NaN and infinities included) that does not overflow for floats."""
    if dtype.kind == "b":
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if dtype.kind in "iu":
        limits = np.iinfo(dtype)
        return isinstance(value, int) and limits.min <= value <= limits.max
    if isinstance(value, float) and not math.isfinite(value):
        return True  # the predictor refuses NaN and infinities per input, so `on_invalid=drop` works
    return abs(value) <= float(np.finfo(dtype).max)


def _describe(dtype: np.dtype) -> str:
    if dtype.kind == "b":
        return "true or false"
    if dtype.kind in "iu":
        limits = np.iinfo(dtype)
        return f"an integer from {limits.min} to {limits.max}"
    return f"a number no larger than {float(np.finfo(dtype).max):.4g} in magnitude"


def _split_bytes(raw: bytes, count: int, dims: tuple[int, ...], where: str) -> list[bytes | str]:
    elements: list[bytes | str] = []
    offset = 0
    layout = "each BYTES element is its length as a 4-byte little-endian integer, then its bytes"
    while offset < len(raw):
        left = len(raw) - offset
        if left < _LENGTH.size:
            raise ApiError(
                400,
                f"{where}: element {len(elements)}'s length prefix is cut off ({left} of 4 bytes); {layout}",
            )
        (size,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if size > len(raw) - offset:
            raise ApiError(
                400,
                f"{where}: element {len(elements)} says it has {size} bytes, but only"
                f" {len(raw) - offset} are left; {layout}",
            )
        elements.append(raw[offset : offset + size])
        offset += size
    if len(elements) != count:
        raise ApiError(
            400, f"{where}: holds {len(elements)} BYTES elements; shape {list(dims)} needs {count}"
        )
    return elements
