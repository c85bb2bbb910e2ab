"""Test-time fusion of per-modality logits, per sample, over the modalities that are present.

For each sample and each present modality m (MLA, CVPR 2024, with temperature scaling):
    p_m = softmax(logits_m / T_m),  e_m = -sum_c p_mc log p_mc
    w = softmax(-e) over the present modalities only,  fused = sum_m w_m logits_m / T_m
An absent modality gets weight 0 and does not vote. With every T_m = 1 this is the paper's rule.
Fusing the calibrated logits (divided by T_m) makes a modality that answers alone answer with its
calibrated probability. Several modalities that agree are surer than their weighted average
says, so the fused logits are divided once more by a temperature fitted on validation for each
number of fused modalities (`count_temperatures`, index k-1 for k modalities): the answer's score
then means what it says, and no answer changes its label.
The `mean` rule gives every present modality the same weight (the plain-averaging baseline).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

FusionRule = Literal["entropy", "mean"]
FUSION_RULES: tuple[FusionRule, ...] = ("entropy", "mean")


@dataclass(frozen=True)
class Fused:
    logits: np.ndarray  # (B, C) fused logits
    weights: np.ndarray  # (B, M) fusion weights, 0 for absent modalities, rows sum to 1
    entropies: np.ndarray  # (B, M) entropy of each modality's calibrated prediction, NaN if absent


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.exp(log_softmax(logits, axis))


def entropy(logits: np.ndarray, temperature: np.ndarray | float = 1.0) -> np.ndarray:
    """Entropy (nats) of softmax(logits / T) over the last axis; finite for any finite logits."""
    log_p = log_softmax(np.asarray(logits, dtype=np.float64) / temperature)
    return -(np.exp(log_p) * log_p).sum(axis=-1)


def fuse(
    logits: np.ndarray,
    present: np.ndarray,
    temperatures: np.ndarray | None = None,
    rule: FusionRule = "entropy",
    count_temperatures: np.ndarray | None = None,
) -> Fused:
    """Fuse `logits` (B, M, C) where `present` (B, M) marks the modalities each sample has.

    `temperatures` (M,) and `count_temperatures` (M,) default to all ones. Every sample needs at
    least one present modality; the logits of absent modalities are ignored whatever they hold.
    """
    logits = np.asarray(logits, dtype=np.float64)
    present = np.asarray(present, dtype=bool)
    if logits.ndim != 3 or present.shape != logits.shape[:2]:
        raise ValueError(f"logits {logits.shape} must be (B, M, C) and present (B, M), got {present.shape}")
    if not present.any(axis=1).all():
        raise ValueError("every sample needs at least one present modality")
    if rule not in FUSION_RULES:
        raise ValueError(f"unknown fusion rule {rule!r}; use one of {FUSION_RULES}")
    count = logits.shape[1]
    temperatures = np.ones(count) if temperatures is None else np.asarray(temperatures, float)
    logits = np.where(present[..., None], logits, 0.0)  # absent slots may hold anything
    entropies = entropy(logits, temperatures[None, :, None])
    if rule == "entropy":
        scores = np.where(present, -entropies, -np.inf)
        weights = softmax(scores, axis=1)
    else:
        weights = present / present.sum(axis=1, keepdims=True)
    weights = np.where(present, weights, 0.0)
    fused = (weights[..., None] * logits / temperatures[None, :, None]).sum(axis=1)
    if count_temperatures is not None:
        fused /= np.asarray(count_temperatures, float)[present.sum(axis=1) - 1][:, None]
    return Fused(
        logits=fused.astype(np.float32),
        weights=weights.astype(np.float32),
        entropies=np.where(present, entropies, np.nan).astype(np.float32),
    )
