"""What a bundle keeps so that it can grow later (`anymodal extend`, `anymodal update`):

- the head's HGM projector P, which remembers the head directions the modalities trained so far
  use: a later step projects every head update through it, so the old modalities keep their
  predictions while the head learns something new;
- a replay reservoir: for each modality, a uniform sample of at most `size` training samples, kept
  as the encoder's features (what the head reads) with their labels. A later step replays them
  through the head, a second guard against forgetting. Their encoder inputs (user data) are kept
  too only when the training config says so (`replay_inputs`): then `update` can replay them
  through the encoders it trains, which is what keeps an encoder from forgetting;
- the lineage (`GrowthStep`s in the manifest's history).

The head's weights themselves are read back from its ONNX file: the bundle holds them once.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from anymodal.service.manifest import EncoderWeights, GrowthSpec, GrowthStep, InputContract, Manifest
from anymodal.training.config import ModelConfig
from anymodal.training.hgm import HeadGradientProjector, HeadOptimizer
from anymodal.training.model import Encoder, build_encoder
from onnx import numpy_helper

PROJECTOR_FILE = "head.projector.npy"
REPLAY_FILE = "replay.npz"
ENCODER_FILE = "{modality}.encoder.pt"


class GrowthError(Exception):
    pass


@dataclass
class Reservoir:
    """Per modality: features (N, D), labels (N,), optionally the encoder inputs (N, ...), and how
    many training samples the sample was drawn from (`seen`), so that merging in new samples keeps
    it uniform over all of them."""

    size: int
    features: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    inputs: dict[str, np.ndarray] = field(default_factory=dict)

    def add(
        self,
        modality: str,
        features: np.ndarray,
        labels: np.ndarray,
        seed: int,
        inputs: np.ndarray | None = None,
    ) -> None:
        """Fold `features` of new training samples (and their `inputs`, if given) into `modality`'s
        sample: each of the seen + new samples is kept with the same probability. Inputs are kept
        only while every sample folded in came with them."""
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
        old_inputs = self.inputs.pop(modality, None)
        if inputs is not None and (old_inputs is not None or old_seen == 0):
            kept = [inputs[new_rows]] if old_inputs is None else [old_inputs[old_rows], inputs[new_rows]]
            self.inputs[modality] = np.concatenate(kept)
        self.seen[modality] = total

    @property
    def kind(self) -> str:
        """What the manifest declares it holds."""
        return "features+inputs" if self.inputs else "features"

    def save(self, path: Path) -> None:
        arrays = {}
        for m in self.features:
            arrays |= {f"{m}.features": self.features[m], f"{m}.labels": self.labels[m]}
            arrays[f"{m}.seen"] = np.array(self.seen[m])
            if m in self.inputs:
                arrays[f"{m}.inputs"] = self.inputs[m]
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
                    if f"{modality}.inputs" in arrays.files:
                        reservoir.inputs[modality] = arrays[f"{modality}.inputs"]
        return reservoir

    def batch(
        self, modalities: list[str], count: int, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` replayed samples drawn uniformly from the reservoirs of `modalities`."""
        pool_x = np.concatenate([self.features[m] for m in modalities])
        pool_y = np.concatenate([self.labels[m] for m in modalities])
        rows = rng.choice(len(pool_x), min(count, len(pool_x)), replace=False)
        return torch.from_numpy(pool_x[rows]), torch.from_numpy(pool_y[rows])


@torch.no_grad()
def encode(encoder: Encoder, inputs: torch.Tensor) -> torch.Tensor:
    """An encoder's features of `inputs`, a chunk at a time (in the mode the caller left it in)."""
    return torch.cat([encoder(chunk) for chunk in inputs.split(512)])


def replay_step(
    head_opt: HeadOptimizer,
    teacher: torch.nn.Linear,
    reservoir: Reservoir,
    modalities: list[str],
    count: int,
    rng: np.random.Generator,
) -> None:
    """Distillation on `count` replayed features of `modalities`: the head learns to answer them as
    `teacher` (the old head) did, through `head_opt` (projected by HGM when it has a projector)."""
    x, _ = reservoir.batch(modalities, count, rng)
    with torch.no_grad():
        target = F.softmax(teacher(x), dim=1)
    head_opt.zero_grad()
    F.kl_div(F.log_softmax(head_opt.head(x), dim=1), target, reduction="batchmean").backward()
    head_opt.step()


class BestEpoch:
    """The model (and projector) of the epoch with the lowest validation NLL, kept aside; and when
    to stop: after `patience` epochs without a lower one."""

    def __init__(self, model: torch.nn.Module, projector: HeadGradientProjector | None, patience: int):
        self.model, self.projector, self.patience = model, projector, patience
        self.nll, self.stale = math.inf, 0
        self.state: dict | None = None
        self.projection: torch.Tensor | None = None

    def record(self, nll: float) -> bool:
        """Note an epoch's validation NLL; True when training should stop."""
        if nll < self.nll:
            self.nll, self.stale = nll, 0
            self.state = copy.deepcopy(self.model.state_dict())
            self.projection = None if self.projector is None else self.projector.P.clone()
            return False
        self.stale += 1
        return self.stale >= self.patience

    def restore(self) -> None:
        if self.state is not None:
            self.model.load_state_dict(self.state)
            if self.projector is not None and self.projection is not None:
                self.projector.P = self.projection


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
        projector=PROJECTOR_FILE,
        replay=REPLAY_FILE,
        replay_size=reservoir.size,
        replay_kind=reservoir.kind,  # type: ignore[arg-type]
        encoders=encoders,
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
