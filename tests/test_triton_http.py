"""The stock Triton HTTP client (tritonclient.http), unchanged, against a live server: health and
metadata, inference with binary and JSON inputs and outputs on every subset of modalities, a batch,
a tensor modality, and errors; every answer equals what `/v1` answers for the same inputs."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from anymodal.service.inference import OUTPUTS
from tritonclient.utils import InferenceServerException

from tests.live import LiveServer, fixture

MODALITIES = ("image", "audio", "text")
TEXT = {"3": b"three", "7": b"sieben"}
SUBSETS = [s for size in (1, 2, 3) for s in itertools.combinations(MODALITIES, size)]
PEN = [47.0, 71.0, 25.0, 58.0, 66.0, 33.0, 52.0, 79.0, 41.0, 29.0, 63.0, 55.0, 38.0, 74.0, 45.0, 60.0]


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[LiveServer]:
    with LiveServer(repository) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpclient.InferenceServerClient]:
    triton = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield triton
    triton.close()


def raw(digit: str, modality: str) -> bytes:
    return (
        TEXT[digit]
        if modality == "text"
        else fixture(f"digit_{digit}.{'png' if modality == 'image' else 'wav'}")
    )


def bytes_input(name: str, elements: list[bytes], binary: bool = True) -> httpclient.InferInput:
    tensor = httpclient.InferInput(name, [len(elements)], "BYTES")
    tensor.set_data_from_numpy(np.array(elements, dtype=object), binary_data=binary)
    return tensor


def v1_instance(digit: str, modalities: tuple[str, ...]) -> dict:
    return {
        m: TEXT[digit].decode() if m == "text" else {"b64": base64.b64encode(raw(digit, m)).decode()}
        for m in modalities
    }


def requested(binary: bool) -> list[httpclient.InferRequestedOutput]:
    return [httpclient.InferRequestedOutput(name, binary_data=binary) for name in OUTPUTS]


def strings(array: np.ndarray) -> list[str]:
    """BYTES elements as text: tritonclient gives binary outputs as bytes, JSON ones as str."""
    return [e.decode() if isinstance(e, bytes) else e for e in array.reshape(-1)]


def check_equals_v1(result: httpclient.InferResult, row: int, v1: dict) -> None:
    """Row `row` of a v2 answer against the `/v1` answer for the same inputs."""
    order = result.get_response()["parameters"]["modalities"].split(",")
    assert set(order) == set(v1["modalities"])  # every modality of the model has a column
    reports = [v1["modalities"][m] for m in order]
    assert strings(result.as_numpy("label")[row : row + 1]) == [v1["label"]]
    assert float(result.as_numpy("score")[row]) == pytest.approx(v1["score"], rel=1e-4)
    probabilities = result.as_numpy("probabilities")[row]
    assert float(probabilities.max()) == pytest.approx(v1["score"], rel=1e-4)
    assert strings(result.as_numpy("top_k_labels")[row]) == [t["label"] for t in v1["top_k"]]
    assert result.as_numpy("top_k_probabilities")[row].tolist() == pytest.approx(
        [t["probability"] for t in v1["top_k"]], rel=1e-4, abs=1e-7
    )
    assert strings(result.as_numpy("modality_states")[row]) == [r["state"] for r in reports]
    assert strings(result.as_numpy("modality_labels")[row]) == [r.get("label", "") for r in reports]
    assert result.as_numpy("fusion_weights")[row].tolist() == pytest.approx(
        [r["weight"] for r in reports], abs=1e-5
    )
    assert result.as_numpy("modality_confidences")[row].tolist() == pytest.approx(
        [r.get("confidence", 0.0) for r in reports], abs=1e-5
    )
    assert bool(result.as_numpy("reliable")[row]) is v1["reliable"]


# -- health and metadata ----------------------------------------------------------------------


def test_health_and_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits") and client.is_model_ready("pen", "1")
    assert not client.is_model_ready("nope")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata("digits")
    assert metadata["inputs"] == [{"name": m, "datatype": "BYTES", "shape": [-1]} for m in MODALITIES]
    outputs = {o["name"]: (o["datatype"], o["shape"]) for o in metadata["outputs"]}
    assert list(outputs) == list(OUTPUTS)
    assert outputs["modality_states"] == ("BYTES", [-1, 3]) and outputs["modality_confidences"] == (
        "FP32",
        [-1, 3],
    )
    assert outputs["reliable"] == ("BOOL", [-1]) and outputs["probabilities"] == ("FP32", [-1, 10])
    pen = client.get_model_metadata("pen", "1")
    assert {"name": "pen", "datatype": "FP32", "shape": [-1, 16]} in pen["inputs"]


# -- inference ---------------------------------------------------------------------------------


@pytest.mark.parametrize("binary_outputs", [True, False], ids=["binary outputs", "JSON outputs"])
@pytest.mark.parametrize("sent", SUBSETS, ids=["+".join(s) for s in SUBSETS])
def test_every_subset_with_binary_inputs(
    client: httpclient.InferenceServerClient, server: LiveServer, sent: tuple[str, ...], binary_outputs: bool
) -> None:
    inputs = [bytes_input(m, [raw("7", m)]) for m in sent]
    result = client.infer("digits", inputs, outputs=requested(binary_outputs), request_id="subset")
    answer = result.get_response()
    assert answer["id"] == "subset" and answer["model_name"] == "digits" and answer["model_version"] == "1"
    assert answer["parameters"]["modalities"] == "image,audio,text"
    for output in answer["outputs"]:
        assert ("binary_data_size" in output.get("parameters", {})) is binary_outputs
        assert ("data" in output) is not binary_outputs
    v1 = server.client.post("/v1/predict", json={"inputs": v1_instance("7", sent)}).json()
    check_equals_v1(result, 0, v1)


def test_all_outputs_come_binary_when_none_is_requested(client: httpclient.InferenceServerClient) -> None:
    result = client.infer("digits", [bytes_input("text", [b"sieben"])])  # binary_data_output: true
    outputs = result.get_response()["outputs"]
    assert [o["name"] for o in outputs] == list(OUTPUTS)
    assert all("binary_data_size" in o["parameters"] for o in outputs)
    assert strings(result.as_numpy("modality_states")) == ["missing", "missing", "present"]


def test_binary_and_json_outputs_mix(client: httpclient.InferenceServerClient) -> None:
    outputs = [
        httpclient.InferRequestedOutput("label", binary_data=True),
        httpclient.InferRequestedOutput("score", binary_data=False),
        httpclient.InferRequestedOutput("reliable", binary_data=True),
    ]
    result = client.infer("digits", [bytes_input("text", [b"sieben"])], outputs=outputs)
    answer = {o["name"]: o for o in result.get_response()["outputs"]}
    assert list(answer) == ["label", "score", "reliable"]
    assert answer["label"]["parameters"] == {"binary_data_size": 5} and "data" in answer["score"]
    assert answer["reliable"]["parameters"] == {"binary_data_size": 1}
    assert result.as_numpy("label").tolist() == [b"7"] and result.as_numpy("reliable").tolist() == [True]
    assert result.as_numpy("modality_states") is None  # not requested, not sent


def test_a_batch_of_8_equals_v1(client: httpclient.InferenceServerClient, server: LiveServer) -> None:
    digits = ["3", "7", "7", "3", "7", "3", "3", "7"]
    inputs = [bytes_input(m, [raw(d, m) for d in digits]) for m in MODALITIES]
    result = client.infer("digits", inputs, outputs=requested(True))
    assert result.as_numpy("label").shape == (8,) and result.as_numpy("fusion_weights").shape == (8, 3)
    v1 = server.client.post(
        "/v1/predict", json={"instances": [v1_instance(d, MODALITIES) for d in digits]}
    ).json()["predictions"]
    for row, prediction in enumerate(v1):
        check_equals_v1(result, row, prediction)
    assert strings(result.as_numpy("label")) == digits


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "JSON"])
def test_the_pen_models_fp32_tensor(
    client: httpclient.InferenceServerClient, server: LiveServer, binary: bool
) -> None:
    rows = np.array([PEN, [p + 10 for p in PEN]], dtype=np.float32)
    pen = httpclient.InferInput("pen", [2, 16], "FP32")
    pen.set_data_from_numpy(rows, binary_data=binary)
    result = client.infer("pen", [pen], model_version="1", outputs=requested(binary))
    assert result.get_response()["parameters"]["modalities"] == "pen,text"
    v1 = server.client.post(
        "/v1/models/pen/versions/1/predict", json={"instances": [{"pen": row} for row in rows.tolist()]}
    ).json()["predictions"]
    for row, prediction in enumerate(v1):
        check_equals_v1(result, row, prediction)
    assert strings(result.as_numpy("modality_states")) == ["present", "missing"] * 2


def test_json_inputs_text_and_base64_image(
    client: httpclient.InferenceServerClient, server: LiveServer
) -> None:
    image = base64.b64encode(fixture("digit_3.png"))
    inputs = [bytes_input("text", [b"three"], binary=False), bytes_input("image", [image], binary=False)]
    result = client.infer("digits", inputs, outputs=requested(False))
    v1 = server.client.post("/v1/predict", json={"inputs": v1_instance("3", ("image", "text"))}).json()
    check_equals_v1(result, 0, v1)
    assert result.as_numpy("label").tolist() == ["3"]  # JSON outputs: tritonclient gives str


def test_parameters_work_as_v1_options(client: httpclient.InferenceServerClient) -> None:
    inputs = [bytes_input(m, [raw("7", m)]) for m in MODALITIES]
    mean = client.infer("digits", inputs, parameters={"fusion": "mean", "top_k": 2})
    assert mean.get_response()["parameters"]["fusion"] == "mean"
    assert mean.as_numpy("fusion_weights").tolist() == [pytest.approx([1 / 3] * 3)]
    assert mean.as_numpy("top_k_labels").shape == (1, 2)
    broken = [bytes_input("image", [b"not an image"]), bytes_input("text", [b"sieben"])]
    dropped = client.infer("digits", broken, parameters={"on_invalid": "drop", "reliability": "off"})
    assert strings(dropped.as_numpy("modality_states")) == ["dropped", "missing", "present"]
    assert dropped.as_numpy("modality_confidences")[0, 0] == 0 and dropped.as_numpy("label").tolist() == [
        b"7"
    ]


# -- errors ------------------------------------------------------------------------------------


def test_an_undecodable_image_names_the_input(client: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer("digits", [bytes_input("image", [b"GIF89a-but-not"]), bytes_input("text", [b"sieben"])])
    assert caught.value.status() == "400"
    assert "instance 0.image: is not an image" in caught.value.message()


def test_an_unknown_model_is_404(client: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer("nope", [bytes_input("text", [b"sieben"])])
    assert caught.value.status() == "404"
    assert caught.value.message() == "model 'nope' is not served here; served models: digits, pen"


def test_an_input_sent_twice_is_refused(client: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer("digits", [bytes_input("text", [b"sieben"]), bytes_input("text", [b"drei"])])
    assert caught.value.status() == "400" and "inputs[1] (text): is sent twice" in caught.value.message()
