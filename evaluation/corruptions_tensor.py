"""Held-out tensor corruptions, frozen (see evaluation.corruptions). Signals are vectors of raw
(un-normalized) values; levels are set from the contract's per-element training mean and std
where it has them, from the vector's own statistics where it has not."""

from __future__ import annotations

import numpy as np
from anymodal.service.manifest import TensorContract


def _centre_scale(values: np.ndarray, contract: TensorContract) -> tuple[np.ndarray, np.ndarray]:
    """Per-element training mean and std, or the vector's own where the contract has none."""
    centre = np.full_like(values, values.mean())
    scale = np.full_like(values, float(values.std()) or 1.0)
    if contract.mean is not None:
        centre = np.asarray(contract.mean, np.float64)
    if contract.std is not None:
        scale = np.asarray(contract.std, np.float64)
    return centre, scale


def _chosen(length: int, s: int, rng: np.random.Generator, fractions: tuple[float, ...]) -> np.ndarray:
    """Which channels fail: a random order drawn once, of which severity takes a growing share."""
    return rng.permutation(length)[: max(1, round(length * fractions[s - 1]))]


def _dead(values: np.ndarray, contract: TensorContract, s: int, rng: np.random.Generator) -> np.ndarray:
    """Dead channels reading zero: a quarter, half, then all of them."""
    out = values.copy()
    out[_chosen(len(values), s, rng, (0.25, 0.5, 1.0))] = 0.0
    return out


def _saturated(values: np.ndarray, contract: TensorContract, s: int, rng: np.random.Generator) -> np.ndarray:
    """Channels pinned at the high rail, three training standard deviations above the mean."""
    centre, scale = _centre_scale(values, contract)
    out = values.copy()
    chosen = _chosen(len(values), s, rng, (0.25, 0.5, 1.0))
    out[chosen] = (centre + 3 * scale)[chosen]
    return out


def _uniform(values: np.ndarray, contract: TensorContract, s: int, rng: np.random.Generator) -> np.ndarray:
    """Channels replaced by uniform garbage over the plausible range (mean +- 2 std)."""
    centre, scale = _centre_scale(values, contract)
    garbage = rng.uniform(centre - 2 * scale, centre + 2 * scale)
    out = values.copy()
    chosen = _chosen(len(values), s, rng, (1 / 3, 2 / 3, 1.0))
    out[chosen] = garbage[chosen]
    return out


def _permuted(values: np.ndarray, contract: TensorContract, s: int, rng: np.random.Generator) -> np.ndarray:
    """Miswired channels: the values of a quarter, half, then all channels rotate among themselves."""
    chosen = _chosen(len(values), s, rng, (0.25, 0.5, 1.0))
    out = values.copy()
    out[chosen] = values[np.roll(chosen, 1)]
    return out


def _stuck(values: np.ndarray, contract: TensorContract, s: int, rng: np.random.Generator) -> np.ndarray:
    """A frozen reading: from some point on, every value repeats the last good one."""
    length = len(values)
    anchor = int(rng.integers(length))  # where a reading frozen from the start sticks
    start = length - max(1, round(length * (0.25, 0.5, 1.0)[s - 1]))
    out = values.copy()
    out[start:] = values[start - 1] if start > 0 else values[anchor]
    return out


def _drift(values: np.ndarray, contract: TensorContract, s: int, rng: np.random.Generator) -> np.ndarray:
    """Calibration drift: a gain and an offset in the same direction, growing with severity."""
    _, scale = _centre_scale(values, contract)
    gain, offset = ((1.25, 1.0), (2.0, 3.0), (4.0, 8.0))[s - 1]
    if rng.random() < 0.5:
        return values * gain + offset * scale
    return values / gain - offset * scale


def _spikes(values: np.ndarray, contract: TensorContract, s: int, rng: np.random.Generator) -> np.ndarray:
    """Electrical spikes: single channels jump by ten standard deviations."""
    _, scale = _centre_scale(values, contract)
    chosen = _chosen(len(values), s, rng, (0.05, 0.15, 0.3))
    signs = rng.choice([-1.0, 1.0], size=len(values))
    out = values.copy()
    out[chosen] += 10 * (signs * scale)[chosen]
    return out


FAMILIES = {
    "dead": _dead,
    "saturated": _saturated,
    "uniform": _uniform,
    "permuted": _permuted,
    "stuck": _stuck,
    "drift": _drift,
    "spikes": _spikes,
}
