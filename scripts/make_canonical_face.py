"""Build the canonical face of the open head geometry: ``src/magicportrait/heads/data/mediapipe_canonical.npz``.

Run once (the result is committed): ``python scripts/make_canonical_face.py``.

1. Track the public-domain astronaut portrait (``skimage.data.astronaut()``) and its mirror image with
   MediaPipe's refined face mesh (478 points, image space: x right, y down, z into the scene, pixels).
2. Put the face in a head frame: x from the subject's right to left side (averaged over symmetric landmark
   pairs), y down the facial midline, z = x cross y (into the head).
3. Find each point's mirror partner (nearest neighbour of the point reflected in x = 0) and symmetrise:
   the average of the face, its reflection, and the mirror image's track reflected back.
4. Scale to centimetres (eye outer corners 9.0 cm apart) and put the origin 7 cm behind the nose bridge at eye
   height, roughly where the head turns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.data
from mediapipe.python.solutions import face_mesh

OUTPUT = Path(__file__).resolve().parents[1] / "src/magicportrait/heads/data/mediapipe_canonical.npz"
SYMMETRIC_PAIRS = [(33, 263), (133, 362), (61, 291), (234, 454), (127, 356), (70, 300), (105, 334), (205, 425)]
MIDLINE = [10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 164, 0, 17, 18, 200, 199, 175, 152]
EYE_DISTANCE_CM = 9.0
PIVOT_DEPTH_CM = 7.0


def track(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    with face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1) as mesh:
        result = mesh.process(image)
    points = np.array([(p.x * width, p.y * height, p.z * width) for p in result.multi_face_landmarks[0].landmark])
    return points


def head_frame(points: np.ndarray) -> np.ndarray:
    """Rows are the head frame's x, y, z axes in image space."""
    x_axis = np.mean([points[left] - points[right] for right, left in SYMMETRIC_PAIRS], axis=0)
    x_axis /= np.linalg.norm(x_axis)
    midline = points[MIDLINE] - points[MIDLINE].mean(0)
    y_axis = np.linalg.svd(midline)[2][0]
    y_axis *= np.sign(y_axis @ (points[152] - points[10]))
    y_axis -= (y_axis @ x_axis) * x_axis
    y_axis /= np.linalg.norm(y_axis)
    return np.stack([x_axis, y_axis, np.cross(x_axis, y_axis)])


def mirror_pairs(points: np.ndarray) -> np.ndarray:
    reflected = points * [-1.0, 1.0, 1.0]
    distances = np.linalg.norm(reflected[:, None] - points[None], axis=-1)
    pairs = distances.argmin(1)
    # Iris rings mirror onto iris rings, mesh onto mesh: restrict the search within each group.
    mesh, iris = slice(0, 468), slice(468, 478)
    pairs[mesh] = distances[mesh, mesh].argmin(1)
    pairs[iris] = 468 + distances[iris, iris].argmin(1)
    return pairs


def main() -> None:
    image = skimage.data.astronaut()
    points = track(image)
    mirrored = track(image[:, ::-1].copy())
    mirrored[:, 0] = image.shape[1] - mirrored[:, 0]  # reflect back: now a left/right-swapped labelling

    canonical = (points - points[MIDLINE].mean(0)) @ head_frame(points).T
    pairs = mirror_pairs(canonical)
    unpaired = int((pairs[pairs] != np.arange(len(pairs))).sum())
    mirrored_canonical = (mirrored - mirrored[pairs][MIDLINE].mean(0)) @ head_frame(mirrored[pairs]).T
    reflect = np.array([-1.0, 1.0, 1.0])
    canonical = (canonical + canonical[pairs] * reflect + mirrored_canonical[pairs]
                 + mirrored_canonical * reflect) / 4.0

    canonical *= EYE_DISTANCE_CM / np.linalg.norm(canonical[263] - canonical[33])
    origin = np.array([0.0, (canonical[33, 1] + canonical[263, 1]) / 2, canonical[168, 2] + PIVOT_DEPTH_CM])
    canonical -= origin
    canonical[:, 0] -= canonical[MIDLINE, 0].mean()

    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUTPUT, vertices=canonical.astype(np.float32), mirror_pairs=pairs.astype(np.int16))
    print(f"wrote {OUTPUT} ({len(canonical)} points; {unpaired} non-involutive mirror pairs)")


if __name__ == "__main__":
    main()
