"""Realistic degradations of images, recordings and typed text.

The digits benchmark applies them to every sample so that no modality is perfect alone (fusion
has to matter). Evaluation judges robustness on other failures, the frozen suite in
`evaluation/corruptions.py`, which training never imports. Everything draws from the numpy
Generator it is given, so a seed fixes the result.
"""

from __future__ import annotations

import numpy as np

KEYBOARD_ROWS = ("1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm")
UNRELATED_TEXT = (
    "n/a", "see photo", "unknown", "illegible", "no comment", "?", "...", "tbd", "ok",
    "hello", "test", "pending", "call me back", "see attached", "none", "asdf", "xxx",
    "form incomplete", "not sure", "ignore", "thanks", "lorem ipsum", "blank", "-",
)  # fmt: skip


def _neighbours() -> dict[str, str]:
    """Keys next to each key on a QWERTY keyboard, for plausible substitution typos."""
    position = {key: (r, c) for r, row in enumerate(KEYBOARD_ROWS) for c, key in enumerate(row)}
    return {
        key: "".join(
            other for other, (r2, c2) in position.items()
            if other != key and abs(r - r2) <= 1 and abs(c - c2) <= 1
        )
        for key, (r, c) in position.items()
    }  # fmt: skip


NEIGHBOURS = _neighbours()


def typos(text: str, rate: float, rng: np.random.Generator) -> str:
    """Each character, with probability `rate`, is hit by a neighbouring key, dropped, doubled or
    swapped with the next one."""
    chars = list(text)
    out: list[str] = []
    i = 0
    while i < len(chars):
        char = chars[i]
        if rng.random() >= rate:
            out.append(char)
        else:
            kind = rng.integers(4)
            if kind == 0 and char.lower() in NEIGHBOURS:
                out.append(rng.choice(list(NEIGHBOURS[char.lower()])))
            elif kind == 1:
                pass
            elif kind == 2:
                out.append(char + char)
            elif i + 1 < len(chars):
                out.extend((chars[i + 1], char))
                i += 1
            else:
                out.append(char)
        i += 1
    return "".join(out) or text


def random_case(text: str, rng: np.random.Generator) -> str:
    style = rng.integers(4)
    return (text, text.upper(), text.capitalize(), text.lower())[style]


def unrelated_text(rng: np.random.Generator) -> str:
    return str(rng.choice(UNRELATED_TEXT))


def add_noise(waveform: np.ndarray, sample_rate: int, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Mix in background noise (white, pink-ish or mains hum with harmonics) at `snr_db`."""
    n = len(waveform)
    kind = rng.integers(3)
    if kind == 0:
        noise = rng.standard_normal(n)
    elif kind == 1:
        noise = np.cumsum(rng.standard_normal(n))
        noise -= np.convolve(noise, np.ones(64) / 64, mode="same")  # keep it pink-ish, not a drift
    else:
        t = np.arange(n) / sample_rate
        base = rng.choice([50.0, 60.0])
        noise = sum(np.sin(2 * np.pi * base * h * t + rng.uniform(0, 6.3)) / h for h in range(1, 8))
        noise = noise + 0.3 * rng.standard_normal(n)
    signal_power = float(np.mean(waveform.astype(np.float64) ** 2)) + 1e-12
    noise_power = float(np.mean(noise**2)) + 1e-12
    scale = np.sqrt(signal_power / (noise_power * 10 ** (snr_db / 10)))
    mixed = waveform + scale * noise
    peak = np.abs(mixed).max()
    return (mixed / peak * 0.9 if peak > 0.99 else mixed).astype(np.float32)


def occlude(ink: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Cover a random rectangle of about `fraction` of the area (ink in [0, 1], H x W [x C]): erased
    to paper, or a dark smudge."""
    height, width = ink.shape[:2]
    side_h = max(1, round(height * np.sqrt(fraction) * rng.uniform(0.8, 1.25)))
    side_w = max(1, round(width * fraction / (side_h / height)))
    top = rng.integers(0, max(1, height - side_h + 1))
    left = rng.integers(0, max(1, width - side_w + 1))
    out = ink.copy()
    out[top : top + side_h, left : left + side_w] = 0.0 if rng.random() < 0.5 else rng.uniform(0.4, 0.9)
    return out
