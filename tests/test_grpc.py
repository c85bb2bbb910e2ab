"""The Open Inference Protocol over gRPC with the stock Triton client (tritonclient.grpc, sync and
aio), unchanged, against a live server: health and metadata, inference on every subset of
modalities, a batch, a tensor modality, typed contents, errors as status codes, API keys, the
message size limit, metrics, SIGTERM and two workers; every answer equals what `/v1` answers for
the same inputs. KServe's own clients (REST and gRPC) run in a subprocess: their copy of the
protocol's messages cannot share a process with tritonclient's."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from anymodal.service.inference import OUTPUTS
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.live import ROOT, LiveServer, fixture, metric

MODALITIES = ("image", "audio", "text")
TEXT = {"3": b"three", "7": b"sieben"}
SUBSETS = [s for size in (1, 2, 3) for s in itertools.combinations(MODALITIES, size)]
PEN = [47.0, 71.0, 25.0, 58.0, 66.0, 33.0, 52.0, 79.0, 41.0, 29.0, 63.0, 55.0, 38.0, 74.0, 45.0, 60.0]
Tensor = service_pb2.ModelInferRequest.InferInputTensor


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[LiveServer]:
    with LiveServer(repository) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[grpcclient.InferenceServerClient]:
    triton = grpcclient.InferenceServerClient(url=server.grpc_url)
    yield triton
    triton.close()


@pytest.fixture(scope="module")
def stub(server: LiveServer) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    """tritonclient's own generated stub, for requests its InferenceServerClient does not make
    (typed contents, malformed requests)."""
    with grpc.insecure_channel(server.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def raw(digit: str, modality: str) -> bytes:
    return (
        TEXT[digit]
        if modality == "text"
        else fixture(f"digit_{digit}.{'png' if modality == 'image' else 'wav'}")
    )


def bytes_input(name: str, elements: list[bytes], module: ModuleType = grpcclient) -> grpcclient.InferInput:
    tensor = module.InferInput(name, [len(elements)], "BYTES")
    tensor.set_data_from_numpy(np.array(elements, dtype=object))
    return tensor


def v1_instance(digit: str, modalities: tuple[str, ...]) -> dict:
    return {
        m: TEXT[digit].decode() if m == "text" else {"b64": base64.b64encode(raw(digit, m)).decode()}
        for m in modalities
    }


def strings(array: np.ndarray) -> list[str]:
    return [e.decode() for e in array.reshape(-1)]


def parameter(result: grpcclient.InferResult, name: str) -> str:
    return result.get_response().parameters[name].string_param


def check_equals_v1(result: grpcclient.InferResult, row: int, v1: dict) -> None:
    """Row `row` of a gRPC answer against the `/v1` answer for the same inputs."""
    order = parameter(result, "modalities").split(",")
    assert set(order) == set(v1["modalities"])
    reports = [v1["modalities"][m] for m in order]
    assert strings(result.as_numpy("label")[row : row + 1]) == [v1["label"]]
    assert float(result.as_numpy("score")[row]) == pytest.approx(v1["score"], rel=1e-4)
    assert float(result.as_numpy("probabilities")[row].max()) == pytest.approx(v1["score"], rel=1e-4)
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


def refused(call: Callable[..., object], *args: object, **kwargs: object) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call(*args, **kwargs)
    return caught.value


# -- health and metadata ----------------------------------------------------------------------


def test_health_and_metadata_equal_rests(
    client: grpcclient.InferenceServerClient, server: LiveServer
) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits") and client.is_model_ready("pen", "1")
    assert not client.is_model_ready("nope") and not client.is_model_ready("digits", "9")
    metadata = client.get_server_metadata()
    assert (
        metadata.name == "anymodal"
        and list(metadata.extensions) == server.client.get("/v2").json()["extensions"]
    )
    for model, version in (("digits", ""), ("pen", "1")):
        rest = server.client.get(f"/v2/models/{model}").json()
        answer = client.get_model_metadata(model, version)
        assert (answer.name, list(answer.versions), answer.platform) == (
            rest["name"],
            rest["versions"],
            rest["platform"],
        )
        for kind in ("inputs", "outputs"):
            tensors = [
                {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                for t in getattr(answer, kind)
            ]
            assert tensors == rest[kind]
    assert [t.name for t in client.get_model_metadata("digits").outputs] == list(OUTPUTS)


# -- inference ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sent", SUBSETS, ids=["+".join(s) for s in SUBSETS])
def test_every_subset_equals_v1(
    client: grpcclient.InferenceServerClient, server: LiveServer, sent: tuple[str, ...]
) -> None:
    inputs = [bytes_input(m, [raw("7", m)]) for m in sent]
    result = client.infer("digits", inputs, request_id="subset")
    answer = result.get_response()
    assert (answer.id, answer.model_name, answer.model_version) == ("subset", "digits", "1")
    assert [o.name for o in answer.outputs] == list(OUTPUTS)  # every output, raw like the inputs
    assert len(answer.raw_output_contents) == len(OUTPUTS)
    assert parameter(result, "modalities") == "image,audio,text" and parameter(result, "request_id")
    v1 = server.client.post("/v1/predict", json={"inputs": v1_instance("7", sent)}).json()
    check_equals_v1(result, 0, v1)


def test_the_aio_client_answers_concurrent_calls_as_v1_does(server: LiveServer) -> None:
    digits = ["3", "7", "7", "3"]

    async def calls() -> list[grpcclient.InferResult]:
        async with aioclient.InferenceServerClient(url=server.grpc_url) as triton:
            assert await triton.is_server_live() and await triton.is_server_ready()
            assert await triton.is_model_ready("digits")
            assert (await triton.get_model_metadata("digits")).name == "digits"
            return await asyncio.gather(
                *(
                    triton.infer("digits", [bytes_input(m, [raw(d, m)], aioclient) for m in MODALITIES])
                    for d in digits
                )
            )

    results = asyncio.run(calls())
    for digit, result in zip(digits, results, strict=True):
        v1 = server.client.post("/v1/predict", json={"inputs": v1_instance(digit, MODALITIES)}).json()
        check_equals_v1(result, 0, v1)
        assert strings(result.as_numpy("label")) == [digit]


def test_a_batch_of_8_equals_v1(client: grpcclient.InferenceServerClient, server: LiveServer) -> None:
    digits = ["3", "7", "7", "3", "7", "3", "3", "7"]
    result = client.infer("digits", [bytes_input(m, [raw(d, m) for d in digits]) for m in MODALITIES])
    assert result.as_numpy("label").shape == (8,) and result.as_numpy("fusion_weights").shape == (8, 3)
    v1 = server.client.post(
        "/v1/predict", json={"instances": [v1_instance(d, MODALITIES) for d in digits]}
    ).json()["predictions"]
    for row, prediction in enumerate(v1):
        check_equals_v1(result, row, prediction)
    assert strings(result.as_numpy("label")) == digits


def test_the_pen_models_fp32_tensor(client: grpcclient.InferenceServerClient, server: LiveServer) -> None:
    rows = np.array([PEN, [p + 10 for p in PEN]], dtype=np.float32)
    pen = grpcclient.InferInput("pen", [2, 16], "FP32")
    pen.set_data_from_numpy(rows)
    result = client.infer("pen", [pen], model_version="1")
    assert parameter(result, "modalities") == "pen,text"
    v1 = server.client.post(
        "/v1/models/pen/versions/1/predict", json={"instances": [{"pen": row} for row in rows.tolist()]}
    ).json()["predictions"]
    for row, prediction in enumerate(v1):
        check_equals_v1(result, row, prediction)
    assert strings(result.as_numpy("modality_states")) == ["present", "missing"] * 2


def test_requested_outputs_come_alone_in_their_order(client: grpcclient.InferenceServerClient) -> None:
    names = ["reliable", "modality_states", "label", "score"]
    outputs = [grpcclient.InferRequestedOutput(name) for name in names]
    result = client.infer("digits", [bytes_input("text", [b"sieben"])], outputs=outputs)
    assert [o.name for o in result.get_response().outputs] == names
    assert result.as_numpy("reliable").dtype == np.bool_ and result.as_numpy("reliable").tolist() == [True]
    assert result.as_numpy("label").tolist() == [b"7"] and result.as_numpy("score").dtype == np.float32
    assert strings(result.as_numpy("modality_states")) == ["missing", "missing", "present"]
    assert result.as_numpy("probabilities") is None  # not requested, not sent


def test_the_per_modality_outputs(client: grpcclient.InferenceServerClient) -> None:
    result = client.infer(
        "digits", [bytes_input("text", [b"sieben"]), bytes_input("image", [raw("7", "image")])]
    )
    assert strings(result.as_numpy("modality_states")) == ["present", "missing", "present"]
    assert strings(result.as_numpy("modality_labels")) == ["7", "", "7"]
    confidences = result.as_numpy("modality_confidences")[0]
    assert confidences[1] == 0 and confidences[0] > 0.3 and confidences[2] > 0.5
    weights = result.as_numpy("fusion_weights")[0]
    assert weights[1] == 0 and float(weights.sum()) == pytest.approx(1.0, abs=1e-5)


def test_parameters_work_as_v1_options(client: grpcclient.InferenceServerClient) -> None:
    inputs = [bytes_input(m, [raw("7", m)]) for m in MODALITIES]
    mean = client.infer("digits", inputs, parameters={"fusion": "mean", "top_k": 2})
    assert parameter(mean, "fusion") == "mean"
    assert mean.as_numpy("fusion_weights").tolist() == [pytest.approx([1 / 3] * 3)]
    assert mean.as_numpy("top_k_labels").shape == (1, 2)
    broken = [bytes_input("image", [b"not an image"]), bytes_input("text", [b"sieben"])]
    dropped = client.infer("digits", broken, parameters={"on_invalid": "drop", "reliability": "off"})
    assert strings(dropped.as_numpy("modality_states")) == ["dropped", "missing", "present"]
    assert dropped.as_numpy("label").tolist() == [b"7"]


def test_typed_contents_are_answered_in_typed_contents(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, server: LiveServer
) -> None:
    request = service_pb2.ModelInferRequest(
        model_name="digits",
        inputs=[
            Tensor(name="text", datatype="BYTES", shape=[1], contents={"bytes_contents": [b"sieben"]}),
            Tensor(
                name="image", datatype="BYTES", shape=[1, 1], contents={"bytes_contents": [raw("7", "image")]}
            ),
        ],
        outputs=[{"name": name} for name in ("label", "score", "modality_states", "reliable")],
    )
    answer = stub.ModelInfer(request)
    assert not answer.raw_output_contents
    contents = {o.name: o.contents for o in answer.outputs}
    v1 = server.client.post("/v1/predict", json={"inputs": v1_instance("7", ("image", "text"))}).json()
    assert list(contents["label"].bytes_contents) == [v1["label"].encode()]
    assert list(contents["score"].fp32_contents) == [pytest.approx(v1["score"], rel=1e-4)]
    assert list(contents["modality_states"].bytes_contents) == [b"present", b"missing", b"present"]
    assert list(contents["reliable"].bool_contents) == [True]

    pen = Tensor(name="pen", datatype="FP32", shape=[1, 16], contents={"fp32_contents": PEN})
    answer = stub.ModelInfer(service_pb2.ModelInferRequest(model_name="pen", inputs=[pen]))
    v1 = server.client.post("/v1/models/pen/predict", json={"inputs": {"pen": PEN}}).json()
    scores = next(o.contents.fp32_contents for o in answer.outputs if o.name == "score")
    assert list(scores) == [pytest.approx(v1["score"], rel=1e-4)]


# -- errors ------------------------------------------------------------------------------------


def test_an_undecodable_image_is_invalid_argument_naming_the_input(
    client: grpcclient.InferenceServerClient,
) -> None:
    error = refused(
        client.infer, "digits", [bytes_input("image", [b"GIF89a-but-not"]), bytes_input("text", [b"sieben"])]
    )
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "instance 0.image: is not an image" in error.message()


def test_an_unknown_model_or_version_is_not_found(client: grpcclient.InferenceServerClient) -> None:
    error = refused(client.infer, "nope", [bytes_input("text", [b"sieben"])])
    assert error.status() == "StatusCode.NOT_FOUND"
    assert error.message() == "model 'nope' is not served here; served models: digits, pen"
    error = refused(client.get_model_metadata, "digits", "7")
    assert error.status() == "StatusCode.NOT_FOUND" and "version" in error.message()


@pytest.mark.parametrize(
    ("inputs", "outputs", "parameters", "message"),
    [
        ([("text", b"sieben"), ("text", b"drei")], None, None, "inputs[1] (text): is sent twice"),
        ([("sound", b"x")], None, None, "inputs[0] (sound): is not an input of 'digits'"),
        ([("text", b"sieben")], ["label", "nope"], None, "outputs: 'nope' is not an output of this model"),
        ([("text", b"sieben")], None, {"fusion": "max"}, "parameters.fusion: must be 'entropy' or 'mean'"),
        ([("text", b"sieben")], None, {"top_k": 0}, "parameters.top_k: must be a positive integer"),
    ],
    ids=["input twice", "unknown input", "unknown output", "bad fusion", "bad top_k"],
)
def test_a_bad_request_is_invalid_argument_with_rests_message(
    client: grpcclient.InferenceServerClient, inputs, outputs, parameters, message: str
) -> None:
    error = refused(
        client.infer,
        "digits",
        [bytes_input(name, [value]) for name, value in inputs],
        outputs=[grpcclient.InferRequestedOutput(name) for name in outputs] if outputs else None,
        parameters=parameters,
    )
    assert error.status() == "StatusCode.INVALID_ARGUMENT" and message in error.message()


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            {"inputs": [Tensor(name="text", datatype="BYTES", shape=[1], contents={"bytes_contents": [b"x"]})],
             "raw_input_contents": [b"\x01\x00\x00\x00x"]},
            "inputs[0] (text): has contents, but the request has raw_input_contents",
        ),
        (
            {"inputs": [Tensor(name="text", datatype="BYTES", shape=[1])], "raw_input_contents": [b"", b""]},
            "raw_input_contents: has 2 entries for 1 inputs",
        ),
        (
            {"inputs": [Tensor(name="text", datatype="BYTES", shape=[1])], "raw_input_contents": [b"\x09\x00\x00\x00x"]},
            "inputs[0] (text): element 0 says it has 9 bytes, but only 1 are left",
        ),
        (
            {"inputs": [Tensor(name="pen", datatype="FP32", shape=[1, 16], contents={"int_contents": [1] * 16})]},
            "inputs[0] (pen): FP32 elements go in contents.fp32_contents, not in int_contents",
        ),
        (
            {"inputs": [Tensor(name="pen", datatype="FP16", shape=[1, 16])]},
            "inputs[0] (pen): FP16 has no typed contents; send it in raw_input_contents",
        ),
    ],
    ids=["raw and typed", "raw count", "raw layout", "wrong contents field", "FP16 typed"],
)  # fmt: skip
def test_a_malformed_message_is_invalid_argument(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, request_: dict, message: str
) -> None:
    model = "pen" if request_["inputs"][0].name == "pen" else "digits"
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(service_pb2.ModelInferRequest(model_name=model, **request_))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.details()


@pytest.fixture(scope="module")
def guarded() -> Iterator[grpcclient.InferenceServerClient]:
    """A client of a server with API keys and a 100 kB message limit."""
    with LiveServer(api_keys="k,other", max_body_bytes=100_000) as server:
        triton = grpcclient.InferenceServerClient(url=server.grpc_url)
        yield triton
        triton.close()


def test_api_keys_guard_every_call_but_health(guarded: grpcclient.InferenceServerClient) -> None:
    assert guarded.is_server_live() and guarded.is_server_ready() and guarded.is_model_ready("digits")
    text = [bytes_input("text", [b"sieben"])]
    calls = [
        (guarded.infer, ("digits", text)),
        (guarded.get_server_metadata, ()),
        (guarded.get_model_metadata, ("digits",)),
    ]
    for call, args in calls:
        error = refused(call, *args)
        assert error.status() == "StatusCode.UNAUTHENTICATED"
        assert error.message() == "this route needs an API key: send Authorization: Bearer <key>"
        call(*args, headers={"authorization": "Bearer k"})
    error = refused(guarded.infer, "digits", text, headers={"authorization": "Bearer wrong"})
    assert error.status() == "StatusCode.UNAUTHENTICATED" and error.message() == "the API key is not valid"
    answer = guarded.infer("digits", text, headers={"authorization": "bearer other"})
    assert answer.as_numpy("label").tolist() == [b"7"]


def test_a_message_over_the_limit_is_resource_exhausted(guarded: grpcclient.InferenceServerClient) -> None:
    big = [bytes_input("image", [b"\x89PNG" + bytes(120_000)])]
    error = refused(guarded.infer, "digits", big, headers={"authorization": "Bearer k"})
    assert error.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "larger than max" in error.message() and "100000" in error.message()


def test_calls_are_counted_in_the_request_metrics(
    client: grpcclient.InferenceServerClient, server: LiveServer
) -> None:
    def count(**labels: str) -> float:
        return metric(server.client.get("/metrics").text, "anymodal_requests_total", **labels)

    infer = {"model": "digits", "route": "grpc/ModelInfer"}
    before = count(**infer, code="200"), count(**infer, code="400"), count(route="grpc/ServerReady")
    for _ in range(3):
        client.infer("digits", [bytes_input("text", [b"drei"])])
    refused(client.infer, "digits", [bytes_input("image", [b"nope"])])
    client.is_server_ready()
    after = count(**infer, code="200"), count(**infer, code="400"), count(route="grpc/ServerReady")
    assert [b - a for a, b in zip(before, after, strict=True)] == [3, 1, 1]
    page = server.client.get("/metrics").text
    assert metric(page, "anymodal_request_duration_seconds_count", **infer) >= 4
    assert metric(page, "anymodal_requests_in_flight") == 1  # the /metrics request itself


def test_a_call_past_its_deadline_is_counted_as_499_and_leaves_the_server_well(
    client: grpcclient.InferenceServerClient, server: LiveServer
) -> None:
    labels = {"model": "digits", "route": "grpc/ModelInfer", "code": "499"}
    before = metric(server.client.get("/metrics").text, "anymodal_requests_total", **labels)
    batch = [bytes_input(m, [raw("7", m)] * 64) for m in MODALITIES]
    error = refused(client.infer, "digits", batch, client_timeout=0.02)
    assert error.status() == "StatusCode.DEADLINE_EXCEEDED"
    deadline = time.monotonic() + 10  # the server notices the cancelled call and stops its work
    while metric(server.client.get("/metrics").text, "anymodal_requests_total", **labels) == before:
        assert time.monotonic() < deadline, "the cancelled call was never counted"
        time.sleep(0.05)
    assert strings(client.infer("digits", batch).as_numpy("label")) == ["7"] * 64


# -- lifecycle ---------------------------------------------------------------------------------


def test_sigterm_turns_readiness_off_and_finishes_calls_in_flight(tmp_path: Path) -> None:
    """Calls the server has begun are answered; new ones are not taken (UNAVAILABLE), as HTTP takes
    no new request. (gRPC cancels a call that has arrived but not begun when the server stops.)"""
    batch = [bytes_input(m, [raw("7", m)] * 64) for m in ("image", "text")]
    with LiveServer(max_instances=64, concurrency=1) as server:
        triton = grpcclient.InferenceServerClient(url=server.grpc_url)
        with ThreadPoolExecutor(max_workers=12) as pool:
            futures = [pool.submit(triton.infer, "digits", batch) for _ in range(12)]
            deadline = time.monotonic() + 10  # wait until the server has begun them all
            while time.monotonic() < deadline:
                page = server.client.get("/metrics").text
                answered = metric(page, "anymodal_requests_total", route="grpc/ModelInfer")
                if metric(page, "anymodal_requests_in_flight") - 1 + answered >= len(futures):
                    break
            server.process.send_signal(signal.SIGTERM)
            for ready in (triton.is_server_ready, lambda: triton.is_model_ready("digits")):
                with contextlib.suppress(InferenceServerException):  # once the server has stopped
                    assert not ready()
            labels = [f.result().as_numpy("label") for f in futures]
        assert all(strings(label) == ["7"] * 64 for label in labels)
        triton.close()
        assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)


def listening() -> dict[int, int]:
    """Listening TCP sockets, by their inode, with their port: the kernel's tables, IPv4 and IPv6."""
    sockets = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                sockets[int(fields[9])] = int(fields[1].rsplit(":", 1)[1], 16)
    return sockets


