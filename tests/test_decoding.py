"""Decoding, shared by training and the service: every common image and WAV flavour lands in the
model's contract, and every unusable input raises an InputError naming the field."""

import numpy as np
import pytest
from anymodal.service.decoding import (
    InputError,
    check_tensor,
    check_text,
    decode,
    decode_audio,
    decode_image,
    decode_input,
    loudest_window,
)
from anymodal.service.manifest import AudioContract, ImageContract, TensorContract, TextContract
from PIL import Image

from tests.helpers import png_bytes, tone, wav_bytes

GREY = ImageContract(width=16, height=16, mode="L")
RGB = ImageContract(width=16, height=16, mode="RGB")
AUDIO = AudioContract(sample_rate=8000, max_seconds=1.5)


def _digit(mode: str = "L") -> Image.Image:
    """A dark vertical bar on white paper, 64x64."""
    array = np.full((64, 64), 255, np.uint8)
    array[8:56, 28:36] = 0
    return Image.fromarray(array, "L").convert(mode)


@pytest.mark.parametrize(
    ("mode", "format"),
    [("L", "PNG"), ("RGB", "JPEG"), ("RGBA", "PNG"), ("P", "PNG"), ("1", "PNG"),
     ("CMYK", "JPEG"), ("I;16", "PNG"), ("LA", "PNG"), ("RGB", "BMP"), ("RGB", "WEBP"),
     ("RGB", "TIFF"), ("RGB", "GIF")],
)  # fmt: skip
def test_common_modes_and_formats_decode_to_the_contract(mode: str, format: str) -> None:
    image = _digit(mode) if mode != "I;16" else Image.fromarray(np.asarray(_digit()).astype(np.uint16) * 257)
    pixels = decode_image(png_bytes(image, format), GREY, "image")
    assert pixels.shape == (16, 16) and pixels.dtype == np.uint8
    assert pixels[:, 7:9].mean() < 80 and pixels[:, :3].mean() > 200  # the bar survived, paper is light


def test_rgb_contract_gets_three_channels() -> None:
    assert decode_image(png_bytes(_digit("RGB")), RGB, "image").shape == (16, 16, 3)


def test_transparent_pixels_become_white_paper() -> None:
    transparent = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    assert decode_image(png_bytes(transparent), GREY, "image").min() == 255


def test_exif_orientation_is_applied() -> None:
    wide = Image.new("L", (40, 20), 255)
    wide.paste(0, (0, 0, 20, 20))  # left half dark
    exif = wide.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    pixels = decode_image(png_bytes(wide, "JPEG", exif=exif.tobytes()), GREY, "image")
    assert pixels[:6].mean() < 60 and pixels[-6:].mean() > 200  # dark half is now on top


def test_16_bit_images_are_scaled_not_clipped() -> None:
    mid_grey = Image.fromarray(np.full((8, 8), 32768, np.uint16))
    assert abs(int(decode_image(png_bytes(mid_grey), GREY, "image").mean()) - 128) <= 1


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "is empty"), (b"hello, not an image", "is not an image"),
     (png_bytes(Image.new("L", (64, 64)))[:60], "damaged or truncated")],
)  # fmt: skip
def test_unusable_images_name_the_field(data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        decode_image(data, GREY, "image")
    assert caught.value.field == "image"


def test_decompression_bombs_are_refused_before_decoding() -> None:
    huge = png_bytes(Image.new("1", (6000, 6000)))  # a few kB of PNG, 36 megapixels decoded
    with pytest.raises(InputError, match="over the limit of 1000000"):
        decode_image(huge, GREY, "image", max_pixels=1_000_000)


@pytest.mark.parametrize(
    ("rate", "channels", "subtype"),
    [(8000, 1, "PCM_16"), (44100, 2, "PCM_24"), (16000, 1, "PCM_U8"), (48000, 6, "FLOAT"),
     (22050, 1, "PCM_32"), (11025, 2, "DOUBLE")],
)  # fmt: skip
def test_any_rate_width_and_channel_count_becomes_mono_at_the_models_rate(rate, channels, subtype) -> None:
    data = wav_bytes(tone(0.5, rate, hz=300.0, channels=channels), rate, subtype)
    decoded = decode_audio(data, AUDIO, "audio")
    wave = decoded.signal
    assert not decoded.cropped
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 4000) <= 2
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 8000 / len(wave) - 300) < 5  # the tone kept its pitch


