"""The model bundle: the contract between `training/` (which writes it) and `service/` (which serves it).

A bundle is a folder `<repository>/<name>/<version>/` holding `manifest.json`, one ONNX encoder per
modality, the shared head, and the training report. The manifest names every file with its sha256,
each modality's input contract and temperature, the labels, and the fusion rule.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageContract(_Strict):
    """An image is resized to `width` x `height`, converted to `mode`, scaled to [0, 1], normalized."""

    kind: Literal["image"] = "image"
    width: int = Field(32, gt=0, le=1024)
    height: int = Field(32, gt=0, le=1024)
    mode: Literal["L", "RGB"] = "L"
    mean: float = 0.0
    std: float = Field(default=1.0, gt=0)

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3


TooLong = Literal["crop", "reject"]


class AudioContract(_Strict):
    """Audio is down-mixed, resampled to `sample_rate`, padded to `max_seconds`, turned into a
    log-mel spectrogram (`n_mels` x frames) and normalized. A recording longer than `max_seconds`
    is cropped to its loudest `max_seconds` (`too_long="crop"`, the default) or refused
    (`"reject"`); a request can override this with its `audio_too_long` option."""

    kind: Literal["audio"] = "audio"
    sample_rate: int = Field(16000, gt=0)
    max_seconds: float = Field(2.0, gt=0)
    too_long: TooLong = "crop"
    n_fft: int = Field(default=256, gt=0)
    hop_length: int = Field(default=128, gt=0)
    n_mels: int = Field(default=32, gt=0)
    mean: float = 0.0
    std: float = Field(default=1.0, gt=0)

    @property
    def max_samples(self) -> int:
        return round(self.sample_rate * self.max_seconds)

    @property
    def frames(self) -> int:
        return 1 + self.max_samples // self.hop_length


class TextContract(_Strict):
    """Text is encoded as UTF-8 bytes; at most `max_length` bytes are accepted."""

    kind: Literal["text"] = "text"
    max_length: int = Field(64, gt=0, le=4096)


class TensorContract(_Strict):
    """A vector of exactly `length` finite numbers, normalized element-wise."""

    kind: Literal["tensor"] = "tensor"
    length: int = Field(gt=0, le=65536)
    mean: list[float] | None = None
    std: list[float] | None = None

    @model_validator(mode="after")
    def _normalization_matches_length(self) -> TensorContract:
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and len(values) != self.length:
                raise ValueError(f"{name} has {len(values)} values, expected length {self.length}")
        if self.std is not None and min(self.std) <= 0:
            raise ValueError("std values must be positive")
        return self


InputContract = Annotated[
    ImageContract | AudioContract | TextContract | TensorContract, Field(discriminator="kind")
]
Kind = Literal["image", "audio", "text", "tensor"]


class ReliabilitySpec(_Strict):
    """The reliability gate of a modality (see `service/reliability.py`): its fitted statistics
    (an .npz file of the bundle) and the p-value below which an input is unreliable."""

    file: str
    alpha: float = Field(gt=0, lt=1)


class ModalitySpec(_Strict):
    input: InputContract
    file: str
    temperature: float = Field(gt=0)
    reliability: ReliabilitySpec | None = None  # None: no gate, every decodable input is fused

    @property
    def kind(self) -> Kind:
        return self.input.kind


class HeadSpec(_Strict):
    file: str
    feature_dim: int = Field(gt=0)


class EncoderWeights(_Strict):
    """An encoder's trainable state, for `anymodal update` to train it further: its torch
    state_dict (a .pt file) and the encoder sizes (`ModelConfig`) it was built with. The ONNX file
    cannot serve here: batch norm is folded into the convolutions there."""

    file: str
    model: dict[str, Any]


class GrowthSpec(_Strict):
    """What a bundle needs to grow (`anymodal extend`, `anymodal update`; `training/growth.py`):
    the head's HGM projector, which remembers the head directions its modalities use, and a replay
    reservoir: for each modality, a uniform sample of at most `replay_size` training samples as the
    encoder's *features* (its output, what the head reads); their encoder inputs only where the
    training config asked for them (`replay_inputs`, replay_kind features+inputs)."""

    projector: str = Field(description="a .npy file: the (D+1) x (D+1) projector, float64")
    replay: str = Field(
        description="an .npz file: `<modality>.features` (N, D), `<modality>.labels` (N,), and with"
        " replay_kind features+inputs, `<modality>.inputs` (N, ...): the encoder inputs, user data"
    )
    replay_size: int = Field(ge=0)
    replay_kind: Literal["features", "features+inputs"] = "features"
    encoders: dict[str, EncoderWeights] = Field(default_factory=dict, description="by modality")


class GrowthStep(_Strict):
    """One step of a model's lineage: how the version that recorded it came to be."""

    step: Literal["train", "extend", "update"]
    version: int = Field(ge=1, description="the version this step produced")
    from_version: int | None = Field(None, description="the version it grew from; None for `train`")
    modalities: list[str] = Field(description="the modalities the model has after this step")
    added: list[str] = Field(default_factory=list, description="modalities this step added")
    trained: list[str] = Field(description="the modalities whose encoders this step trained")
    samples: dict[str, int] = Field(default_factory=dict, description="samples per split it trained on")
    at: str = Field(description="when, ISO 8601")
    config: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)


