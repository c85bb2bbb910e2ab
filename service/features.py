"""Decoded signals to the arrays an encoder reads: normalization, log-mel spectrograms, byte ids.

Training computes its inputs with these functions and the service computes requests' inputs with
them, so both sides feed the ONNX encoders exactly the same numbers.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from anymodal.service.manifest import (
    AudioContract,
    ImageContract,
    InputContract,
    TensorContract,
    TextContract,
)

LOG_FLOOR = 1e-6
PAD_ID = 0  # byte b is id b + 1, so 0 is free to mark padding


def image_features(pixels: np.ndarray, contract: ImageContract) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) -> float32 (C, H, W)."""
    scaled = pixels.astype(np.float32) / 255.0
    channels_first = scaled[None] if scaled.ndim == 2 else scaled.transpose(2, 0, 1)
    return ((channels_first - contract.mean) / contract.std).astype(np.float32)


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular filters on the HTK mel scale from 0 Hz to Nyquist: (n_mels, n_fft // 2 + 1)."""

    def to_mel(hz: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    def to_hz(mel: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)

    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = to_hz(np.linspace(0.0, to_mel(np.array(sample_rate / 2)), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - lower) / (centre - lower)
    falling = (upper - bins[None]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def log_mel(waveform: np.ndarray, contract: AudioContract) -> np.ndarray:
    """Mono waveform (at most `max_samples`) -> log-mel power spectrogram (n_mels, frames).

    The waveform is zero-padded to `max_seconds` so every clip has the same number of frames;
    frames are Hann-windowed and centred (the signal is reflected by n_fft/2 at both ends).
    Frames that lie wholly in the zero padding have no power, so their FFT is skipped and they get
    the floor directly: the same numbers, at a fraction of the cost for short clips.
    """
    length = min(len(waveform), contract.max_samples)
    padded = np.zeros(contract.max_samples, dtype=np.float32)
    padded[:length] = waveform[:length]
    half = contract.n_fft // 2
    signal = np.concatenate((padded[half:0:-1], padded, padded[-2 : -half - 2 : -1]))  # reflected
    active = contract.frames
    if length < contract.max_samples - half:  # the reflection at the end holds only zeros
        active = min(contract.frames, -(-(half + length) // contract.hop_length))
    step = signal.itemsize
    frames = np.ndarray((active, contract.n_fft), signal.dtype, signal, 0, (contract.hop_length * step, step))
    power = np.abs(np.fft.rfft(frames * hann_window(contract.n_fft), axis=1)) ** 2
    mel = np.zeros((contract.n_mels, contract.frames), dtype=np.float32)
    mel[:, :active] = mel_filterbank(contract.sample_rate, contract.n_fft, contract.n_mels) @ power.T
    return np.log(mel + LOG_FLOOR).astype(np.float32)


@lru_cache(maxsize=8)
def hann_window(size: int) -> np.ndarray:
    return np.hanning(size + 1)[:-1].astype(np.float32)


def audio_features(waveform: np.ndarray, contract: AudioContract) -> np.ndarray:
    """Mono waveform -> float32 (n_mels, frames), normalized."""
    return ((log_mel(waveform, contract) - contract.mean) / contract.std).astype(np.float32)


def text_features(text: str, contract: TextContract) -> np.ndarray:
    """Text -> int64 (max_length,) of UTF-8 byte ids, padded with PAD_ID."""
    ids = np.full(contract.max_length, PAD_ID, dtype=np.int64)
    encoded = np.frombuffer(text.encode("utf-8")[: contract.max_length], dtype=np.uint8)
    ids[: len(encoded)] = encoded.astype(np.int64) + 1
    return ids


def tensor_features(values: np.ndarray, contract: TensorContract) -> np.ndarray:
    array = values.astype(np.float32)
    if contract.mean is not None:
        array = array - np.asarray(contract.mean, dtype=np.float32)
    if contract.std is not None:
        array = array / np.asarray(contract.std, dtype=np.float32)
    return array.astype(np.float32)


def input_shape(contract: InputContract) -> tuple[int, ...]:
    """The shape of one sample's encoder input (no batch axis)."""
    match contract:
        case ImageContract():
            return (contract.channels, contract.height, contract.width)
        case AudioContract():
            return (contract.n_mels, contract.frames)
        case TextContract():
            return (contract.max_length,)
        case TensorContract():
            return (contract.length,)
    raise TypeError(f"unknown contract {contract!r}")


def input_dtype(contract: InputContract) -> type[np.generic]:
    return np.int64 if isinstance(contract, TextContract) else np.float32


def features(signal: object, contract: InputContract) -> np.ndarray:
    """Dispatch on the contract's kind: the decoded signal of one input -> its encoder input."""
    match contract:
        case ImageContract():
            return image_features(signal, contract)  # type: ignore[arg-type]
        case AudioContract():
            return audio_features(signal, contract)  # type: ignore[arg-type]
        case TextContract():
            return text_features(signal, contract)  # type: ignore[arg-type]
        case TensorContract():
            return tensor_features(signal, contract)  # type: ignore[arg-type]
    raise TypeError(f"unknown contract {contract!r}")
