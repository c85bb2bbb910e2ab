"""Bad input never breaks the service: every malformed request gets a 4xx JSON error naming the
field and the reason, never a 500, never a stack trace or a file path."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import png_bytes, tone, wav_bytes
from tests.live import LiveServer, fixture

LIMIT = 1_000_000


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[LiveServer]:
    with LiveServer(repository, max_body_bytes=LIMIT, max_image_pixels=4_000_000, max_instances=4) as live:
        yield live


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def bomb() -> bytes:
    """A 1-bit PNG of 5000 x 5000 pixels: a few kB that would decode to 25 megapixels."""
    return png_bytes(Image.new("1", (5000, 5000)))


CASES = [
    # (name, path, json body, status, field, message)
    ("invalid base64", "/v1/predict", {"inputs": {"image": {"b64": "***"}}}, 422, "inputs.image.b64", "not valid base64"),
    ("undecodable image", "/v1/predict", {"inputs": {"image": b64(b"GIF89a-but-not")}}, 422, "inputs.image", "not an image"),
    ("truncated image", "/v1/predict", {"inputs": {"image": b64(fixture("digit_7.png")[:300])}}, 422, "inputs.image", "truncated"),
    ("decompression bomb", "/v1/predict", {"inputs": {"image": b64(bomb())}}, 422, "inputs.image", "over the limit of 4000000"),
    ("undecodable audio", "/v1/predict", {"inputs": {"audio": b64(b"RIFF1234WAVEjunk")}}, 422, "inputs.audio", "not audio"),
    ("truncated audio", "/v1/predict", {"inputs": {"audio": b64(fixture("digit_7.wav")[:2000])}}, 422, "inputs.audio", "truncated"),
    ("audio too long, rejected", "/v1/predict", {"inputs": {"audio": b64(wav_bytes(tone(3.0, 8000), 8000))}, "options": {"audio_too_long": "reject"}}, 422, "inputs.audio", "at most 1.5 s: trim it, or set the request option audio_too_long=crop"),
    ("bad audio_too_long", "/v1/predict", {"inputs": {"text": "a"}, "options": {"audio_too_long": "cut"}}, 422, "options.audio_too_long", "'crop' or 'reject'"),
    ("empty audio", "/v1/predict", {"inputs": {"audio": b64(wav_bytes(np.zeros(0, np.float32), 8000))}}, 422, "inputs.audio", "no samples"),
    ("empty file", "/v1/predict", {"inputs": {"audio": {"b64": ""}}}, 422, "inputs.audio", "is empty"),
    ("text too long", "/v1/predict", {"inputs": {"text": "seven " * 20}}, 422, "inputs.text", "reads at most 32"),
    ("empty text", "/v1/predict", {"inputs": {"text": "  "}}, 422, "inputs.text", "is empty"),
    ("image as text", "/v1/predict", {"inputs": {"image": "seven"}}, 422, "inputs.image", '{"b64"'),
    ("text as list", "/v1/predict", {"inputs": {"text": [1, 2]}}, 422, "inputs.text", "must be a string"),
    ("unknown modality", "/v1/predict", {"inputs": {"smell": "roses"}}, 422, "inputs.smell", "not a modality"),
    ("no modality", "/v1/predict", {"inputs": {}}, 422, "inputs", "has no input"),
    ("neither form", "/v1/predict", {"options": {}}, 422, None, "either `inputs`"),
    ("both forms", "/v1/predict", {"inputs": {"text": "a"}, "instances": [{"text": "a"}]}, 422, None, "not both"),
    ("unknown field", "/v1/predict", {"inputs": {"text": "a"}, "extra": 1}, 422, "extra", "Extra inputs"),
    ("bad option", "/v1/predict", {"inputs": {"text": "a"}, "options": {"fusion": "max"}}, 422, "options.fusion", "'entropy' or 'mean'"),
    ("bad top_k", "/v1/predict", {"inputs": {"text": "a"}, "options": {"top_k": 0}}, 422, "options.top_k", "greater than"),
    ("too many instances", "/v1/predict", {"instances": [{"text": "a"}] * 5}, 422, "instances", "over the limit of 4"),
    ("empty instances", "/v1/predict", {"instances": []}, 422, "instances", "at least 1"),
    ("bad instance", "/v1/predict", {"instances": [{"text": "drei"}, {"text": ""}]}, 422, "instances[1].text", "is empty"),
    ("wrong tensor length", "/v1/models/pen/predict", {"inputs": {"pen": [1.0] * 15}}, 422, "inputs.pen", "exactly 16"),
    ("tensor of strings", "/v1/models/pen/predict", {"inputs": {"pen": "1,2"}}, 422, "inputs.pen", "list of numbers"),
    ("unknown model", "/v1/models/nope/predict", {"inputs": {"text": "a"}}, 404, "model", "not served here"),
    ("unknown version", "/v1/models/digits/versions/7/predict", {"inputs": {"text": "a"}}, 404, "model", "no version 7"),
]  # fmt: skip


def assert_clean_error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    for leak in ("Traceback", 'File "', "/site-packages/", str(Path(__file__).parents[1])):
        assert leak not in response.text
    return body


@pytest.mark.parametrize(
    ("name", "path", "body", "status", "field", "message"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_json_requests(server: LiveServer, name, path, body, status, field, message) -> None:
    error = assert_clean_error(server.client.post(path, json=body), status)
    assert message in error["error"], error
    if field is not None:
        assert error["field"] == field, error
    assert error["request_id"]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers(server: LiveServer, token: str) -> None:
    values = ", ".join(["1.0"] * 15 + [token])
    response = server.client.post(
        "/v1/models/pen/predict",
        content=f'{{"inputs": {{"pen": [{values}]}}}}',
        headers={"content-type": "application/json"},
    )
    error = assert_clean_error(response, 422)
    assert error["field"] == "inputs.pen[15]" and "finite" in error["error"]


def test_invalid_json_is_400(server: LiveServer) -> None:
    response = server.client.post(
        "/v1/predict", content=b'{"inputs": ', headers={"content-type": "application/json"}
    )
    assert "not valid JSON" in assert_clean_error(response, 400)["error"]


def test_unsupported_content_type_is_415(server: LiveServer) -> None:
    for path in ("/v1/predict", "/v2/models/digits/infer"):
        response = server.client.post(path, content=b"seven", headers={"content-type": "text/plain"})
        assert "is not supported" in assert_clean_error(response, 415)["error"]
    assert_clean_error(server.client.post("/v1/predict", content=b"{}"), 415)  # no content type at all


def test_body_over_the_limit_is_413(server: LiveServer) -> None:
    big = {"inputs": {"image": {"b64": "A" * (LIMIT + 10)}}}
    assert "over the limit" in assert_clean_error(server.client.post("/v1/predict", json=big), 413)["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies as the body arrives
        yield b'{"inputs": {"text": "'
        for _ in range(LIMIT // 65536 + 2):
            yield b"a" * 65536
        yield b'"}}'

    response = server.client.post(
        "/v1/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_clean_error(response, 413)
    assert_clean_error(server.client.post("/v2/models/digits/infer", json=big), 413)


def test_multipart_errors(server: LiveServer) -> None:
    cases = [
        ({"data": {"image": "not a file"}}, "form.image", "must be a file upload"),
        ({"files": {"smell": ("a.txt", b"x")}}, "form.smell", "not a modality"),
        ({"data": {"top_k": "many", "text": "drei"}}, "top_k", "valid integer"),
        ({"files": {"audio": ("a.wav", b"")}}, "form.audio", "is empty"),
        ({"files": {"text": ("t.txt", b"\xff\xfe")}}, "form.text", "not UTF-8"),
    ]
    for request, field, message in cases:
        error = assert_clean_error(server.client.post("/v1/predict", **request), 422)
        assert error["field"] == field and message in error["error"], error
    broken = server.client.post(
        "/v1/predict",
        content=b"--xyz\r\nnot a part",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert broken.status_code in (400, 422), broken.text
    assert_clean_error(broken, broken.status_code)


def test_several_errors_are_all_reported(server: LiveServer) -> None:
    body = {"inputs": {"text": "", "image": {"b64": "***"}}}
    error = assert_clean_error(server.client.post("/v1/predict", json=body), 422)
    assert {e["field"] for e in error["errors"]} == {"inputs.text", "inputs.image.b64"}


def test_unknown_routes_and_methods(server: LiveServer) -> None:
    assert "no route" in assert_clean_error(server.client.get("/v1/nothing"), 404)["error"]
    assert "not allowed" in assert_clean_error(server.client.get("/v1/predict"), 405)["error"]


def test_everything_fails_at_once_under_drop(server: LiveServer) -> None:
    body = {"inputs": {"text": "", "audio": {"b64": "***"}}, "options": {"on_invalid": "drop"}}
    error = assert_clean_error(server.client.post("/v1/predict", json=body), 422)
    assert "no usable input is left" in error["error"] and "inputs.text: is empty" in error["error"]


def test_request_id_is_echoed_or_made(server: LiveServer) -> None:
    mine = server.client.post(
        "/v1/predict", json={"inputs": {"text": "drei"}}, headers={"x-request-id": "abc-123"}
    )
    assert mine.headers["x-request-id"] == "abc-123" and mine.json()["request_id"] == "abc-123"
    odd = server.client.post(
        "/v1/predict", json={"inputs": {"text": "drei"}}, headers={"x-request-id": "<script>"}
    )
    assert odd.headers["x-request-id"] != "<script>"


# -- API keys ---------------------------------------------------------------------------------


def test_api_keys_guard_everything_but_health_and_metrics(repository: Path) -> None:
    with LiveServer(repository, api_keys="first-key, second-key") as server:
        body = {"inputs": {"text": "drei"}}
        missing = server.client.post("/v1/predict", json=body)
        assert_clean_error(missing, 401)
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = server.client.post("/v1/predict", json=body, headers={"authorization": "Bearer nope"})
        assert "not valid" in assert_clean_error(wrong, 401)["error"]
        for key in ("first-key", "second-key"):
            assert (
                server.client.post(
                    "/v1/predict", json=body, headers={"authorization": f"Bearer {key}"}
                ).status_code
                == 200
            )
        for guarded in ("/v1/models", "/v2", "/v2/models/digits"):
            assert server.client.get(guarded).status_code == 401
        v2 = server.client.post("/v2/models/digits/infer", json={"inputs": []})
        assert v2.status_code == 401 and list(v2.json()) == ["error"]
        for open_route in ("/v2/health/live", "/v2/health/ready", "/v2/models/digits/ready", "/metrics"):
            assert server.client.get(open_route).status_code == 200, open_route


def test_cors_is_off_unless_configured(server: LiveServer, repository: Path) -> None:
    preflight = {"origin": "https://example.org", "access-control-request-method": "POST"}
    assert (
        "access-control-allow-origin" not in server.client.options("/v1/predict", headers=preflight).headers
    )
    with LiveServer(repository, cors_origins="https://example.org") as open_server:
        answer = open_server.client.options("/v1/predict", headers=preflight)
        assert answer.headers["access-control-allow-origin"] == "https://example.org"


def test_error_bodies_are_json_even_for_huge_json(server: LiveServer) -> None:
    nested = "[" * 5000 + "]" * 5000
    response = server.client.post("/v1/predict", content=nested, headers={"content-type": "application/json"})
    assert response.status_code in (400, 422)
    json.loads(response.text)
    io.BytesIO(response.content)
