"""Streaming video reading and H.264/MP4 writing with PyAV (FFmpeg libraries bundled in the ``av`` wheel).

Frames are RGB uint8 arrays of shape (H, W, 3), upright: a rotation stored in the file (phones record portrait
video as landscape pixels plus a display matrix) is applied when reading. Reading never holds more than one
decoded frame, so memory does not grow with the length of the video.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import weakref
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from magicportrait.errors import InputError, OutputError
from magicportrait.io.atomic import atomic_path
from magicportrait.io.image import long_side_size, resize_long_side

logger = logging.getLogger(__name__)

MAX_FRAME_SIDE = 16384
MAX_FPS = 1000.0
VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi")

_AV_TIME_BASE = 1_000_000  # FFmpeg's AV_TIME_BASE: container start/duration are in microseconds
_COPYABLE_AUDIO = ("aac", "mp3")  # audio codecs that go into MP4 as they are, without re-encoding
_AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
_IMAGE_DEMUXERS = re.compile(r"^image2|_pipe$")  # FFmpeg opens still images as one-frame "videos"
_OUTPUT_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov"}
_BT709 = 1  # AVCOL_SPC/PRI/TRC_BT709: the colour standard of HD video, and what players assume for it
_LIMITED_RANGE = 1  # AVCOL_RANGE_MPEG (16-235), the range every player expects in H.264


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns about a video file.

    Attributes:
        path: the file.
        fps: frames per second (the average rate for variable-frame-rate files).
        num_frames: number of frames; exact when ``num_frames_exact``, else estimated as duration * fps.
        width, height: display size in pixels, i.e. after applying ``rotation``.
        rotation: clockwise degrees (0, 90, 180 or 270) the stored pictures are turned for display; the value of
            the classic ``rotate`` tag (a phone's portrait video has 90 or 270).
        duration: seconds of video.
        has_audio: whether the file has an audio stream.
        frame_rate: ``fps`` as an exact fraction (e.g. 30000/1001), to write outputs at the very same rate.
        num_frames_exact: whether the container stores the frame count.
        codec: name of the video codec.
    """

    path: Path
    fps: float
    num_frames: int
    width: int
    height: int
    rotation: int
    duration: float
    has_audio: bool
    frame_rate: Fraction = Fraction(0)
    num_frames_exact: bool = False
    codec: str = ""


# ----------------------------------------------------------------------------------------------------- reading


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read a video's properties (decodes its first frame, to be sure it has one). Raises InputError if unusable."""
    path = Path(path)
    with _open_input(path) as container:
        stream = _video_stream(container, path)
        first = _first_frame(container, stream, path)
        rate = _stream_rate(stream, path)
        duration = _stream_duration(container, stream)
        exact = stream.frames > 0
        rotation = _rotation(first, stream)
        width, height = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
        _check_frame_size(path, width, height)
        return VideoInfo(
            path=path, fps=float(rate), frame_rate=rate, rotation=rotation, width=width, height=height,
            num_frames=stream.frames if exact else max(1, round(duration * rate)), num_frames_exact=exact,
            duration=duration if duration > 0 else (stream.frames / rate if exact else 0.0),
            has_audio=bool(container.streams.audio), codec=stream.codec_context.name,
        )


class VideoReader:
    """An iterable over a video's frames: RGB uint8 (H, W, 3), upright, optionally shrunk to ``max_size``.

    Opening probes the file, so a bad input fails at once. Each iteration decodes the file anew, one frame at a
    time. Use it as a context manager to release the decoders of iterations left unfinished.
    """

    def __init__(self, path: str | os.PathLike, max_size: int | None = None) -> None:
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_size must be a positive number of pixels, got {max_size}.")
        self.path = Path(path)
        self.max_size = max_size
        self.info = probe_video(self.path)
        self._iterations: weakref.WeakSet = weakref.WeakSet()

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the frames this reader yields."""
        height, width = self.info.height, self.info.width
        if self.max_size is None or max(height, width) <= self.max_size:
            return height, width
        return long_side_size(height, width, self.max_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        frames = self._decode_frames()
        self._iterations.add(frames)
        return frames

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop unfinished iterations and close their files."""
        for frames in list(self._iterations):
            frames.close()

    def _decode_frames(self) -> Iterator[np.ndarray]:
        count = 0
        with _open_input(self.path) as container:
            stream = _video_stream(container, self.path)
            stream.thread_type = "AUTO"  # decode on several cores (frame and slice threads)
            for frame in _decoded(container, stream, self.path):
                yield self._to_output(frame)
                count += 1
        if count == 0:
            raise InputError(f"{self.path}: no video frame could be decoded. The file may be damaged; re-export it.")

    def _to_output(self, frame: av.VideoFrame) -> np.ndarray:
        rgb = _to_rgb(frame)
        rgb = resize_long_side(rgb, self.max_size)  # before rotating: fewer pixels to move, same result
        return _rotate_upright(rgb, self.info.rotation)


