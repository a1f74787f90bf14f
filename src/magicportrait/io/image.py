"""Reading and writing still images as RGB uint8 arrays of shape (H, W, 3)."""

from __future__ import annotations

import functools
import logging
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from magicportrait.errors import InputError, OutputError
from magicportrait.io.atomic import atomic_path

logger = logging.getLogger(__name__)

MIN_IMAGE_SIDE = 32
MAX_IMAGE_SIDE = 20000
# PIL's own decompression-bomb *error* threshold (2x Image.MAX_IMAGE_PIXELS by default). We enforce it ourselves
# instead of changing PIL's global, so its warning for big-but-legit photos (e.g. 108 MP phones) is not needed.
MAX_IMAGE_PIXELS = 2 * 89_478_485

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def long_side_size(height: int, width: int, max_size: int) -> tuple[int, int]:
    """(height, width) scaled so that the longer side is exactly ``max_size``, keeping the aspect ratio."""
    if max_size < 1:
        raise ValueError(f"max_size must be a positive number of pixels, got {max_size}.")
    scale = max_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_long_side(image: np.ndarray, max_size: int | None, *, allow_upscale: bool = False) -> np.ndarray:
    """Resize ``image`` (H, W[, C]) so that its longer side is at most ``max_size``; returned unchanged if it fits.

    Shrinking uses area interpolation (no aliasing); enlarging (only with ``allow_upscale``) uses bicubic.
    """
    if max_size is None:
        return image
    height, width = image.shape[:2]
    longest = max(height, width)
    if longest == max_size or (longest < max_size and not allow_upscale):
        return image
    new_height, new_width = long_side_size(height, width, max_size)
    interpolation = cv2.INTER_AREA if longest > max_size else cv2.INTER_CUBIC
    resized = cv2.resize(np.ascontiguousarray(image), (new_width, new_height), interpolation=interpolation)
    if image.ndim == 3 and resized.ndim == 2:  # cv2 drops a single channel axis
        resized = resized[:, :, None]
    return resized


def load_image(path: str | os.PathLike, max_size: int | None = None) -> np.ndarray:
    """Load an image file as RGB uint8 (H, W, 3), upright (EXIF orientation applied).

    Transparent pixels are composited onto white (logged once per file; :func:`load_alpha` gives the alpha);
    grayscale, palette, 16-bit and CMYK images are converted to 8-bit RGB. With ``max_size`` the image is shrunk
    so that its longer side is at most ``max_size`` pixels.
    """
    path = Path(path)
    with _open_image(path) as image:
        _check_image_size(path, *image.size)
        _decode(path, image)
        upright = _exif_upright(path, image)
        if _alpha_array(upright) is not None:
            _report_transparency(str(path))
        rgb = _to_rgb_array(upright)
    return resize_long_side(rgb, max_size)


def load_alpha(path: str | os.PathLike) -> np.ndarray | None:
    """The image's alpha channel as uint8 (H, W), upright like :func:`load_image`; None when it has no
    transparency (no alpha channel, or every pixel opaque)."""
    path = Path(path)
    with _open_image(path) as image:
        _check_image_size(path, *image.size)
        _decode(path, image)
        return _alpha_array(_exif_upright(path, image))


@functools.lru_cache(maxsize=64)
def _report_transparency(path: str) -> None:
    # Cached: a pipeline loads its portrait more than once, the message is wanted once.
    logger.info("%s has transparency; its transparent background is composited on white for tracking and "
                "generation.", path)


def _alpha_array(image: Image.Image) -> np.ndarray | None:
    if not (image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info)):
        return None
    alpha = np.asarray(image.convert("RGBA"))[:, :, 3]
    return np.ascontiguousarray(alpha) if alpha.min() < 255 else None


def save_image(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write a uint8 (H, W, 3) RGB or (H, W) gray image atomically; the format follows the file extension."""
    path = Path(path)
    image_format = _format_for_extension(path)
    image = Image.fromarray(_check_savable(rgb))
    options = {"quality": 95} if image_format in ("JPEG", "WEBP") else {}
    with atomic_path(path) as tmp:
        image.save(tmp, format=image_format, **options)
    return path


def _open_image(path: Path) -> Image.Image:
    if not path.is_file():
        raise InputError(f"{path}: no such image file. Check the path.")
    try:
        with warnings.catch_warnings():
            # We check the pixel count ourselves (_check_image_size); PIL's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path}: image is too large to load safely ({exc}). "
                         f"Downscale it below {MAX_IMAGE_PIXELS // 1_000_000} megapixels.") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({exc}). Use a JPEG, PNG, WebP, BMP or TIFF file.") from exc


def _check_image_size(path: Path, width: int, height: int) -> None:
    if min(width, height) < MIN_IMAGE_SIDE:
        raise InputError(f"{path}: image is too small ({width}x{height} px). "
                         f"Use an image at least {MIN_IMAGE_SIDE} px on each side.")
    if max(width, height) > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise InputError(f"{path}: image is too large ({width}x{height} px). Downscale it to at most "
                         f"{MAX_IMAGE_SIDE} px on a side and {MAX_IMAGE_PIXELS // 1_000_000} megapixels.")


def _decode(path: Path, image: Image.Image) -> None:
    """Decode the pixels now, so that a truncated or damaged file fails here with a clear message."""
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as exc:  # PIL plugins raise all three for damaged data
        raise InputError(f"{path}: image data is damaged or truncated ({exc}). Re-export or re-download it.") from exc


def _exif_upright(path: Path, image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:  # a malformed EXIF block must not make a readable image unusable
        logger.warning("%s: ignoring unreadable EXIF orientation (%s).", path, exc)
        return image


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _ALPHA_MODES:
        return _composite_on_white(np.asarray(image.convert("RGBA")))
    if image.mode in _SIXTEEN_BIT_MODES:
        return _gray_to_rgb(_sixteen_bit_to_uint8(np.asarray(image)))
    if image.mode == "F":  # float TIFFs: assume the usual 0..1 range
        return _gray_to_rgb(np.round(np.clip(np.asarray(image), 0.0, 1.0) * 255.0).astype(np.uint8))
    return np.ascontiguousarray(np.asarray(image.convert("RGB")))


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[:, :, 3:4].astype(np.float32) / 255.0
    rgb = rgba[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.round(rgb).astype(np.uint8)


def _sixteen_bit_to_uint8(values: np.ndarray) -> np.ndarray:
    # 65535 / 257 == 255 exactly, so full scale maps to full scale.
    return np.round(np.clip(values.astype(np.float32), 0, 65535) / 257.0).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


def _format_for_extension(path: Path) -> str:
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None or image_format not in Image.SAVE:
        raise OutputError(f"{path}: unknown image extension {path.suffix!r}. Use .png, .jpg, .webp, .bmp or .tif.")
    return image_format


def _check_savable(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"save_image expects uint8 pixels, got {image.dtype}.")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"save_image expects an (H, W, 3) or (H, W) array, got shape {image.shape}.")
    return np.ascontiguousarray(image)