class FusionSpec(_Strict):
    rule: Literal["entropy", "mean"] = "entropy"
    # Divides the fused logits of k modalities by temperatures[k - 1] (see `service/fusion.py`);
    # None: no division.
    temperatures: list[Annotated[float, Field(gt=0)]] | None = None


class Manifest(_Strict):
    format_version: Literal[1] = FORMAT_VERSION
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    version: int = Field(ge=1)
    labels: list[str] = Field(min_length=2)
    modalities: dict[str, ModalitySpec] = Field(min_length=1)
    head: HeadSpec
    fusion: FusionSpec = FusionSpec()
    files: dict[str, str] = Field(description="every file of the bundle but the manifest -> sha256")
    training: dict[str, Any] = {}
    data: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    growth: GrowthSpec | None = None  # None: a bundle that cannot grow (trained without HGM)
    history: list[GrowthStep] = Field(default_factory=list, description="the lineage, oldest first")

    @model_validator(mode="after")
    def _files_are_listed(self) -> Manifest:
        needed = [spec.file for spec in self.modalities.values()] + [self.head.file]
        needed += [spec.reliability.file for spec in self.modalities.values() if spec.reliability]
        if self.growth is not None:
            needed += [self.growth.projector, self.growth.replay]
            needed += [weights.file for weights in self.growth.encoders.values()]
        unlisted = [name for name in needed if name not in self.files]
        if unlisted:
            raise ValueError(f"files {unlisted} are used but have no sha256 in 'files'")
        return self


class BundleError(Exception):
    """A bundle that cannot be served: unreadable manifest, missing file, or wrong checksum."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(bundle: Path) -> Manifest:
    path = bundle / MANIFEST_NAME
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except OSError as error:
        raise BundleError(f"{path}: cannot read the manifest ({error.strerror})") from error
    except ValueError as error:
        raise BundleError(f"{path}: invalid manifest: {error}") from error


def verify_bundle(bundle: Path) -> Manifest:
    """Read the manifest and check every listed file's sha256; raise BundleError on any mismatch."""
    manifest = read_manifest(bundle)
    for name, expected in manifest.files.items():
        path = bundle / name
        if not path.is_file():
            raise BundleError(f"{bundle}: file {name} is listed in the manifest but missing")
        actual = sha256_of(path)
        if actual != expected:
            raise BundleError(f"{bundle}: {name} has sha256 {actual}, the manifest says {expected}")
    return manifest
