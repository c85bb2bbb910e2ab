"""`anymodal train` end to end on a small slice of the real benchmark: raw files to a verified
bundle with its report, in well under a minute."""

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.manifest import verify_bundle
from training.cli import app

pytestmark = pytest.mark.shared_data

TINY = """
name = "tiny-digits"

[modalities.image]
kind = "image"
width = 16
height = 16

[modalities.audio]
kind = "audio"
sample_rate = 8000
max_seconds = 1.5

[modalities.text]
kind = "text"
max_length = 32

[modalities.pen]
kind = "tensor"
length = 16

[model]
feature_dim = 16
width = 8

[train]
epochs = 2
batch_size = 32
"""


def test_build_and_train_a_tiny_model(shared_data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    started = time.perf_counter()
    built = runner.invoke(
        app,
        [
            "build-digits",
            "--source",
            str(shared_data),
            "--out",
            str(tmp_path / "data"),
            "--limit",
            "80",
            "--quiet",
        ],
    )
    assert built.exit_code == 0, built.output
    (tmp_path / "tiny.toml").write_text(TINY)
    train = ["train", str(tmp_path / "tiny.toml"), "--data", str(tmp_path / "data")]
    train += ["--models", str(tmp_path / "models"), "--quiet"]
    trained = runner.invoke(app, train)
    assert trained.exit_code == 0, trained.output
    assert time.perf_counter() - started < 60

    bundle = tmp_path / "models" / "tiny-digits" / "1"
    manifest = verify_bundle(bundle)
    assert manifest.labels == [str(d) for d in range(10)]
    assert {m: s.kind for m, s in manifest.modalities.items()} == {
        "image": "image", "audio": "audio", "text": "text", "pen": "tensor"
    }  # fmt: skip
    assert all(s.temperature > 0 for s in manifest.modalities.values())
    assert {
        "report.md",
        "metrics.json",
        "training_curves.png",
        "robustness.png",
        "fusion_weights.png",
    } <= set(manifest.files)

    metrics = json.loads((bundle / "metrics.json").read_text())
    assert set(metrics["systems"]) == {"mla", "mla_mean", "mla_no_hgm", "joint"}
    assert len(metrics["systems"]["mla"]["robustness"]) == 2**4 - 1
    assert set(metrics["unimodal"]) == {"image", "audio", "text", "pen"}
    assert len(metrics["claims"]) == 2 + 4
    report = (bundle / "report.md").read_text()
    assert "## Claims, checked on the test split" in report
    assert "anymodal train" in report

    again = runner.invoke(app, [*train, "--version", "1"])
    assert again.exit_code == 2 and "already exists" in again.output


def test_a_broken_config_is_reported_with_the_field(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(
        'name = "x"\n[modalities.image]\nkind = "image"\nwidth = -3\nheight = 8\n'
    )
    result = CliRunner().invoke(app, ["train", str(tmp_path / "bad.toml"), "--data", str(tmp_path)])
    assert result.exit_code == 2
    assert "width" in result.output and "greater than 0" in result.output
