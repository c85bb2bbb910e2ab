"""RIFF/WAVE read without libsndfile, for the plain recordings most clients send.

libsndfile reads anything, at a fixed cost of some 50 microseconds a file: as much as the
audio encoder's whole run. A plain WAV (16-bit integer or 32-bit float PCM, the layout every
recorder and `soundfile.write` produce) needs no more than its header read and its samples
scaled, exactly as libsndfile scales them (int16 / 32768). Anything else (compressed, 8 or
24-bit, WAVE_FORMAT_EXTENSIBLE, a streaming header without sizes) is left to libsndfile.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np

PCM = 1
IEEE_FLOAT = 3
STREAMING_SIZES = (0, 0xFFFFFFFF)  # written by recorders that do not know the length yet


def chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(id, offset of its payload, declared size) of each chunk of a RIFF/WAVE file, in order;
    nothing for bytes that are not one."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return
    offset = 12
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset + 4 : offset + 8], "little")
        yield data[offset : offset + 4], offset + 8, size
        offset += 8 + size + (size & 1)


def is_truncated(data: bytes) -> bool:
    """True when the data chunk declares more bytes than follow it. libsndfile reads such a file
    without complaint, up to where it was cut off."""
    for chunk, start, size in chunks(data):
        if chunk == b"data":
            return size not in STREAMING_SIZES and start + size > len(data)
    return False


def read_plain(data: bytes) -> tuple[np.ndarray, int] | None:
    """(frames, channels) float32 samples and the sample rate of a plain 16-bit integer or 32-bit
    float WAV, the same numbers libsndfile gives; None for any other file."""
    layout = None
    for chunk, start, size in chunks(data):
        if chunk == b"fmt " and size >= 16 and start + 16 <= len(data):
            tag, channels, rate, _, align, bits = struct.unpack_from("<HHIIHH", data, start)
            dtype = {(PCM, 16): "<i2", (IEEE_FLOAT, 32): "<f4"}.get((tag, bits))
            if dtype is None or channels < 1 or rate < 1 or align != channels * bits // 8:
                return None
            layout = (np.dtype(dtype), channels, rate)
        elif chunk == b"data":
            if layout is None or size in STREAMING_SIZES or start + size > len(data):
                return None
            dtype, channels, rate = layout
            frames = size // (dtype.itemsize * channels)
            samples = np.frombuffer(data, dtype, frames * channels, start).reshape(frames, channels)
            if dtype.kind == "i":
                return samples.astype(np.float32) / np.float32(32768.0), rate
            return samples.astype(np.float32), rate
    return None
