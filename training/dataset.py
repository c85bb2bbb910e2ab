"""Datasets in the project's JSONL format: one file per split, one sample per line,

    {"label": 7, "image": "images/0001.png", "audio": "audio/0001.wav", "text": "sieben"}

with any subset of the model's modalities per sample. Kinds: `image` (path to an image file),
`audio` (path to a WAV file), `text` (a string), `tensor` (a list of numbers). Paths are relative to
the JSONL file's folder. Keys that are not modalities of the model (ids, provenance) are ignored.

Inputs are decoded with the service's own decoding, so training sees exactly what serving sees.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from anymodal.service.decoding import InputError, decode
from anymodal.service.features import features, input_dtype, input_shape, log_mel
from anymodal.service.manifest import (
    AudioContract,
    ImageContract,
    InputContract,
    TensorContract,
)

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class BadRow:
    path: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


class DatasetError(Exception):
    pass


@dataclass
class Split:
    """One split, decoded: per modality the decoded signal of each sample (None where absent)."""

    name: str
    labels: np.ndarray  # (N,) int64 indices into the label list
    signals: dict[str, list[object | None]]
    skipped: list[BadRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def present(self, modality: str) -> np.ndarray:
        return np.array([signal is not None for signal in self.signals[modality]], dtype=bool)


def decode_value(value: object, contract: InputContract, field: str, folder: Path) -> object:
    """One JSONL value -> its decoded signal; image and audio values are paths of files, read
    relative to `folder`, then decoded exactly as the service decodes request bytes."""
    if isinstance(contract, ImageContract | AudioContract):
        if not isinstance(value, str) or not value:
            raise InputError(
                field, f"must be the path of a{'n image' if contract.kind == 'image' else 'n audio'} file"
            )
        path = folder / value
        try:
            value = path.read_bytes()
        except OSError as error:
            raise InputError(field, f"cannot read {path} ({error.strerror})") from None
    return decode(value, contract, field)


def read_split(
    path: Path,
    modalities: dict[str, InputContract],
    labels: list[str] | None,
    skip_bad_rows: bool,
) -> tuple[Split, list[str]]:
    """Read and decode one JSONL split. `labels=None` accepts every label (the training split names
    them, sorted); otherwise a row with another label is bad. Returns the split and the labels."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    rows: list[tuple[str, dict[str, object]]] = []
    bad: list[BadRow] = []
    ignored: Counter[str] = Counter()
    with path.open(encoding="utf-8") as stream:
        for number, text in enumerate(stream, start=1):
            if not text.strip():
                continue
            try:
                label, signals = _parse_row(text, modalities, labels, path.parent, ignored)
            except InputError as error:
                bad.append(BadRow(path, number, str(error)))
                continue
            rows.append((label, signals))
    if ignored:
        log.info("%s: ignored keys that are not modalities: %s", path, dict(ignored))
    if bad and not skip_bad_rows:
        shown = "\n".join(f"  {row}" for row in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise DatasetError(
            f"{path}: {len(bad)} bad row(s) of {len(bad) + len(rows)}:\n{shown}{more}\n"
            "Fix them, or pass --skip-bad-rows to train without them."
        )
    if bad:
        log.warning("%s: skipped %d bad row(s) of %d", path, len(bad), len(bad) + len(rows))
        for row in bad:
            log.warning("  skipped %s", row)
    if not rows:
        raise DatasetError(f"{path}: no usable rows")
    names = labels if labels is not None else sorted({label for label, _ in rows}, key=_label_order)
    index = {name: i for i, name in enumerate(names)}
    split = Split(
        name=path.stem,
        labels=np.array([index[label] for label, _ in rows], dtype=np.int64),
        signals={m: [signals.get(m) for _, signals in rows] for m in modalities},
        skipped=bad,
    )
    return split, names


def _label_order(label: str) -> tuple[int, float | str]:
    """Numeric labels sort by value, the rest alphabetically after them."""
    try:
        return (0, float(label))
    except ValueError:
        return (1, label)


def _parse_row(
    text: str,
    modalities: dict[str, InputContract],
    labels: list[str] | None,
    folder: Path,
    ignored: Counter[str],
) -> tuple[str, dict[str, object]]:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError("row", f"is not valid JSON ({error.msg})") from None
    if not isinstance(row, dict):
        raise InputError("row", "must be a JSON object")
    if "label" not in row:
        raise InputError("label", "is missing")
    raw_label = row["label"]
    if isinstance(raw_label, bool) or not isinstance(raw_label, str | int):
        raise InputError("label", f"must be a string or an integer, not {raw_label!r}")
    label = str(raw_label)
    if labels is not None and label not in labels:
        raise InputError("label", f"{label!r} is not one of the model's labels {labels}")
    ignored.update(key for key in row if key != "label" and key not in modalities)
    signals = {
        name: decode_value(row[name], contract, name, folder)
        for name, contract in modalities.items()
        if row.get(name) is not None
    }
    if not signals:
        raise InputError("row", f"has none of the model's modalities {list(modalities)}")
    return label, signals


def load_splits(
    folder: Path,
    modalities: dict[str, InputContract],
    labels: list[str] | None,
    skip_bad_rows: bool,
) -> tuple[dict[str, Split], list[str]]:
    """Read `train.jsonl`, `val.jsonl` and `test.jsonl` from `folder`."""
    train, names = read_split(folder / "train.jsonl", modalities, labels, skip_bad_rows)
    splits = {"train": train}
    for name in SPLITS[1:]:
        splits[name], _ = read_split(folder / f"{name}.jsonl", modalities, names, skip_bad_rows)
    for name, split in splits.items():
        for modality in modalities:
            if name != "test" and not split.present(modality).any():
                raise DatasetError(f"{folder / name}.jsonl: no sample has the modality {modality!r}")
    return splits, names


def fit_normalization(contracts: dict[str, InputContract], train: Split) -> dict[str, InputContract]:
    """Contracts with mean and std measured on the training split's present inputs."""
    fitted: dict[str, InputContract] = {}
    for name, contract in contracts.items():
        present = [s for s in train.signals[name] if s is not None]
        match contract:
            case ImageContract():
                values = np.stack(present).astype(np.float64) / 255.0
                fitted[name] = contract.model_copy(
                    update={"mean": float(values.mean()), "std": float(values.std()) + 1e-6}
                )
            case AudioContract():
                values = np.stack([log_mel(s, contract) for s in present])  # type: ignore[arg-type]
                fitted[name] = contract.model_copy(
                    update={"mean": float(values.mean()), "std": float(values.std()) + 1e-6}
                )
            case TensorContract():
                values = np.stack(present).astype(np.float64)  # type: ignore[arg-type]
                fitted[name] = contract.model_copy(
                    update={"mean": values.mean(0).tolist(), "std": (values.std(0) + 1e-6).tolist()}
                )
            case _:
                fitted[name] = contract
    return fitted


def featurize(split: Split, contracts: dict[str, InputContract]) -> dict[str, np.ndarray]:
    """Encoder inputs for every sample: (N, ...) per modality, zeros where the modality is absent."""
    arrays: dict[str, np.ndarray] = {}
    for name, contract in contracts.items():
        signals = split.signals[name]
        batch = np.zeros((len(signals), *input_shape(contract)), dtype=input_dtype(contract))
        for i, signal in enumerate(signals):
            if signal is not None:
                batch[i] = features(signal, contract)
        arrays[name] = batch
    return arrays
