"""Tests of magicportrait.io.video: every medium is generated in tmp_path with PyAV."""

from __future__ import annotations

import inspect
import logging
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from magicportrait.errors import InputError, OutputError
from magicportrait.io import video
from magicportrait.io.video import VideoReader, VideoWriter, iter_frames, probe_video, write_video

SAMPLE_RATE = 44100
TONE_HZ = 440.0


def gradient_frames(count: int, height: int, width: int) -> list[np.ndarray]:
    """Smooth colour gradients that drift over time (each frame differs, all compress well)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for i in range(count):
        red = 40 + 170 * xx / width
        green = 40 + 170 * yy / height
        blue = np.full_like(xx, 40 + 170 * i / max(count - 1, 1))
        frames.append(np.stack([red, green, blue], axis=-1).round().astype(np.uint8))
    return frames


def pyav_write(path: Path, frames: list[np.ndarray], codec: str = "libx264", rate: Fraction | int = 25, *,
               pix_fmt: str = "yuv420p", rotation: int | None = None, pts_ms: list[int] | None = None) -> Path:
    """Write frames with plain PyAV (independently of VideoWriter); optional display rotation or custom pts."""
    if codec not in av.codecs_available:
        pytest.skip(f"encoder {codec} is not in PyAV's bundled FFmpeg")
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "10"}
        elif codec in ("mpeg4", "mjpeg"):
            stream.codec_context.qmin = stream.codec_context.qmax = 2
        if rotation is not None:
            stream.set_display_rotation(rotation)  # counter-clockwise degrees, as FFmpeg's display matrix
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def sine(seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)


def write_audio(container: av.container.OutputContainer, stream: av.AudioStream, seconds: float) -> None:
    samples = sine(seconds)
    for start in range(0, len(samples), 1024):
        frame = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def make_driving_video(path: Path, seconds: float = 2.0, audio_codec: str = "aac") -> Path:
    """A 25 fps H.264 video with a 440 Hz sine soundtrack."""
    frames = gradient_frames(round(seconds * 25), 32, 32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        audio = container.add_stream(audio_codec, rate=SAMPLE_RATE, layout="mono")
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
        write_audio(container, audio, seconds)
    return path


def make_wav(path: Path, seconds: float = 2.0) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=SAMPLE_RATE, layout="mono")
        write_audio(container, stream, seconds)
    return path


def mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def folder_listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize(("fps", "expected_rate"), [
    (25, Fraction(25)),
    (Fraction(30000, 1001), Fraction(30000, 1001)),
    (30000 / 1001, Fraction(30000, 1001)),
    (29.97, Fraction(2997, 100)),
])
def test_mp4_round_trip(tmp_path, fps, expected_rate):
    frames = gradient_frames(12, 48, 80)
    path = write_video(tmp_path / "out.mp4", frames, fps)

    info = probe_video(path)
    assert info.frame_rate == expected_rate
    assert info.fps == pytest.approx(float(expected_rate))
    assert (info.num_frames, info.num_frames_exact) == (12, True)
    assert (info.width, info.height, info.rotation, info.has_audio, info.codec) == (80, 48, 0, False, "h264")
    assert info.duration == pytest.approx(12 / float(expected_rate), abs=1e-3)

    decoded = list(iter_frames(path))
    assert len(decoded) == 12
    for written, read in zip(frames, decoded, strict=True):
        assert read.dtype == np.uint8 and read.shape == (48, 80, 3)
        assert mean_abs_error(read, written) < 2.0
    # Frames come back in order: frame 11 is far from frame 0 (its blue channel differs by 170).
    assert mean_abs_error(decoded[11], frames[0]) > 40


def test_writer_output_is_tagged_h264_yuv420p(tmp_path):
    path = write_video(tmp_path / "out.mp4", gradient_frames(3, 32, 32), 25, crf=23)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert container.format.name.startswith("mov,mp4")
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert stream.codec_context.colorspace == 1  # BT.709, matching the conversion used when writing


@pytest.mark.parametrize(("suffix", "codec", "pix_fmt", "size", "exact"), [
    ("mov", "libx264", "yuv420p", (48, 64), True),
    ("webm", "libvpx-vp9", "yuv420p", (251, 333), False),
    ("webm", "libvpx", "yuv420p", (48, 64), False),
    ("avi", "mpeg4", "yuv420p", (48, 64), True),
    ("avi", "mjpeg", "yuvj420p", (251, 333), True),
    ("mkv", "libx264", "yuv420p", (48, 64), False),
])
def test_reads_other_containers(tmp_path, suffix, codec, pix_fmt, size, exact):
    frames = gradient_frames(10, *size)
    path = pyav_write(tmp_path / f"in.{suffix}", frames, codec, pix_fmt=pix_fmt)

    info = probe_video(path)
    assert info.fps == pytest.approx(25.0)
    assert (info.height, info.width) == size
    assert info.num_frames_exact is exact
    assert info.num_frames == 10  # stored, or duration * fps
    assert info.duration == pytest.approx(0.4, abs=0.01)

    decoded = list(iter_frames(path))
    assert len(decoded) == 10
    assert all(frame.shape == (*size, 3) for frame in decoded)
    errors = [mean_abs_error(read, written) for read, written in zip(decoded, frames, strict=True)]
    assert max(errors) < 4.0, errors


def test_odd_size_is_padded_by_edge_replication(tmp_path):
    frames = gradient_frames(5, 251, 333)
    path = write_video(tmp_path / "odd.mp4", frames, 25)

    info = probe_video(path)
    assert (info.width, info.height) == (334, 252)
    decoded = list(iter_frames(path))
    assert len(decoded) == 5
    for written, read in zip(frames, decoded, strict=True):
        assert read.shape == (252, 334, 3)
        assert mean_abs_error(read[:251, :333], written) < 2.0
        assert mean_abs_error(read[:251, 333], written[:, 332]) < 3.0  # the added column repeats the last one
        assert mean_abs_error(read[251, :333], written[250]) < 3.0


def test_max_size_shrinks_with_area_interpolation(tmp_path):
    frames = gradient_frames(4, 64, 96)
    path = write_video(tmp_path / "big.mp4", frames, 25)

    reader = VideoReader(path, max_size=32)
    assert reader.frame_size == (21, 32)
    decoded = list(reader)
    assert [frame.shape for frame in decoded] == [(21, 32, 3)] * 4
    expected = cv2.resize(frames[2], (32, 21), interpolation=cv2.INTER_AREA)
    assert mean_abs_error(decoded[2], expected) < 2.0
    # A max_size above the video's size changes nothing.
    assert next(iter_frames(path, max_size=500)).shape == (64, 96, 3)


# ------------------------------------------------------------------------------------------------ rotation


def marked_frames(count: int, height: int, width: int) -> list[np.ndarray]:
    """Gray frames with a red block at the top-left and a green block at the top-right corner."""
    frame = np.full((height, width, 3), 128, np.uint8)
    frame[:8, :8] = (230, 20, 20)
    frame[:8, -8:] = (20, 230, 20)
    return [frame.copy() for _ in range(count)]


@pytest.mark.parametrize(("ccw_matrix", "clockwise"), [(-90, 90), (90, 270), (180, 180)])
def test_rotation_metadata_is_applied(tmp_path, ccw_matrix, clockwise):
    frames = marked_frames(3, 48, 80)
    path = pyav_write(tmp_path / "phone.mp4", frames, rotation=ccw_matrix)

    info = probe_video(path)
    assert info.rotation == clockwise
    expected = np.rot90(frames[0], k=-clockwise // 90)
    assert (info.height, info.width) == expected.shape[:2]

    decoded = list(iter_frames(path))
    assert len(decoded) == 3
    assert decoded[0].shape == expected.shape
    assert mean_abs_error(decoded[0], expected) < 3.0
    if clockwise == 90:  # spelled out: a clockwise quarter turn brings the top-left corner to the top-right
        assert decoded[0][2, -3, 0] > 200 and decoded[0][2, -3, 1] < 60
        assert decoded[0][-3, -3, 1] > 200  # and the top-right corner to the bottom-right


def test_rotation_agrees_with_opencv(tmp_path):
    """OpenCV's FFmpeg backend applies the display matrix with its own code: an independent check of direction."""
    frames = marked_frames(2, 48, 80)
    path = pyav_write(tmp_path / "phone.mp4", frames, rotation=-90)
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        pytest.skip("OpenCV was built without its FFmpeg backend")
    capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    ok, bgr = capture.read()
    capture.release()
    assert ok
    ours = next(iter_frames(path))
    assert ours.shape == bgr.shape == (80, 48, 3)
    assert mean_abs_error(ours, bgr[:, :, ::-1]) < 3.0


