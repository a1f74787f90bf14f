"""The reenactment outputs shared by both generators: ``result.mp4`` (pasted back into the full source frame),
``result_crop.mp4`` (the face crop the generator made), ``grid.mp4`` (source | driving | guidance | result) and,
when asked, ``result_frames/`` (result.mp4's frames as PNGs, with the portrait's alpha when it has one)."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import cv2
import numpy as np

from magicportrait.io.frames import frame_name

DEFAULT_MAX_OUTPUT_SIZE = 1920


def output_frame(image: np.ndarray, crop_matrix: np.ndarray, max_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The source image as the output video's frame (downscaled to ``max_size`` on its longer side if larger) and
    the crop matrix re-expressed for that frame."""
    height, width = image.shape[:2]
    scale = min(1.0, max_size / max(height, width))
    if scale >= 1.0:
        return image, np.asarray(crop_matrix, np.float64)
    size = (max(2, round(width * scale)), max(2, round(height * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    sx, sy = size[0] / width, size[1] / height
    # frame pixel centre x_small = sx * (x + 0.5) - 0.5 (OpenCV convention) -> x = (x_small + 0.5) / sx - 0.5
    to_original = np.array([[1.0 / sx, 0.0, 0.5 / sx - 0.5], [0.0, 1.0 / sy, 0.5 / sy - 0.5], [0.0, 0.0, 1.0]])
    matrix = np.asarray(crop_matrix, np.float64) @ to_original
    return small, matrix


class ResultWriter:
    """Streams result frames (face crops) into result.mp4 (pasted back), result_crop.mp4 and grid.mp4.

    Args:
        stage: folder to write into.
        fps: the driving video's frame rate.
        audio: file whose audio is copied into the videos (the driving video), or None.
        source_image: the full source image `(H, W, 3)` uint8.
        source_crop: the source's face crop the results are made on.
        crop_matrix: `(2, 3)` source image -> crop (OpenCV convention).
        paste_mode: "changed" (paste only what differs from the source crop; geometric backend) or "full"
            (the whole crop, feathered at its border; diffusion backend); None: no paste-back, result.mp4 is the crop.
        write_grid: also write grid.mp4.
        max_output_size: longer side of result.mp4 at most (the source image is downscaled if larger).
        write_result_frames: also write result.mp4's frames as ``result_frames/frame_0001.png``, ...
        source_alpha: the source image's alpha `(H, W)` uint8, or None; with it the PNG frames are RGBA, their
            alpha the source's, resized like the output frame (warped like the crop without paste-back).
        num_frames: the video's length, if known: it sets the width of the frame files' numbers.
    """

    def __init__(self, stage: Path, fps: float, audio: str | Path | None, source_image: np.ndarray,
                 source_crop: np.ndarray, crop_matrix: np.ndarray, *, paste_mode: str | None = "changed",
                 write_grid: bool = True, max_output_size: int = DEFAULT_MAX_OUTPUT_SIZE,
                 write_result_frames: bool = False, source_alpha: np.ndarray | None = None,
                 num_frames: int = 0) -> None:
        from magicportrait.compositing import PasteBack

        self.stage, self.fps, self.audio = Path(stage), fps, audio
        self.source_crop = source_crop
        self.write_grid = write_grid
        self.paste = None
        if paste_mode is not None:
            self.frame, matrix = output_frame(source_image, crop_matrix, max_output_size)
            self.paste = PasteBack(self.frame.shape[:2], matrix, source_crop.shape[0], mode=paste_mode)
        self.files = {"result": self.stage / "result.mp4"}
        if self.paste is not None:
            self.files["result_crop"] = self.stage / "result_crop.mp4"
        if write_grid:
            self.files["grid"] = self.stage / "grid.mp4"
        self.frames_dir = self.stage / "result_frames" if write_result_frames else None
        self.total_frames = num_frames  # the length of the video, for the frame files' names
        self.alpha = None
        if self.frames_dir is not None and source_alpha is not None:
            self.alpha = self._output_alpha(source_alpha, crop_matrix, source_crop.shape[0], max_output_size)
        self.num_frames = 0
        self._stack: ExitStack | None = None

    def __enter__(self) -> ResultWriter:
        from magicportrait.io.video import VideoWriter

        self._stack = ExitStack().__enter__()
        self._writers = {name: self._stack.enter_context(VideoWriter(path, self.fps, audio_from=self.audio))
                         for name, path in self.files.items()}
        if self.frames_dir is not None:
            self.frames_dir.mkdir(exist_ok=True)
            self.files["result_frames"] = self.frames_dir
        return self

    def __exit__(self, *exc_info) -> None:
        stack, self._stack = self._stack, None
        stack.__exit__(*exc_info)

    def write(self, result_crop: np.ndarray, panels: list[np.ndarray] = ()) -> None:
        """Add one frame: the generator's crop, and the grid's middle panels (driving crop, guidance maps)."""
        if self.paste is not None:
            reference = self.source_crop if self.paste.mode == "changed" else None
            result = self.paste.paste(self.frame, result_crop, reference)
            self._writers["result_crop"].write(result_crop)
        else:
            result = result_crop
        self._writers["result"].write(result)
        if self.frames_dir is not None:
            self._write_png(result)
        if self.write_grid:
            self._writers["grid"].write(np.concatenate([self.source_crop, *panels, result_crop], axis=1))
        self.num_frames += 1


    def _output_alpha(self, alpha: np.ndarray, crop_matrix: np.ndarray, crop_size: int, max_size: int) -> np.ndarray:
        """The source alpha on result.mp4's frame: resized like the frame, or warped like the crop."""
        if self.paste is not None:
            return output_frame(np.asarray(alpha, np.uint8), crop_matrix, max_size)[0]
        return cv2.warpAffine(np.asarray(alpha, np.uint8), np.asarray(crop_matrix, np.float64)[:2],
                              (crop_size, crop_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def _write_png(self, rgb: np.ndarray) -> None:
        path = self.frames_dir / frame_name(self.num_frames, self.total_frames)
        if self.alpha is not None:
            image = cv2.cvtColor(np.dstack([rgb, self.alpha]), cv2.COLOR_RGBA2BGRA)
        else:
            image = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
            raise OSError(f"Could not write {path}")
