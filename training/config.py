"""The model config: a TOML file naming the modalities with their input contracts, the encoder
sizes and the training hyperparameters. See `training/digits.toml` for a complete example."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from anymodal.service.manifest import InputContract
from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config


@with_config(ConfigDict(extra="forbid"))
@dataclass
class ModelConfig:
    feature_dim: int = 64  # D: every encoder maps to this width; the head is D -> classes
    width: int = 32  # channels of each encoder's first layer
    dropout: float = 0.1


@with_config(ConfigDict(extra="forbid"))
@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    encoder_lr: float = 2e-3  # Adam, for every encoder
    head_lr: float = 0.05  # plain SGD for the head: HGM's projection assumes plain gradient steps
    head_momentum: float = 0.9
    weight_decay: float = 1e-4
    hgm: bool = True  # head gradient modification; off only for the ablation
    # HGM's regularizer, against unit-length batch-mean features: a direction used n times keeps
    # alpha / (alpha + n) of its gradient. Larger keeps more of each gradient.
    hgm_alpha: float = 1.0
    patience: int = 10  # stop after this many epochs without a lower validation NLL
    reliability_alpha: float = 0.005  # the gate: p-values below this are unreliable inputs
    replay_size: int = 512  # training samples per modality kept as features, to replay when the model grows
    # Keep those samples' encoder inputs too (user data, in the bundle): `anymodal update` then
    # replays them through the encoders it trains, which limits what they forget. Off unless asked.
    replay_inputs: bool = False
    seed: int = 0
    threads: int = 0  # torch threads; 0 uses every core


@with_config(ConfigDict(extra="forbid"))
@dataclass
class Config:
    name: str
    modalities: dict[str, InputContract]
    labels: list[str] | None = None  # None: the sorted labels of the training split
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return asdict(self) | {"modalities": {name: c.model_dump() for name, c in self.modalities.items()}}


class ConfigError(Exception):
    pass


_adapter = TypeAdapter(Config)


def parse_config(values: dict) -> Config:
    try:
        config = _adapter.validate_python(values)
    except ValidationError as error:
        raise ConfigError("; ".join(_describe(problem) for problem in error.errors())) from None
    if not config.modalities:
        raise ConfigError("modalities: name at least one modality")
    for name in config.modalities:
        if not name.isidentifier() or name == "label":
            raise ConfigError(f"modalities.{name}: use a simple identifier other than 'label'")
    return config


def _describe(problem: dict) -> str:
    """One validation problem as `field.path: what is wrong`, with the fix where it is plain.
    A modality's kind appears once, not also as the tagged union's branch."""
    parts = [str(p) for p in problem["loc"]]
    if len(parts) >= 3 and parts[0] == "modalities" and parts[2] in ("image", "audio", "text", "tensor"):
        del parts[2]
    field = ".".join(parts) or "config"
    if problem["type"] == "missing":
        return f"{field}: is required; add it to the config"
    if problem["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"{field}: is not a setting here; remove it or check its spelling"
    return f"{field}: {problem['msg']}"


def load_config(path: Path) -> Config:
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    try:
        return parse_config(values)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
