"""The WAV reader that skips libsndfile gives libsndfile's numbers, and leaves it every file that
is not plain 16-bit or float PCM."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile
from anymodal.service import wav
from anymodal.service.decoding import decode_audio
from anymodal.service.manifest import AudioContract

from tests.live import FIXTURES


def written(samples: np.ndarray, rate: int, subtype: str, form: str = "WAV") -> bytes:
    stream = io.BytesIO()
    soundfile.write(stream, samples, rate, subtype=subtype, format=form)
    return stream.getvalue()


def libsndfile(data: bytes) -> tuple[np.ndarray, int]:
    with soundfile.SoundFile(io.BytesIO(data)) as sound:
        return sound.read(dtype="float32", always_2d=True), sound.samplerate


def noise(frames: int, channels: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (frames, channels)).astype(np.float32)


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
@pytest.mark.parametrize(("frames", "channels", "rate"), [(2826, 1, 8000), (16001, 2, 16000), (7, 3, 44100)])
def test_plain_files_read_as_libsndfile_reads_them(
    subtype: str, frames: int, channels: int, rate: int
) -> None:
    data = written(noise(frames, channels), rate, subtype)
    plain = wav.read_plain(data)
    assert plain is not None
    expected, expected_rate = libsndfile(data)
    assert plain[1] == expected_rate and plain[0].dtype == np.float32
    np.testing.assert_array_equal(plain[0], expected)


def test_the_fixture_recording_reads_the_same_both_ways() -> None:
    data = (FIXTURES / "digit_7.wav").read_bytes()
    plain = wav.read_plain(data)
    assert plain is not None
    np.testing.assert_array_equal(plain[0], libsndfile(data)[0])


def with_chunk_before_data(data: bytes, chunk: bytes, payload: bytes) -> bytes:
    """Insert a chunk (an odd-sized one gets its pad byte) between fmt and data."""
    at = data.index(b"data")
    extra = chunk + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) & 1)
    body = data[12:at] + extra + data[at:]
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def test_chunks_between_fmt_and_data_are_skipped() -> None:
    data = with_chunk_before_data(written(noise(500, 1), 8000, "PCM_16"), b"LIST", b"odd")
    plain = wav.read_plain(data)
    assert plain is not None
    np.testing.assert_array_equal(plain[0], libsndfile(data)[0])


@pytest.mark.parametrize(
    ("subtype", "form"), [("PCM_24", "WAV"), ("PCM_U8", "WAV"), ("PCM_32", "WAV"), ("PCM_16", "FLAC")]
)
def test_other_layouts_are_left_to_libsndfile(subtype: str, form: str) -> None:
    assert wav.read_plain(written(noise(100, 1), 8000, subtype, form)) is None


def test_a_truncated_file_is_left_to_libsndfile_and_refused() -> None:
    data = written(noise(4000, 1), 8000, "PCM_16")[:-1000]
    assert wav.is_truncated(data) and wav.read_plain(data) is None
    with pytest.raises(ValueError, match="truncated"):
        decode_audio(data, AudioContract(sample_rate=8000, max_seconds=1.0), "audio")


def test_a_streaming_header_without_sizes_is_left_to_libsndfile() -> None:
    data = bytearray(written(noise(400, 1), 8000, "PCM_16"))
    at = data.index(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", 0xFFFFFFFF)
    assert wav.read_plain(bytes(data)) is None and not wav.is_truncated(bytes(data))


def test_decoding_gives_the_same_waveform_whichever_reader_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    contract = AudioContract(sample_rate=16000, max_seconds=1.0)
    data = written(noise(24000, 2), 22050, "PCM_16")  # resampled and cropped too
    fast = decode_audio(data, contract, "audio")
    monkeypatch.setattr(wav, "read_plain", lambda _: None)
    slow = decode_audio(data, contract, "audio")
    assert fast.cropped and slow.cropped
    np.testing.assert_array_equal(fast.signal, slow.signal)
