"""One small encoder per modality, all mapping to the same feature width D, and one shared linear
head D -> classes. Sized to train in minutes on two CPU cores.

Every encoder also reports its *probes*, concatenated (B, P): summary statistics of its input
(per channel mean and spread for images and spectrograms, the mean byte embedding for text, the
values themselves for a short tensor), the activations of each of its layers averaged over
positions, and the projection's pre-activation. The reliability gate
(`service/reliability.py`) scores inputs on them: early layers see a tone, a blank page or a dead
sensor that the last layer has already mapped onto some digit."""

from __future__ import annotations

import torch
from anymodal.service.features import PAD_ID
from anymodal.service.manifest import (
    AudioContract,
    ImageContract,
    InputContract,
    TensorContract,
    TextContract,
)
from anymodal.training.config import ModelConfig
from torch import nn

MAX_RAW_PROBE = 64  # a tensor this short is probed value by value


def _conv2d(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]


def _conv1d(cin: int, cout: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv1d(cin, cout, kernel, padding=kernel // 2), nn.BatchNorm1d(cout), nn.ReLU()]


def _projection(cin: int, config: ModelConfig) -> nn.Sequential:
    return nn.Sequential(nn.Dropout(config.dropout), nn.Linear(cin, config.feature_dim), nn.ReLU())


class Encoder(nn.Module):
    """An input -> (B, D) features; `forward_with_probes` also returns the probes (B, P) and
    `probe_widths` the width of each probed layer."""

    body: nn.Sequential
    project: nn.Sequential

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_probes(x)[0]

    def forward_with_probes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, probes = self.run_body(self.prepare(x))
        pre = self.project[:-1](self.pool(h, x))
        return self.project[-1](pre), torch.cat([self.input_probe(x), *probes, pre], dim=1)

    def input_probe(self, x: torch.Tensor) -> torch.Tensor:
        """Per channel mean and spread over positions, for (B, C, ...) inputs."""
        flat = x.flatten(2)
        mean = flat.mean(dim=2)
        spread = (flat - mean[..., None]).square().mean(dim=2).sqrt()
        return torch.cat([mean, spread], dim=1)

    def run_body(self, h: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The body, keeping each ReLU's output averaged over positions."""
        probes = []
        for layer in self.body:
            h = layer(h)
            if isinstance(layer, nn.ReLU):
                probes.append(h.flatten(2).mean(dim=2) if h.dim() > 2 else h)
        return h, probes

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def pool(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return h

    def input_probe_width(self) -> int:
        raise NotImplementedError

    def probe_widths(self) -> list[int]:
        widths = [self.input_probe_width()]
        widths += [
            layer.num_features for layer in self.body if isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d)
        ]
        widths += [layer.out_features for layer in self.body if isinstance(layer, nn.Linear)]
        return [*widths, self.project[1].out_features]


class ImageEncoder(Encoder):
    """(B, C, H, W) -> (B, D): three conv blocks, global average pooling."""

    def __init__(self, contract: ImageContract, config: ModelConfig) -> None:
        super().__init__()
        w = config.width
        self.body = nn.Sequential(
            *_conv2d(contract.channels, w), nn.MaxPool2d(2),
            *_conv2d(w, 2 * w), nn.MaxPool2d(2),
            *_conv2d(2 * w, 2 * w),
        )  # fmt: skip
        self.project = _projection(2 * w, config)
        self.channels = contract.channels

    def input_probe_width(self) -> int:
        return 2 * self.channels

    def pool(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return h.mean(dim=(2, 3))


class AudioEncoder(Encoder):
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
        self.n_mels = contract.n_mels

    def input_probe_width(self) -> int:
        return 2 * self.n_mels

    def pool(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)


class TextEncoder(Encoder):
    """(B, max_length) UTF-8 byte ids -> (B, D): byte embeddings, convolutions, max pooling over
    the bytes that are not padding."""

    def __init__(self, contract: TextContract, config: ModelConfig) -> None:
        super().__init__()
        w = config.width
        self.embed = nn.Embedding(257, w, padding_idx=PAD_ID)
        self.body = nn.Sequential(*_conv1d(w, 2 * w, 3), *_conv1d(2 * w, 2 * w, 3))
        self.project = _projection(2 * w, config)

    def prepare(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(ids).transpose(1, 2)

    def input_probe(self, ids: torch.Tensor) -> torch.Tensor:
        """The mean embedding of every byte, padding included (so the length counts too)."""
        return self.embed(ids).mean(dim=1)

    def input_probe_width(self) -> int:
        return self.embed.embedding_dim

    def pool(self, h: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        padding = (ids == PAD_ID).unsqueeze(1)
        return h.masked_fill(padding, -1e4).amax(dim=2)


class TensorEncoder(Encoder):
    """(B, length) -> (B, D): a two-layer MLP."""

    def __init__(self, contract: TensorContract, config: ModelConfig) -> None:
        super().__init__()
        hidden = 4 * config.width
        self.body = nn.Sequential(
            nn.Linear(contract.length, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.project = _projection(hidden, config)
        self.length = contract.length

    def input_probe(self, x: torch.Tensor) -> torch.Tensor:
        """The (normalized) values themselves when there are few, else their mean, spread, min, max."""
        if self.length <= MAX_RAW_PROBE:
            return x
        mean = x.mean(dim=1, keepdim=True)
        spread = (x - mean).square().mean(dim=1, keepdim=True).sqrt()
        return torch.cat([mean, spread, x.amin(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)

    def input_probe_width(self) -> int:
        return self.length if self.length <= MAX_RAW_PROBE else 4


def build_encoder(contract: InputContract, config: ModelConfig) -> Encoder:
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
