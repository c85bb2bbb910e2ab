"""The package installs under one import name: `anymodal.service`, `anymodal.training` and
`anymodal.evaluation`, and no top-level `service` or `training` that a user's own module would
collide with."""

import subprocess
import sys
from pathlib import Path

import pytest


def _imports(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_folders_import_under_anymodal_only(tmp_path: Path) -> None:
    assert _imports("import anymodal.service.cli, anymodal.evaluation.corruptions", tmp_path).returncode == 0
    for name in ("service", "training", "evaluation"):
        result = _imports(f"import {name}", tmp_path)
        assert result.returncode != 0 and "No module named" in result.stderr, name


@pytest.mark.parametrize("module", ["anymodal.service", "anymodal.training"])
def test_python_m_runs_the_command_line(tmp_path: Path, module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "Usage" in result.stdout
