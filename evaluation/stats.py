"""Statistics for claims over several seeds: means, spreads, paired bootstrap intervals and the
expected calibration error."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float


def paired_bootstrap(a: np.ndarray, b: np.ndarray, samples: int = BOOTSTRAP_SAMPLES) -> Interval:
    """95% interval of mean(a) - mean(b), where a and b are (seeds, n) per-sample outcomes of two
    systems on the same n test samples: the samples are resampled, paired across systems and
    seeds, and the seeds averaged. NaN marks a sample one side does not cover; it is left out.
    The interval covers the test samples' sampling noise; the seeds' spread is reported beside it."""
    difference = (np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean(axis=0)
    difference = difference[~np.isnan(difference)]  # samples only one side covers
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    n = len(difference)
    means = np.array([difference[rng.integers(0, n, n)].mean() for _ in range(samples)])
    low, high = np.percentile(means, [2.5, 97.5])
    return Interval(float(difference.mean()), float(low), float(high))


def seed_spread(values: list[float]) -> tuple[float, float, float]:
    """(mean, min, max) over seeds."""
    return float(np.mean(values)), float(np.min(values)), float(np.max(values))


def expected_calibration_error(scores: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """sum over equal-width confidence bins of |accuracy - mean score| weighted by the bin's share."""
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    which = np.minimum((scores * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - scores[members].mean())
    return float(error)
