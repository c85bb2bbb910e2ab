"""The reliability gate: is this input like the clean inputs the encoder was trained on?

Entropy cannot see a broken input: an encoder fed a tone, a blank page or a dead sensor is often
confidently wrong. So each modality's encoder also outputs its *probes* (each layer's activations
averaged over positions, see `training/model.py`), and the gate scores them:

- per probed layer l, the Mahalanobis distance d_l to the nearest class mean, with class means and
  one shared covariance fitted on clean *training* inputs (Lee et al., NeurIPS 2018);
- the score s = mean_l log((d_l + f_l) / (median_l + f_l)), where median_l is d_l's median on
  clean *validation* inputs, so that every layer counts on the same scale, and f_l a floor of
  1% of the layer's width (a squared distance's typical size is its width): without it, data
  whose inputs repeat exactly (a median near 0) would turn rounding noise into huge scores;
- the p-value of s against the scores of the clean validation inputs (conformal): the share of
  them scoring at least as high. An input whose p-value is below the manifest's `alpha` is
  unreliable: it is left out of the fusion.

One implementation, used by training (to fit it and to evaluate) and by the service.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise
from pathlib import Path

import numpy as np

# Added to the covariance's diagonal, so that it inverts well even when the inputs repeat exactly:
# a share of its mean variance, and a share of the probes' mean square (their scale).
SHRINKAGE = 1e-3
SCALE_FLOOR = 1e-4
SCORE_TOLERANCE = 1e-6  # scores closer than this are equal: float32 kernels differ by more
FLOOR_PER_DIMENSION = 0.01  # of a layer's squared distances, see the module's docstring


@dataclass(frozen=True)
class Layer:
    means: np.ndarray  # (classes, width)
    precision: np.ndarray  # (width, width), inverse of the shared covariance
    median: float  # median distance of clean validation inputs

    def distances(self, probes: np.ndarray) -> np.ndarray:
        """(B,) squared Mahalanobis distance of each row to its nearest class mean:
        x P x - 2 x P mu_c + mu_c P mu_c, with P symmetric."""
        x = probes.astype(np.float64)
        projected = x @ self.precision
        quadratic = (projected * x).sum(axis=1)
        return np.maximum(quadratic[:, None] - 2 * projected @ self.means.T + self.offsets[None], 0.0).min(
            axis=1
        )

    @cached_property
    def offsets(self) -> np.ndarray:
        return ((self.means @ self.precision) * self.means).sum(axis=1)


@dataclass(frozen=True)
class ReliabilityModel:
    layers: list[Layer]
    calibration: np.ndarray  # sorted scores of the clean validation inputs

    @property
    def widths(self) -> list[int]:
        return [layer.means.shape[1] for layer in self.layers]

    def score(self, probes: np.ndarray) -> np.ndarray:
        """(B, P) probes -> (B,) scores; higher is less like the clean inputs."""
        if probes.shape[1] != sum(self.widths):
            raise ValueError(f"probes have {probes.shape[1]} columns, the gate expects {sum(self.widths)}")
        return np.log((self.distances(probes) + self._floors) / (self._medians + self._floors)).mean(axis=1)

    def distances(self, probes: np.ndarray) -> np.ndarray:
        """(B, L): every layer's `Layer.distances` at once, in a few array operations whatever the
        number of layers (a request's gate costs microseconds, not a loop of small products):
        the layers' precisions as one block-diagonal matrix, their class means' products stacked."""
        x = probes.astype(np.float64)
        quadratic = np.add.reduceat((x @ self._precision) * x, self._starts, axis=1)  # (B, L)
        cross = (x @ self._cross).reshape(len(x), len(self.layers), -1)  # (B, L, C): x P_l mu_c
        squared = quadratic[:, :, None] - 2 * cross + self._offsets
        return np.maximum(squared, 0.0).min(axis=2)

    @cached_property
    def _starts(self) -> np.ndarray:
        return np.cumsum([0, *self.widths])[:-1]

    @cached_property
    def _precision(self) -> np.ndarray:
        total = sum(self.widths)
        block = np.zeros((total, total))
        for start, layer in zip(self._starts, self.layers, strict=True):
            width = layer.means.shape[1]
            block[start : start + width, start : start + width] = layer.precision
        return block

    @cached_property
    def _cross(self) -> np.ndarray:
        """(P, L * C): column (l, c) holds P_l mu_c in layer l's rows, zeros elsewhere."""
        classes = self.layers[0].means.shape[0]
        cross = np.zeros((sum(self.widths), len(self.layers) * classes))
        for i, (start, layer) in enumerate(zip(self._starts, self.layers, strict=True)):
            width = layer.means.shape[1]
            cross[start : start + width, i * classes : (i + 1) * classes] = layer.precision @ layer.means.T
        return cross

    @cached_property
    def _offsets(self) -> np.ndarray:
        """(L, C): mu_c P_l mu_c."""
        return np.stack([layer.offsets for layer in self.layers])

    @cached_property
    def _floors(self) -> np.ndarray:
        return FLOOR_PER_DIMENSION * np.array(self.widths, dtype=np.float64)

    @cached_property
    def _medians(self) -> np.ndarray:
        return np.array([layer.median for layer in self.layers])

    def p_value(self, scores: np.ndarray) -> np.ndarray:
        """(1 + #{calibration scores >= s}) / (1 + n): the conformal p-value of each score. The
        calibration scores come from torch, the served ones from onnxruntime: a difference within
        SCORE_TOLERANCE is rounding, so it counts as a tie."""
        n = len(self.calibration)
        at_least = n - np.searchsorted(self.calibration, scores - SCORE_TOLERANCE, side="left")
        return (1 + at_least) / (1 + n)

    def save(self, path: Path) -> None:
        arrays = {"calibration": self.calibration, "widths": np.array(self.widths)}
        for i, layer in enumerate(self.layers):
            arrays |= {f"means_{i}": layer.means, f"precision_{i}": layer.precision}
            arrays[f"median_{i}"] = np.array(layer.median)
        with path.open("wb") as stream:
            np.savez(stream, **arrays)

    @classmethod
    def load(cls, path: Path) -> ReliabilityModel:
        with np.load(path, allow_pickle=False) as arrays:
            layers = [
                Layer(arrays[f"means_{i}"], arrays[f"precision_{i}"], float(arrays[f"median_{i}"]))
                for i in range(len(arrays["widths"]))
            ]
            return cls(layers, np.sort(arrays["calibration"]))


def fit_reliability(
    train_probes: np.ndarray, train_labels: np.ndarray, val_probes: np.ndarray, widths: list[int]
) -> ReliabilityModel:
    """Fit class means and shared covariances on clean training probes, then the layer medians
    and the calibration scores on clean validation probes."""
    if len(val_probes) == 0:
        raise ValueError("the reliability gate needs validation inputs to calibrate on")
    bounds = np.cumsum([0, *widths])
    classes = np.unique(train_labels)
    layers = []
    for a, b in pairwise(bounds):
        x = train_probes[:, a:b].astype(np.float64)
        means = np.stack([x[train_labels == c].mean(axis=0) for c in classes])
        centred = x - means[np.searchsorted(classes, train_labels)]
        covariance = centred.T @ centred / len(x)
        ridge = (
            SHRINKAGE * np.trace(covariance) / len(covariance) + SCALE_FLOOR * float(np.mean(x**2)) + 1e-12
        )
        covariance += ridge * np.eye(len(covariance))
        layer = Layer(means, np.linalg.inv(covariance), 1.0)
        median = float(np.median(layer.distances(val_probes[:, a:b])))
        layers.append(Layer(means, layer.precision, median))
    model = ReliabilityModel(layers, np.zeros(0))
    return ReliabilityModel(layers, np.sort(model.score(val_probes)))


@dataclass(frozen=True)
class Gated:
    usable: np.ndarray  # (B, M) the modalities to fuse
    unreliable: np.ndarray  # (B, M) present, but failed the gate
    reliable: np.ndarray  # (B,) False where every present modality failed and all were fused anyway


def gate(present: np.ndarray, p_values: np.ndarray, alphas: np.ndarray) -> Gated:
    """The gate's rule, for the service and for evaluation alike. `p_values` (B, M) holds NaN where
    a modality has no gate (or is absent); `alphas` (M,) are the thresholds. A present modality
    with p < alpha is unreliable and not fused, unless every present modality is: then all of them
    are fused, and the answer is flagged as not reliable."""
    present = np.asarray(present, dtype=bool)
    with np.errstate(invalid="ignore"):
        unreliable = present & (np.asarray(p_values, dtype=np.float64) < np.asarray(alphas)[None, :])
    usable = present & ~unreliable
    none_left = ~usable.any(axis=1) & present.any(axis=1)
    usable[none_left] = present[none_left]
    return Gated(usable=usable, unreliable=unreliable, reliable=~none_left)
