"""bench/peers.py's naive server does the work anymodal does: the answers of anymodal's app, in this
process, to the same requests (all three modalities, two, one, and an input its gate rejects)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from anymodal.service.app import create_app
from anymodal.service.settings import Settings
from fastapi.testclient import TestClient

from tests.helpers import tone, wav_bytes
from tests.live import MODELS, ROOT, fixture, free_port


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def body(digit: int, *modalities: str) -> dict:
    inputs = {
        "image": b64(fixture(f"digit_{digit}.png")),
        "audio": b64(fixture(f"digit_{digit}.wav")),
        "text": {3: "drei", 7: "sieben"}[digit],
    }
    return {"inputs": {m: inputs[m] for m in modalities}}


TONE = {"inputs": {"image": b64(fixture("digit_7.png")), "audio": b64(wav_bytes(tone(1.0, 8000), 8000))}}
REQUESTS = [body(7, "image", "audio", "text"), body(3, "image", "audio"), body(7, "text"), TONE]


@pytest.fixture(scope="module")
def naive() -> Iterator[httpx.Client]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "naive_server:app", "--app-dir", str(ROOT / "bench")]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    env = os.environ | {"NAIVE_BUNDLE": str(MODELS / "digits" / "1")}
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 20
            while True:
                assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the naive server was not ready in 20 s"
                    time.sleep(0.05)
            yield client
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_naive_server_answers_as_anymodal_does(naive: httpx.Client) -> None:
    settings = Settings(model_repository=MODELS, grpc_port=0, repository_poll_seconds=0)
    with TestClient(create_app(settings)) as anymodal:
        for request in REQUESTS:
            expected = anymodal.post("/v1/predict", json=request)
            answer = naive.post("/v1/predict", json=request)
            assert expected.status_code == answer.status_code == 200, (expected.text, answer.text)
            ours, theirs = expected.json(), answer.json()
            assert theirs["label"] == ours["label"]
            assert theirs["score"] == pytest.approx(ours["score"], rel=1e-4)
            assert [t["label"] for t in theirs["top_k"]] == [t["label"] for t in ours["top_k"]]
            probabilities = [t["probability"] for t in theirs["top_k"]]
            assert probabilities == pytest.approx(
                [t["probability"] for t in ours["top_k"]], rel=1e-3, abs=1e-6
            )
