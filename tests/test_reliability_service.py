"""The reliability gate through the HTTP API of a real server: a blank page, a tone and a dead
sensor are left out and reported as unreliable; clean inputs are kept; the gate can be turned off;
operators see it in the metrics."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import png_bytes, tone, wav_bytes
from tests.live import LiveServer, fixture, metric


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[LiveServer]:
    with LiveServer(repository) as live:
        yield live


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


BLANK_PAGE = png_bytes(Image.new("L", (32, 32), 255))
TONE = wav_bytes(tone(1.0, 8000), 8000)
CLEAN = {"image": b64(fixture("digit_7.png")), "audio": b64(fixture("digit_7.wav")), "text": "sieben"}


def predict(server: LiveServer, inputs: dict, model: str = "digits", **options: object) -> dict:
    answer = server.client.post(f"/v1/models/{model}/predict", json={"inputs": inputs, "options": options})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_clean_inputs_pass_the_gate_and_say_how_they_scored(server: LiveServer) -> None:
    answer = predict(server, CLEAN)
    assert answer["label"] == "7" and answer["reliable"] is True
    for m, report in answer["modalities"].items():
        assert report["state"] == "present", m
        gate = report["reliability"]
        assert gate["p_value"] >= gate["threshold"] > 0 and np.isfinite(gate["score"])


@pytest.mark.parametrize(
    ("modality", "broken"), [("image", b64(BLANK_PAGE)), ("audio", b64(TONE))], ids=["blank page", "tone"]
)
def test_a_broken_input_is_left_out_and_reported_unreliable(
    server: LiveServer, modality: str, broken: dict
) -> None:
    answer = predict(server, CLEAN | {modality: broken})
    report = answer["modalities"][modality]
    assert report["state"] == "unreliable" and report["weight"] == 0.0
    assert report["reliability"]["p_value"] < report["reliability"]["threshold"]
    assert answer["reliable"] is True  # the others were fine, and answered
    assert answer["label"] == "7"
    kept = [m for m in CLEAN if m != modality]
    assert sum(answer["modalities"][m]["weight"] for m in kept) == pytest.approx(1.0, abs=1e-5)


def test_a_dead_sensor_is_unreliable(server: LiveServer) -> None:
    answer = predict(server, {"pen": [0.0] * 16, "text": "two"}, model="pen")
    assert answer["modalities"]["pen"]["state"] == "unreliable"
    assert answer["modalities"]["text"]["state"] == "present"
    assert answer["label"] == "two"


def test_when_every_input_is_unreliable_the_answer_comes_from_them_and_says_so(server: LiveServer) -> None:
    answer = predict(server, {"image": b64(BLANK_PAGE)})
    assert answer["reliable"] is False
    assert answer["modalities"]["image"]["state"] == "unreliable"
    assert answer["modalities"]["image"]["weight"] == pytest.approx(1.0)


def test_the_gate_can_be_turned_off_per_request(server: LiveServer) -> None:
    answer = predict(server, CLEAN | {"audio": b64(TONE)}, reliability="off")
    assert answer["modalities"]["audio"]["state"] == "present"
    assert answer["modalities"]["audio"]["weight"] > 0
    assert (
        answer["modalities"]["audio"]["reliability"]["p_value"]
        < answer["modalities"]["audio"]["reliability"]["threshold"]
    )
    v2 = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["sieben"]}]}
    assert (
        server.client.post(
            "/v2/models/digits/infer", json=v2 | {"parameters": {"reliability": "off"}}
        ).status_code
        == 200
    )
    refused = server.client.post(
        "/v2/models/digits/infer", json=v2 | {"parameters": {"reliability": "maybe"}}
    )
    assert refused.status_code == 400 and "parameters.reliability" in refused.json()["error"]
    bad = server.client.post(
        "/v1/models/digits/predict", json={"inputs": CLEAN, "options": {"reliability": "no"}}
    )
    assert bad.status_code == 422 and "reliability" in bad.text


def test_operators_see_unreliable_inputs_and_scores_in_the_metrics(server: LiveServer) -> None:
    def read() -> tuple[float, float]:
        page = server.client.get("/metrics").text
        return (
            metric(page, "anymodal_inputs_total", model="digits", modality="audio", state="unreliable"),
            metric(page, "anymodal_reliability_score_count", model="digits", modality="audio"),
        )

    unreliable, scored = read()
    predict(server, CLEAN | {"audio": b64(TONE)})
    predict(server, CLEAN)
    after_unreliable, after_scored = read()
    assert after_unreliable == unreliable + 1
    assert after_scored == scored + 2
