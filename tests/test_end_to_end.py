"""`anymodal train` end to end on a small slice of the real benchmark: raw files to verified
bundles at two seeds, evaluated under the frozen corruption suite, the chosen one published with
its report."""

import json
import time
from pathlib import Path

import pytest
from anymodal.service.cli import app
from anymodal.service.manifest import verify_bundle
from anymodal.service.reliability import ReliabilityModel
from typer.testing import CliRunner

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


@pytest.mark.shared_data
def test_build_and_train_a_tiny_model_at_two_seeds(shared_data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    started = time.perf_counter()
    build = ["build-digits", "--source", str(shared_data), "--out", str(tmp_path / "data")]
    built = runner.invoke(app, [*build, "--limit", "80", "--quiet"])
    assert built.exit_code == 0, built.output
    (tmp_path / "tiny.toml").write_text(TINY)
    train = ["train", str(tmp_path / "tiny.toml"), "--data", str(tmp_path / "data")]
    train += ["--models", str(tmp_path / "models"), "--runs", str(tmp_path / "runs"), "--quiet"]
    trained = runner.invoke(app, [*train, "--seeds", "0,1"])
    assert trained.exit_code == 0, trained.output
    assert f"serve it with: anymodal serve --repository {tmp_path / 'models'}" in trained.output
    assert time.perf_counter() - started < 240

    for seed in (0, 1):
        for system in ("mla", "mla_no_hgm", "joint"):
            verify_bundle(tmp_path / "runs" / "tiny-digits" / f"seed-{seed}" / system)
    bundle = tmp_path / "models" / "tiny-digits" / "1"
    manifest = verify_bundle(bundle)
    assert manifest.labels == [str(d) for d in range(10)]
    assert {m: s.kind for m, s in manifest.modalities.items()} == {
        "image": "image", "audio": "audio", "text": "text", "pen": "tensor"
    }  # fmt: skip
    assert manifest.training["seeds"] == [0, 1] and manifest.training["chosen_seed"] in (0, 1)
    assert len(manifest.fusion.temperatures or []) == 4
    for m, spec in manifest.modalities.items():
        assert spec.temperature > 0
        assert spec.reliability is not None and spec.reliability.file in manifest.files, m
        gate = ReliabilityModel.load(bundle / spec.reliability.file)
        assert len(gate.calibration) > 0
    assert {"report.md", "metrics.json", "robustness.png", "hgm.png", "train_log.jsonl"} <= set(
        manifest.files
    )

    metrics = json.loads((bundle / "metrics.json").read_text())
    assert set(metrics["matrix"]) == {"mla", "mla_no_gate", "mla_no_hgm", "joint"}
    assert len(metrics["matrix"]["mla"]) == 2**4 - 1
    full = metrics["matrix"]["mla"]["image+audio+text+pen"]
    assert len(full["clean"]["seeds"]) == 2
    assert "audio:tone:3" in full and "pen:dead:1" in full and "image:rotation" in full
    assert all(set(g["difference"]) == {"mean", "low", "high"} for g in metrics["goals"])
    assert metrics["calibration"]["clean"]["mean"] >= 0
    epochs = [json.loads(line) for line in (bundle / "train_log.jsonl").read_text().splitlines()]
    assert all(0 < share <= 1 for e in epochs for share in e["hgm_kept"].values())
    report = (bundle / "report.md").read_text()
    assert "## Goals" in report and "## Comparisons" in report and "anymodal train" in report

    again = runner.invoke(app, [*train, "--seeds", "0", "--version", "1"])
    assert again.exit_code == 2 and "already exists" in again.output


def test_a_broken_config_is_reported_with_the_field(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(
        'name = "x"\n[modalities.image]\nkind = "image"\nwidth = -3\nheight = 8\n'
    )
    result = CliRunner().invoke(app, ["train", str(tmp_path / "bad.toml"), "--data", str(tmp_path)])
    assert result.exit_code == 2
    assert "width" in result.output and "greater than 0" in result.output


@pytest.mark.parametrize("seeds", ["a,b", "0,0", ","])
def test_bad_seeds_are_refused_with_the_fix(tmp_path: Path, seeds: str) -> None:
    (tmp_path / "ok.toml").write_text('name = "x"\n[modalities.t]\nkind = "text"\nmax_length = 8\n')
    result = CliRunner().invoke(
        app, ["train", str(tmp_path / "ok.toml"), "--data", str(tmp_path), "--seeds", seeds]
    )
    assert result.exit_code == 2
    assert "--seeds" in result.output


def test_config_errors_name_the_field_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(
        'name = "x"\n[modalities.sensor]\nkind = "tensor"\n[train]\nepoch = 3\n'
    )
    result = CliRunner().invoke(app, ["train", str(tmp_path / "bad.toml"), "--data", str(tmp_path)])
    assert result.exit_code == 2
    assert "bad.toml" in result.output
    assert "modalities.sensor.length: is required; add it to the config" in result.output
    assert "train.epoch: is not a setting here" in result.output
