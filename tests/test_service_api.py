"""The prediction API against a real server on a loopback port: every subset of modalities as
JSON and multipart, the batch form, the Open Inference Protocol, and the metrics moving."""

from __future__ import annotations

import base64
import io
import itertools
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.helpers import wav_bytes
from tests.live import LiveServer, fixture, metric

MODALITIES = ("image", "audio", "text")
TEXT = {"3": "three", "7": "sieben"}


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[LiveServer]:
    with LiveServer(repository, max_body_bytes=2_000_000) as live:
        yield live


def raw(digit: str, modality: str) -> bytes | str:
    return (
        TEXT[digit]
        if modality == "text"
        else fixture(f"digit_{digit}.{'png' if modality == 'image' else 'wav'}")
    )


def as_json(digit: str, modalities: tuple[str, ...]) -> dict:
    inputs: dict = {}
    for m in modalities:
        value = raw(digit, m)
        inputs[m] = value if isinstance(value, str) else {"b64": base64.b64encode(value).decode()}
    return inputs


def as_form(digit: str, modalities: tuple[str, ...]) -> tuple[dict, dict]:
    files, data = {}, {}
    for m in modalities:
        value = raw(digit, m)
        if isinstance(value, str):
            data[m] = value
        else:
            files[m] = (f"{m}.bin", value, "application/octet-stream")
    return files, data


SUBSETS = [s for size in (1, 2, 3) for s in itertools.combinations(MODALITIES, size)]