# ------------------------------------------------------------------------------------------------ variable frame rate


def test_variable_frame_rate_gives_average_fps(tmp_path):
    intervals = [20 if i % 2 == 0 else 60 for i in range(19)]  # alternate 50 fps and 16.7 fps
    pts = np.concatenate([[0], np.cumsum(intervals)]).tolist()
    frames = gradient_frames(20, 32, 48)
    path = pyav_write(tmp_path / "vfr.mp4", frames, rate=50, pts_ms=pts)

    info = probe_video(path)
    # 20 frames over 0.74 s of intervals plus the last frame's duration: ~25-27 fps, not the nominal 50.
    assert 24.5 < info.fps < 27.5
    assert info.num_frames == 20
    decoded = list(iter_frames(path))
    assert len(decoded) == 20
    blues = [frame[..., 2].mean() for frame in decoded]
    assert blues == sorted(blues) and blues[-1] - blues[0] > 150


# ------------------------------------------------------------------------------------------------ audio


def decoded_audio(path: Path) -> tuple[np.ndarray, float, str]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        duration = float(stream.duration * stream.time_base)
        samples = [frame.to_ndarray()[0] for frame in container.decode(stream)]  # planar float: first channel
        return np.concatenate(samples), duration, stream.codec_context.name


@pytest.mark.parametrize("source_kind", ["aac-mp4-copied", "pcm-wav-transcoded"])
def test_audio_is_copied_and_trimmed(tmp_path, source_kind):
    if source_kind.startswith("aac"):
        source = make_driving_video(tmp_path / "driving.mp4", seconds=2.0)
    else:
        source = make_wav(tmp_path / "driving.wav", seconds=2.0)
    frames = gradient_frames(30, 32, 32)
    path = write_video(tmp_path / "out.mp4", frames, 25, audio_from=source)  # 1.2 s of video

    info = probe_video(path)
    assert info.has_audio and info.num_frames == 30
    samples, duration, codec = decoded_audio(path)
    assert codec == "aac"
    assert duration == pytest.approx(1.2, abs=0.1)
    assert len(samples) / SAMPLE_RATE == pytest.approx(1.2, abs=0.1)
    reference = np.sin(2 * np.pi * TONE_HZ * np.arange(len(samples)) / SAMPLE_RATE)
    core = slice(2048, len(samples) - 2048)  # leave out the encoder's edges
    assert np.corrcoef(samples[core], reference[core])[0, 1] > 0.95
    if source_kind.startswith("aac"):  # AAC is copied: the very same packets, not a re-encode
        assert audio_packets(path, 5) == audio_packets(source, 5)


