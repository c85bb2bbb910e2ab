"""Temperature scaling: one temperature per modality, fitted on validation data, so that each
modality's softmax is calibrated before its entropy weighs it in fusion."""

from __future__ import annotations

from itertools import combinations

import numpy as np
from anymodal.service.fusion import FusionRule, fuse, log_softmax

LOWEST, HIGHEST = 0.05, 20.0


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    log_p = log_softmax(logits.astype(np.float64) / temperature)
    return float(-log_p[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, steps: int = 60) -> float:
    """The T in [0.05, 20] minimizing the negative log-likelihood of softmax(logits / T).

    The NLL is convex in 1/T, so a golden-section search over 1/T finds the minimum."""
    if len(labels) == 0:
        return 1.0
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    low, high = 1.0 / HIGHEST, 1.0 / LOWEST
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = nll(logits, labels, 1.0 / a), nll(logits, labels, 1.0 / b)
    for _ in range(steps):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = nll(logits, labels, 1.0 / a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = nll(logits, labels, 1.0 / b)
    return float(1.0 / ((low + high) / 2.0))


def fit_temperatures(logits: np.ndarray, present: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(M,) temperatures from validation logits (N, M, C), using each modality's present samples."""
    return np.array(
        [fit_temperature(logits[present[:, i], i], labels[present[:, i]]) for i in range(logits.shape[1])]
    )


def fit_count_temperatures(
    logits: np.ndarray, present: np.ndarray, labels: np.ndarray, temperatures: np.ndarray, rule: FusionRule
) -> np.ndarray:
    """(M,) temperatures of the fused logits of k = 1..M modalities, each fitted on validation
    samples fused from every subset of k of the modalities they have."""
    count = logits.shape[1]
    fitted = []
    for k in range(1, count + 1):
        fused_logits, fused_labels = [], []
        for subset in combinations(range(count), k):
            chosen = np.zeros(count, dtype=bool)
            chosen[list(subset)] = True
            rows = (present & chosen).sum(axis=1) == k
            if rows.any():
                mask = np.broadcast_to(chosen, (int(rows.sum()), count))
                fused_logits.append(fuse(logits[rows], mask, temperatures, rule).logits)
                fused_labels.append(labels[rows])
        fitted.append(
            fit_temperature(np.concatenate(fused_logits), np.concatenate(fused_labels))
            if fused_logits
            else 1.0
        )
    return np.array(fitted)