def check_prediction(answer: dict, sent: tuple[str, ...]) -> None:
    assert set(answer["modalities"]) == set(MODALITIES)
    for m, report in answer["modalities"].items():
        assert report["state"] == ("present" if m in sent else "missing")
        if m in sent:
            assert 0 < report["weight"] <= 1 and 0 <= report["entropy"] <= math.log(10) + 1e-6
            assert report["label"] in [str(d) for d in range(10)] and 0 < report["confidence"] <= 1
        else:
            assert report["weight"] == 0 and "label" not in report
    assert sum(r["weight"] for r in answer["modalities"].values()) == pytest.approx(1.0, abs=1e-5)
    probabilities = [t["probability"] for t in answer["top_k"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert answer["label"] == answer["top_k"][0]["label"] and answer["score"] == probabilities[0]


@pytest.mark.parametrize("sent", SUBSETS, ids=["+".join(s) for s in SUBSETS])
def test_every_subset_as_json_and_as_multipart(server: LiveServer, sent: tuple[str, ...]) -> None:
    by_json = server.client.post("/v1/models/digits/predict", json={"inputs": as_json("7", sent)})
    assert by_json.status_code == 200, by_json.text
    answer = by_json.json()
    check_prediction(answer, sent)
    assert answer["model"] == {"name": "digits", "version": 1}
    assert answer["fusion"] == "entropy"
    assert by_json.headers["x-request-id"] == answer["request_id"]

    files, data = as_form("7", sent)
    by_form = server.client.post("/v1/models/digits/predict", files=files or None, data=data)
    assert by_form.status_code == 200, by_form.text
    form_answer = by_form.json()
    assert form_answer["top_k"] == answer["top_k"]  # the same bytes decode to the same numbers
    assert form_answer["modalities"] == answer["modalities"]


def test_all_three_modalities_agree_on_the_fixture_digits(server: LiveServer) -> None:
    for digit in ("3", "7"):
        answer = server.client.post("/v1/predict", json={"inputs": as_json(digit, MODALITIES)}).json()
        assert answer["label"] == digit


def test_batch_form_equals_single_requests(server: LiveServer) -> None:
    instances = [as_json("7", ("image",)), as_json("3", ("audio", "text")), as_json("3", MODALITIES)]
    batch = server.client.post(
        "/v1/models/digits/versions/1/predict", json={"instances": instances, "options": {"top_k": 2}}
    )
    assert batch.status_code == 200, batch.text
    predictions = batch.json()["predictions"]
    assert len(predictions) == 3
    for instance, prediction in zip(instances, predictions, strict=True):
        single = server.client.post("/v1/predict", json={"inputs": instance, "options": {"top_k": 2}}).json()
        assert [t["label"] for t in prediction["top_k"]] == [t["label"] for t in single["top_k"]]
        assert [t["probability"] for t in prediction["top_k"]] == pytest.approx(
            [t["probability"] for t in single["top_k"]], rel=1e-4
        )
        assert len(prediction["top_k"]) == 2


def test_options_choose_the_fusion_rule(server: LiveServer) -> None:
    inputs = as_json("7", MODALITIES)
    entropy = server.client.post("/v1/predict", json={"inputs": inputs}).json()
    mean = server.client.post("/v1/predict", json={"inputs": inputs, "options": {"fusion": "mean"}}).json()
    assert mean["fusion"] == "mean"
    assert all(r["weight"] == pytest.approx(1 / 3) for r in mean["modalities"].values())
    assert entropy["modalities"]["image"]["weight"] != pytest.approx(1 / 3)


def test_drop_predicts_from_the_inputs_that_remain(server: LiveServer) -> None:
    inputs = as_json("7", MODALITIES) | {"audio": {"b64": base64.b64encode(b"not a wav").decode()}}
    rejected = server.client.post("/v1/predict", json={"inputs": inputs})
    assert rejected.status_code == 422 and rejected.json()["field"] == "inputs.audio"
    dropped = server.client.post("/v1/predict", json={"inputs": inputs, "options": {"on_invalid": "drop"}})
    assert dropped.status_code == 200, dropped.text
    audio = dropped.json()["modalities"]["audio"]
    assert audio["state"] == "dropped" and audio["weight"] == 0
    assert "inputs.audio: is not audio" in audio["reason"]
    assert dropped.json()["label"] == "7"


def long_recording(digit: str, seconds: float = 2.3) -> bytes:
    """The fixture's spoken digit, 0.5 s into `seconds` of silence: longer than the 1.5 s the model
    accepts, with the speech in its loudest window."""
    wave, rate = soundfile.read(io.BytesIO(fixture(f"digit_{digit}.wav")), dtype="float32")
    padded = np.zeros(round(seconds * rate), np.float32)
    padded[rate // 2 : rate // 2 + len(wave)] = wave
    return wav_bytes(padded, rate)


def test_long_audio_is_cropped_and_the_answer_says_so(server: LiveServer) -> None:
    long = {"b64": base64.b64encode(long_recording("7")).decode()}
    answer = server.client.post("/v1/predict", json={"inputs": {"audio": long, "text": "sieben"}})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["cropped"] is True and body["modalities"]["audio"]["cropped"] is True
    assert "cropped" not in body["modalities"]["text"] and "cropped" not in body["modalities"]["image"]
    alone = server.client.post("/v1/predict", json={"inputs": {"audio": long}}).json()
    short = server.client.post("/v1/predict", json={"inputs": as_json("7", ("audio",))}).json()
    assert alone["label"] == short["label"]  # the speech was kept
    assert "cropped" not in short and short["modalities"]["audio"]["cropped"] is False

    batch = server.client.post("/v1/predict", json={"instances": [{"audio": long}, {"text": "drei"}]})
    assert batch.status_code == 200, batch.text
    first, second = batch.json()["predictions"]
    assert first["cropped"] is True and "cropped" not in second
    assert "cropped" not in second["modalities"]["audio"]  # missing audio: nothing to crop

    form = server.client.post("/v1/predict", files={"audio": ("long.wav", long_recording("7"))})
    assert form.status_code == 200 and form.json()["cropped"] is True


def test_audio_too_long_reject_refuses_long_audio(server: LiveServer) -> None:
    long = {"b64": base64.b64encode(long_recording("7")).decode()}
    body = {"inputs": {"audio": long, "text": "sieben"}, "options": {"audio_too_long": "reject"}}
    rejected = server.client.post("/v1/predict", json=body)
    assert rejected.status_code == 422, rejected.text
    error = rejected.json()
    assert error["field"] == "inputs.audio"
    assert "is 2.30 s long; this model accepts at most 1.5 s" in error["error"]
    assert "audio_too_long=crop" in error["error"]
    short = {"inputs": as_json("7", ("audio",)), "options": {"audio_too_long": "reject"}}
    assert server.client.post("/v1/predict", json=short).status_code == 200  # short audio is fine
    dropped = server.client.post(
        "/v1/predict", json=body | {"options": {"audio_too_long": "reject", "on_invalid": "drop"}}
    )
    assert dropped.status_code == 200 and dropped.json()["modalities"]["audio"]["state"] == "dropped"
    assert "cropped" not in dropped.json()
    form = server.client.post(
        "/v1/predict", files={"audio": ("long.wav", long_recording("7"))}, data={"audio_too_long": "reject"}
    )
    assert form.status_code == 422 and form.json()["field"] == "form.audio"


def test_model_listing_and_details(server: LiveServer) -> None:
    listing = server.client.get("/v1/models").json()
    assert {m["name"] for m in listing["models"]} == {"digits", "pen"}
    assert listing["default_model"] == "digits"
    info = server.client.get("/v1/models/digits").json()
    assert info["labels"] == [str(d) for d in range(10)]
    assert info["modalities"]["audio"]["input"]["sample_rate"] == 8000
    assert info["modalities"]["image"]["kind"] == "image" and info["modalities"]["text"]["temperature"] > 0
    assert info["provider"] == "CPUExecutionProvider" and info["ready"] is True
    assert 0.5 < info["metrics"]["test_accuracy"] <= 1
    assert server.client.get("/v1/models/digits/versions/1").json()["version"] == 1


PEN = [47.0, 71.0, 25.0, 58.0, 66.0, 33.0, 52.0, 79.0, 41.0, 29.0, 63.0, 55.0, 38.0, 74.0, 45.0, 60.0]


def test_tensor_modality(server: LiveServer) -> None:
    answer = server.client.post("/v1/models/pen/predict", json={"inputs": {"pen": PEN}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["modalities"]["pen"]["state"] == "present"
    form = server.client.post("/v1/models/pen/predict", data={"pen": ",".join(map(str, PEN)), "top_k": "1"})
    assert form.status_code == 200 and form.json()["top_k"] == answer.json()["top_k"][:1]


# -- Open Inference Protocol -------------------------------------------------------------------


def test_v2_server_and_model_metadata(server: LiveServer) -> None:
    assert server.client.get("/v2").json() == {
        "name": "anymodal",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data"],
    }
    assert server.client.get("/v2/health/live").json() == {"live": True}
    assert server.client.get("/v2/health/ready").json() == {"ready": True}
    assert server.client.get("/v2/models/digits/ready").json() == {"name": "digits", "ready": True}
    assert server.client.get("/v2/models/digits/versions/1/ready").status_code == 200
    metadata = server.client.get("/v2/models/digits").json()
    assert metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": m, "datatype": "BYTES", "shape": [-1]} for m in MODALITIES]
    assert {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]} in metadata["outputs"]
    pen = server.client.get("/v2/models/pen/versions/1").json()
    assert {"name": "pen", "datatype": "FP32", "shape": [-1, 16]} in pen["inputs"]


def test_v2_inference_matches_v1(server: LiveServer) -> None:
    image = base64.b64encode(fixture("digit_3.png")).decode()
    body = {
        "id": "request-42",
        "inputs": [
            {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["three", "sieben"]},
            {"name": "image", "shape": [2, 1], "datatype": "BYTES", "data": [[image], [image]]},
        ],
        "outputs": [{"name": "label"}, {"name": "probabilities"}, {"name": "fusion_weights"}],
    }
    answer = server.client.post("/v2/models/digits/infer", json=body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert (
        result["id"] == "request-42" and result["model_name"] == "digits" and result["model_version"] == "1"
    )
    outputs = {o["name"]: o for o in result["outputs"]}
    assert list(outputs) == ["label", "probabilities", "fusion_weights"]
    assert outputs["probabilities"]["shape"] == [2, 10] and len(outputs["probabilities"]["data"]) == 20
    weights = outputs["fusion_weights"]["data"]
    assert weights[1] == 0 and weights[4] == 0  # audio was not sent: [batch, (image, audio, text)]
    v1 = server.client.post("/v1/predict", json={"inputs": {"text": "three", "image": {"b64": image}}}).json()
    assert outputs["label"]["data"][0] == v1["label"]
    # a batch of 2 against a batch of 1: float32 kernels may differ by batch size
    assert outputs["probabilities"]["data"][int(v1["label"])] == pytest.approx(v1["score"], rel=1e-4)


def test_v2_reports_every_modality_as_v1_does(server: LiveServer) -> None:
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["sieben"]}]}
    answer = server.client.post("/v2/models/digits/infer", json=body)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json", answer.text
    result = answer.json()
    assert result["parameters"]["modalities"] == "image,audio,text"
    outputs = {o["name"]: o for o in result["outputs"]}  # none requested: all of them, as JSON
    assert list(outputs) == [o["name"] for o in server.client.get("/v2/models/digits").json()["outputs"]]
    assert outputs["modality_states"] == {
        "name": "modality_states",
        "shape": [1, 3],
        "datatype": "BYTES",
        "data": ["missing", "missing", "present"],
    }
    assert outputs["modality_labels"]["data"] == ["", "", "7"]
    assert outputs["modality_confidences"]["data"][:2] == [0, 0] and outputs["reliable"]["data"] == [True]
    v1 = server.client.post("/v1/predict", json={"inputs": {"text": "sieben"}}).json()
    assert [v1["modalities"][m]["state"] for m in MODALITIES] == outputs["modality_states"]["data"]
    assert outputs["modality_confidences"]["data"][2] == pytest.approx(v1["modalities"]["text"]["confidence"])


def test_v2_tensor_input_and_parameters(server: LiveServer) -> None:
    body = {
        "inputs": [{"name": "pen", "shape": [2, 16], "datatype": "FP32", "data": [[0.0] * 16, [6.0] * 16]}],
        "parameters": {"fusion": "mean"},
    }
    answer = server.client.post("/v2/models/pen/versions/1/infer", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["parameters"]["fusion"] == "mean"
    assert answer.json()["outputs"][0]["shape"] == [2]


def test_v2_crops_long_audio_unless_the_parameter_rejects_it(server: LiveServer) -> None:
    long = base64.b64encode(long_recording("7")).decode()
    body = {"inputs": [{"name": "audio", "shape": [1], "datatype": "BYTES", "data": [long]}]}
    cropped = server.client.post("/v2/models/digits/infer", json=body)
    assert cropped.status_code == 200, cropped.text
    rejected = server.client.post(
        "/v2/models/digits/infer", json=body | {"parameters": {"audio_too_long": "reject"}}
    )
    assert rejected.status_code == 400 and list(rejected.json()) == ["error"]
    assert "instance 0.audio: is 2.30 s long" in rejected.json()["error"]
    assert "audio_too_long=crop" in rejected.json()["error"]
    wrong = server.client.post("/v2/models/digits/infer", json=body | {"parameters": {"audio_too_long": "x"}})
    assert wrong.status_code == 400 and "parameters.audio_too_long" in wrong.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            {"inputs": [{"name": "smell", "shape": [1], "datatype": "BYTES", "data": ["x"]}]},
            400,
            "is not an input",
        ),
        (
            {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["x"]}]},
            400,
            "needs 2 values",
        ),
        (
            {"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
            400,
            "must be BYTES",
        ),
        ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [""]}]}, 400, "is empty"),
        ({"inputs": []}, 400, "inputs: List should have at least 1 item"),
        ({"inputs": [{"name": "text", "datatype": "BYTES", "data": ["x"]}]}, 400, "shape"),
        ({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["%%"]}]}, 400, "base64"),
        (
            {
                "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}],
                "outputs": [{"name": "z"}],
            },
            400,
            "is not an output",
        ),
    ],
)
def test_v2_errors_follow_the_protocol(server: LiveServer, body: dict, status: int, message: str) -> None:
    answer = server.client.post("/v2/models/digits/infer", json=body)
    assert answer.status_code == status
    assert list(answer.json()) == ["error"] and message in answer.json()["error"]