def audio_packets(path: Path, count: int) -> list[bytes]:
    with av.open(str(path)) as container:
        packets = (bytes(packet) for packet in container.demux(container.streams.audio[0]) if packet.size)
        return [next(packets) for _ in range(count)]


def test_audio_source_without_audio_warns_and_writes_video_only(tmp_path, caplog):
    silent = pyav_write(tmp_path / "silent.mp4", gradient_frames(5, 32, 32))
    with caplog.at_level(logging.WARNING, logger="magicportrait.io.video"):
        path = write_video(tmp_path / "out.mp4", gradient_frames(5, 32, 32), 25, audio_from=silent)
    assert "no audio stream" in caplog.text
    info = probe_video(path)
    assert (info.has_audio, info.num_frames) == (False, 5)


def test_missing_audio_source_fails_before_writing(tmp_path):
    with pytest.raises(InputError, match="nothing.wav"):
        VideoWriter(tmp_path / "out.mp4", 25, audio_from=tmp_path / "nothing.wav")
    assert folder_listing(tmp_path) == []


# ------------------------------------------------------------------------------------------------ errors


def test_missing_file(tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(InputError, match="missing.mp4: no such video file"):
        probe_video(missing)
    with pytest.raises(InputError, match="no such video file"):
        iter_frames(missing)  # fails at once, not at the first next()


@pytest.mark.parametrize("content", [b"", b"this is not a video\n" * 200])
def test_not_a_video(tmp_path, content):
    path = tmp_path / "fake.mp4"
    path.write_bytes(content)
    with pytest.raises(InputError, match="fake.mp4: not a readable video"):
        probe_video(path)


def test_image_is_not_a_video(tmp_path):
    path = tmp_path / "still.png"
    assert cv2.imwrite(str(path), np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(InputError, match="still image"):
        probe_video(path)


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = make_wav(tmp_path / "sound.mp4", seconds=0.2)
    with pytest.raises(InputError, match=r"no video stream \(it holds 1 audio stream"):
        probe_video(path)


def write_no_frames(path: Path, codec: str) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()  # header and trailer, no frame
    return path


def test_video_stream_without_frames(tmp_path):
    path = write_no_frames(tmp_path / "empty.avi", "mpeg4")  # AVI keeps the empty stream
    with pytest.raises(InputError, match="no decodable frames"):
        probe_video(path)
    with pytest.raises(InputError, match="no decodable frames"):
        iter_frames(path)


def test_mp4_without_frames(tmp_path):
    path = write_no_frames(tmp_path / "empty.mp4", "libx264")  # MP4 drops a track without samples
    with pytest.raises(InputError, match="no video stream .it holds no streams at all"):
        probe_video(path)


def test_truncated_mp4(tmp_path):
    path = pyav_write(tmp_path / "clip.mp4", gradient_frames(10, 32, 32))  # index (moov) at the end
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match="clip.mp4: not a readable video"):
        probe_video(path)


def test_writing_zero_frames_leaves_nothing(tmp_path):
    with pytest.raises(InputError, match="no frames"):
        write_video(tmp_path / "out.mp4", [], 25)
    assert folder_listing(tmp_path) == []


def test_exception_inside_writer_leaves_nothing(tmp_path):
    frames = gradient_frames(3, 32, 32)
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(tmp_path / "out.mp4", 25) as writer:
            for frame in frames:
                writer.write(frame)
            raise RuntimeError("boom")
    assert folder_listing(tmp_path) == []


def test_failed_write_keeps_an_existing_file(tmp_path):
    path = write_video(tmp_path / "out.mp4", gradient_frames(4, 32, 32), 25)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="same size"):
        write_video(path, [np.zeros((32, 32, 3), np.uint8), np.zeros((16, 16, 3), np.uint8)], 25)
    assert path.read_bytes() == before
    assert folder_listing(tmp_path) == ["out.mp4"]


