"""One small encoder per modality, all mapping to the same feature width D, and one shared linear
head D -> classes. Sized to train in minutes on two CPU cores."""

from __future__ import annotations

import torch
from torch import nn

from service.features import PAD_ID
from service.manifest import (
    AudioContract,
    ImageContract,
    InputContract,
    TensorContract,
    TextContract,
)
from training.config import ModelConfig


def _conv2d(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]


def _conv1d(cin: int, cout: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv1d(cin, cout, kernel, padding=kernel // 2), nn.BatchNorm1d(cout), nn.ReLU()]


def _projection(cin: int, config: ModelConfig) -> nn.Sequential:
    return nn.Sequential(nn.Dropout(config.dropout), nn.Linear(cin, config.feature_dim), nn.ReLU())


class ImageEncoder(nn.Module):
    """(B, C, H, W) -> (B, D): three conv blocks, global average pooling."""

    def __init__(self, contract: ImageContract, config: ModelConfig) -> None:
        super().__init__()
        w = config.width
        self.body = nn.Sequential(
            *_conv2d(contract.channels, w), nn.MaxPool2d(2),
            *_conv2d(w, 2 * w), nn.MaxPool2d(2),
            *_conv2d(2 * w, 2 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.project = _projection(2 * w, config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.body(x))


class AudioEncoder(nn.Module):
    """(B, n_mels, frames) -> (B, D): convolutions over time with the mel bins as channels, then
    average and max pooling over time."""

    def __init__(self, contract: AudioContract, config: ModelConfig) -> None:
        super().__init__()
        w = 2 * config.width
        self.body = nn.Sequential(
            *_conv1d(contract.n_mels, w, 5), nn.MaxPool1d(2),
            *_conv1d(w, w, 5), nn.MaxPool1d(2),
            *_conv1d(w, 2 * w, 3),
        )  # fmt: skip
        self.project = _projection(4 * w, config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return self.project(torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1))


class TextEncoder(nn.Module):
    """(B, max_length) UTF-8 byte ids -> (B, D): byte embeddings, convolutions, max pooling over
    the bytes that are not padding."""

    def __init__(self, contract: TextContract, config: ModelConfig) -> None:
        super().__init__()
        w = config.width
        self.embed = nn.Embedding(257, w, padding_idx=PAD_ID)
        self.body = nn.Sequential(*_conv1d(w, 2 * w, 3), *_conv1d(2 * w, 2 * w, 3))
        self.project = _projection(2 * w, config)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.body(self.embed(ids).transpose(1, 2))
        padding = (ids == PAD_ID).unsqueeze(1)
        pooled = h.masked_fill(padding, -1e4).amax(dim=2)
        return self.project(pooled)


class TensorEncoder(nn.Module):
    """(B, length) -> (B, D): a two-layer MLP."""

    def __init__(self, contract: TensorContract, config: ModelConfig) -> None:
        super().__init__()
        hidden = 4 * config.width
        self.body = nn.Sequential(
            nn.Linear(contract.length, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.project = _projection(hidden, config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.body(x))


def build_encoder(contract: InputContract, config: ModelConfig) -> nn.Module:
    match contract:
        case ImageContract():
            return ImageEncoder(contract, config)
        case AudioContract():
            return AudioEncoder(contract, config)
        case TextContract():
            return TextEncoder(contract, config)
        case TensorContract():
            return TensorEncoder(contract, config)
    raise TypeError(f"unknown contract {contract!r}")


class MultimodalModel(nn.Module):
    """Encoders by modality name and the head they share."""

    def __init__(self, contracts: dict[str, InputContract], classes: int, config: ModelConfig) -> None:
        super().__init__()
        self.modalities = list(contracts)
        self.encoders = nn.ModuleDict({m: build_encoder(c, config) for m, c in contracts.items()})
        self.head = nn.Linear(config.feature_dim, classes)

    def logits(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoders[modality](x))
