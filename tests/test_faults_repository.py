"""The model repository deleted, emptied, unreadable or read-only while serving, and a model
removed from it. Each test is bounded in time."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from anymodal.service.app import create_app
from anymodal.service.settings import Settings
from prometheus_client import REGISTRY

from tests.faults import (
    TEXT,
    scrape,
    wait_for,
)
from tests.live import LiveServer, copy_repository


# -- the model repository ------------------------------------------------------------------
def readable(server: LiveServer) -> float:
    return scrape(server, "anymodal_repository_readable")


@pytest.mark.parametrize("fault", ["deleted", "emptied"])
def test_a_deleted_or_emptied_repository_keeps_the_loaded_models_serving(tmp_path: Path, fault: str) -> None:
    repository = copy_repository(tmp_path / "models")
    with LiveServer(repository, repository_poll_seconds=0.2) as server:
        assert readable(server) == 1
        for folder in [repository] if fault == "deleted" else list(repository.iterdir()):
            shutil.rmtree(folder)
        wait_for(lambda: readable(server) == 0)
        time.sleep(1.0)  # five more polls
        assert server.client.post("/v1/predict", json=TEXT).status_code == 200
        assert server.client.get("/v2/health/ready").status_code == 200
        assert server.client.get("/v1/models/digits").json()["versions"] == [1]
        assert scrape(server, "anymodal_repository_errors_total") >= 5
        if fault == "deleted":  # a reload asked for changes nothing either, and says why
            reload = server.client.post("/v1/models/digits/reload")
            assert reload.status_code == 503 and "cannot read the model repository" in reload.json()["error"]
            assert server.client.get("/v1/models/digits").json()["versions"] == [1]
        shutil.rmtree(repository, ignore_errors=True)
        copy_repository(tmp_path / "restored").rename(repository)  # back as it was, at once
        wait_for(lambda: readable(server) == 1)
        assert server.client.post("/v1/predict", json=TEXT).status_code == 200
    assert server.output().count("cannot read the model repository") == 1  # one warning, not one a poll


def test_an_unreadable_repository_keeps_the_loaded_models_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """In-process: a test run as root reads any folder, whatever its mode."""
    root = copy_repository(tmp_path / "models")
    repository = create_app(Settings(model_repository=root, grpc_port=0)).state.service.repository
    repository.load_all()
    listing = Path.iterdir

    def refused(path: Path) -> Iterator[Path]:
        if path == root:
            raise PermissionError(13, "Permission denied", str(path))
        return listing(path)

    monkeypatch.setattr(Path, "iterdir", refused)
    for _ in range(3):
        asyncio.run(repository.poll())
    assert sorted(repository.models["digits"]) == [1] and not repository.readable
    assert REGISTRY.get_sample_value("anymodal_repository_readable") == 0
    warnings = [r for r in caplog.records if r.name.endswith("repository") and r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "cannot read the model repository ([Errno 13] Permission denied:"
        f" '{root}'); the models loaded keep serving: {{'digits': [1]}}"
    ]
    monkeypatch.undo()
    asyncio.run(repository.poll())
    assert repository.readable and REGISTRY.get_sample_value("anymodal_repository_readable") == 1


def test_a_read_only_repository_serves_and_is_never_written(tmp_path: Path) -> None:
    repository = copy_repository(tmp_path / "models")
    paths = [repository, *repository.rglob("*")]
    for path in paths:
        path.chmod(path.stat().st_mode & ~0o222)

    def snapshot() -> dict[str, tuple[int, int, int]]:
        found = [repository, *repository.rglob("*")]
        return {str(p): (p.stat().st_mode, p.stat().st_size, p.stat().st_mtime_ns) for p in found}

    before = snapshot()
    try:
        with LiveServer(repository, repository_poll_seconds=0.2) as server:
            for _ in range(5):
                assert server.client.post("/v1/predict", json=TEXT).status_code == 200
            assert server.client.post("/v1/models/digits/reload").json()["unchanged"] == [1]
            time.sleep(1.0)  # polls
            assert readable(server) == 1
        assert snapshot() == before  # not a file added, changed or touched
    finally:
        for path in paths:
            path.chmod(path.stat().st_mode | 0o200)


def test_a_removed_model_is_unloaded_and_the_others_keep_serving(tmp_path: Path) -> None:
    """As in Triton's poll mode; only a repository with no model left is taken for a fault."""
    repository = copy_repository(tmp_path / "models")
    other = repository / "other" / "1"
    shutil.copytree(repository / "digits" / "1", other)
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps(manifest | {"name": "other"}))
    with LiveServer(repository, repository_poll_seconds=0.2) as server:
        assert server.client.get("/v1/models/other").status_code == 200
        shutil.rmtree(repository / "other")
        wait_for(lambda: server.client.get("/v1/models/other").status_code == 404)
        assert server.client.post("/v1/predict", json=TEXT).status_code == 200
        assert readable(server) == 1 and scrape(server, "anymodal_repository_errors_total") == 0
