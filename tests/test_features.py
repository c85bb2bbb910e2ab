import numpy as np
from anymodal.service.features import (
    PAD_ID,
    audio_features,
    image_features,
    input_shape,
    log_mel,
    mel_filterbank,
    tensor_features,
    text_features,
)
from anymodal.service.manifest import AudioContract, ImageContract, TensorContract, TextContract

from tests.helpers import tone

AUDIO = AudioContract(sample_rate=8000, max_seconds=1.0, n_fft=256, hop_length=128, n_mels=32)


def test_log_mel_has_the_contract_shape_whatever_the_clip_length() -> None:
    for seconds in (0.05, 0.4, 1.0):
        spectrogram = log_mel(tone(seconds, 8000), AUDIO)
        assert spectrogram.shape == (32, AUDIO.frames) == input_shape(AUDIO)
        assert np.isfinite(spectrogram).all()


def test_a_tone_lights_the_mel_band_of_its_pitch() -> None:
    filters = mel_filterbank(8000, 256, 32)
    low, high = log_mel(tone(1.0, 8000, hz=300), AUDIO), log_mel(tone(1.0, 8000, hz=2500), AUDIO)
    band = lambda hz: int(np.argmax(filters[:, round(hz / 8000 * 256)]))  # noqa: E731
    assert abs(int(np.argmax(low[:, 40])) - band(300)) <= 1
    assert abs(int(np.argmax(high[:, 40])) - band(2500)) <= 1


def test_mel_filters_are_triangles_covering_the_spectrum() -> None:
    filters = mel_filterbank(8000, 256, 32)
    assert filters.shape == (32, 129)
    assert filters.max() <= 1.0 + 1e-6 and filters.min() >= 0
    assert (filters.sum(axis=0)[2:-2] > 0).all()


def test_silence_sits_at_the_log_floor_and_normalization_applies() -> None:
    contract = AUDIO.model_copy(update={"mean": -5.0, "std": 2.0})
    silent = audio_features(np.zeros(10, np.float32), contract)
    np.testing.assert_allclose(silent, (np.log(1e-6) + 5.0) / 2.0, rtol=1e-5)


def test_text_becomes_padded_byte_ids() -> None:
    ids = text_features("tré", TextContract(max_length=6))
    assert ids.tolist() == [ord("t") + 1, ord("r") + 1, 0xC3 + 1, 0xA9 + 1, PAD_ID, PAD_ID]
    assert ids.dtype == np.int64


def test_image_and_tensor_normalization() -> None:
    pixels = np.array([[0, 255]], np.uint8)
    out = image_features(pixels, ImageContract(width=2, height=1, mean=0.5, std=0.5))
    np.testing.assert_allclose(out, [[[-1.0, 1.0]]])
    rgb = image_features(np.zeros((2, 3, 3), np.uint8), ImageContract(width=3, height=2, mode="RGB"))
    assert rgb.shape == (3, 2, 3)
    vector = tensor_features(np.array([2.0, 4.0]), TensorContract(length=2, mean=[1, 2], std=[1, 2]))
    np.testing.assert_allclose(vector, [1.0, 1.0])


def _log_mel_every_frame(waveform: np.ndarray, contract: AudioContract) -> np.ndarray:
    """The plain definition, every frame through the FFT: what log_mel must equal."""
    padded = np.zeros(contract.max_samples, dtype=np.float32)
    padded[: len(waveform)] = waveform[: contract.max_samples]
    signal = np.pad(padded, contract.n_fft // 2, mode="reflect")
    starts = np.arange(contract.frames) * contract.hop_length
    frames = signal[starts[:, None] + np.arange(contract.n_fft)[None]]
    window = np.hanning(contract.n_fft + 1)[:-1].astype(np.float32)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    filters = mel_filterbank(contract.sample_rate, contract.n_fft, contract.n_mels)
    return np.log(filters @ power.T.astype(np.float32) + 1e-6).astype(np.float32)


def test_skipping_silent_padding_frames_changes_no_number() -> None:
    rng = np.random.default_rng(0)
    max_samples = AUDIO.max_samples
    for length in (
        1,
        2,
        127,
        128,
        129,
        1000,
        max_samples - 129,
        max_samples - 128,
        max_samples - 127,
        max_samples,
    ):
        waveform = rng.normal(0, 0.3, length).astype(np.float32)
        np.testing.assert_allclose(
            log_mel(waveform, AUDIO), _log_mel_every_frame(waveform, AUDIO), rtol=1e-5, atol=1e-4
        )
