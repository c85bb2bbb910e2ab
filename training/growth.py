"""What a bundle keeps so that it can grow later (`anymodal extend`, `anymodal update`):

- the head's HGM projector P, which remembers the head directions the modalities trained so far
  use: a later step projects every head update through it, so the old modalities keep their
  predictions while the head learns something new;
- a replay reservoir: for each modality, a uniform sample of at most `size` training samples, kept
  as the encoder's features (what the head reads) with their labels, never as raw inputs. A later
  step replays them through the head, a second guard against forgetting;
- the lineage (`GrowthStep`s in the manifest's history).

The head's weights themselves are read back from its ONNX file: the bundle holds them once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import torch
from anymodal.service.manifest import EncoderWeights, GrowthSpec, GrowthStep, InputContract, Manifest
from anymodal.training.config import ModelConfig
from anymodal.training.hgm import HeadGradientProjector
from anymodal.training.model import Encoder, build_encoder
from onnx import numpy_helper

PROJECTOR_FILE = "head.projector.npy"
REPLAY_FILE = "replay.npz"
ENCODER_FILE = "{modality}.encoder.pt"


class GrowthError(Exception):
    pass


@dataclass
class Reservoir:
    """Per modality: features (N, D), labels (N,), and how many training samples the sample was
    drawn from (`seen`), so that merging in new samples keeps it uniform over all of them."""

    size: int
    features: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)

    def add(self, modality: str, features: np.ndarray, labels: np.ndarray, seed: int) -> None:
        """Fold `features` of new training samples into `modality`'s sample: each of the seen + new
        samples is kept with the same probability."""
        rng = np.random.default_rng(seed)
        old_x = self.features.get(modality, np.zeros((0, features.shape[1]), np.float32))
        old_y = self.labels.get(modality, np.zeros(0, np.int64))
        old_seen = self.seen.get(modality, 0)
        total = old_seen + len(features)
        keep = min(self.size, total)
        # How many of the kept come from the old sample: hypergeometric, as a uniform draw would give.
        from_old = min(len(old_x), int(rng.hypergeometric(old_seen, len(features), keep))) if keep else 0
        old_rows = rng.choice(len(old_x), from_old, replace=False)
        new_rows = rng.choice(len(features), min(keep - from_old, len(features)), replace=False)
        self.features[modality] = np.concatenate([old_x[old_rows], features[new_rows]]).astype(np.float32)
        self.labels[modality] = np.concatenate([old_y[old_rows], labels[new_rows]]).astype(np.int64)
        self.seen[modality] = total

    def save(self, path: Path) -> None:
        arrays = {}
        for m in self.features:
            arrays |= {f"{m}.features": self.features[m], f"{m}.labels": self.labels[m]}
            arrays[f"{m}.seen"] = np.array(self.seen[m])
        with path.open("wb") as stream:
            np.savez(stream, **arrays)

    @classmethod
    def load(cls, path: Path, size: int) -> Reservoir:
        reservoir = cls(size)
        with np.load(path, allow_pickle=False) as arrays:
            for key in arrays.files:
                modality, _, part = key.rpartition(".")
                if part == "features":
                    reservoir.features[modality] = arrays[key]
                    reservoir.labels[modality] = arrays[f"{modality}.labels"]
                    reservoir.seen[modality] = int(arrays[f"{modality}.seen"])
        return reservoir

    def batch(
        self, modalities: list[str], count: int, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` replayed samples drawn uniformly from the reservoirs of `modalities`."""
        pool_x = np.concatenate([self.features[m] for m in modalities])
        pool_y = np.concatenate([self.labels[m] for m in modalities])
        rows = rng.choice(len(pool_x), min(count, len(pool_x)), replace=False)
        return torch.from_numpy(pool_x[rows]), torch.from_numpy(pool_y[rows])


def save_projector(projector: HeadGradientProjector, path: Path) -> None:
    np.save(path, projector.P.numpy())


def load_projector(path: Path, alpha: float) -> HeadGradientProjector:
    matrix = np.load(path, allow_pickle=False)
    projector = HeadGradientProjector(matrix.shape[0] - 1, alpha)
    projector.P = torch.from_numpy(matrix).to(torch.float64)
    return projector


def load_head(bundle: Path, manifest: Manifest) -> torch.nn.Linear:
    """The head as torch, from its ONNX file's weight (classes, D) and bias (classes,)."""
    arrays = {
        i.name: numpy_helper.to_array(i) for i in onnx.load(bundle / manifest.head.file).graph.initializer
    }
    classes, width = len(manifest.labels), manifest.head.feature_dim
    weight = next((a for a in arrays.values() if a.shape == (classes, width)), None)
    bias = next((a for a in arrays.values() if a.shape == (classes,)), None)
    if weight is None or bias is None:
        raise GrowthError(f"{manifest.head.file}: no ({classes}, {width}) weight and ({classes},) bias in it")
    head = torch.nn.Linear(width, classes)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight.copy()))
        head.bias.copy_(torch.from_numpy(bias.copy()))
    return head


def save_encoder(encoder: Encoder, model: ModelConfig, bundle: Path, modality: str) -> EncoderWeights:
    file = ENCODER_FILE.format(modality=modality)
    torch.save(encoder.state_dict(), bundle / file)
    return EncoderWeights(file=file, model=asdict(model))


def load_encoder(bundle: Path, weights: EncoderWeights, contract: InputContract) -> Encoder:
    encoder = build_encoder(contract, ModelConfig(**weights.model))
    encoder.load_state_dict(torch.load(bundle / weights.file, weights_only=True))
    return encoder


def growth_spec(reservoir: Reservoir, encoders: dict[str, EncoderWeights]) -> GrowthSpec:
    return GrowthSpec(
        projector=PROJECTOR_FILE, replay=REPLAY_FILE, replay_size=reservoir.size, encoders=encoders
    )


def step(
    kind: str,
    version: int,
    modalities: list[str],
    trained: list[str],
    samples: dict[str, int],
    config: dict,
    data: dict,
    from_version: int | None = None,
    added: list[str] | None = None,
) -> GrowthStep:
    return GrowthStep(
        step=kind,  # type: ignore[arg-type]
        version=version,
        from_version=from_version,
        modalities=modalities,
        added=added or [],
        trained=trained,
        samples=samples,
        at=datetime.now(UTC).isoformat(timespec="seconds"),
        config=config,
        data=data,
    )
