"""The binary tensor data extension: raw tensor data both ways, the request framing (every malformed
body a 400 naming the field and the fix), output formats, and the framing through a live server."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from anymodal.service.binary_data import (
    HEADER,
    check_media,
    encode_response,
    output_formats,
    read_inputs,
    split_body,
)
from anymodal.service.errors import ApiError
from anymodal.service.schemas_v2 import InferenceRequest
from anymodal.service.tensors import NUMPY_TYPES, Tensor, from_raw, from_values, to_raw, to_values

from tests.live import LiveServer


def element(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data


def binary_input(name: str, datatype: str, shape: list[int], size: int) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": size}}


def parse(header: dict, binary: bytes | None) -> list[Tensor]:
    return read_inputs(InferenceRequest.model_validate(header), binary)


def refused(call, *args: object) -> str:
    """The message of the 400 that `call(*args)` raises."""
    with pytest.raises(ApiError) as caught:
        call(*args)
    assert caught.value.status == 400, caught.value.message
    return caught.value.message


# -- raw tensor data -----------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", [d for d in NUMPY_TYPES if d != "BOOL"])
def test_numeric_tensors_round_trip(datatype: str) -> None:
    array = np.arange(6).reshape(2, 3).astype(NUMPY_TYPES[datatype])
    raw = to_raw(Tensor("x", datatype, (2, 3), array))
    assert raw == array.astype(array.dtype.newbyteorder("<")).tobytes()
    back = from_raw("x", datatype, [2, 3], raw, "x")
    assert back.shape == (2, 3) and np.array_equal(back.data, array)


def test_bytes_and_bool_tensors_round_trip() -> None:
    elements = [b"sieben", b"", b"\xff\xfe\x00"]
    raw = to_raw(Tensor("x", "BYTES", (3,), elements))
    assert raw == b"".join(element(e) for e in elements)
    assert from_raw("x", "BYTES", [3, 1], raw, "x").data == elements
    flags = np.array([True, False, True])
    assert to_raw(Tensor("r", "BOOL", (3,), flags)) == b"\x01\x00\x01"
    assert from_raw("r", "BOOL", [3], b"\x01\x00\x01", "r").data.tolist() == [True, False, True]
    assert to_values(Tensor("l", "BYTES", (2,), [b"7", b"present"])) == ["7", "present"]


def test_json_values_become_tensors() -> None:
    nested = from_values("pen", "FP32", [2, 2], [[1, 2.5], [3, float("nan")]], "pen")
    assert nested.data.dtype == np.float32 and nested.data.shape == (2, 2) and np.isnan(nested.data[1, 1])
    assert from_values("t", "BYTES", [1, 1], [["sieben"]], "t").data == ["sieben"]
    assert from_values("b", "BOOL", [2], [True, False], "b").data.tolist() == [True, False]


@pytest.mark.parametrize(
    ("datatype", "shape", "values", "message"),
    [
        ("INT8", [2], [1, 300], "x: data[1] is 300, not an integer from -128 to 127"),
        ("FP32", [1], [1e39], "x: data[0] is 1e+39, not a number no larger than 3.403e+38 in magnitude"),
        ("FP32", [1], ["1"], "x: data[0] is '1', not a number"),
        ("FP64", [1], [10**400], "not a number no larger than 1.798e+308 in magnitude"),
        ("FP32", [1], [True], "x: data[0] is True, not a number"),
        ("BOOL", [1], [1], "x: data[0] is 1, not true or false"),
        ("BYTES", [1], [7], "x: data[0] must be a string (BYTES elements are JSON strings), not int"),
        ("FP32", [2, 2], [1.0, 2.0], "x: shape [2, 2] needs 4 values, not 2"),
        ("FP32", [-1], [], "x: shape must be non-negative integers"),
        ("BF16", [1], [1.0], "x: datatype 'BF16' is not supported; use one of BOOL, UINT8"),
    ],
)
def test_bad_json_values_are_400(datatype: str, shape: list[int], values: list, message: str) -> None:
    assert message in refused(from_values, "x", datatype, shape, values, "x")


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "message"),
    [
        ("BYTES", [2], element(b"sieben") + b"\x03\x00", "x: element 1's length prefix is cut off (2 of 4 bytes); each BYTES element is its length as a 4-byte little-endian integer, then its bytes"),
        ("BYTES", [1], b"\x09\x00\x00\x00sieben", "x: element 0 says it has 9 bytes, but only 6 are left"),
        ("BYTES", [2], element(b"sieben"), "x: holds 1 BYTES elements; shape [2] needs 2"),
        ("FP32", [1, 16], bytes(60), "x: has 60 bytes of data; shape [1, 16] of FP32 needs 64 (16 elements of 4 bytes)"),
        ("BOOL", [2], b"\x01\x02", "x: BOOL elements are single bytes, 0 (false) or 1 (true)"),
        ("FP8", [1], b"\x00", "x: datatype 'FP8' is not supported; use one of BOOL"),
    ],
)  # fmt: skip
def test_bad_raw_data_is_400(datatype: str, shape: list[int], raw: bytes, message: str) -> None:
    assert message in refused(from_raw, "x", datatype, shape, raw, "x")


# -- the request framing -------------------------------------------------------------------------


def test_a_framed_body_splits_into_its_inputs() -> None:
    pen = np.arange(16, dtype=np.float32)
    header = {
        "inputs": [
            binary_input("text", "BYTES", [1], 10),
            {"name": "image", "datatype": "BYTES", "shape": [1], "data": ["aGVsbG8="]},
            binary_input("pen", "FP32", [1, 16], 64),
        ]
    }
    text = json.dumps(header).encode()
    body = text + element(b"sieben") + pen.tobytes()
    json_header, binary = split_body(body, str(len(text)))
    assert json_header == text
    text_tensor, image, pen_tensor = parse(json.loads(json_header), binary)
    assert text_tensor.data == [b"sieben"] and image.data == ["aGVsbG8="]
    assert np.array_equal(pen_tensor.data, pen.reshape(1, 16))
    assert split_body(b"{}", None) == (b"{}", None)


@pytest.mark.parametrize("declared", ["12", "abc", "-1", "²", "1.5"])
def test_a_bad_header_length_is_400(declared: str) -> None:
    message = refused(split_body, b"{}", declared)
    assert message.startswith(f"{HEADER}: ")
    if declared == "12":
        assert (
            "is 12, larger than the body (2 bytes); it must be the length of the JSON header alone" in message
        )
    else:
        assert "is not a byte count; send the JSON header's length" in message


@pytest.mark.parametrize(
    ("inputs", "binary", "message"),
    [
        ([binary_input("text", "BYTES", [1], 10)], element(b"sieben") + b"tail",
         "body: 14 bytes follow the JSON header, but the inputs' binary_data_size add up to 10"),
        ([binary_input("text", "BYTES", [1], 10), binary_input("image", "BYTES", [1], 10)], element(b"sieben") + b"1234",
         "inputs[1] (image): parameters.binary_data_size is 10, but only 4 bytes of binary data are left for it"),
        ([binary_input("text", "BYTES", [1], 10)], None,
         f"inputs[0] (text): parameters.binary_data_size needs binary data after the JSON header, and the header {HEADER}"),
        ([binary_input("text", "BYTES", [1], 10) | {"data": ["sieben"]}], element(b"sieben"),
         "inputs[0] (text): has both `data` and parameters.binary_data_size; send one of them"),
        ([{"name": "text", "datatype": "BYTES", "shape": [1]}], None,
         "inputs[0] (text): has no data; send `data`, or `parameters.binary_data_size`"),
        ([binary_input("text", "BYTES", [1], -3)], b"",
         "inputs[0] (text): parameters.binary_data_size must be the length of its data in bytes, not -3"),
        ([binary_input("text", "BYTES", [1], True)], b"",
         "inputs[0] (text): parameters.binary_data_size must be the length of its data in bytes, not True"),
        ([{"name": "text", "datatype": "BYTES", "shape": [1], "parameters": {"shared_memory_region": "r"}}], None,
         "inputs[0] (text): parameters.shared_memory_region: shared memory is not supported"),
        ([binary_input("text", "BYTES", [1], 8)], b"\x06\x00\x00\x00sieb",
         "inputs[0] (text): element 0 says it has 6 bytes, but only 4 are left"),
    ],
)  # fmt: skip
def test_malformed_binary_requests_are_400(inputs: list[dict], binary: bytes | None, message: str) -> None:
    assert message in refused(parse, {"inputs": inputs}, binary)


# -- outputs -------------------------------------------------------------------------------------


def test_output_formats_follow_the_request() -> None:
    def formats(body: dict) -> tuple[dict[str, bool], bool]:
        return output_formats(
            InferenceRequest.model_validate(
                {"inputs": [{"name": "t", "datatype": "BYTES", "shape": [0], "data": []}]} | body
            )
        )

    assert formats({}) == ({}, False)
    assert formats({"parameters": {"binary_data_output": True}}) == ({}, True)
    both = {
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": "label", "parameters": {"binary_data": False}}, {"name": "score"}],
    }
    assert formats(both) == ({"label": False, "score": True}, True)
    bad = [
        (
            {"parameters": {"binary_data_output": "yes"}},
            "parameters.binary_data_output: must be true or false, not 'yes'",
        ),
        (
            {"outputs": [{"name": "label", "parameters": {"binary_data": 1}}]},
            "outputs[0] (label): parameters.binary_data must be true or false, not 1",
        ),
        (
            {"outputs": [{"name": "label", "parameters": {"classification": 3}}]},
            "outputs[0] (label): parameters.classification is not supported; request the outputs top_k_labels",
        ),
        (
            {"outputs": [{"name": "label", "parameters": {"shared_memory_region": "r"}}]},
            "shared memory is not supported",
        ),
    ]
    for body, message in bad:
        assert message in refused(formats, body)


def test_a_binary_response_is_its_json_header_then_the_binary_outputs() -> None:
    outputs = [
        Tensor("label", "BYTES", (1,), [b"7"]),
        Tensor("score", "FP32", (1,), np.array([0.5], np.float32)),
    ]
    body, length = encode_response({"model_name": "digits"}, outputs, {"score": True}, False)
    assert length is not None
    header = json.loads(body[:length])
    assert header["outputs"] == [
        {"name": "label", "shape": [1], "datatype": "BYTES", "data": ["7"]},
        {"name": "score", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}},
    ]
    assert body[length:] == np.float32(0.5).tobytes()
    plain, none = encode_response({"model_name": "digits"}, outputs, {}, False)
    assert none is None and json.loads(plain)["outputs"][1]["data"] == [0.5]


@pytest.mark.parametrize(
    ("media", "encoding", "framed", "status", "message"),
    [
        ("text/plain", "", True, 415, "content type text/plain is not supported; send application/json, or binary tensor data"),
        ("application/octet-stream", "", False, 400, f"{HEADER}: is missing; a binary body starts with a JSON header"),
        ("application/json", "gzip", True, 415, "content encoding gzip is not supported; send the body uncompressed"),
    ],
)  # fmt: skip
def test_content_types(media: str, encoding: str, framed: bool, status: int, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        check_media(media, encoding, framed)
    assert caught.value.status == status and message in caught.value.message
    for accepted, with_header in [
        ("", False),
        ("application/json", False),
        ("", True),
        ("application/octet-stream", True),
    ]:
        check_media(accepted, "", with_header)


# -- through a live server -----------------------------------------------------------------------

LIMIT = 200_000


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[LiveServer]:
    with LiveServer(repository, max_body_bytes=LIMIT) as live:
        yield live


def framed(header: dict, binary: bytes) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + binary, {HEADER: str(len(text)), "content-type": "application/octet-stream"}


def test_a_hand_framed_request_gets_a_framed_answer(server: LiveServer) -> None:
    body, headers = framed(
        {"inputs": [binary_input("text", "BYTES", [1], 10)], "outputs": [{"name": "label", "parameters": {"binary_data": True}}]},
        element(b"sieben"),
    )  # fmt: skip
    answer = server.client.post("/v2/models/digits/infer", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/octet-stream"
    length = int(answer.headers[HEADER])
    header = json.loads(answer.content[:length])
    assert header["outputs"] == [
        {"name": "label", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 5}}
    ]
    assert answer.content[length:] == element(b"7")


def test_malformed_binary_requests_get_clean_400s(server: LiveServer) -> None:
    body, headers = framed({"inputs": [binary_input("text", "BYTES", [1], 10)]}, element(b"sieben"))
    cases = [
        (body, headers | {HEADER: str(len(body) + 1)}, 400, "larger than the body"),
        (body, headers | {HEADER: "x"}, 400, "is not a byte count"),
        (body[:-2], headers, 400, "parameters.binary_data_size is 10, but only 8 bytes"),
        (body + b"!", headers, 400, "add up to 10"),
        (body, {"content-type": "application/octet-stream"}, 400, f"{HEADER}: is missing"),
        (body, headers | {"content-type": "text/plain"}, 415, "is not supported"),
        (body, headers | {"content-encoding": "gzip"}, 415, "send the body uncompressed"),
        (body[: int(headers[HEADER]) - 1] + bytes(11), headers, 400, "the body is not valid JSON"),
        (body + bytes(LIMIT), headers, 413, "over the limit"),
    ]
    for content, request_headers, status, message in cases:
        answer = server.client.post("/v2/models/digits/infer", content=content, headers=request_headers)
        assert answer.status_code == status, (message, answer.text)
        assert list(answer.json()) == ["error"] and message in answer.json()["error"], answer.text


def test_non_utf8_text_in_binary_data_is_refused(server: LiveServer) -> None:
    header = {"inputs": [binary_input("text", "BYTES", [1], 6)]}
    body, headers = framed(header, element(b"\xff\xfe"))
    answer = server.client.post("/v2/models/digits/infer", content=body, headers=headers)
    assert answer.status_code == 400
    assert "text[0]: is not UTF-8 text; send text encoded as UTF-8" in answer.json()["error"]