def test_v2_unknown_model_and_version(server: LiveServer) -> None:
    for path in ("/v2/models/nope", "/v2/models/digits/versions/9", "/v2/models/digits/versions/x/ready"):
        answer = server.client.get(path)
        assert answer.status_code == 404 and list(answer.json()) == ["error"]


# -- metrics ----------------------------------------------------------------------------------


def test_metrics_count_missing_modalities_and_combinations(server: LiveServer) -> None:
    before = server.client.get("/metrics").text
    sent = 7
    for _ in range(sent):
        assert (
            server.client.post("/v1/predict", json={"inputs": as_json("3", ("image", "text"))}).status_code
            == 200
        )
    server.client.post("/v1/predict", json={"inputs": {"text": "x" * 100}})  # too long: invalid, rejected
    after = server.client.get("/metrics").text

    def moved(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert moved("anymodal_inputs_total", model="digits", modality="audio", state="missing") == sent + 1
    assert moved("anymodal_inputs_total", model="digits", modality="image", state="present") == sent
    assert moved("anymodal_inputs_total", model="digits", modality="text", state="invalid") == 1
    assert moved("anymodal_modality_combinations_total", model="digits", combination="image+text") == sent
    assert moved("anymodal_requests_total", model="digits", route="/v1/predict", code="200") == sent
    assert moved("anymodal_requests_total", model="digits", route="/v1/predict", code="422") == 1
    assert moved("anymodal_request_duration_seconds_count", model="digits", route="/v1/predict") == sent + 1
    assert moved("anymodal_fusion_weight_count", model="digits", modality="image") == sent
    assert moved("anymodal_modality_entropy_nats_count", model="digits", modality="text") == sent
    assert moved("anymodal_fusion_weight_count", model="digits", modality="audio") == 0
    assert moved("anymodal_inference_duration_seconds_count", model="digits", component="head") >= 1
    assert moved("anymodal_batch_size_sum", model="digits", component="image") == sent
    assert moved("anymodal_queue_wait_seconds_count", model="digits") == sent + 1  # the rejected one too
    assert metric(after, "anymodal_requests_in_flight") == 1  # the scrape itself
    assert metric(after, "anymodal_model_ready", model="digits", version="1") == 1
    assert (
        metric(after, "anymodal_model_info", model="digits", version="1", provider="CPUExecutionProvider")
        == 1
    )