def ports_of(pid: int) -> list[int]:
    """The ports process `pid` listens on (a socket per listener, so a port can repeat)."""
    inodes = [Path(link).readlink().name for link in Path(f"/proc/{pid}/fd").iterdir()]
    sockets = listening()
    return sorted(
        sockets[int(i[8:-1])] for i in inodes if i.startswith("socket:[") and int(i[8:-1]) in sockets
    )


def test_a_worker_listens_on_the_http_and_grpc_ports_and_grpc_port_0_turns_grpc_off() -> None:
    with LiveServer() as server:
        assert ports_of(server.process.pid) == sorted([server.port, server.grpc_port])
    with LiveServer(grpc_port=0) as server:
        assert ports_of(server.process.pid) == [server.port]


def test_two_workers_each_listen_on_the_grpc_port_with_so_reuseport() -> None:
    with LiveServer(workers=2) as server:

        def grpc_listeners() -> int:
            return list(listening().values()).count(server.grpc_port)

        deadline = time.monotonic() + 20  # both workers up, not only the one that answered ready
        while grpc_listeners() < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert grpc_listeners() == 2

        def call(digit: str) -> list[str]:
            triton = grpcclient.InferenceServerClient(url=server.grpc_url)  # a connection of its own
            try:
                return strings(triton.infer("digits", [bytes_input("text", [TEXT[digit]])]).as_numpy("label"))
            finally:
                triton.close()

        digits = ["3", "7"] * 6
        with ThreadPoolExecutor(max_workers=4) as pool:
            assert [label for labels in pool.map(call, digits) for label in labels] == digits
        page = server.client.get("/metrics").text
        assert metric(page, "anymodal_requests_total", route="grpc/ModelInfer", code="200") == len(digits)


