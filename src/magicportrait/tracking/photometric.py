"""Photometric refinement of a tracked video's head pose: the face's own texture, not the landmark network's prior.

MediaPipe's landmarks lean toward a frontal face: on renders of real faces turned by known amounts the head pose fitted
to them turns only 0.6-0.9x as far (pitch often less). The skin's texture has no such prior. So, after tracking:

1. each frame's pose comes from the rigid Procrustes fit of the canonical face to its landmarks (the open geometry's
   pose), and its pose-free shape (the tracked expression) is kept;
2. points are sampled on the rigid upper-face triangles (forehead, nose, cheeks; not the eyes, brows, lips or jaw) of
   a reference frame's shape, and the reference frame's grey values there become their texture;
3. each other frame's rotation, scale and translation (plus a brightness offset) are refined by Gauss-Newton on the
   robust (Huber) difference between that texture and the frame's grey values at the projected points (points facing
   away from the camera in either frame are left out), coarse to fine over Gaussian-blurred copies of face crops
   normalised to a fixed face size;
4. a frame keeps its refined pose only where the photometric cost fell and the change is plausible; its landmarks are
   its pose-free shape put back at that pose, so every head model fitted afterwards sees the refined pose.

Frames are read once more (the tracker keeps only landmarks) and processed in chunks, so memory stays flat in length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import islice

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from magicportrait.errors import InputError
from magicportrait.geometry.rotations import rotation_angle_degrees
from magicportrait.heads.lbs import batch_rodrigues, skew_symmetric
from magicportrait.types import Track

CROP_SIZE = 256  # face crops the refinement works on (px)
CROP_PX_PER_CM = 10.0  # their scale: a 14 cm wide face is 140 px across
SIGMAS_PX = (4.0, 2.0, 1.0)  # Gaussian blur of the crops, coarse to fine
ITERATIONS = 8  # Gauss-Newton steps per blur level
HUBER = 0.04  # grey-level residuals beyond this (0-1 scale) count linearly
DAMPING = 1e-3  # Levenberg damping, relative to the normal matrix' diagonal
MIN_FACING = 0.3  # points whose normal is closer than this to the image plane are left out
MAX_CHANGE_DEG = 15.0  # a refinement turning the head more than this is rejected (a bad frame, not the landmarks)
BARYCENTRIC_STEPS = 4  # points per rigid triangle edge: 10 per triangle
CHUNK = 64  # frames refined together


@dataclass(frozen=True)
class RigidPoses:
    """Per-frame orthographic similarity (image px) of the canonical face and the pose-free shapes, model frame."""

    scale: np.ndarray  # (T,)
    rotation: np.ndarray  # (T, 3, 3)
    translation: np.ndarray  # (T, 3)
    shapes: np.ndarray  # (T, 478, 3) cm

    def posed(self, index: int | slice) -> np.ndarray:
        """The shapes of ``index`` at their poses, image px (z: depth in px, like the tracker's)."""
        shapes = self.shapes[index]
        return (self.scale[index, None, None] * np.einsum("tij,tnj->tni", self.rotation[index], shapes)
                + self.translation[index, None])


def refine_pose_photometric(read_frames: Callable[[], Iterable[np.ndarray]], track: Track,
                            show_progress: bool = False) -> Track:
    """``track`` with each frame's landmarks moved rigidly to the photometrically refined head pose.

    ``read_frames()`` yields the RGB uint8 frames the track was made from, in order; it is called twice (once up to
    the reference frame, then once through). Frames where the tracker found no face (their landmarks were
    interpolated) keep their landmarks; a track with fewer than two detected frames is returned unchanged.
    """
    detected = np.asarray(track.detected, bool)
    if track.num_frames < 2 or detected.sum() < 2:
        return track
    poses = rigid_poses(track.landmarks)
    reference_index = most_frontal(poses, detected)
    reference_frame = next(islice(read_frames(), reference_index, None), None)
    if reference_frame is None:
        raise InputError(f"Pose refinement could not read frame {reference_index} of a track of {track.num_frames} "
                         f"frames: re-read the same video the track was made from.")
    reference = ReferenceTexture.build(reference_frame, poses, reference_index)
    scale, rotation, translation = poses.scale.copy(), poses.rotation.copy(), poses.translation.copy()
    frame_iter = iter(read_frames())
    progress = _progress(track.num_frames, show_progress)
    for start in range(0, track.num_frames, CHUNK):
        chunk_frames = list(islice(frame_iter, CHUNK))
        if len(chunk_frames) < min(CHUNK, track.num_frames - start):
            raise InputError(f"Pose refinement got {start + len(chunk_frames)} frames for a track of "
                             f"{track.num_frames}: re-read the same video the track was made from.")
        index = np.arange(start, start + len(chunk_frames))
        picked = index[detected[index] & (index != reference_index)]
        if len(picked):
            result = reference.align([chunk_frames[i - start] for i in picked], poses, picked)
            scale[picked], rotation[picked], translation[picked] = result
        progress.update(len(chunk_frames))
    progress.close()
    landmarks = track.landmarks.copy()
    refined = RigidPoses(scale, rotation, translation, poses.shapes).posed(slice(None))
    landmarks[detected] = refined[detected].astype(landmarks.dtype)
    return replace(track, landmarks=landmarks)


def most_frontal(poses: RigidPoses, detected: np.ndarray) -> int:
    """The detected frame whose face looks most directly at the camera: it shares the most surface with the rest."""
    forward = poses.rotation[:, 2, 2]  # cosine between the face's forward axis and the viewing axis (up to sign)
    return int(np.argmax(np.where(detected, np.abs(forward), -np.inf)))


def rigid_poses(landmarks: np.ndarray) -> RigidPoses:
    """The canonical face's rigid pose in every frame and each frame's pose-free shape (see MediaPipeHeadModel)."""
    from magicportrait.heads.mediapipe_mesh import FIT_CHUNK

    model = _open_geometry()
    parts = []
    for start in range(0, len(landmarks), FIT_CHUNK):
        scale, rotation, translation, target = model.fit_pose(np.asarray(landmarks[start:start + FIT_CHUNK],
                                                                         np.float64))
        shapes = np.einsum("tji,tnj->tni", rotation, target - translation[:, None]) / scale[:, None, None]
        parts.append((scale, rotation, translation, shapes))
    return RigidPoses(*(np.concatenate(values) for values in zip(*parts, strict=True)))


@lru_cache(maxsize=1)
def _open_geometry():
    from magicportrait.heads.mediapipe_mesh import MediaPipeHeadModel

    return MediaPipeHeadModel()


def surface_samples(shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points `(P, 3)` on the rigid triangles of a `(478, 3)` shape and their unit outward normals `(P, 3)`."""
    model = _open_geometry()
    rigid = model.weights >= 1.0
    triangles = model.faces[rigid[model.faces].all(axis=1)]
    steps = np.linspace(0.0, 1.0, BARYCENTRIC_STEPS)
    barycentric = np.array([(a, b, 1.0 - a - b) for a in steps for b in steps if a + b <= 1.0 + 1e-9])
    corners = shape[triangles]  # (F, 3, 3)
    points = np.einsum("kj,fjc->fkc", barycentric, corners).reshape(-1, 3)
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    return points, np.repeat(normals, len(barycentric), axis=0)


def crop_similarity(poses: RigidPoses, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, the zoom and offset mapping image px into the normalised face crop: crop = zoom * image + offset."""
    zoom = CROP_PX_PER_CM / poses.scale[index]
    centre = poses.translation[index, :2]
    return zoom, CROP_SIZE / 2.0 - zoom[:, None] * centre


def grey_crops(frames: list[np.ndarray], zoom: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """`(N, S, S)` float32 grey face crops (0-1) of RGB uint8 frames."""
    crops = []
    for frame, frame_zoom, frame_offset in zip(frames, zoom, offset, strict=True):
        grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        matrix = np.array([[frame_zoom, 0.0, frame_offset[0]], [0.0, frame_zoom, frame_offset[1]]])
        crops.append(cv2.warpAffine(grey, matrix, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_AREA
                                    if frame_zoom < 1 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
    return np.stack(crops).astype(np.float32) / 255.0


def pyramid(crops: np.ndarray) -> list[torch.Tensor]:
    """Per blur level, `(N, 3, S, S)` tensors: the blurred crops and their x / y gradients."""
    levels = []
    for sigma in SIGMAS_PX:
        blurred = np.stack([cv2.GaussianBlur(crop, (0, 0), sigma) for crop in crops])
        gradient_x = np.stack([cv2.Sobel(crop, cv2.CV_32F, 1, 0, ksize=3) / 8.0 for crop in blurred])
        gradient_y = np.stack([cv2.Sobel(crop, cv2.CV_32F, 0, 1, ksize=3) / 8.0 for crop in blurred])
        levels.append(torch.from_numpy(np.stack([blurred, gradient_x, gradient_y], axis=1)))
    return levels


def sample_maps(maps: torch.Tensor, points_xy: torch.Tensor) -> torch.Tensor:
    """Bilinear samples `(N, C, P)` of `(N, C, S, S)` maps at crop pixel positions `(N, P, 2)`."""
    grid = points_xy * (2.0 / (CROP_SIZE - 1)) - 1.0
    return F.grid_sample(maps, grid[:, :, None].float(), align_corners=True, padding_mode="border")[..., 0]


class ReferenceTexture:
    """The reference frame's grey values at points on its rigid face surface, per blur level."""

    def __init__(self, points: np.ndarray, normals: np.ndarray, values: list[torch.Tensor], visible: np.ndarray):
        self.points = torch.from_numpy(points)  # (P, 3) model frame, cm
        self.normals = torch.from_numpy(normals)
        self.values = values  # per level, (P,)
        self.visible = torch.from_numpy(visible)

    @classmethod
    def build(cls, frame: np.ndarray, poses: RigidPoses, index: int) -> ReferenceTexture:
        points, normals = surface_samples(poses.shapes[index])
        zoom, offset = crop_similarity(poses, np.array([index]))
        maps = pyramid(grey_crops([frame], zoom, offset))
        rotation = poses.rotation[index]
        projected = (CROP_PX_PER_CM * points @ rotation.T)[:, :2] + CROP_SIZE / 2.0
        visible = facing(normals @ rotation.T) > MIN_FACING
        values = [sample_maps(level[:, :1], torch.from_numpy(projected)[None])[0, 0].double() for level in maps]
        return cls(points, normals, values, visible)

    def align(self, frames: list[np.ndarray], poses: RigidPoses, index: np.ndarray):
        """Refined scale `(N,)`, rotation `(N, 3, 3)` and translation `(N, 3)` (image px) of frames ``index``."""
        zoom, offset = crop_similarity(poses, index)
        levels = pyramid(grey_crops(frames, zoom, offset))
        rotation = torch.from_numpy(poses.rotation[index])
        log_scale = torch.zeros(len(index), dtype=torch.float64)
        shift = torch.zeros(len(index), 2, dtype=torch.float64)  # crop px, from the crop centre
        brightness = torch.zeros(len(index), dtype=torch.float64)
        start_cost = self._cost(levels[-1], self.values[-1], rotation, log_scale, shift)
        for level, values in zip(levels, self.values, strict=True):
            for _ in range(ITERATIONS):
                step = self._gauss_newton_step(level, values, rotation, log_scale, shift, brightness)
                rotation = batch_rodrigues(step[:, :3]) @ rotation
                log_scale, shift, brightness = log_scale + step[:, 3], shift + step[:, 4:6], brightness + step[:, 6]
        end_cost = self._cost(levels[-1], self.values[-1], rotation, log_scale, shift)
        return self._accepted(poses, index, zoom, offset, rotation.numpy(), log_scale.numpy(), shift.numpy(),
                              trusted=(end_cost < start_cost).numpy())

    def _project(self, rotation, log_scale, shift):
        rotated = self.points @ rotation.transpose(1, 2)  # (N, P, 3)
        zoom = CROP_PX_PER_CM * torch.exp(log_scale)
        return rotated, zoom, zoom[:, None, None] * rotated[..., :2] + CROP_SIZE / 2.0 + shift[:, None]

    def _residuals(self, level, values, rotation, log_scale, shift, brightness):
        rotated, zoom, projected = self._project(rotation, log_scale, shift)
        samples = sample_maps(level, projected).double()  # (N, 3, P)
        visible = self.visible[None] & (facing(self.normals @ rotation.transpose(1, 2)) > MIN_FACING)
        residual = samples[:, 0] - values[None] - brightness[:, None]
        return residual, visible.double(), samples, rotated, zoom

    def _cost(self, level, values, rotation, log_scale, shift) -> torch.Tensor:
        """Mean robust cost per frame, its brightness offset the mean residual of the visible points."""
        residual, visible, *_ = self._residuals(level, values, rotation, log_scale, shift, torch.zeros_like(log_scale))
        count = visible.sum(1).clamp_min(1.0)
        residual = residual - ((residual * visible).sum(1) / count)[:, None]
        return (huber(residual) * visible).sum(1) / count

    def _gauss_newton_step(self, level, values, rotation, log_scale, shift, brightness):
        residual, visible, samples, rotated, zoom = self._residuals(level, values, rotation, log_scale, shift,
                                                                    brightness)
        gradient = samples[:, 1:].transpose(1, 2)  # (N, P, 2) d(grey)/d(crop px)
        # d(projected)/d(small rotation on the left) = zoom * -[rotated]_x, its x / y rows.
        d_rotation = -zoom[:, None, None, None] * skew_symmetric(rotated)[..., :2, :]
        d_projected = torch.cat([d_rotation, (zoom[:, None, None] * rotated[..., :2])[..., None],
                                 torch.eye(2, dtype=rotated.dtype).expand(*residual.shape, 2, 2)], dim=-1)
        jacobian = torch.cat([torch.einsum("npc,npck->npk", gradient, d_projected),
                              -torch.ones_like(residual)[..., None]], dim=-1)  # rotation, scale, shift, brightness
        weights = visible * torch.where(residual.abs() <= HUBER, 1.0, HUBER / residual.abs().clamp_min(1e-12))
        normal = torch.einsum("np,npk,npl->nkl", weights, jacobian, jacobian)
        normal = normal + DAMPING * torch.diag_embed(normal.diagonal(dim1=1, dim2=2)) + 1e-9 * torch.eye(7)
        return torch.linalg.solve(normal, -torch.einsum("np,npk,np->nk", weights, jacobian, residual))

    @staticmethod
    def _accepted(poses, index, zoom, offset, rotation, log_scale, shift, trusted):
        """Refined poses back in image px; frames not ``trusted`` or turned implausibly far keep their own."""
        scale = poses.scale[index] * np.exp(log_scale)
        centre_crop = CROP_SIZE / 2.0 + shift
        translation = poses.translation[index].copy()
        translation[:, :2] = (centre_crop - offset) / zoom[:, None]
        turned = rotation_angle_degrees(rotation, poses.rotation[index])
        keep = trusted & (turned <= MAX_CHANGE_DEG) & np.isfinite(rotation).all(axis=(1, 2))
        return (np.where(keep, scale, poses.scale[index]), np.where(keep[:, None, None], rotation,
                                                                     poses.rotation[index]),
                np.where(keep[:, None], translation, poses.translation[index]))


def facing(normals: torch.Tensor | np.ndarray):
    """How much outward normals (image space: x right, y down, z away from the camera) face the camera."""
    return -normals[..., 2]


def huber(residual: torch.Tensor) -> torch.Tensor:
    return F.huber_loss(residual, torch.zeros_like(residual), reduction="none", delta=HUBER)


def _progress(total: int, show: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="Refining head pose", unit="frame", disable=not show, leave=False)

