"""The JSONL dataset format: any subset of modalities per row, and bad rows reported with file
and line, stopping the run unless the user asks to skip them."""

import json
from pathlib import Path

import numpy as np
import pytest
from anymodal.service.manifest import AudioContract, ImageContract, TensorContract, TextContract
from anymodal.training.dataset import DatasetError, fit_normalization, load_splits, read_split
from anymodal.training.evaluate import Tensors
from PIL import Image

from tests.helpers import tone, wav_bytes

MODALITIES = {
    "image": ImageContract(width=8, height=8),
    "audio": AudioContract(sample_rate=8000, max_seconds=0.5, n_mels=8),
    "text": TextContract(max_length=16),
    "pen": TensorContract(length=4),
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    Image.new("L", (16, 16), 200).save(tmp_path / "ok.png")
    (tmp_path / "ok.wav").write_bytes(wav_bytes(tone(0.3, 16000), 16000))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "long.wav").write_bytes(wav_bytes(tone(2.0, 8000), 8000))
    (tmp_path / "empty.wav").write_bytes(wav_bytes(np.zeros(0, dtype=np.float32), 8000))
    return tmp_path


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


GOOD = [
    {"label": 0, "image": "ok.png", "audio": "ok.wav", "text": "zero", "pen": [1, 2, 3, 4]},
    {"label": "1", "text": "one", "id": "no-image-no-audio"},
    {"label": 1, "image": "ok.png", "pen": [0, 0, 0, 1]},
    {"label": 0, "audio": "ok.wav", "text": None},
]


def test_any_subset_of_modalities_per_row(folder: Path) -> None:
    split, labels = read_split(_write(folder / "train.jsonl", GOOD), MODALITIES, None, False)
    assert labels == ["0", "1"]
    assert split.labels.tolist() == [0, 1, 1, 0]
    assert split.present("image").tolist() == [True, False, True, False]
    assert split.present("audio").tolist() == [True, False, False, True]
    assert split.present("text").tolist() == [True, True, False, False]  # null counts as absent
    assert split.signals["image"][0].shape == (8, 8)
    assert split.signals["audio"][0].shape == (round(0.3 * 8000),)  # resampled from 16 kHz
    tensors = Tensors.from_split(split, fit_normalization(MODALITIES, split))
    assert tensors.inputs["audio"].shape == (4, 8, MODALITIES["audio"].frames)
    assert tensors.inputs["text"].dtype == np.int64 or str(tensors.inputs["text"].dtype) == "torch.int64"
    assert float(tensors.inputs["image"][1].abs().sum()) == 0.0  # absent: zeros, masked out


BAD = [
    ('{"label": 0, "image": "missing.png"}', "missing.png"),
    ('{"label": 0, "image": "broken.png"}', "image: is a damaged or truncated image"),
    ('{"label": 7, "text": "seven"}', "'7' is not one of the model's labels"),
    ('{"label": 0, "id": "x"}', "has none of the model's modalities"),
    ('{"label": 0, "text": ', "is not valid JSON"),
    ('{"text": "zero"}', "label: is missing"),
    ('{"label": 0, "audio": "empty.wav"}', "audio: holds no samples"),
    ('{"label": 0, "pen": [1, 2, "x", 4]}', "pen[2]: must be a number"),
    ('{"label": 0, "pen": [1, 2, 3]}', "pen: has 3 numbers"),
    ('{"label": 0, "text": "' + "x" * 40 + '"}', "text: is 40 bytes"),
]


def test_bad_rows_stop_the_run_with_file_and_line(folder: Path) -> None:
    path = _write(folder / "val.jsonl", [GOOD[0]] + [row for row, _ in BAD])
    with pytest.raises(DatasetError) as caught:
        read_split(path, MODALITIES, ["0", "1"], skip_bad_rows=False)
    message = str(caught.value)
    assert f"{len(BAD)} bad row(s) of {len(BAD) + 1}" in message
    assert "--skip-bad-rows" in message
    for line, (_, reason) in enumerate(BAD, start=2):
        assert f"{path}:{line}: " in message
        assert reason in message, reason


def test_a_recording_longer_than_the_contract_is_cropped_as_the_service_crops_it(folder: Path) -> None:
    path = _write(folder / "val.jsonl", ['{"label": 0, "audio": "long.wav"}'])
    split, _ = read_split(path, MODALITIES, ["0", "1"], skip_bad_rows=False)
    assert len(split.signals["audio"][0]) == MODALITIES["audio"].max_samples


def test_skipping_bad_rows_keeps_the_good_ones_and_counts_the_rest(folder: Path) -> None:
    path = _write(folder / "val.jsonl", [GOOD[0], BAD[0][0], GOOD[1], BAD[2][0]])
    split, _ = read_split(path, MODALITIES, ["0", "1"], skip_bad_rows=True)
    assert len(split) == 2
    assert [row.line for row in split.skipped] == [2, 4]


def test_load_splits_takes_labels_from_train(folder: Path) -> None:
    _write(folder / "train.jsonl", GOOD)
    _write(folder / "val.jsonl", GOOD)
    _write(folder / "test.jsonl", [{"label": 2, "text": "two"}])
    with pytest.raises(DatasetError, match="'2' is not one of the model's labels"):
        load_splits(folder, MODALITIES, None, skip_bad_rows=False)


def test_a_modality_no_training_sample_has_is_an_error(folder: Path) -> None:
    rows = [{"label": 0, "text": "zero"}, {"label": 1, "text": "one"}]
    for name in ("train", "val", "test"):
        _write(folder / f"{name}.jsonl", rows)
    with pytest.raises(DatasetError, match="no sample has the modality 'image'"):
        load_splits(folder, MODALITIES, None, skip_bad_rows=False)