def iter_frames(path: str | os.PathLike, max_size: int | None = None) -> Iterator[np.ndarray]:
    """Yield a video's frames one by one as upright RGB uint8 (H, W, 3) arrays (see :class:`VideoReader`).

    The file is checked now (InputError if unusable); decoding happens as the iterator is consumed.
    """
    return iter(VideoReader(path, max_size=max_size))


def _open_input(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise InputError(f"{path}: no such video file. Check the path.")
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable video ({exc}). "
                         f"Use a video file ({', '.join(VIDEO_EXTENSIONS)}) that plays in a media player.") from exc
    if _IMAGE_DEMUXERS.search(container.format.name):
        container.close()
        raise InputError(f"{path}: is a still image, not a video. Pass a video file here.")
    return container


def _video_stream(container: av.container.InputContainer, path: Path) -> av.VideoStream:
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:  # skip cover art of audio files
            return stream
    raise InputError(f"{path}: has no video stream ({_stream_summary(container)}). Pass a video file.")


def _stream_summary(container: av.container.InputContainer) -> str:
    kinds = [stream.type for stream in container.streams]
    if not kinds:
        return "it holds no streams at all"
    return "it holds " + ", ".join(f"{kinds.count(kind)} {kind}" for kind in dict.fromkeys(kinds)) + " stream(s)"


def _decoded(container: av.container.InputContainer, stream: av.VideoStream, path: Path) -> Iterator[av.VideoFrame]:
    """The stream's frames, with FFmpeg errors turned into InputError (the consumer's own errors pass through)."""
    frames = container.decode(stream)
    index = 0
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except av.FFmpegError as exc:
            raise InputError(f"{path}: decoding failed at frame {index} ({exc}). "
                             f"The file is damaged; re-export or re-download it.") from exc
        yield frame
        index += 1


def _first_frame(container: av.container.InputContainer, stream: av.VideoStream, path: Path) -> av.VideoFrame:
    frame = next(_decoded(container, stream, path), None)
    if frame is None:
        raise InputError(f"{path}: the video stream has no decodable frames. The file is empty or damaged; "
                         f"re-export it.")
    return frame


def _stream_rate(stream: av.VideoStream, path: Path) -> Fraction:
    # average_rate is frames/duration where the container knows both (MP4, MOV): the mean rate of VFR video.
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < rate <= MAX_FPS:
            return Fraction(rate)
    raise InputError(f"{path}: the video has no usable frame rate. Re-encode it with a constant frame rate.")


def _stream_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tagged = _tag_seconds(stream.metadata.get("DURATION", ""))  # Matroska/WebM keep per-stream durations in tags
    if tagged:
        return tagged
    return container.duration / _AV_TIME_BASE if container.duration else 0.0


def _tag_seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", text.strip())
    if not match:
        return 0.0
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _rotation(frame: av.VideoFrame, stream: av.VideoStream) -> int:
    """Clockwise display rotation in {0, 90, 180, 270}.

    FFmpeg attaches the stream's display matrix to every decoded frame; ``frame.rotation`` is its angle
    *counter*-clockwise. Old files and other muxers may carry the legacy clockwise ``rotate`` tag instead.
    """
    clockwise = -frame.rotation
    if clockwise == 0:
        with contextlib.suppress(ValueError):
            clockwise = float(stream.metadata.get("rotate", 0))
    return int(round(clockwise / 90.0)) % 4 * 90


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    # PyAV's converter honours the frame's colour matrix and range tags (BT.601/709, limited/full).
    return frame.to_ndarray(format="rgb24")


