"""Validation during training: every modality's logits through the shared head, fused with the
service's own fusion code. (The test split and the corruption suite are evaluation's, in
`evaluation/`, through the exported bundles.)"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from anymodal.service.fusion import Fused, FusionRule, fuse, log_softmax
from anymodal.service.manifest import InputContract
from anymodal.training.dataset import Split, featurize


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
    logits: np.ndarray,
    data: Tensors,
    rule: FusionRule,
    temperatures: np.ndarray | None = None,
    count_temperatures: np.ndarray | None = None,
) -> float:
    """Mean negative log-likelihood of the fused prediction, every modality each sample has."""
    fused, rows = fuse_subset(logits, data, rule, temperatures, count_temperatures=count_temperatures)
    log_p = log_softmax(fused.logits.astype(np.float64))
    return float(-log_p[np.arange(len(log_p)), data.labels.numpy()[rows]].mean())


def fuse_subset(
    logits: np.ndarray,
    data: Tensors,
    rule: FusionRule,
    temperatures: np.ndarray | None = None,
    subset: list[int] | None = None,
    count_temperatures: np.ndarray | None = None,
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
    return fuse(logits[rows], present[rows], temperatures, rule, count_temperatures), rows


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
