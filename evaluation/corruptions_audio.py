"""Held-out audio corruptions, frozen (see evaluation.corruptions). Signals are mono waveforms in
[-1, 1] at the contract's sample rate; evaluation.corruptions clips and trims the result."""

from __future__ import annotations

import numpy as np
from anymodal.service.manifest import AudioContract


def _tone(wave: np.ndarray, contract: AudioContract, s: int, rng: np.random.Generator) -> np.ndarray:
    """A test tone or feedback whistle at speech level, over the speech and then instead of it."""
    t = np.arange(len(wave)) / contract.sample_rate
    frequency = rng.uniform(300.0, min(2000.0, 0.4 * contract.sample_rate))
    peak = float(np.abs(wave).max(initial=0.0))
    tone = (peak if peak > 0.01 else 0.5) * np.sin(2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi))
    weight = (0.5, 0.8, 1.0)[s - 1]
    return (1 - weight) * wave + weight * tone


def _clipping(wave: np.ndarray, contract: AudioContract, s: int, rng: np.random.Generator) -> np.ndarray:
    """Input gain far too high: the peak is driven 12, 24 or 36 dB past full scale and hard-clipped."""
    peak = float(np.abs(wave).max(initial=0.0))
    gain = 10 ** ((12.0, 24.0, 36.0)[s - 1] / 20) / (peak if peak > 1e-6 else 1.0)
    return np.clip(wave * gain, -1.0, 1.0)


def _dropout(wave: np.ndarray, contract: AudioContract, s: int, rng: np.random.Generator) -> np.ndarray:
    """Packet loss on a VoIP or Bluetooth link: 20 ms packets are replaced by silence."""
    packet = max(1, round(0.02 * contract.sample_rate))
    packets = -(-len(wave) // packet)
    lost = rng.permutation(packets)[: round(packets * (0.25, 0.5, 0.75)[s - 1])]
    out = wave.copy()
    for index in lost:
        out[index * packet : (index + 1) * packet] = 0.0
    return out


def _silence(wave: np.ndarray, contract: AudioContract, s: int, rng: np.random.Generator) -> np.ndarray:
    """A muted or unplugged microphone: 30 dB down, 50 dB down, then digital silence."""
    return wave * (10 ** (-30 / 20), 10 ** (-50 / 20), 0.0)[s - 1]


def _reversed(wave: np.ndarray, contract: AudioContract, s: int, rng: np.random.Generator) -> np.ndarray:
    """Audio played backwards in 100 ms or 250 ms chunks (a broken buffer), then as a whole."""
    seconds = (0.1, 0.25, len(wave) / contract.sample_rate)[s - 1]
    chunk = max(1, round(seconds * contract.sample_rate))
    return np.concatenate([wave[i : i + chunk][::-1] for i in range(0, len(wave), chunk)])


def _speed(wave: np.ndarray, contract: AudioContract, s: int, rng: np.random.Generator) -> np.ndarray:
    """A wrong sample-rate assumption: played 1.5, 2 or 3 times too fast (shorter and higher)."""
    factor = (1.5, 2.0, 3.0)[s - 1]
    length = max(1, round(len(wave) / factor))
    return np.interp(np.arange(length) * factor, np.arange(len(wave)), wave)


def _telephone(wave: np.ndarray, contract: AudioContract, s: int, rng: np.random.Generator) -> np.ndarray:
    """A narrowing phone band followed by coarse quantisation (8, 6, then 4 bits)."""
    low, high, bits = ((300.0, 3400.0, 8), (500.0, 2500.0, 6), (800.0, 1800.0, 4))[s - 1]
    spectrum = np.fft.rfft(wave)
    frequencies = np.fft.rfftfreq(len(wave), 1 / contract.sample_rate)
    spectrum[(frequencies < low) | (frequencies > high)] = 0.0
    step = 2.0 / 2**bits
    return np.round(np.fft.irfft(spectrum, len(wave)) / step) * step


FAMILIES = {
    "tone": _tone,
    "clipping": _clipping,
    "dropout": _dropout,
    "silence": _silence,
    "reversed": _reversed,
    "speed": _speed,
    "telephone": _telephone,
}
