"""Lifecycle against a real server: start only when verified and warm, reload without downtime,
a failed reload keeps the old version serving, SIGTERM drains, several workers share metrics."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.live import LiveServer, copy_repository, metric

TEXT = {"inputs": {"text": "drei"}}


def add_version(repository: Path, version: int, corrupt: str | None = None, edit: bool = True) -> Path:
    """Copy digits/1 to digits/<version>, with the manifest's version updated (unless not `edit`)."""
    target = repository / "digits" / str(version)
    shutil.copytree(repository / "digits" / "1", target)
    if edit:
        manifest = json.loads((target / "manifest.json").read_text())
        manifest["version"] = version
        (target / "manifest.json").write_text(json.dumps(manifest))
    if corrupt is not None:
        with (target / corrupt).open("r+b") as stream:
            stream.seek(100)
            stream.write(b"\x00garbage\x00")
    return target


def test_a_corrupt_bundle_is_not_served_and_does_not_stop_the_others(tmp_path: Path) -> None:
    repository = copy_repository(tmp_path / "models")
    add_version(repository, 2, corrupt="audio.onnx")
    broken = repository / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{not json")
    with LiveServer(repository) as server:
        assert server.client.get("/v1/models/digits").json()["versions"] == [1]
        assert server.client.get("/v1/models/broken").status_code == 404
        assert server.client.post("/v1/predict", json=TEXT).json()["model"]["version"] == 1
        page = server.client.get("/metrics").text
        assert metric(page, "anymodal_model_load_failures_total", model="digits", version="2") == 1
        assert metric(page, "anymodal_model_load_failures_total", model="broken", version="1") == 1
    assert "audio.onnx has sha256" in server.output()


def test_reload_swaps_in_a_new_version_and_keeps_the_old_one_on_failure(tmp_path: Path) -> None:
    repository = copy_repository(tmp_path / "models")
    with LiveServer(repository) as server:
        stop = threading.Event()
        failures: list[str] = []

        def traffic() -> None:  # requests keep flowing through both reloads
            with httpx.Client(base_url=server.url, timeout=30) as client:
                while not stop.is_set():
                    answer = client.post("/v1/predict", json=TEXT)
                    if answer.status_code != 200:
                        failures.append(answer.text)

        worker = threading.Thread(target=traffic)
        worker.start()
        try:
            add_version(repository, 2)
            report = server.client.post("/v1/models/digits/reload").json()
            assert report["loaded"] == [2] and report["unchanged"] == [1] and report["serving"] == [1, 2]
            assert server.client.post("/v1/predict", json=TEXT).json()["model"]["version"] == 2
            assert server.client.post("/v1/models/digits/versions/1/predict", json=TEXT).status_code == 200

            add_version(repository, 3, corrupt="head.onnx")
            report = server.client.post("/v1/models/digits/reload").json()
            assert report["loaded"] == [] and report["serving"] == [1, 2]
            assert "head.onnx has sha256" in report["failed"]["3"]
            assert server.client.post("/v1/predict", json=TEXT).json()["model"]["version"] == 2

            shutil.rmtree(repository / "digits" / "3")
            shutil.rmtree(repository / "digits" / "1")
            report = server.client.post("/v1/models/digits/reload").json()
            assert report["removed"] == [1] and report["serving"] == [2]
            assert server.client.post("/v1/models/digits/versions/1/predict", json=TEXT).status_code == 404
        finally:
            stop.set()
            worker.join()
        assert failures == []
        assert server.client.post("/v1/models/nothing/reload").status_code == 404


def test_publishing_is_copying_a_bundle_into_a_new_version_folder(tmp_path: Path) -> None:
    """As Triton and TF Serving do: the folder gives the version; the manifest's stays provenance."""
    repository = copy_repository(tmp_path / "models")
    add_version(repository, 2, edit=False)
    wrong = repository / "other" / "1"
    shutil.copytree(repository / "digits" / "1", wrong)
    with LiveServer(repository) as server:
        info = server.client.get("/v1/models/digits").json()
        assert info["versions"] == [1, 2] and info["version"] == 2 and info["manifest_version"] == 1
        assert server.client.post("/v1/predict", json=TEXT).json()["model"]["version"] == 2
        assert server.client.get("/v1/models/other").status_code == 404  # a model's name is its own
    assert "the manifest names the model 'digits'" in server.output()


def test_a_changed_repository_is_picked_up_without_asking(tmp_path: Path) -> None:
    repository = copy_repository(tmp_path / "models")
    with LiveServer(repository, repository_poll_seconds=0.2) as server:
        add_version(repository, 2)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if server.client.get("/v1/models/digits").json()["versions"] == [1, 2]:
                break
            time.sleep(0.1)
        assert server.client.post("/v1/predict", json=TEXT).json()["model"]["version"] == 2


def test_sigterm_turns_readiness_off_at_once_and_finishes_requests_in_flight(tmp_path: Path) -> None:
    image = {
        "b64": __import__("base64")
        .b64encode((Path(__file__).parent / "fixtures" / "digit_7.png").read_bytes())
        .decode()
    }
    batch = {"instances": [{"image": image, "text": "sieben"}] * 64}
    with LiveServer(copy_repository(tmp_path / "models"), max_instances=64, concurrency=1) as server:
        with ThreadPoolExecutor(max_workers=24) as pool:
            futures = [pool.submit(server.client.post, "/v1/predict", json=batch) for _ in range(24)]
            deadline = time.monotonic() + 10  # wait until the server is busy with them
            while time.monotonic() < deadline:
                page = server.client.get("/metrics").text
                if metric(page, "anymodal_requests_in_flight") > 5:
                    break
            server.process.send_signal(signal.SIGTERM)
            # 503 until uvicorn closes the socket (within 0.1 s); then no connection at all
            with contextlib.suppress(httpx.TransportError):
                assert server.client.get("/v2/health/ready").status_code == 503
            answers = [f.result() for f in futures]
        assert [a.status_code for a in answers] == [200] * 24
        assert all(len(a.json()["predictions"]) == 64 for a in answers)
        assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)


def test_several_workers_share_their_metrics(tmp_path: Path) -> None:
    with LiveServer(copy_repository(tmp_path / "models"), workers=2) as server:
        sent = 40
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda _: server.client.post("/v1/predict", json=TEXT), range(sent)))
        assert all(a.status_code == 200 for a in answers)
        pages = [server.client.get("/metrics").text for _ in range(4)]  # whichever worker answers
        for page in pages:
            assert (
                metric(page, "anymodal_inputs_total", model="digits", modality="image", state="missing")
                == sent
            )
            assert metric(page, "anymodal_requests_total", route="/v1/predict", code="200") == sent
            assert metric(page, "anymodal_model_ready", model="digits", version="1") == 1


@pytest.mark.parametrize("provider", ["cpu", "auto"])
def test_the_cpu_provider_is_chosen_without_a_gpu(repository: Path, provider: str) -> None:
    with LiveServer(repository, provider=provider) as server:
        assert server.client.get("/v1/models/digits").json()["provider"] == "CPUExecutionProvider"


def test_asking_for_cuda_without_it_serves_nothing_and_says_why(repository: Path) -> None:
    server = LiveServer(repository, provider="cuda")
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if server.client.get("/v2/health/live").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        assert server.client.get("/v2/health/ready").status_code == 503
        assert server.client.get("/v1/models").json()["models"] == []
    finally:
        server.stop()
    assert "no CUDA provider" in server.output()
