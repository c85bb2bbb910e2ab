"""A grown model shows its lineage: `/v1/models/{m}` lists the steps that made it and whether it can
grow, a prediction answer's `model` says which version it grew from and what it added, and a version
without a history says neither."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from anymodal.service.app import create_app
from anymodal.service.client import inspect_bundle
from anymodal.service.client_format import bundle_text, prediction_text
from anymodal.service.settings import Settings
from anymodal.training.export import rewrite_manifest
from fastapi.testclient import TestClient

from tests.live import MODELS

AT = "2025-01-01T00:00:00+00:00"
HISTORY = [
    {
        "step": "train",
        "version": 1,
        "modalities": ["image", "text"],
        "trained": ["image", "text"],
        "samples": {"train": 1000},
        "at": AT,
        "config": {"epochs": 3},
    },
    {
        "step": "extend",
        "version": 2,
        "from_version": 1,
        "modalities": ["image", "audio", "text"],
        "added": ["audio"],
        "trained": ["audio"],
        "samples": {"train": 400},
        "at": AT,
        "data": {"audio": "fsdd"},
    },
]


def grown_repository(root: Path) -> Path:
    """digits 1 as bundled (no history), and digits 2: the same files, grown from 1 by adding audio."""
    shutil.copytree(MODELS / "digits" / "1", root / "digits" / "1")
    bundle = shutil.copytree(MODELS / "digits" / "1", root / "digits" / "2")
    np.save(bundle / "projector.npy", np.eye(5))
    np.savez(bundle / "replay.npz", **{"audio.features": np.zeros((2, 4)), "audio.labels": np.zeros(2)})
    growth = {"projector": "projector.npy", "replay": "replay.npz", "replay_size": 256}
    rewrite_manifest(bundle, version=2, growth=growth, history=HISTORY)
    return root


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = grown_repository(tmp_path_factory.mktemp("models"))
    settings = Settings(model_repository=root, grpc_port=0, repository_poll_seconds=0)
    with TestClient(create_app(settings)) as client:
        yield client


def test_model_info_shows_the_lineage_and_growth(client: TestClient) -> None:
    info = client.get("/v1/models/digits").json()
    assert info["version"] == 2 and info["versions"] == [1, 2]
    assert info["growth"] == {"replay_size": 256, "replay_kind": "features"}
    train, extend = info["lineage"]
    assert train == {
        "step": "train",
        "version": 1,
        "from_version": None,
        "modalities": ["image", "text"],
        "added": [],
        "trained": ["image", "text"],
        "samples": {"train": 1000},
        "at": AT,
    }
    assert extend["step"] == "extend" and extend["from_version"] == 1 and extend["added"] == ["audio"]
    assert "config" not in train and "data" not in extend  # the bulky parts stay in the manifest

    assert client.get("/v1/models/digits/versions/2").json()["lineage"] == info["lineage"]
    first = client.get("/v1/models/digits/versions/1").json()
    assert first["lineage"] == [] and first["growth"] is None


def test_an_answer_says_which_version_it_grew_from(client: TestClient) -> None:
    answer = client.post("/v1/predict", json={"inputs": {"text": "sieben"}}).json()
    assert answer["label"] == "7"
    assert answer["model"] == {
        "name": "digits",
        "version": 2,
        "step": "extend",
        "grew_from": 1,
        "added": ["audio"],
    }
    assert prediction_text(answer).splitlines()[0] == (
        "model digits version 2 (extend of version 1, added audio), entropy fusion"
    )
    batch = client.post("/v1/models/digits/predict", json={"instances": [{"text": "drei"}]}).json()
    assert batch["model"] == answer["model"]

    old = client.post("/v1/models/digits/versions/1/predict", json={"inputs": {"text": "sieben"}}).json()
    assert old["model"] == {"name": "digits", "version": 1}


def test_the_open_inference_protocol_metadata_is_unchanged(client: TestClient) -> None:
    metadata = client.get("/v2/models/digits").json()
    assert set(metadata) == {"name", "versions", "platform", "inputs", "outputs"}


def test_inspect_shows_the_lineage(tmp_path: Path) -> None:
    bundle = grown_repository(tmp_path) / "digits" / "2"
    info = inspect_bundle(bundle)
    assert [step["step"] for step in info["lineage"]] == ["train", "extend"]
    lines = bundle_text(info).splitlines()
    start = lines.index("lineage:")
    assert lines[start + 1].split() == ["step", "version", "from", "added", "trained", "at"]
    assert lines[start + 2].split() == ["train", "1", "-", "-", "image,", "text", AT]
    assert lines[start + 3].split() == ["extend", "2", "1", "audio", "audio", AT]
    assert "at most 256 training samples per modality" in lines[start + 4]
    assert "lineage:" not in bundle_text(inspect_bundle(MODELS / "digits" / "1"))
