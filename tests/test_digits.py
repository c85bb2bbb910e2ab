"""The bundled benchmark builder, on the real data."""

import hashlib
import json
from pathlib import Path

import pytest
from anymodal.training.digits import DigitsOptions, build_digits, read_pendigits

pytestmark = pytest.mark.shared_data


def _rows(folder: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def built(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    build_digits(shared_data, out, DigitsOptions(limit=60, train_missing=0.2), progress=False)
    return out


def test_splits_pair_modalities_by_label(built: Path) -> None:
    for split in ("train", "val", "test"):
        rows = _rows(built, split)
        assert len(rows) == 60
        for row in rows:
            assert row["source"]["fsdd"].startswith(f"{row['label']}_")
            for key in ("image", "audio"):
                if key in row:
                    assert (built / row[key]).is_file()
            if "pen" in row:
                assert len(row["pen"]) == 16 and all(0 <= v <= 100 for v in row["pen"])


def test_test_audio_comes_from_the_held_out_speaker_only(built: Path) -> None:
    speakers = {
        split: {r["source"]["fsdd"].split("_")[1] for r in _rows(built, split)}
        for split in ("train", "val", "test")
    }
    assert speakers["test"] == {"theo"}
    assert speakers["val"] == {"george"}
    assert not {"theo", "george"} & speakers["train"]


def test_a_speaker_can_be_kept_out_and_then_be_the_only_one(shared_data: Path, tmp_path: Path) -> None:
    """The data of `anymodal update`'s benchmark: a base without one voice, then that voice alone,
    its takes split three ways so no recording is in two splits."""
    base, only = tmp_path / "base", tmp_path / "only"
    options = DigitsOptions(limit=40, exclude_speakers=("yweweler",), heard_takes=10)
    build_digits(shared_data, base, options, progress=False)
    build_digits(shared_data, only, DigitsOptions(limit=40, only_speaker="yweweler"), progress=False)
    for split in ("train", "val", "test", "test_heard"):
        assert "yweweler" not in {r["source"]["fsdd"].split("_")[1] for r in _rows(base, split)}
    heard = {r["source"]["fsdd"] for r in _rows(base, "test_heard")}  # takes 40-49 of the training voices
    trained = {r["source"]["fsdd"] for r in _rows(base, "train") if "audio" in r}
    assert {name.split("_")[1] for name in heard} <= {"jackson", "lucas", "nicolas"}
    assert all(int(name.split("_")[2].split(".")[0]) >= 40 for name in heard)
    assert all(int(name.split("_")[2].split(".")[0]) < 40 for name in trained) and heard
    takes = {
        split: {r["source"]["fsdd"] for r in _rows(only, split) if "audio" in r}
        for split in ("train", "val", "test")
    }
    assert all(name.split("_")[1] == "yweweler" for names in takes.values() for name in names)
    assert not (
        takes["train"] & takes["val"] or takes["val"] & takes["test"] or takes["train"] & takes["test"]
    )
    assert all(int(name.split("_")[2].split(".")[0]) >= 40 for name in takes["test"])


def test_validation_is_carved_from_training_files(built: Path) -> None:
    train = {r["source"]["optdigits_row"] for r in _rows(built, "train")}
    val = {r["source"]["optdigits_row"] for r in _rows(built, "val")}
    assert not train & val
    pens = {
        split: {r["source"]["pendigits_row"] for r in _rows(built, split) if "pen" in r}
        for split in ("train", "val")
    }
    assert not pens["train"] & pens["val"]


def test_only_training_samples_miss_modalities_and_none_misses_all(built: Path) -> None:
    train = _rows(built, "train")
    assert any(len({"image", "audio", "text"} - row.keys()) > 0 for row in train)
    assert all({"image", "audio", "text"} & row.keys() for row in train)
    for split in ("val", "test"):
        assert all({"image", "audio", "text", "pen"} <= row.keys() for row in _rows(built, split))


def test_text_is_sometimes_unrelated_to_the_digit(built: Path) -> None:
    languages = [r["source"]["language"] for split in ("train", "val", "test") for r in _rows(built, split)]
    assert "" in languages and len(set(languages)) > 5


def test_deterministic_given_the_seed(shared_data: Path, built: Path, tmp_path: Path) -> None:
    build_digits(shared_data, tmp_path / "again", DigitsOptions(limit=60, train_missing=0.2), progress=False)
    assert _digest(tmp_path / "again") == _digest(built)
    build_digits(shared_data, tmp_path / "other", DigitsOptions(limit=60, seed=1), progress=False)
    assert _digest(tmp_path / "other") != _digest(built)


def test_pendigits_rows_read_as_uci_publishes_them_and_one_hot(tmp_path: Path) -> None:
    coordinates = ",".join(str(v) for v in range(16))
    path = tmp_path / "pendigits.tra"
    path.write_text(f"{coordinates},8\n{coordinates},0000000100\nheader,row\n{coordinates}, 3\n")
    points, labels = read_pendigits(path)
    assert labels.tolist() == [8, 7, 3]
    assert points.shape == (3, 16) and points[0, 15] == 15