def _rotate_upright(image: np.ndarray, clockwise: int) -> np.ndarray:
    if clockwise == 0:
        return image
    return np.ascontiguousarray(np.rot90(image, k=-clockwise // 90))  # rot90 turns counter-clockwise for k > 0


def _check_frame_size(path: Path | str, width: int, height: int) -> None:
    if max(width, height) > MAX_FRAME_SIDE:
        raise InputError(f"{path}: frames of {width}x{height} px are too large (at most {MAX_FRAME_SIDE} px on a "
                         f"side). Downscale the video first.")


# ----------------------------------------------------------------------------------------------------- writing


class VideoWriter:
    """Write RGB uint8 frames to an H.264 (yuv420p) MP4 file, optionally with the audio of another file.

    Use it as a context manager. The file is written under a temporary name beside ``path`` and renamed to
    ``path`` only when the block ends without error; on error nothing is left behind. All frames must have the
    same size. H.264 in yuv420p needs an even width and height, so an odd-sized frame gets one extra column/row
    copied from its last one (e.g. 333x251 is written as 334x252).

    Args:
        path: output file (.mp4, .m4v or .mov).
        fps: frame rate; a float, or a Fraction for exact NTSC rates (29.97 is taken as 2997/100, use
            ``Fraction(30000, 1001)`` or :attr:`VideoInfo.frame_rate` to match a source exactly).
        audio_from: a video or audio file whose first audio stream is added, cut to the video's length (to the
            nearest audio packet, ~20 ms). AAC and MP3 are copied as they are, other codecs re-encoded to AAC.
            A file without audio only logs a warning.
        crf: x264 quality, 0 (lossless) to 51; 18 is visually lossless.
        preset: x264 speed/size trade-off ("ultrafast" ... "veryslow").
    """

    def __init__(self, path: str | os.PathLike, fps: float | Fraction, *, audio_from: str | os.PathLike | None = None,
                 crf: int = 18, preset: str = "medium") -> None:
        self.path = Path(path)
        self.frame_rate = _output_rate(fps)
        self.crf = _check_crf(crf)
        self.preset = preset
        self.audio_from = _existing_audio_source(audio_from)
        self.num_frames = 0
        self._format = _output_format(self.path)
        self._stack: ExitStack | None = None
        self._container: av.container.OutputContainer | None = None
        self._video: av.VideoStream | None = None
        self._audio: _AudioCopy | None = None
        self._frame_shape: tuple[int, int, int] | None = None

    @property
    def fps(self) -> float:
        return float(self.frame_rate)

    def __enter__(self) -> VideoWriter:
        if self._stack is not None:
            raise RuntimeError("This VideoWriter is already open.")
        with ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(self.path))
            stack.callback(self._release)  # runs before atomic_path renames or deletes the temporary file
            self._container = _open_output(tmp, self._format, self.path)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            return
        if exc_type is not None:
            stack.__exit__(exc_type, exc, tb)  # deletes the partial file; the exception propagates
            return
        with stack:
            self._finish()

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB uint8 (H, W, 3) frame."""
        if self._container is None:
            raise RuntimeError("Use VideoWriter as a context manager: `with VideoWriter(path, fps) as writer:`.")
        frame = self._check_frame(frame)
        if self._video is None:
            self._start(frame.shape[0], frame.shape[1])
        video_frame = av.VideoFrame.from_ndarray(_pad_to_even(frame), format="rgb24")
        video_frame = video_frame.reformat(format="yuv420p", dst_colorspace="itu709", dst_color_range="MPEG")
        video_frame.pts = self.num_frames
        video_frame.time_base = 1 / self.frame_rate
        self._mux(self._video.encode(video_frame))
        self.num_frames += 1
        if self._audio is not None:  # keep audio interleaved with the video, as players read files in order
            self._audio.write_until(self.num_frames / self.frame_rate)

    def _check_frame(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"VideoWriter.write expects RGB uint8 frames of shape (H, W, 3), "
                             f"got {frame.dtype} {frame.shape}.")
        if self._frame_shape is None:
            _check_frame_size(self.path, frame.shape[1], frame.shape[0])
            self._frame_shape = frame.shape
        elif frame.shape != self._frame_shape:
            raise ValueError(f"All frames of a video must have the same size: frame {self.num_frames} is "
                             f"{frame.shape}, the first was {self._frame_shape}.")
        return np.ascontiguousarray(frame)

    def _start(self, height: int, width: int) -> None:
        """Create the streams (their sizes are known only from the first frame)."""
        stream = self._container.add_stream("libx264", rate=self.frame_rate,
                                            options={"crf": str(self.crf), "preset": self.preset})
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = 1 / self.frame_rate
        context = stream.codec_context
        context.colorspace = context.color_primaries = context.color_trc = _BT709
        context.color_range = _LIMITED_RANGE
        self._video = stream
        if self.audio_from is not None:
            self._audio = _AudioCopy.open(self.audio_from, self._container, self.path)
        try:
            self._container.start_encoding()  # opens the encoders: bad settings fail here, clearly
        except (av.FFmpegError, OSError) as exc:
            raise OutputError(f"{self.path}: cannot start the H.264 encoder for {width}x{height} frames ({exc}). "
                              f"Check the crf ({self.crf}) and preset ({self.preset!r}).") from exc

    def _mux(self, packets: list[av.Packet]) -> None:
        try:
            self._container.mux(packets)
        except (av.FFmpegError, OSError) as exc:
            raise OutputError(f"{self.path}: writing the video failed ({exc}). Check free disk space.") from exc

    def _finish(self) -> None:
        if self.num_frames == 0:
            raise InputError(f"{self.path}: no frames were given, so no video was written. "
                             f"Check that the input produced frames.")
        self._mux(self._video.encode(None))  # flush the encoder's delayed frames
        if self._audio is not None:
            self._audio.write_until(self.num_frames / self.frame_rate)
            self._audio.close()
            self._audio = None
        container, self._container = self._container, None
        try:
            container.close()
        except (av.FFmpegError, OSError) as exc:
            raise OutputError(f"{self.path}: finishing the video failed ({exc}). Check free disk space.") from exc
        logger.debug("Wrote %s: %d frames at %s fps.", self.path, self.num_frames, self.frame_rate)

    def _release(self) -> None:
        """Close what is still open. Reached with anything open only after an error, which takes precedence."""
        if self._audio is not None:
            self._audio.close(flush=False)
            self._audio = None
        if self._container is not None:
            with contextlib.suppress(av.FFmpegError, OSError):
                self._container.close()
            self._container = None


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float | Fraction, *,
                audio_from: str | os.PathLike | None = None, crf: int = 18) -> Path:
    """Write RGB uint8 frames (any iterable, consumed lazily) to an H.264 MP4; see :class:`VideoWriter`."""
    with VideoWriter(path, fps, audio_from=audio_from, crf=crf) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.path


def _output_rate(fps: float | Fraction) -> Fraction:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)) or not math.isfinite(fps):
        raise InputError(f"Invalid frame rate {fps!r}: give a number of frames per second.")
    if not 0 < fps <= MAX_FPS:
        raise InputError(f"Invalid frame rate {fps}: it must be above 0 and at most {MAX_FPS:g} fps.")
    # A small denominator keeps timestamps exact: 29.97 -> 2997/100, 1/3 s frames -> 3/1.
    return Fraction(fps).limit_denominator(1001)


def _check_crf(crf: int) -> int:
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be between 0 (lossless) and 51, got {crf}.")
    return int(crf)


def _output_format(path: Path) -> str:
    try:
        return _OUTPUT_FORMATS[path.suffix.lower()]
    except KeyError:
        raise OutputError(f"{path}: videos are written as H.264 MP4; use a .mp4 (or .mov) file name.") from None


def _existing_audio_source(audio_from: str | os.PathLike | None) -> Path | None:
    if audio_from is None:
        return None
    audio_from = Path(audio_from)
    if not audio_from.is_file():
        raise InputError(f"{audio_from}: no such file to take the audio from. Check the path.")
    return audio_from


def _open_output(tmp: Path, container_format: str, path: Path) -> av.container.OutputContainer:
    try:
        # faststart moves the index to the front, so browsers can play the file while downloading it.
        return av.open(str(tmp), mode="w", format=container_format, container_options={"movflags": "+faststart"})
    except (av.FFmpegError, OSError) as exc:
        raise OutputError(f"{path}: cannot create the video file ({exc}). Choose another output path.") from exc


def _pad_to_even(frame: np.ndarray) -> np.ndarray:
    height, width = frame.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return frame
    return np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


class _AudioCopy:
    """Adds the first audio stream of another file to an output container, in step with the video.

    Packets of MP4-friendly codecs are copied untouched; others are decoded and re-encoded to AAC. Timestamps are
    taken relative to the source's first video frame (or its audio start), so audio stays in sync with a video
    whose frames were read from the same file.
    """

    def __init__(self, source: av.container.InputContainer, stream: av.AudioStream,
                 output: av.container.OutputContainer, path: Path) -> None:
        self._source = source
        self._path = path
        self._copy = stream.codec_context.name in _COPYABLE_AUDIO
        self._offset = _sync_offset(source, stream)
        if self._copy:
            self._out = output.add_stream_from_template(stream)
            self._items = self._packets(stream)
        else:
            self._out = output.add_stream("aac", rate=_aac_rate(stream.rate),
                                          layout="mono" if stream.channels == 1 else "stereo")
            self._out.bit_rate = 160_000
            self._items = self._frames(stream)
        self._output = output
        self._pending: tuple[float, object] | None = None

    @classmethod
    def open(cls, source_path: Path, output: av.container.OutputContainer, path: Path) -> _AudioCopy | None:
        try:
            source = av.open(str(source_path), mode="r")
        except (av.FFmpegError, OSError) as exc:
            raise InputError(f"{source_path}: cannot read the audio source ({exc}). Pass a video or audio file, "
                             f"or no audio source.") from exc
        if not source.streams.audio:
            source.close()
            logger.warning("%s has no audio stream; writing %s without sound.", source_path, path)
            return None
        return cls(source, source.streams.audio[0], output, path)

    def write_until(self, seconds: float) -> None:
        """Add the source audio that starts before ``seconds`` (output time)."""
        try:
            while True:
                if self._pending is None:
                    self._pending = next(self._items, None)
                    if self._pending is None:
                        return
                start, item = self._pending
                if start >= seconds:
                    return
                self._pending = None
                self._write(item)
        except av.FFmpegError as exc:
            raise OutputError(f"{self._path}: copying the audio failed ({exc}). Retry without the audio source.") \
                from exc

    def close(self, flush: bool = True) -> None:
        try:
            if flush and not self._copy:
                self._output.mux(self._out.encode(None))
        finally:
            self._source.close()

    def _write(self, item: av.Packet | av.AudioFrame) -> None:
        if self._copy:
            item.stream = self._out
            self._output.mux(item)
        else:
            self._output.mux(self._out.encode(item))

    def _packets(self, stream: av.AudioStream) -> Iterator[tuple[float, av.Packet]]:
        shift = round(self._offset / stream.time_base)
        for packet in self._source.demux(stream):
            if packet.pts is None:  # the demuxer's final empty packet
                continue
            packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
            yield float(packet.pts * stream.time_base), packet

    def _frames(self, stream: av.AudioStream) -> Iterator[tuple[float, av.AudioFrame]]:
        for frame in self._source.decode(stream):
            if frame.pts is None:
                continue
            start = float(frame.pts * frame.time_base - self._offset)
            if start + frame.samples / frame.sample_rate <= 0:  # entirely before the first video frame
                continue
            # The encoder re-times its input from these (in 1/sample_rate) and resamples as needed.
            frame.pts = round(start * frame.sample_rate)
            frame.time_base = Fraction(1, frame.sample_rate)
            yield start, frame


def _sync_offset(source: av.container.InputContainer, audio: av.AudioStream) -> Fraction:
    """Source time (s) that becomes 0 in the output: the start of its video stream, else of its audio stream."""
    videos = [s for s in source.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    reference = videos[0] if videos else audio
    if reference.start_time is None or reference.time_base is None:
        return Fraction(0)
    return reference.start_time * reference.time_base


def _aac_rate(rate: int) -> int:
    return rate if rate in _AAC_RATES else 48000
