"""The bundled example's driving video has a hum as its sound, loud while the jaw is open and silent while closed."""

from __future__ import annotations

import wave

import av
import numpy as np
import pytest

from magicportrait.io.video import probe_video
from magicportrait.pipelines.example import (
    EXAMPLE_FPS,
    EXAMPLE_SAMPLE_RATE,
    HUM_PEAK,
    HUM_PITCH_HZ,
    example_audio,
    write_example,
    write_wav,
)

NUM_FRAMES = 10  # the jaw is shut in frames 0-2 and 8-9, widest open in frame 5 (0.20-0.24 s)
CLOSED = (0.0, 0.09)  # seconds: before the first opening frame's centre the hum is silent
OPEN = (0.17, 0.25)


@pytest.fixture(scope="module")
def driving(tmp_path_factory):
    return write_example(tmp_path_factory.mktemp("example_audio"), num_frames=NUM_FRAMES)[1]


def _decoded_audio(path) -> tuple[np.ndarray, int, float]:
    """Mono float samples of the first audio stream, its sample rate and its stored duration (s)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        duration = float(stream.duration * stream.time_base)
        samples = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(stream)])
        return samples, stream.rate, duration


def _rms(samples: np.ndarray, rate: int, window: tuple[float, float]) -> float:
    part = samples[round(window[0] * rate):round(window[1] * rate)]
    return float(np.sqrt(np.mean(np.square(part, dtype=np.float64))))


def test_driving_video_has_audio_as_long_as_the_video(driving):
    info = probe_video(driving)
    assert info.has_audio and info.num_frames == NUM_FRAMES
    _, rate, duration = _decoded_audio(driving)
    assert rate == EXAMPLE_SAMPLE_RATE
    assert duration == pytest.approx(NUM_FRAMES / EXAMPLE_FPS, abs=0.05)
    assert duration == pytest.approx(info.duration, abs=0.05)


def test_audio_is_loud_where_the_jaw_is_open_and_silent_where_closed(driving):
    samples, rate, _ = _decoded_audio(driving)
    loud, quiet = _rms(samples, rate, OPEN), _rms(samples, rate, CLOSED)
    assert 0.05 < loud < HUM_PEAK  # quiet, but clearly there
    assert quiet < 1e-3 and quiet < loud / 100
    assert np.abs(samples).max() == pytest.approx(HUM_PEAK, abs=0.02)  # about -12 dBFS after AAC
    # In sync with the video: the decoded hum matches the synthesized one sample for sample.
    expected = example_audio(NUM_FRAMES, EXAMPLE_FPS)
    assert np.corrcoef(samples[:len(expected)], expected)[0, 1] > 0.99


def test_example_audio_is_a_deterministic_hum_following_the_jaw():
    first, second = example_audio(NUM_FRAMES, EXAMPLE_FPS), example_audio(NUM_FRAMES, EXAMPLE_FPS)
    assert first.dtype == np.float32 and first.shape == (6400,)  # 0.4 s at 16 kHz, exactly
    np.testing.assert_array_equal(first, second)
    assert np.abs(first).max() == pytest.approx(HUM_PEAK, rel=0.01)  # the jaw is widest open in frame 5
    assert np.abs(first[:round(CLOSED[1] * EXAMPLE_SAMPLE_RATE)]).max() < 1e-6  # silent while the mouth is shut
    assert np.abs(first[-round(0.06 * EXAMPLE_SAMPLE_RATE):]).max() < 1e-6
    assert len(example_audio(50, EXAMPLE_FPS, sample_rate=22050)) == 44100  # 2 s at 22.05 kHz
    spectrum = np.abs(np.fft.rfft(first[round(OPEN[0] * EXAMPLE_SAMPLE_RATE):round(OPEN[1] * EXAMPLE_SAMPLE_RATE)],
                                  n=EXAMPLE_SAMPLE_RATE))  # zero-padded to 1 Hz bins
    assert abs(int(np.argmax(spectrum)) - HUM_PITCH_HZ) < 6  # the fundamental is the strongest partial


def test_example_audio_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_frames"):
        example_audio(0, EXAMPLE_FPS)


def test_write_wav_writes_16_bit_mono(tmp_path):
    samples = np.array([0.0, 0.5, -0.5, 2.0, -2.0], dtype=np.float32)
    path = write_wav(tmp_path / "x.wav", samples, 22050)
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()) == (1, 2, 22050, 5)
        pcm = np.frombuffer(wav.readframes(5), dtype="<i2")
    assert pcm.tolist() == [0, 16384, -16384, 32767, -32767]  # 0.5 * 32767 rounds to 16384; beyond +-1 clipped
