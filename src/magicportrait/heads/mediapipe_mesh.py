"""The open default head geometry: MediaPipe's 478-point face mesh, no extra assets.

- Identity: the subject's pose-free *neutral* shape, `(478 * 3,)` in centimetres in the model frame.
- Expression: per frame, the pose-free shape minus that neutral shape, `(T, 478 * 3)`.
- Pose: a weighted similarity fit of the canonical face (``data/mediapipe_canonical.npz``, built by
  ``scripts/make_canonical_face.py``) to the frame's landmarks under an orthographic camera. MediaPipe's x, y
  follow the image closely but its z leans toward a frontal face, so z only initialises the fit: it then
  alternates between taking each landmark's depth from the posed canonical face and re-solving the Procrustes
  problem, which converges to the best fit of the 2D positions. Rigid points (forehead, nose, cheeks) dominate
  the fit; the moving parts (lips, jaw, eyelids, brows, irises) and the silhouette points of the face oval,
  which slide along the cheek as the head turns, count little, so expression does not leak into pose.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Literal

import numpy as np

from magicportrait.geometry.procrustes import weighted_similarity_procrustes
from magicportrait.geometry.rotations import matrix_to_axis_angle
from magicportrait.heads.base import HeadModel
from magicportrait.heads.mediapipe_topology import (
    INNER_LIP_LOOP,
    IRIS_POINTS,
    LEFT_EYE_LOOP,
    RIGHT_EYE_LOOP,
    face_normals_z,
    landmark_groups,
    mesh_triangles,
    orient_like,
    strip_triangles,
)
from magicportrait.types import (
    NUM_LANDMARKS,  # noqa: I001 - placed by hand below
    HeadTrack,
    Track,
)

MOVING_PART_WEIGHT = 0.05  # lips, eyes, eyebrows
LOWER_FACE_WEIGHT = 0.2  # below the nose: moves with the jaw
SILHOUETTE_WEIGHT = 0.3  # face-oval points follow the visible outline, not fixed skin points
POSE_ITERATIONS = 20
FIT_CHUNK = 256  # frames fitted at once
SUBNASALE = 2  # landmark under the nose tip


@lru_cache(maxsize=1)
def load_canonical_face() -> tuple[np.ndarray, np.ndarray]:
    """`(478, 3)` float64 canonical vertices (cm, model frame) and `(478,)` mirror-partner indices."""
    with resources.files("magicportrait.heads").joinpath("data/mediapipe_canonical.npz").open("rb") as f:
        data = np.load(f, allow_pickle=False)
        return data["vertices"].astype(np.float64), data["mirror_pairs"].astype(np.int64)


def rigid_point_weights(canonical: np.ndarray) -> np.ndarray:
    """`(478,)` Procrustes weights: 1 for rigid points, small for the parts that expressions move."""
    weights = np.ones(len(canonical))
    weights[canonical[:, 1] > canonical[SUBNASALE, 1]] = LOWER_FACE_WEIGHT
    groups = landmark_groups()
    weights[groups["face_oval"]] *= SILHOUETTE_WEIGHT
    for name in ("lips", "left_eye", "right_eye", "left_eyebrow", "right_eyebrow"):
        weights[groups[name]] = MOVING_PART_WEIGHT
    weights[list(IRIS_POINTS)] = 0.0
    return weights


class MediaPipeHeadModel(HeadModel):
    """Open face geometry on MediaPipe's topology: 478 vertices (468 mesh + 10 iris), 852 + 28 eye triangles."""

    name = "mediapipe"
    face_only = True

    def __init__(self, neutral: Literal["median", "first"] = "median") -> None:
        """
        Args:
            neutral: how the neutral shape of a video is chosen: the per-point median over all frames
                (robust when the subject is mostly at rest) or the first frame (the usual "relative to the
                first frame" convention). A single image is its own neutral.
        """
        if neutral not in ("median", "first"):
            raise ValueError(f"neutral must be 'median' or 'first', got {neutral!r}.")
        self.neutral = neutral
        self.canonical, self.mirror_pairs = load_canonical_face()
        self.weights = rigid_point_weights(self.canonical)
        self.faces = self._outward_faces(self.canonical)

    @staticmethod
    def _outward_faces(canonical: np.ndarray) -> np.ndarray:
        """Mesh triangles wound outward, plus triangles closing the eye holes (the mouth stays open)."""
        triangles = mesh_triangles()
        # Consistently wound already; flip all if most of the frontal face points away from the camera (+z).
        if (face_normals_z(canonical, triangles) > 0).sum() > len(triangles) / 2:
            triangles = triangles[:, [0, 2, 1]]
        eyes = np.concatenate([strip_triangles(RIGHT_EYE_LOOP), strip_triangles(LEFT_EYE_LOOP)])
        return np.ascontiguousarray(np.concatenate([triangles, orient_like(eyes, canonical)]))

    @property
    def num_vertices(self) -> int:
        return NUM_LANDMARKS

    def fit(self, track: Track) -> HeadTrack:
        if track.landmarks.ndim != 3 or track.landmarks.shape[1:] != (NUM_LANDMARKS, 3):
            raise ValueError(f"Expected landmarks of shape (T, {NUM_LANDMARKS}, 3), got {track.landmarks.shape}.")
        # Frames are independent here: fit in chunks so float64 temporaries stay small for long videos.
        chunks = [self._fit_frames(track.landmarks[start:start + FIT_CHUNK])
                  for start in range(0, track.num_frames, FIT_CHUNK)]
        scale, rotation, translation, pose_free, residual = (np.concatenate(p) for p in zip(*chunks, strict=True))
        neutral = np.median(pose_free, axis=0) if self.neutral == "median" else pose_free[0].copy()
        pose_free -= neutral  # in place: the expression, without another (T, 478, 3) copy
        return HeadTrack(
            model=self.name,
            identity=neutral.reshape(-1).astype(np.float32),
            expression=pose_free.reshape(track.num_frames, -1),
            rotation=matrix_to_axis_angle(rotation).astype(np.float32),
            scale=scale.astype(np.float32),
            translation=translation.astype(np.float32),
            image_size=track.image_size,
            fps=track.fps,
            residual=residual.astype(np.float32),
            extras={"neutral": self.neutral},
        )

    def _fit_frames(self, landmarks: np.ndarray) -> tuple[np.ndarray, ...]:
        """Pose, float32 pose-free shape `(T, 478, 3)` and 2D residual (px) of a few frames."""
        scale, rotation, translation, landmarks = self.fit_pose(landmarks.astype(np.float64))
        # Pose-free shape of each frame: undo the similarity transform.
        pose_free = np.einsum("tji,tnj->tni", rotation, landmarks - translation[:, None]) / scale[:, None, None]
        fitted = self._posed_canonical(scale, rotation, translation)
        residual = np.sqrt((self.weights * ((fitted - landmarks)[..., :2] ** 2).sum(-1)).sum(-1) / self.weights.sum())
        return scale, rotation, translation, pose_free.astype(np.float32), residual

    def _posed_canonical(self, scale, rotation, translation) -> np.ndarray:
        return scale[:, None, None] * np.einsum("tij,nj->tni", rotation, self.canonical) + translation[:, None]

    def fit_pose(self, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Orthographic pose of the canonical face, fitted to `(T, 478, 3)` landmarks' image positions.

        Returns scale `(T,)`, rotation `(T, 3, 3)`, translation `(T, 3)` and the landmarks with their depth
        replaced by the fitted face's depth plus MediaPipe's non-rigid depth detail (the residual of a rigid fit
        to its own z, e.g. lips pushed forward).
        """
        scale, rotation, translation = weighted_similarity_procrustes(self.canonical, landmarks, self.weights)
        depth_detail = landmarks[..., 2] - self._posed_canonical(scale, rotation, translation)[..., 2]
        target = landmarks.copy()
        for _ in range(POSE_ITERATIONS):
            target[..., 2] = self._posed_canonical(scale, rotation, translation)[..., 2]
            scale, rotation, translation = weighted_similarity_procrustes(self.canonical, target, self.weights)
        target[..., 2] = self._posed_canonical(scale, rotation, translation)[..., 2] + depth_detail
        return scale, rotation, translation, target

    def shape_vertices(self, identity: np.ndarray, expression: np.ndarray,
                       joint_rotations: np.ndarray | None = None) -> np.ndarray:
        identity = np.asarray(identity, dtype=np.float64).reshape(1, NUM_LANDMARKS, 3)
        expression = np.asarray(expression, dtype=np.float64).reshape(-1, NUM_LANDMARKS, 3)
        return identity + expression

    def landmarks(self, vertices: np.ndarray) -> np.ndarray:
        return np.asarray(vertices)  # the mesh vertices are the landmarks

    def mouth_loop(self) -> np.ndarray:
        return np.array(INNER_LIP_LOOP, np.int64)  # starts at the mouth corner 78

    def mirror_vertices(self) -> np.ndarray:
        return self.mirror_pairs.copy()

    def template_vertices(self) -> np.ndarray:
        return self.canonical.copy()
