"""Evaluation: every modality's logits through the shared head, fused with the service's own fusion
code, for every non-empty subset of modalities, on clean inputs and with one modality corrupted."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch

from service.fusion import Fused, FusionRule, fuse, log_softmax
from service.manifest import InputContract
from training.dataset import Split, featurize
from training.degrade import corrupt

CLEAN = "clean"


@dataclass
class Tensors:
    """A split as the model reads it: inputs (zeros where absent), presence masks and labels."""

    inputs: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_split(cls, split: Split, contracts: dict[str, InputContract]) -> Tensors:
        arrays = featurize(split, contracts)
        return cls(
            inputs={m: torch.from_numpy(a) for m, a in arrays.items()},
            present={m: torch.from_numpy(split.present(m)) for m in contracts},
            labels=torch.from_numpy(split.labels),
        )

    def present_matrix(self, modalities: list[str]) -> np.ndarray:
        return np.stack([self.present[m].numpy() for m in modalities], axis=1)


@torch.no_grad()
def modality_logits(model: torch.nn.Module, data: Tensors, modalities: list[str] | None = None) -> np.ndarray:
    """(N, M, C): each modality's own logits through the head; zeros where it is absent.
    `modalities` defaults to all of the model's."""
    model.eval()
    modalities = model.modalities if modalities is None else modalities
    out = np.zeros((len(data), len(modalities), model.head.out_features), dtype=np.float32)
    for i, m in enumerate(modalities):
        rows = data.present[m].nonzero().squeeze(1)
        for chunk in rows.split(512):
            out[chunk.numpy(), i] = model.logits(m, data.inputs[m][chunk]).numpy()
    return out


def fused_accuracy(
    logits: np.ndarray,
    data: Tensors,
    rule: FusionRule,
    temperatures: np.ndarray | None = None,
    subset: list[int] | None = None,
) -> float:
    """Accuracy of the fused prediction over the samples with at least one modality of `subset`
    (indices into the logits' modality axis; all of them by default)."""
    fused, rows = fuse_subset(logits, data, rule, temperatures, subset)
    if not rows.any():
        return float("nan")
    return float((fused.logits.argmax(1) == data.labels.numpy()[rows]).mean())


def fused_nll(
    logits: np.ndarray, data: Tensors, rule: FusionRule, temperatures: np.ndarray | None = None
) -> float:
    """Mean negative log-likelihood of the fused prediction, every modality each sample has."""
    fused, rows = fuse_subset(logits, data, rule, temperatures)
    log_p = log_softmax(fused.logits.astype(np.float64))
    return float(-log_p[np.arange(len(log_p)), data.labels.numpy()[rows]].mean())


def fuse_subset(
    logits: np.ndarray,
    data: Tensors,
    rule: FusionRule,
    temperatures: np.ndarray | None = None,
    subset: list[int] | None = None,
) -> tuple[Fused, np.ndarray]:
    """Fuse the modalities of `subset`; returns the fusion and the mask of the samples it covers."""
    count = logits.shape[1]
    subset = list(range(count)) if subset is None else subset
    present = np.zeros((len(data), count), dtype=bool)
    modalities = list(data.present)
    for i in subset:
        present[:, i] = data.present[modalities[i]].numpy()
    rows = present.any(axis=1)
    if not rows.any():
        return fuse(logits[:1], np.ones((1, count), bool), temperatures, rule), rows
    return fuse(logits[rows], present[rows], temperatures, rule), rows


def subsets(modalities: list[str]) -> list[tuple[str, list[int]]]:
    """Every non-empty subset, smallest first: ("audio+image", [0, 1]), ..."""
    return [
        ("+".join(modalities[i] for i in chosen), list(chosen))
        for size in range(1, len(modalities) + 1)
        for chosen in combinations(range(len(modalities)), size)
    ]


def corrupted_logits(
    model: torch.nn.Module,
    split: Split,
    data: Tensors,
    contracts: dict[str, InputContract],
    clean: np.ndarray,
    seed: int,
) -> dict[str, np.ndarray]:
    """For each modality m, the logits with m's inputs severely corrupted and the others clean."""
    out: dict[str, np.ndarray] = {}
    for i, m in enumerate(model.modalities):
        rng = np.random.default_rng([seed, i])
        signals = [None if s is None else corrupt(s, contracts[m], rng) for s in split.signals[m]]
        damaged = Split(name=split.name, labels=split.labels, signals={m: signals})
        inputs = featurize(damaged, {m: contracts[m]})[m]
        one = Tensors({m: torch.from_numpy(inputs)}, {m: data.present[m]}, data.labels)
        logits = clean.copy()
        logits[:, i] = modality_logits(model, one, [m])[:, 0]
        out[m] = logits
    return out


def robustness_matrix(
    clean: np.ndarray,
    corrupted: dict[str, np.ndarray],
    data: Tensors,
    rule: FusionRule,
    temperatures: np.ndarray | None,
) -> dict[str, dict[str, float]]:
    """{subset: {"clean": acc, "<m> corrupted": acc, ...}} for every non-empty subset."""
    modalities = list(data.present)
    conditions = {CLEAN: clean} | {f"{m} corrupted": logits for m, logits in corrupted.items()}
    return {
        name: {
            condition: fused_accuracy(logits, data, rule, temperatures, chosen)
            for condition, logits in conditions.items()
        }
        for name, chosen in subsets(modalities)
    }


def own_accuracy(logits: np.ndarray, data: Tensors) -> dict[str, float]:
    """Each encoder's accuracy through the head on its own: the laziness diagnostic.
    NaN for a modality no sample has."""
    labels = data.labels.numpy()
    accuracy = {}
    for i, m in enumerate(data.present):
        rows = data.present[m].numpy()
        hits = logits[rows, i].argmax(1) == labels[rows]
        accuracy[m] = float(hits.mean()) if rows.any() else float("nan")
    return accuracy
