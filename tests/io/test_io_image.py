"""Tests of magicportrait.io.image: every image is generated in tmp_path with PIL."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from magicportrait.errors import InputError, OutputError
from magicportrait.io import image as image_io
from magicportrait.io.image import load_image, long_side_size, resize_long_side, save_image


def gradient(height: int = 60, width: int = 90) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 255 // (width - 1), yy * 255 // (height - 1), (xx + yy) * 255 // (width + height - 2)],
                    axis=-1).astype(np.uint8)


def mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


@pytest.mark.parametrize(("suffix", "tolerance"), [(".png", 0), (".bmp", 0), (".tif", 0), (".jpg", 3), (".webp", 3)])
def test_round_trip(tmp_path, suffix, tolerance):
    rgb = gradient()
    path = save_image(tmp_path / f"img{suffix}", rgb)
    loaded = load_image(path)
    assert loaded.dtype == np.uint8 and loaded.shape == (60, 90, 3)
    assert mean_abs_error(loaded, rgb) <= tolerance
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"img{suffix}"]  # no temporary file left


def test_save_gray_and_format_from_extension(tmp_path):
    gray = gradient()[:, :, 0]
    path = save_image(tmp_path / "gray.PNG", gray)
    with Image.open(path) as stored:
        assert (stored.format, stored.mode) == ("PNG", "L")
    assert np.array_equal(load_image(path), np.repeat(gray[:, :, None], 3, axis=2))


def test_save_rejects_bad_input(tmp_path):
    with pytest.raises(OutputError, match="unknown image extension"):
        save_image(tmp_path / "img.xyz", gradient())
    with pytest.raises(ValueError, match="uint8"):
        save_image(tmp_path / "img.png", gradient().astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        save_image(tmp_path / "img.png", np.zeros((40, 40, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:, :20] = (200, 10, 10, 255)  # opaque red
    rgba[:, 20:30] = (0, 0, 0, 0)  # fully transparent black
    rgba[:, 30:] = (0, 0, 0, 128)  # half-transparent black
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    loaded = load_image(tmp_path / "rgba.png")
    assert loaded[5, 5].tolist() == [200, 10, 10]
    assert loaded[5, 25].tolist() == [255, 255, 255]
    assert loaded[5, 35].tolist() == [127, 127, 127]


def test_palette_with_transparency_and_la(tmp_path):
    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([0, 0, 255] + [0, 255, 0] * 255)
    palette.paste(1, (0, 0, 20, 40))
    palette.save(tmp_path / "p.png", transparency=0)  # palette index 0 (blue) is transparent
    loaded = load_image(tmp_path / "p.png")
    assert loaded[5, 5].tolist() == [0, 255, 0]
    assert loaded[5, 30].tolist() == [255, 255, 255]

    la = np.zeros((40, 40, 2), np.uint8)
    la[:, :20] = (50, 255)
    Image.fromarray(la).save(tmp_path / "la.png")
    loaded = load_image(tmp_path / "la.png")
    assert loaded[5, 5].tolist() == [50, 50, 50] and loaded[5, 30].tolist() == [255, 255, 255]


def test_grayscale_gives_three_equal_channels(tmp_path):
    gray = gradient()[:, :, 1]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    loaded = load_image(tmp_path / "gray.png")
    assert loaded.shape == (60, 90, 3)
    for channel in range(3):
        assert np.array_equal(loaded[:, :, channel], gray)


def test_sixteen_bit_png_is_scaled_to_eight_bits(tmp_path):
    values = np.zeros((40, 40), np.uint16)
    values[:, 10:20], values[:, 20:30], values[:, 30:] = 32896, 65535, 257
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as stored:
        assert stored.mode.startswith("I")  # really stored with 16 bits
    loaded = load_image(tmp_path / "deep.png")
    assert loaded[0, [0, 15, 25, 35], 0].tolist() == [0, 128, 255, 1]
    assert np.array_equal(loaded[..., 0], loaded[..., 2])


def test_cmyk_jpeg_is_converted(tmp_path):
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[:, :20] = (220, 30, 30)
    rgb[:, 20:] = (30, 30, 220)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    loaded = load_image(tmp_path / "cmyk.jpg")
    assert mean_abs_error(loaded[:, 2:18], rgb[:, 2:18]) < 6
    assert mean_abs_error(loaded[:, 22:38], rgb[:, 22:38]) < 6


def test_exif_orientation_is_applied(tmp_path):
    """EXIF orientation 6: the stored picture must be turned 90 degrees clockwise to be upright."""
    stored = np.full((40, 80, 3), 128, np.uint8)
    stored[:8, :8] = (230, 20, 20)  # red marker at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)

    loaded = load_image(tmp_path / "phone.jpg")
    assert loaded.shape == (80, 40, 3)  # width and height swapped
    assert loaded[3, 36, 0] > 200 and loaded[3, 36, 1] < 60  # marker now top-right
    assert loaded[3, 3].tolist() == pytest.approx([128, 128, 128], abs=6)
    assert mean_abs_error(loaded, np.rot90(stored, k=-1)) < 3


def test_max_size_shrinks_long_side(tmp_path):
    rgb = gradient(100, 200)
    save_image(tmp_path / "big.png", rgb)
    loaded = load_image(tmp_path / "big.png", max_size=50)
    assert loaded.shape == (25, 50, 3)
    # Area interpolation: each output pixel is the mean of a 4x4 block.
    block_mean = rgb[:4, 8:12].reshape(-1, 3).mean(axis=0)
    assert loaded[0, 2].tolist() == pytest.approx(block_mean.tolist(), abs=1)
    assert load_image(tmp_path / "big.png", max_size=400).shape == (100, 200, 3)  # never enlarged


def test_resize_long_side():
    checker = np.zeros((4, 8), np.uint8)
    checker[:, ::2] = 255
    small = resize_long_side(checker, 4)
    assert small.shape == (2, 4)
    assert np.all(small == 128)  # area averaging: no aliasing of the stripes
    assert resize_long_side(checker, 8) is checker
    assert resize_long_side(checker, None) is checker
    assert resize_long_side(checker, 16) is checker
    assert resize_long_side(checker, 16, allow_upscale=True).shape == (8, 16)
    assert resize_long_side(np.zeros((10, 20, 1), np.uint8), 10).shape == (5, 10, 1)
    assert long_side_size(251, 333, 100) == (75, 100)
    with pytest.raises(ValueError, match="max_size"):
        long_side_size(10, 10, 0)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="nope.png: no such image file"):
        load_image(tmp_path / "nope.png")


def test_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("definitely not a picture\n")
    with pytest.raises(InputError, match="notes.png: not a readable image"):
        load_image(tmp_path / "notes.png")


def test_truncated_image(tmp_path):
    save_image(tmp_path / "cut.png", (np.random.default_rng(0).random((200, 200, 3)) * 255).astype(np.uint8))
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="damaged or truncated"):
        load_image(tmp_path / "cut.png")


@pytest.mark.parametrize("size", [(16, 16), (100, 31)])
def test_too_small(tmp_path, size):
    Image.new("RGB", size, "red").save(tmp_path / "tiny.png")
    with pytest.raises(InputError, match="too small"):
        load_image(tmp_path / "tiny.png")


def test_too_large_side(tmp_path):
    Image.new("L", (20001, 32)).save(tmp_path / "strip.png")
    with pytest.raises(InputError, match="too large .20001x32"):
        load_image(tmp_path / "strip.png")


def test_too_many_pixels(tmp_path, monkeypatch):
    save_image(tmp_path / "img.png", gradient(64, 64))
    monkeypatch.setattr(image_io, "MAX_IMAGE_PIXELS", 4000)
    with pytest.raises(InputError, match="too large"):
        load_image(tmp_path / "img.png")


def test_decompression_bomb(tmp_path, monkeypatch):
    save_image(tmp_path / "img.png", gradient(64, 64))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses above twice this: 4096 pixels is a "bomb"
    with pytest.raises(InputError, match="too large to load safely"):
        load_image(tmp_path / "img.png")
