"""Decoding, shared by training and the service: every common image and WAV flavour lands in the
model's contract, and every unusable input raises an InputError naming the field."""

import numpy as np
import pytest
from PIL import Image

from service.decoding import InputError, check_tensor, check_text, decode_audio, decode_image
from service.manifest import AudioContract, ImageContract, TensorContract, TextContract
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
    wave = decode_audio(data, AUDIO, "audio")
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 4000) <= 2
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 8000 / len(wave) - 300) < 5  # the tone kept its pitch


def test_flac_is_read_too() -> None:
    assert len(decode_audio(wav_bytes(tone(0.2, 8000), 8000, format="FLAC"), AUDIO, "audio")) == 1600


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "is empty"), (b"RIFF....WAVEfmt garbage", "is not audio"),
     (wav_bytes(np.zeros(0, np.float32), 8000), "holds no samples"),
     (wav_bytes(tone(2.0, 8000), 8000), "is 2.00 s long; this model accepts at most 1.5 s"),
     (wav_bytes(tone(1.0, 8000), 8000)[:3000], "truncated")],
)  # fmt: skip
def test_unusable_audio_names_the_field(data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        decode_audio(data, AUDIO, "voice")
    assert caught.value.field == "voice"


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
