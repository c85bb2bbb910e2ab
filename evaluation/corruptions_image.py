"""Held-out image corruptions, frozen (see evaluation.corruptions). Signals are uint8 pixels,
(H, W) or (H, W, 3), dark ink on light paper, at the contract's size; families work in float64
and evaluation.corruptions rounds the result back to uint8."""

from __future__ import annotations

import io

import numpy as np
from anymodal.service.manifest import ImageContract
from PIL import Image

PAPER = 255.0


def _blank_page(pixels: np.ndarray, contract: ImageContract, s: int, rng: np.random.Generator) -> np.ndarray:
    """A blank or nearly blank page (an empty box, a pencil mark too light to scan): 12% of the ink's
    contrast, 5%, then none. Training's faintest ink keeps half of it, so this is not mere fading."""
    residue = (0.12, 0.05, 0.0)[s - 1]
    return PAPER - residue * (PAPER - pixels)


def _pattern(pixels: np.ndarray, contract: ImageContract, s: int, rng: np.random.Generator) -> np.ndarray:
    """A checkerboard or stripes (moire, a patterned form, a test card) over or instead of the scan."""
    height, width = pixels.shape[:2]
    period = int(rng.integers(1, max(2, min(height, width) // 4) + 1))
    y, x = np.mgrid[0:height, 0:width] // period
    pattern = ((y + x) % 2, y % 2, x % 2)[int(rng.integers(3))] * PAPER
    if pixels.ndim == 3:
        pattern = pattern[..., None]
    opacity = (0.35, 0.65, 1.0)[s - 1]
    return (1 - opacity) * pixels + opacity * pattern


def _rotation(pixels: np.ndarray, contract: ImageContract, s: int, rng: np.random.Generator) -> np.ndarray:
    """The page was photographed tilted, sideways or upside down; corners are filled with paper."""
    angle = (25.0, 90.0, 180.0)[s - 1] * (1 if rng.random() < 0.5 else -1)
    image = Image.fromarray(pixels.astype(np.uint8))
    fill = 255 if contract.mode == "L" else (255, 255, 255)
    return np.asarray(image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=fill), np.float64)


def _inversion(pixels: np.ndarray, contract: ImageContract, s: int, rng: np.random.Generator) -> np.ndarray:
    """A negative (light ink on dark), over a band from one side that widens to the whole image."""
    width = pixels.shape[1]
    columns = max(1, round(width * (1 / 3, 2 / 3, 1.0)[s - 1]))
    out = pixels.copy()
    band = slice(0, columns) if rng.random() < 0.5 else slice(width - columns, width)
    out[:, band] = PAPER - out[:, band]
    return out


def _jpeg(pixels: np.ndarray, contract: ImageContract, s: int, rng: np.random.Generator) -> np.ndarray:
    """A thumbnail re-encoded at very low JPEG quality and blown back up (chat apps, old scanners)."""
    height, width = pixels.shape[:2]
    scale, quality = ((0.75, 10), (0.5, 5), (0.25, 2))[s - 1]
    image = Image.fromarray(pixels.astype(np.uint8))
    small = image.resize(
        (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BILINEAR
    )
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=quality)
    decoded = Image.open(io.BytesIO(buffer.getvalue())).convert(contract.mode)
    return np.asarray(decoded.resize((width, height), Image.Resampling.NEAREST), np.float64)


def _dead_lines(pixels: np.ndarray, contract: ImageContract, s: int, rng: np.random.Generator) -> np.ndarray:
    """Dead or hot sensor rows and columns (a failing line scanner or camera sensor)."""
    height, width = pixels.shape[:2]
    order = rng.permutation(height + width)
    values = rng.choice([0.0, PAPER], size=height + width, p=[0.75, 0.25])
    count = max(1, round((height + width) * (0.06, 0.15, 0.3)[s - 1]))
    out = pixels.copy()
    for line in order[:count]:
        if line < height:
            out[line] = values[line]
        else:
            out[:, line - height] = values[line]
    return out


def _motion_blur(pixels: np.ndarray, contract: ImageContract, s: int, rng: np.random.Generator) -> np.ndarray:
    """The camera moved during the exposure: a straight streak horizontally, vertically or diagonally."""
    height, width = pixels.shape[:2]
    length = max(2, round(min(height, width) * (0.12, 0.25, 0.5)[s - 1]))
    dy, dx = ((0, 1), (1, 0), (1, 1), (1, -1))[int(rng.integers(4))]
    pad = ((length, length), (length, length)) + ((0, 0),) * (pixels.ndim - 2)
    padded = np.pad(pixels, pad, mode="edge")
    out = np.zeros_like(pixels)
    for k in range(length):
        oy, ox = length + (k - length // 2) * dy, length + (k - length // 2) * dx
        out += padded[oy : oy + height, ox : ox + width]
    return out / length


FAMILIES = {
    "blank_page": _blank_page,
    "pattern": _pattern,
    "rotation": _rotation,
    "inversion": _inversion,
    "jpeg": _jpeg,
    "dead_lines": _dead_lines,
    "motion_blur": _motion_blur,
}