def test_a_lone_worker_does_not_share_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as a gRPC server would bind it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = LiveServer(grpc_port=port)
        try:
            with pytest.raises(
                RuntimeError, match=f"gRPC cannot listen on 127.0.0.1:{port}: is the port in use"
            ):
                server.wait_ready()
        finally:
            server.stop()


def test_the_grpc_port_must_differ_from_the_http_port() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "anymodal.service", "serve", "--port", "8123", "--grpc-port", "8123"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2
    assert "the gRPC port and the HTTP port are both 8123: give gRPC another" in run.stderr


# -- KServe's clients --------------------------------------------------------------------------


def test_kserves_rest_and_grpc_clients_get_the_same_answers(server: LiveServer) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tests.kserve_clients", server.url, server.grpc_url],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    answers = json.loads(run.stdout)
    v1 = server.client.post("/v1/predict", json={"inputs": v1_instance("7", ("image", "text"))}).json()
    assert answers["grpc_ready"] and answers["rest_ready"]
    for transport in ("grpc_raw", "grpc_typed", "rest"):
        answer = answers[transport]
        assert answer["label"] == [v1["label"]], transport
        assert answer["score"] == [pytest.approx(v1["score"], rel=1e-4)], transport
        assert answer["modality_states"] == [["present", "missing", "present"]], transport
        assert answer["reliable"] == [True], transport
    assert answers["grpc_error"] == [
        "StatusCode.NOT_FOUND",
        "model 'nope' is not served here; served models: digits, pen",
    ]