def test_flac_is_read_too() -> None:
    assert len(decode_audio(wav_bytes(tone(0.2, 8000), 8000, format="FLAC"), AUDIO, "audio").signal) == 1600


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "is empty"), (b"RIFF....WAVEfmt garbage", "is not audio"),
     (wav_bytes(np.zeros(0, np.float32), 8000), "holds no samples"),
     (wav_bytes(tone(1.0, 8000), 8000)[:3000], "truncated")],
)  # fmt: skip
def test_unusable_audio_names_the_field(data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        decode_audio(data, AUDIO, "voice")
    assert caught.value.field == "voice"


def _burst(seconds: float, rate: int, start: float, stop: float) -> np.ndarray:
    """Quiet noise with a loud 440 Hz tone from `start` to `stop` seconds."""
    wave = np.random.default_rng(0).normal(0, 0.01, round(seconds * rate)).astype(np.float32)
    loud = slice(round(start * rate), round(stop * rate))
    wave[loud] += tone(seconds, rate)[loud]
    return wave


@pytest.mark.parametrize("rate", [8000, 16000, 44100])
def test_a_long_recording_is_cropped_to_its_loudest_window(rate: int) -> None:
    decoded = decode_audio(wav_bytes(_burst(2.3, rate, 1.0, 1.3), rate), AUDIO, "audio")
    assert decoded.cropped and len(decoded.signal) == AUDIO.max_samples == 12000
    assert decoded.signal.dtype == np.float32
    loud = np.flatnonzero(np.abs(decoded.signal) > 0.2)
    # the whole burst (0.3 s of it) is kept, not its tail or head
    assert (loud[-1] - loud[0]) / 8000 == pytest.approx(0.3, abs=0.005)


def test_the_loudest_window_is_exact() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        wave = rng.normal(size=int(rng.integers(50, 200))).astype(np.float32)
        length = int(rng.integers(1, 50))
        starts = range(len(wave) - length + 1)
        energies = [np.sum(wave[i : i + length].astype(np.float64) ** 2) for i in starts]
        window = loudest_window(wave, length)
        assert any(np.array_equal(window, wave[i : i + length]) for i in starts)  # a window of the wave
        assert np.sum(window.astype(np.float64) ** 2) == pytest.approx(max(energies), rel=1e-9)
    silence = np.zeros(100, np.float32)
    assert np.array_equal(loudest_window(silence, 10), silence[:10])  # a tie keeps the earliest
    short = np.ones(5, np.float32)
    assert loudest_window(short, 10) is short


def test_a_recording_of_exactly_max_seconds_is_not_cropped() -> None:
    decoded = decode_audio(wav_bytes(tone(1.5, 8000), 8000), AUDIO, "audio")
    assert not decoded.cropped and len(decoded.signal) == 12000


def test_reject_refuses_a_long_recording_naming_the_field_and_the_option() -> None:
    data = wav_bytes(tone(2.0, 8000), 8000)
    with pytest.raises(InputError, match=r"is 2\.00 s long; this model accepts at most 1\.5 s") as caught:
        decode_audio(data, AUDIO, "voice", too_long="reject")
    assert caught.value.field == "voice" and "audio_too_long=crop" in caught.value.message


def test_the_contracts_policy_holds_unless_overridden() -> None:
    strict = AudioContract(sample_rate=8000, max_seconds=1.5, too_long="reject")
    data = wav_bytes(tone(2.0, 8000), 8000)
    with pytest.raises(InputError, match=r"at most 1\.5 s"):
        decode_input(data, strict, "audio")
    assert decode_input(data, strict, "audio", too_long="crop").cropped
    with pytest.raises(InputError, match=r"at most 1\.5 s"):
        decode_input(data, AUDIO, "audio", too_long="reject")
    assert AUDIO.too_long == "crop"  # the default, for manifests written before the field existed
    assert AudioContract.model_validate({"kind": "audio", "sample_rate": 8000, "max_seconds": 1.5}) == AUDIO


def test_training_decodes_a_long_clip_as_the_service_does() -> None:
    data = wav_bytes(_burst(2.3, 8000, 0.2, 0.6), 8000)
    signal = decode(data, AUDIO, "audio")  # training's call: the signal alone
    assert np.array_equal(signal, decode_input(data, AUDIO, "audio").signal)
    assert len(signal) == AUDIO.max_samples
    assert not decode_input("drei", TextContract(max_length=8), "text").cropped


def test_text_checks() -> None:
    contract = TextContract(max_length=8)
    assert check_text("zwei", contract, "text") == "zwei"
    with pytest.raises(InputError, match="is 10 bytes of UTF-8; this model reads at most 8"):
        check_text("пятьь", contract, "text")  # 5 characters, 10 bytes
    with pytest.raises(InputError, match="is empty"):
        check_text("  ", contract, "text")
    with pytest.raises(InputError, match="must be a string"):
        check_text(3, contract, "text")


def test_tensor_checks() -> None:
    contract = TensorContract(length=3)
    assert check_tensor([1, 2.5, -3], contract, "pen").tolist() == [1, 2.5, -3]
    for values, message in [
        ([1, 2], "has 2 numbers; this model needs exactly 3"),
        ([1, float("nan"), 3], r"pen\[1\]: must be a finite number"),
        ([1, float("inf"), 3], r"pen\[1\]: must be a finite number"),
        ([1, True, 3], r"pen\[1\]: must be a number"),
        ([1, 1e300, 3], "too large for 32-bit floats"),
        ("123", "must be a list of 3 numbers"),
    ]:
        with pytest.raises(InputError, match=message):
            check_tensor(values, contract, "pen")


def test_an_image_past_pillows_own_guard_is_named_a_bomb_not_an_unreadable_file() -> None:
    huge = png_bytes(Image.new("1", (20000, 20000)))  # 400 megapixels: Pillow refuses to open it
    with pytest.raises(InputError, match="over the limit of 1000000 \\(a decompression bomb") as caught:
        decode_image(huge, GREY, "image", max_pixels=1_000_000)
    assert "ANYMODAL_MAX_IMAGE_PIXELS" in caught.value.message