@pytest.mark.parametrize("fps", [0, -5, 1001, float("nan"), float("inf")])
def test_absurd_fps_is_refused(tmp_path, fps):
    with pytest.raises(InputError, match="frame rate"):
        VideoWriter(tmp_path / "out.mp4", fps)


def test_absurd_frame_size_is_refused(tmp_path):
    with pytest.raises(InputError, match="too large"):
        with VideoWriter(tmp_path / "out.mp4", 25) as writer:
            writer.write(np.zeros((2, 16385, 3), np.uint8))
    assert folder_listing(tmp_path) == []


@pytest.mark.parametrize("bad", [np.zeros((32, 32), np.uint8), np.zeros((32, 32, 3), np.float32),
                                 np.zeros((32, 32, 4), np.uint8)])
def test_bad_frame_type_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        write_video(tmp_path / "out.mp4", [bad], 25)
    assert folder_listing(tmp_path) == []


def test_bad_encoder_setting_is_reported(tmp_path):
    with pytest.raises(OutputError, match=r"preset \('warp-speed'\)"):
        with VideoWriter(tmp_path / "out.mp4", 25, preset="warp-speed") as writer:
            writer.write(np.zeros((32, 32, 3), np.uint8))
    assert folder_listing(tmp_path) == []


def test_non_contiguous_frames_are_accepted(tmp_path):
    frames = [np.ascontiguousarray(frame)[:, ::-1] for frame in gradient_frames(3, 32, 48)]  # mirrored views
    path = write_video(tmp_path / "out.mp4", frames, 25)
    assert mean_abs_error(next(iter_frames(path)), frames[0]) < 3.0


def test_unsupported_output_extension(tmp_path):
    with pytest.raises(OutputError, match=r"use a \.mp4"):
        VideoWriter(tmp_path / "out.avi", 25)


# ------------------------------------------------------------------------------------------------ streaming


def test_iter_frames_streams_one_frame_at_a_time(tmp_path, monkeypatch):
    path = pyav_write(tmp_path / "long.mp4", gradient_frames(1, 32, 32) * 300)
    converted = []
    real_to_rgb = video._to_rgb

    def counting_to_rgb(frame):
        converted.append(frame.pts)
        return real_to_rgb(frame)

    monkeypatch.setattr(video, "_to_rgb", counting_to_rgb)
    frames = iter_frames(path)
    assert inspect.isgenerator(frames)
    assert converted == []  # nothing decoded before it is asked for
    first = next(frames)
    assert first.shape == (32, 32, 3)
    assert len(converted) == 1  # not 300
    frames.close()


def test_reader_context_closes_unfinished_iterations(tmp_path):
    path = pyav_write(tmp_path / "clip.mp4", gradient_frames(10, 32, 32))
    with VideoReader(path) as reader:
        frames = iter(reader)
        next(frames)
        assert inspect.getgeneratorstate(frames) == inspect.GEN_SUSPENDED
    assert inspect.getgeneratorstate(frames) == inspect.GEN_CLOSED
    assert len(list(reader)) == 10  # a reader can be iterated again
