"""Growing a model: the replay reservoir stays a bounded uniform sample, and `extend` adds a modality
to a trained bundle end to end (old encoders byte-identical, old predictions kept, lineage recorded,
served as the next version)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from anymodal.service.manifest import read_manifest, sha256_of, verify_bundle
from anymodal.service.repository import ModelRepository
from anymodal.service.settings import Settings
from anymodal.training.config import parse_config
from anymodal.training.experiment import train_seeds
from anymodal.training.extend import extend
from anymodal.training.growth import GrowthError, Reservoir

from tests.live import MODELS, ROOT

NAMES = ["zero", "one", "two"]
WORDS = {"zero": ["zero", "null", "nil"], "one": ["one", "eins", "un"], "two": ["two", "zwei", "deux"]}


def test_the_reservoir_is_bounded_and_uniform_over_everything_it_has_seen() -> None:
    reservoir = Reservoir(size=100)
    reservoir.add("pen", np.zeros((300, 2), np.float32), np.zeros(300, np.int64), seed=0)
    reservoir.add("pen", np.ones((300, 2), np.float32), np.ones(300, np.int64), seed=1)
    assert reservoir.features["pen"].shape == (100, 2) and reservoir.seen["pen"] == 600
    share_new = reservoir.labels["pen"].mean()  # half of what it has seen is new: about half
    assert 0.35 < share_new < 0.65
    small = Reservoir(size=100)
    small.add("text", np.ones((7, 2), np.float32), np.arange(7), seed=0)
    assert len(small.features["text"]) == 7  # fewer than the bound: all of them


def test_the_reservoir_survives_a_round_trip(tmp_path: Path) -> None:
    reservoir = Reservoir(size=5)
    reservoir.add("pen", np.arange(20, dtype=np.float32).reshape(10, 2), np.arange(10), seed=0)
    reservoir.save(tmp_path / "replay.npz")
    again = Reservoir.load(tmp_path / "replay.npz", 5)
    np.testing.assert_array_equal(again.features["pen"], reservoir.features["pen"])
    np.testing.assert_array_equal(again.labels["pen"], reservoir.labels["pen"])
    assert again.seen == {"pen": 10}


def test_the_reservoir_keeps_inputs_only_with_every_sample(tmp_path: Path) -> None:
    """Inputs (user data, kept only when asked for) stay row for row with their features, and go
    when samples without them are folded in."""
    reservoir = Reservoir(size=10)
    features = np.arange(40, dtype=np.float32).reshape(20, 2)
    reservoir.add("pen", features, np.arange(20), seed=0, inputs=features * 10)
    reservoir.add("pen", features + 100, np.arange(20), seed=1, inputs=(features + 100) * 10)
    np.testing.assert_array_equal(reservoir.inputs["pen"], reservoir.features["pen"] * 10)
    assert reservoir.kind == "features+inputs"
    reservoir.save(tmp_path / "replay.npz")
    again = Reservoir.load(tmp_path / "replay.npz", 10)
    np.testing.assert_array_equal(again.inputs["pen"], reservoir.inputs["pen"])
    again.add("pen", features, np.arange(20), seed=2)  # without inputs: none are kept any more
    assert "pen" not in again.inputs and again.kind == "features"


def write_data(folder: Path, seed: int) -> None:
    """Three classes, a pen trajectory (6 numbers) and a word for each sample."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for split, count in (("train", 150), ("val", 250), ("test", 30)):
        with (folder / f"{split}.jsonl").open("w") as stream:
            for i in range(count):
                label = NAMES[i % 3]
                pen = (rng.normal(size=6) + 1.5 * (i % 3)).round(3).tolist()
                row = {"label": label, "pen": pen, "text": str(rng.choice(WORDS[label]))}
                if split == "train" and i % 10 == 0:  # a row without the modality extend adds is fine
                    del row["text"]
                stream.write(json.dumps(row) + "\n")


