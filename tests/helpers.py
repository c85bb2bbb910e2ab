"""Helpers shared by the tests: encoded media made on the fly, and a tiny model's contracts."""

from __future__ import annotations

import io

import numpy as np
import soundfile
import torch
from anymodal.service.manifest import AudioContract, ImageContract, TensorContract, TextContract
from anymodal.training.config import ModelConfig
from PIL import Image


def png_bytes(image: Image.Image, format: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def wav_bytes(samples: np.ndarray, rate: int, subtype: str = "PCM_16", format: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, subtype=subtype, format=format)
    return buffer.getvalue()


def tone(seconds: float, rate: int, hz: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * hz * t).astype(np.float32)
    return wave if channels == 1 else np.stack([wave] * channels, axis=1)


CONTRACTS = {
    "image": ImageContract(width=8, height=8),
    "audio": AudioContract(sample_rate=8000, max_seconds=0.2, n_mels=8),
    "text": TextContract(max_length=12),
    "pen": TensorContract(length=6),
}
SMALL = ModelConfig(feature_dim=8, width=4, dropout=0.0)


def tiny_inputs(count: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    audio = CONTRACTS["audio"]
    return {
        "image": torch.randn(count, 1, 8, 8, generator=g),
        "audio": torch.randn(count, audio.n_mels, audio.frames, generator=g),
        "text": torch.randint(1, 257, (count, 12), generator=g),
        "pen": torch.randn(count, 6, generator=g),
    }
