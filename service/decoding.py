"""Raw inputs to signals in a modality's contract: bytes to pixels, bytes to a waveform, checks on
text and tensors. The same functions read the training data and the service's requests, so a
file the service accepts is decoded exactly as training decoded it.

Every problem a caller can cause raises `InputError`, naming the input and how to fix it. A
recording longer than its contract allows is cropped to its loudest window or refused, by the
contract's `too_long` policy unless the caller overrides it; `decode_input` says which happened.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile
import soxr
from anymodal.service import wav
from anymodal.service.manifest import (
    AudioContract,
    ImageContract,
    InputContract,
    TensorContract,
    TextContract,
    TooLong,
)
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 25_000_000
PAPER_WHITE = (255, 255, 255)


class InputError(ValueError):
    """An input the model cannot use. `field` names it; the message says why and what to do."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Decoded:
    """One input decoded to its contract: the signal (pixels, waveform, text or vector) and whether
    it was cropped to fit (a recording longer than `max_seconds`, cut to its loudest window)."""

    signal: Any
    cropped: bool = False


def decode_base64(text: str, field: str) -> bytes:
    """Standard base64 (padding optional, whitespace ignored), or a data URL's base64 part."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    text = "".join(text.split())
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InputError(field, "is not valid base64; encode the file's bytes with standard base64") from None


def decode_image(
    data: bytes, contract: ImageContract, field: str, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode PNG/JPEG/GIF/BMP/TIFF/WebP bytes to a uint8 array (H, W) or (H, W, 3) of the contract.

    EXIF orientation is applied, transparency is laid over white paper, 16-bit and float images
    are scaled to 8 bits, CMYK and palettes are converted, then the image is resized to the
    contract (area averaging when shrinking).
    """
    if not data:
        raise InputError(field, "is empty; send the bytes of a PNG or JPEG image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise _too_many_pixels(field, f"has {width}x{height} = {width * height} pixels", max_pixels)
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # in place: otherwise a copy even when upright
        image = _to_rgb_or_l(image)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own guard, for sizes far past any limit, fires before the size can be read
        raise _too_many_pixels(field, "declares more pixels than Pillow will decode", max_pixels) from None
    except UnidentifiedImageError:
        raise InputError(
            field, "is not an image this service can read; send PNG, JPEG, GIF, BMP, TIFF or WebP"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise InputError(field, f"is a damaged or truncated image ({error}); send the whole file") from None
    if image.mode != contract.mode:
        image = image.convert(contract.mode)
    size = (contract.width, contract.height)
    if image.size != size:
        shrinking = image.width >= contract.width and image.height >= contract.height
        resample = Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC
        image = image.resize(size, resample)
    return np.asarray(image, dtype=np.uint8)


def _too_many_pixels(field: str, what: str, max_pixels: int) -> InputError:
    return InputError(
        field,
        f"{what}, over the limit of {max_pixels} (a decompression bomb, or too large a scan);"
        " send a smaller image, or raise the limit (ANYMODAL_MAX_IMAGE_PIXELS)",
    )


def _to_rgb_or_l(image: Image.Image) -> Image.Image:
    """Bring any Pillow mode to 8-bit L or RGB, with transparency composited over white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        if image.mode == "F":
            top = max(1.0, float(values.max(initial=1.0)))
        scaled = np.clip(values / top * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(scaled, mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (*PAPER_WHITE, 255))
        return Image.alpha_composite(paper, rgba).convert("RGB")
    if image.mode in ("L", "RGB"):
        return image
    if image.mode == "1":
        return image.convert("L")
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def decode_audio(
    data: bytes, contract: AudioContract, field: str, too_long: TooLong | None = None
) -> Decoded:
    """Decode WAV (or FLAC/OGG, anything libsndfile reads) of any rate, width and channel count to a
    mono float32 waveform at the contract's sample rate, at most `max_seconds` long.

    A longer recording is cropped to its loudest `max_samples` (see `loudest_window`) or refused,
    by `too_long`; None follows the contract's own `too_long`."""
    policy = too_long or contract.too_long
    if not data:
        raise InputError(field, "is empty; send the bytes of a WAV file")
    plain = wav.read_plain(data)
    if plain is not None:
        samples, rate = plain
        _check_length(len(samples), rate, contract, field, policy)
    else:
        samples, rate = _read_with_libsndfile(data, contract, field, policy)
    if not np.isfinite(samples).all():
        raise InputError(field, "holds samples that are not finite numbers")
    mono = samples.mean(axis=1)
    if rate != contract.sample_rate:
        mono = soxr.resample(mono, rate, contract.sample_rate, quality="HQ").astype(np.float32)
    if len(samples) / rate > contract.max_seconds:
        return Decoded(loudest_window(mono, contract.max_samples), cropped=True)
    return Decoded(mono[: contract.max_samples])  # resampling may round up by a sample


def loudest_window(wave: np.ndarray, length: int) -> np.ndarray:
    """The `length` consecutive samples of `wave` with the most energy (sum of squares); the
    earliest such window on a tie. O(n): window energies are differences of one cumulative sum."""
    if len(wave) <= length:
        return wave
    energy = np.concatenate(([0.0], np.cumsum(np.square(wave, dtype=np.float64))))
    start = int(np.argmax(energy[length:] - energy[:-length]))
    return wave[start : start + length]


def _read_with_libsndfile(
    data: bytes, contract: AudioContract, field: str, policy: TooLong
) -> tuple[np.ndarray, int]:
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as sound:
            frames, rate = sound.frames, sound.samplerate
            _check_length(frames, rate, contract, field, policy)
            samples = sound.read(dtype="float32", always_2d=True)
    except InputError:
        raise
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise InputError(field, f"is not audio this service can read ({error}); send a WAV file") from None
    if samples.shape[0] < frames or wav.is_truncated(data):
        raise InputError(field, "is truncated: its header promises more audio than it holds")
    return samples, rate


def _check_length(frames: int, rate: int, contract: AudioContract, field: str, policy: TooLong) -> None:
    if frames <= 0:
        raise InputError(field, "holds no samples; send a recording that is not empty")
    seconds = frames / rate
    if seconds > contract.max_seconds and policy == "reject":
        raise InputError(
            field,
            f"is {seconds:.2f} s long; this model accepts at most {contract.max_seconds:g} s:"
            f" trim it, or set the request option audio_too_long=crop to keep its loudest"
            f" {contract.max_seconds:g} s",
        )


def check_text(text: object, contract: TextContract, field: str) -> str:
    if not isinstance(text, str):
        raise InputError(field, f"must be a string, not {type(text).__name__}")
    if not text.strip():
        raise InputError(field, "is empty; leave the field out when there is no text")
    size = len(text.encode("utf-8"))
    if size > contract.max_length:
        raise InputError(
            field,
            f"is {size} bytes of UTF-8; this model reads at most {contract.max_length}, shorten it",
        )
    return text


def check_tensor(values: Sequence[object], contract: TensorContract, field: str) -> np.ndarray:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise InputError(field, f"must be a list of {contract.length} numbers")
    if len(values) != contract.length:
        raise InputError(field, f"has {len(values)} numbers; this model needs exactly {contract.length}")
    for index, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(f"{field}[{index}]", f"must be a number, not {type(value).__name__}")
        if not math.isfinite(value):
            raise InputError(f"{field}[{index}]", f"must be a finite number, not {value}")
    array = np.asarray(values, dtype=np.float64)
    if np.abs(array).max(initial=0.0) > np.finfo(np.float32).max:
        raise InputError(field, "holds a number too large for 32-bit floats")
    return array.astype(np.float32)


def decode_input(
    value: object,
    contract: InputContract,
    field: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    too_long: TooLong | None = None,
) -> Decoded:
    """One raw input to its signal in the contract: the bytes of an image or recording, a string,
    or a list of numbers, by the contract's kind; and whether it was cropped to fit. `too_long`
    overrides an audio contract's policy for recordings over `max_seconds` (None: the contract's)."""
    if isinstance(contract, ImageContract | AudioContract):
        if not isinstance(value, bytes | bytearray):
            raise InputError(
                field, f"must be the bytes of a{'n image' if contract.kind == 'image' else ' recording'}"
            )
        if isinstance(contract, ImageContract):
            return Decoded(decode_image(bytes(value), contract, field, max_pixels))
        return decode_audio(bytes(value), contract, field, too_long)
    if isinstance(contract, TextContract):
        return Decoded(check_text(value, contract, field))
    if isinstance(contract, TensorContract):
        return Decoded(check_tensor(value, contract, field))  # type: ignore[arg-type]
    raise TypeError(f"unknown contract {contract!r}")


def decode(
    value: object,
    contract: InputContract,
    field: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    too_long: TooLong | None = None,
) -> object:
    """`decode_input`'s signal alone. Training and the service both decode this way, so a long
    training clip is cropped exactly as a long request is."""
    return decode_input(value, contract, field, max_pixels, too_long).signal