def config(modalities: dict) -> object:
    return parse_config(
        {
            "name": "grow",
            "modalities": modalities,
            "labels": NAMES,
            "model": {"feature_dim": 8, "width": 4},
            "train": {"epochs": 10, "batch_size": 16, "replay_size": 64, "replay_inputs": True},
        }
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A `pen`-only model, trained with MLA, as version 1 of a repository; and its data."""
    root = tmp_path_factory.mktemp("grow")
    write_data(root / "data", seed=0)
    base = config({"pen": {"kind": "tensor", "length": 6}})
    _, runs = train_seeds(base, root / "data", root / "runs", [0], ["mla"], {}, progress=False)  # type: ignore[arg-type]
    bundle = root / "models" / "grow" / "1"
    bundle.parent.mkdir(parents=True)
    runs[0].bundles["mla"].rename(bundle)
    return bundle, root / "data"


def predictions(root: Path, version: int, instances: list[dict]) -> list[str]:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from anymodal.service.predictor import Options, Predictor

    settings = Settings(model_repository=root)
    repository = ModelRepository(settings)
    repository.load_all()
    model = repository.get("grow", version)
    with ThreadPoolExecutor(1) as executor:
        answers = asyncio.run(
            Predictor(executor, settings).predict(model, instances, ["inputs"] * len(instances), Options())
        )
    return [answer.label for answer in answers]


def test_extend_adds_a_modality_and_keeps_the_old_one(trained: tuple[Path, Path]) -> None:
    bundle, data = trained
    before = read_manifest(bundle)
    assert before.growth is not None and [s.step for s in before.history] == ["train"]
    rows = [json.loads(line) for line in (data / "val.jsonl").read_text().splitlines()]
    pen_only = [{"pen": row["pen"]} for row in rows]
    old_labels = predictions(bundle.parent.parent, 1, pen_only)

    out = extend(bundle, config({"text": {"kind": "text", "max_length": 8}}), data, seed=0)  # type: ignore[arg-type]

    assert out == bundle.parent / "2"
    manifest = verify_bundle(out)
    assert list(manifest.modalities) == ["pen", "text"] and manifest.version == 2
    assert sha256_of(out / "pen.onnx") == sha256_of(bundle / "pen.onnx")  # the old encoder, untouched
    assert manifest.files["pen.reliability.npz"] == before.files["pen.reliability.npz"]
    assert manifest.modalities["pen"].temperature == before.modalities["pen"].temperature
    assert [s.step for s in manifest.history] == ["train", "extend"]
    assert manifest.history[-1].from_version == 1 and manifest.history[-1].added == ["text"]
    assert manifest.growth is not None and len(manifest.fusion.temperatures or []) == 2
    new_labels = predictions(bundle.parent.parent, 2, pen_only)
    agreement = np.mean([a == b for a, b in zip(old_labels, new_labels, strict=True)])
    assert agreement >= 0.95, agreement  # the old modality keeps its predictions
    truth = [row["label"] for row in rows]
    text_only = predictions(bundle.parent.parent, 2, [{"text": row["text"]} for row in rows])
    assert np.mean([a == b for a, b in zip(text_only, truth, strict=True)]) > 0.9  # the new one learned


def test_extend_refuses_what_it_cannot_do(trained: tuple[Path, Path], tmp_path: Path) -> None:
    bundle, data = trained
    with pytest.raises(GrowthError, match="pen already in grow"):
        extend(bundle, config({"pen": {"kind": "tensor", "length": 6}}), data)  # type: ignore[arg-type]
    with pytest.raises(GrowthError, match="cannot grow"):
        extend(MODELS / "digits" / "1", config({"pen": {"kind": "tensor", "length": 6}}), data)  # type: ignore[arg-type]


def test_update_learns_new_samples_and_keeps_the_old(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """A 'new writer': pen trajectories drawn shifted, which the model has never seen."""
    import shutil

    from anymodal.training.config import TrainConfig
    from anymodal.training.update import update

    bundle = tmp_path / "models" / "grow" / "1"
    shutil.copytree(trained[0], bundle)
    new = tmp_path / "new"
    new.mkdir()
    rng = np.random.default_rng(5)
    for split, count in (("train", 90), ("val", 90)):
        with (new / f"{split}.jsonl").open("w") as stream:
            for i in range(count):
                pen = (rng.normal(size=6) + 1.5 * (i % 3) + np.array([3, -3, 3, -3, 3, -3])).round(3).tolist()
                stream.write(json.dumps({"label": NAMES[i % 3], "pen": pen}) + "\n")
    new_rows = [json.loads(line) for line in (new / "val.jsonl").read_text().splitlines()]
    old_rows = [json.loads(line) for line in (trained[1] / "val.jsonl").read_text().splitlines()]

    def accuracy(version: int, rows: list[dict]) -> float:
        labels = predictions(tmp_path / "models", version, [{"pen": row["pen"]} for row in rows])
        return float(np.mean([a == row["label"] for a, row in zip(labels, rows, strict=True)]))

    before_new, before_old = accuracy(1, new_rows), accuracy(1, old_rows)
    # alpha 0.05: the gate calibrates on ~120 inputs here, so no p-value falls below the default's
    out = update(bundle, new, TrainConfig(epochs=10, batch_size=16, reliability_alpha=0.05))
    manifest = verify_bundle(out)
    assert out.name == "2" and [s.step for s in manifest.history] == ["train", "update"]
    assert manifest.history[-1].trained == ["pen"] and manifest.history[-1].from_version == 1
    assert manifest.history[-1].config["replayed_inputs"] == ["pen"]  # the bundle kept them
    assert manifest.growth.replay_kind == "features+inputs"
    old = read_manifest(bundle)
    assert [s.temperature for s in manifest.modalities.values()] == [
        s.temperature for s in old.modalities.values()
    ]  # calibrated on the old validation split, not on the new data's
    assert manifest.files["pen.onnx"] != read_manifest(bundle).files["pen.onnx"]  # it trained
    assert accuracy(2, new_rows) > before_new  # the new writer is read better
    assert accuracy(2, old_rows) >= before_old - 0.1  # and the old ones not much worse
    from anymodal.evaluation.growth import TestSplit, flagged

    shares = flagged(out, TestSplit(trained[1] / "test.jsonl", out), "pen")
    assert "clean" in shares and "pen:dead:3" in shares and all(0 <= v <= 1 for v in shares.values())
    assert max(shares.values()) > shares["clean"]  # the updated gate still sees broken inputs
    kept = Reservoir.load(out / manifest.growth.replay, manifest.growth.replay_size)
    assert len(kept.inputs["pen"]) == len(kept.features["pen"]) == 64

    plain = update(bundle, new, TrainConfig(epochs=2, batch_size=16), replay_inputs=False)
    assert verify_bundle(plain).history[-1].config["replayed_inputs"] == []


def test_the_readme_grow_commands_are_valid_command_lines() -> None:
    """Each command of the README's "Grow a model" block parses with the real CLI (running them
    takes the real data and minutes: the tests above run the same functions on a tiny model)."""
    import shlex

    import typer
    from anymodal.service.cli import app

    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Grow a model") :]
    block = section[
        section.index("```bash") + len("```bash") : section.index("```", section.index("```bash") + 7)
    ]
    commands = [shlex.split(line) for line in block.strip().splitlines() if line and not line.startswith("#")]
    assert [c[1] for c in commands] == [
        "build-digits",
        "train",
        "extend",
        "build-digits",
        "update",
        "compare",
    ]
    group = typer.main.get_command(app)
    for command in commands:
        name, *args = command[1:]
        group.commands[name].make_context(name, list(args))  # raises on an unknown option or argument
        for path in (a for a in args if a.startswith("training/")):
            assert (ROOT / path).is_file(), path


def test_extend_and_update_from_the_command_line(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    from anymodal.service.cli import app
    from typer.testing import CliRunner

    bundle = tmp_path / "models" / "grow" / "1"
    shutil.copytree(trained[0], bundle)
    added = tmp_path / "text.toml"
    added.write_text(
        'name = "grow"\n[modalities.text]\nkind = "text"\nmax_length = 8\n'
        "[model]\nfeature_dim = 8\nwidth = 4\n[train]\nepochs = 2\nbatch_size = 16\n"
    )
    runner = CliRunner()
    done = runner.invoke(app, ["extend", str(bundle), "--add", str(added), "--data", str(trained[1])])
    assert done.exit_code == 0, done.output
    assert "version 2" in done.output and verify_bundle(bundle.parent / "2").history[-1].step == "extend"
    done = runner.invoke(
        app, ["update", str(bundle.parent / "2"), "--data", str(trained[1]), "--epochs", "2"]
    )
    assert done.exit_code == 0, done.output
    assert verify_bundle(bundle.parent / "3").history[-1].trained == ["pen", "text"]
    numbers = tmp_path / "compare.json"
    done = runner.invoke(
        app,
        ["compare", str(bundle), str(bundle.parent / "3"), "--test", str(trained[1] / "test.jsonl"),
         "--json", str(numbers)],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    found = json.loads(numbers.read_text())[str(trained[1] / "test.jsonl")]
    assert set(found) == {"pen", "text", "pen+text"} and found["pen"]["samples"] == 30
    assert "before" not in found["text"]  # version 1 has no text encoder
    assert (
        found["pen"]["difference"]["low"]
        <= found["pen"]["difference"]["mean"]
        <= found["pen"]["difference"]["high"]
    )
    assert "pen+text" in done.output and "after - before" in done.output
    backwards = runner.invoke(
        app, ["compare", str(bundle.parent / "3"), str(bundle), "--test", str(trained[1] / "test.jsonl")]
    )
    assert backwards.exit_code != 0 and "lacks text" in backwards.output
    refused = runner.invoke(
        app, ["extend", str(bundle), "--add", str(added), "--data", str(tmp_path / "none")]
    )
    assert refused.exit_code == 2 and "extend:" in refused.output
