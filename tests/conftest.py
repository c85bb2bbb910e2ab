"""Shared fixtures. Tests marked `shared_data` read the real benchmark data in ../shared/data (or
$ANYMODAL_SHARED_DATA); tests marked `prometheus` run Debian's prometheus and promtool; tests marked
`chromium` drive Debian's chromium with playwright. They skip where these are absent, unless
ANYMODAL_REQUIRE_SHARED_DATA=1, ANYMODAL_REQUIRE_PROMETHEUS=1 or ANYMODAL_REQUIRE_CHROMIUM=1 (all
set by CI) turn the absence into a failure."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ANYMODAL_SHARED_DATA", ROOT.parent / "shared" / "data"))
CHROMIUM = "/usr/bin/chromium"


REQUIREMENTS = {
    # marker: (is it here?, what is missing, the variable that makes it required)
    "shared_data": (
        lambda: (SHARED_DATA / "fsdd").is_dir() and (SHARED_DATA / "optdigits").is_dir(),
        f"the benchmark data in {SHARED_DATA}",
        "ANYMODAL_REQUIRE_SHARED_DATA",
    ),
    "prometheus": (
        lambda: shutil.which("prometheus") is not None and shutil.which("promtool") is not None,
        "Prometheus and promtool (Debian package prometheus)",
        "ANYMODAL_REQUIRE_PROMETHEUS",
    ),
    "chromium": (
        lambda: Path(CHROMIUM).is_file() and importlib.util.find_spec("playwright") is not None,
        f"Chromium ({CHROMIUM}, Debian package chromium) and the playwright package",
        "ANYMODAL_REQUIRE_CHROMIUM",
    ),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for marker, (available, what, required) in REQUIREMENTS.items():
        if available():
            continue
        if os.environ.get(required) == "1":
            raise pytest.UsageError(f"{what} is required ({required}=1) but missing")
        skip = pytest.mark.skip(reason=f"needs {what}")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository with the bundled `digits` model and a small `pen` model that has a
    tensor modality (16 numbers) and text, trained here on a few synthetic samples."""
    from anymodal.evaluation.workflow import run
    from anymodal.training.config import parse_config

    from tests.live import copy_repository

    root = copy_repository(tmp_path_factory.mktemp("repository") / "models")
    data = tmp_path_factory.mktemp("pen-data")
    rng = np.random.default_rng(0)
    names = ["zero", "one", "two"]
    # 250 validation samples: the gate's p-values go down to 1/251, below its alpha of 0.005
    for split, count in (("train", 120), ("val", 250), ("test", 30)):
        with (data / f"{split}.jsonl").open("w") as stream:
            for i in range(count):
                label = i % 3
                pen = (rng.uniform(20, 80, size=16) + 10 * label).round(3).tolist()  # like pen coordinates
                stream.write(json.dumps({"label": names[label], "pen": pen, "text": names[label]}) + "\n")
    config = parse_config(
        {
            "name": "pen",
            "modalities": {
                "pen": {"kind": "tensor", "length": 16},
                "text": {"kind": "text", "max_length": 16},
            },
            "model": {"feature_dim": 8, "width": 4},
            "train": {"epochs": 2, "batch_size": 16},
        }
    )
    runs = tmp_path_factory.mktemp("pen-runs")
    run(config, data, root, runs, seeds=[0], systems=["mla"], progress=False)
    return root
