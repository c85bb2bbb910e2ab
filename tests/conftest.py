"""Shared fixtures. Tests marked `shared_data` read the real benchmark data in ../shared/data (or
$ANYMODAL_SHARED_DATA); they skip where it is absent, unless ANYMODAL_REQUIRE_SHARED_DATA=1 (CI)
turns the absence into a failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ANYMODAL_SHARED_DATA", ROOT.parent / "shared" / "data"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if (SHARED_DATA / "fsdd").is_dir() and (SHARED_DATA / "optdigits").is_dir():
        return
    if os.environ.get("ANYMODAL_REQUIRE_SHARED_DATA") == "1":
        raise pytest.UsageError(f"the benchmark data is required but {SHARED_DATA} is missing")
    skip = pytest.mark.skip(reason=f"needs the benchmark data in {SHARED_DATA}")
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA
