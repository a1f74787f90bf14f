"""FLAME behind the :class:`~magicportrait.heads.base.HeadModel` interface, with batched fitting to a :class:`Track`.

Units and frames: :meth:`FlameHeadModel.shape_vertices` returns FLAME vertices in the project's model frame (x toward
the subject's left, y down, z into the head) in **centimetres** (FLAME's metres * 100, the open model's unit), so
a :class:`~magicportrait.types.HeadTrack`'s ``scale`` is pixels per centimetre. ``joint_rotations`` are the
axis-angle rotations of FLAME's [neck, jaw, left eye, right eye] joints expressed in the model frame (FLAME's
global joint stays at the identity: the head's rotation is the HeadTrack's ``rotation``).

Fitting (orthographic camera like the official release, or a perspective camera of a given field of view:
``FlameFitConfig.camera``), per video:

1. closed-form initial pose per frame: weighted similarity Procrustes of the FLAME template's embedded landmarks
   to the tracked landmarks (x, y and MediaPipe's z);
2. identity: one shape vector ``beta`` fitted jointly with the per-frame parameters of up to
   ``identity_frames`` evenly spaced frames;
3. with ``beta`` fixed, all frames in chunks of ``chunk_size`` frames, each chunk one batched L-BFGS problem:
   robust (Huber) 2D reprojection of the 478 landmarks, unit-Gaussian priors on ``beta``/``psi``, priors on the
   jaw/eye/neck rotations, and first-difference temporal smoothness of pose, jaw and expression.

Only the FLAME vertices that carry landmarks are skinned during the optimisation (the joints are regressed from
precomputed regressor-projected blend shapes), in float32, which keeps an iteration cheap (~45-65 frames/s on 2
CPU threads). Consecutive chunks are tied by the temporal terms (each chunk starts from the previous one's last
frame); frames the tracker interpolated (``detected`` False) get ``undetected_weight`` on their landmarks.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import torch

from magicportrait.geometry.procrustes import weighted_similarity_procrustes
from magicportrait.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from magicportrait.heads.base import HeadModel, focal_length_px
from magicportrait.heads.embedding import load_flame_mediapipe_embedding, vertices_to_landmarks
from magicportrait.heads.flame import FlameModel, flame_to_model_frame
from magicportrait.heads.flame_fit_config import FlameFitConfig
from magicportrait.heads.lbs import batch_rigid_transform, batch_rodrigues, pose_feature
from magicportrait.types import NUM_LANDMARKS, FlameTrack, Track

__all__ = ["FlameFitConfig", "FlameHeadModel", "METRES_TO_MODEL_UNITS", "NUM_JOINT_ROTATIONS",
           "rotation_error_degrees"]

METRES_TO_MODEL_UNITS = 100.0  # FLAME metres -> model-frame centimetres
NUM_JOINT_ROTATIONS = 4  # neck, jaw, left eye, right eye
IRIS = slice(468, 478)
_FLIP = np.array([1.0, -1.0, -1.0])  # FLAME frame <-> model frame (a rotation by pi about x; its own inverse)


class FlameHeadModel(HeadModel):
    """FLAME as a head model (identity beta, expression psi, neck/jaw/eye joints) with batched fitting."""

    name = "flame"

    def __init__(self, flame: FlameModel, config: FlameFitConfig | None = None, num_eyelids: int = 0) -> None:
        self.config = config or FlameFitConfig()
        self.num_eyelids = num_eyelids  # the last expression components are eyelid closures (flame_eyelids)
        self.flame = copy.deepcopy(flame).to(torch.float64).cpu()
        self.faces = self.flame.faces.cpu().numpy().astype(np.int64)  # FLAME's winding (see module docstring)
        self.num_shape = int(self.flame.num_shape)
        self.num_expression = int(self.flame.num_expression)
        face_indices, barycentric, spread = load_flame_mediapipe_embedding()
        self.embedding = (np.asarray(face_indices), np.asarray(barycentric, np.float64))
        weights = np.clip((1.0 / np.maximum(np.asarray(spread, np.float64), 1e-3)) ** 2, 0.0, 1.0)
        weights = np.maximum(weights, self.config.oval_weight)
        weights[IRIS] = self.config.iris_weight
        self.landmark_weights = weights
        self._prepare_subset()

    @classmethod
    def from_file(cls, path: str | os.PathLike, num_shape: int | None = 100, num_expression: int | None = 50,
                  config: FlameFitConfig | None = None, num_shape_total: int | None = None,
                  eyelids: str | os.PathLike | None = None) -> FlameHeadModel:
        """Load a FLAME file, keeping at most ``num_shape`` / ``num_expression`` components (None: all; the
        partial model has 60 + 0). ``num_shape_total`` overrides the file's identity/expression column split.
        ``eyelids``: a folder with SMIRK's eyelid blend shapes, appended as two more expression components."""
        from magicportrait.heads.flame_eyelids import NUM_EYELIDS, load_eyelid_blendshapes, with_eyelids
        from magicportrait.heads.flame_loader import load_flame

        assets = load_flame(path, num_shape_total=num_shape_total)
        shape = assets.num_shape if num_shape is None else min(num_shape, assets.num_shape)
        expression = assets.num_expression if num_expression is None else min(num_expression,
                                                                               assets.num_expression)
        if (shape, expression) != (assets.num_shape, assets.num_expression):
            assets = load_flame(path, num_shape=shape, num_expression=expression, num_shape_total=num_shape_total)
        if eyelids is None:
            return cls(FlameModel(assets, dtype=torch.float64), config=config)
        assets = with_eyelids(assets, load_eyelid_blendshapes(eyelids, assets.num_vertices))
        return cls(FlameModel(assets, dtype=torch.float64), config=config, num_eyelids=NUM_EYELIDS)

    # ------------------------------------------------------------------ HeadModel interface

    @property
    def num_vertices(self) -> int:
        return self.flame.num_vertices

    def shape_vertices(self, identity: np.ndarray, expression: np.ndarray,
                       joint_rotations: np.ndarray | None = None) -> np.ndarray:
        expression = np.asarray(expression, np.float64)
        expression = expression[None] if expression.ndim == 1 else expression
        if expression.ndim != 2 or expression.shape[1] != self.num_expression:
            raise ValueError(f"expression must have shape (T, {self.num_expression}), got {expression.shape}.")
        num_frames = expression.shape[0]
        if joint_rotations is not None and np.asarray(joint_rotations).size:
            num_frames = max(num_frames, np.asarray(joint_rotations).shape[0])
        identity = self._identity(identity)
        if expression.shape[0] != num_frames:
            expression = np.broadcast_to(expression, (num_frames, self.num_expression))
        joints = np.zeros((num_frames, NUM_JOINT_ROTATIONS, 3))
        if joint_rotations is not None and np.asarray(joint_rotations).size:
            joints = np.broadcast_to(np.asarray(joint_rotations, np.float64), joints.shape)
        joints_flame = torch.as_tensor(joints * _FLIP)  # model-frame axis -> FLAME-frame axis
        with torch.no_grad():
            out = self.flame(shape=torch.as_tensor(np.broadcast_to(identity, (num_frames, self.num_shape)).copy()),
                             expression=torch.as_tensor(np.ascontiguousarray(expression)),
                             neck=joints_flame[:, 0], jaw=joints_flame[:, 1], eyes=joints_flame[:, 2:4])
        return flame_to_model_frame(out.vertices.numpy()) * METRES_TO_MODEL_UNITS

    def landmarks(self, vertices: np.ndarray) -> np.ndarray:
        return vertices_to_landmarks(vertices, self.faces, *self.embedding)

    def rest_vertices(self) -> np.ndarray:
        """`(V, 3)` the mean FLAME head, neutral expression and joints (model frame, cm)."""
        return self.shape_vertices(np.zeros(self.num_shape), np.zeros((1, self.num_expression)))[0]

    def mouth_loop(self) -> np.ndarray:
        """FLAME's mouth opening: the mesh boundary loop nearest the inner-lip landmarks, from the right corner."""
        from magicportrait.geometry.mesh import boundary_loops

        rest = self.rest_vertices()
        centre = self.landmarks(rest[None])[0, [13, 14]].mean(0)  # MediaPipe's inner upper / lower lip midpoints
        loop = min(boundary_loops(self.faces), key=lambda ring: np.linalg.norm(rest[ring].mean(0) - centre))
        return np.roll(loop, -int(np.argmin(rest[loop, 0])))

    def template_vertices(self) -> np.ndarray:
        return self.rest_vertices()

    def mirror_vertices(self) -> np.ndarray:
        from magicportrait.geometry.mesh import mirror_vertices

        return mirror_vertices(self.rest_vertices(), self.faces)

    def template_landmarks(self) -> np.ndarray:
        """`(478, 3)` landmarks of the mean FLAME head (model frame, cm)."""
        return self.landmarks(self.shape_vertices(np.zeros(self.num_shape), np.zeros((1, self.num_expression))))[0]

    def fit(self, track: Track) -> FlameTrack:
        if track.landmarks.ndim != 3 or track.landmarks.shape[1:] != (NUM_LANDMARKS, 3):
            raise ValueError(f"Expected landmarks of shape (T, {NUM_LANDMARKS}, 3), got {track.landmarks.shape}.")
        config = self.config
        previous_threads = torch.get_num_threads()
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        try:
            landmarks = np.asarray(track.landmarks, np.float64)
            num_frames = landmarks.shape[0]
            # Stage 1: identity from a few evenly spaced frames (no temporal terms: they are not neighbours).
            picked = np.unique(np.linspace(0, num_frames - 1, min(config.identity_frames, num_frames)).round()
                               .astype(int))
            identity = np.zeros(self.num_shape)
            if self.num_shape:
                identity = self._optimise(landmarks[picked], identity, fit_identity=True, temporal=False,
                                          iterations=config.identity_iterations,
                                          image_size=track.image_size)["identity"]
            # Stage 2: identity fixed, every frame, in chunks.
            # Each chunk is tied to the previous chunk's last fitted frame by the temporal terms (no seam).
            frame_weights = np.where(np.asarray(track.detected, bool), 1.0, config.undetected_weight)
            results: list[dict] = []
            for start in range(0, num_frames, config.chunk_size):
                chunk = slice(start, start + config.chunk_size)
                results.append(self._optimise(landmarks[chunk], identity, fit_identity=False, temporal=True,
                                              iterations=config.iterations, image_size=track.image_size,
                                              frame_weights=frame_weights[chunk],
                                              previous=results[-1] if results else None))
        finally:
            torch.set_num_threads(previous_threads)
        merged = {key: np.concatenate([r[key] for r in results]) for key in results[0] if key != "identity"}
        if config.camera == "perspective":
            merged["scale"], merged["translation"] = merged["camera_scale"], merged["camera_translation"]
        return FlameTrack(
            model=self.name,
            identity=identity.astype(np.float32),
            expression=merged["expression"].astype(np.float32),
            rotation=merged["rotation"].astype(np.float32),
            joint_rotations=merged["joint_rotations"].astype(np.float32),
            scale=merged["scale"].astype(np.float32),
            translation=merged["translation"].astype(np.float32),
            image_size=track.image_size,
            fps=track.fps,
            residual=merged["residual"].astype(np.float32),
            camera=config.camera,
            focal_px=self._focal_px(track.image_size) if config.camera == "perspective" else None,
            extras={"units": "cm", "fit_neck": config.fit_neck},
        )

    def _focal_px(self, image_size: tuple[int, int]) -> float:
        return float(focal_length_px(self.config.fov_degrees, image_size))

    # ------------------------------------------------------------------ internals

    def _identity(self, identity) -> np.ndarray:
        identity = np.asarray(identity, np.float64).reshape(-1)
        out = np.zeros(self.num_shape)
        out[:min(len(identity), self.num_shape)] = identity[:self.num_shape]
        return out

    def _prepare_subset(self) -> None:
        """Arrays restricted to the vertices that carry landmarks, for a cheap skinning during optimisation."""
        flame = self.flame
        face_indices, barycentric = self.embedding
        corners = self.faces[face_indices]  # (L, 3)
        used, inverse = np.unique(corners, return_inverse=True)
        self._sub_corners = torch.as_tensor(inverse.reshape(corners.shape))
        self._sub_bary = torch.as_tensor(barycentric)
        index = torch.as_tensor(used)
        self._sub_template = flame.v_template[index]  # (U, 3)
        self._sub_dirs = flame.shapedirs[index]  # (U, 3, S + E)
        posedirs = flame.posedirs.reshape(flame.posedirs.shape[0], -1, 3)
        self._sub_posedirs = posedirs[:, index].reshape(posedirs.shape[0], -1)  # (P, U * 3)
        self._sub_weights = flame.lbs_weights[index]  # (U, J)
        self._joint_template = flame.J_regressor @ flame.v_template  # (J, 3)
        self._joint_dirs = torch.einsum("jv,vdk->jdk", flame.J_regressor, flame.shapedirs)  # (J, 3, S + E)
        self._parents = [int(p) for p in flame.parents.tolist()]

    def _subset_landmarks(self, coefficients: torch.Tensor, rotations: torch.Tensor, tables: dict) -> torch.Tensor:
        """`(B, 478, 3)` landmarks in the model frame (cm) for blend coefficients and `(B, 5, 3, 3)` rotations."""
        batch = coefficients.shape[0]
        shaped = tables["template"] + torch.einsum("bk,udk->bud", coefficients, tables["dirs"])
        joints = tables["joint_template"] + torch.einsum("bk,jdk->bjd", coefficients, tables["joint_dirs"])
        posed = shaped + (pose_feature(rotations) @ tables["posedirs"]).reshape(batch, -1, 3)
        _, transforms = batch_rigid_transform(rotations, joints, self._parents)
        eye = torch.eye(3, dtype=rotations.dtype)
        motion = torch.cat([transforms[:, :, :3, :3] - eye, transforms[:, :, :3, 3:]], dim=-1)  # (B, J, 3, 4)
        blended = torch.einsum("uj,bjmn->bumn", tables["weights"], motion)
        vertices = posed + (blended[..., :3] @ posed[..., None])[..., 0] + blended[..., 3]
        tri = vertices[:, self._sub_corners]  # (B, L, 3, 3)
        points = (tri * tables["bary"][:, :, None]).sum(-2)
        return points * points.new_tensor(_FLIP * METRES_TO_MODEL_UNITS)

    def _tables(self, dtype: torch.dtype, identity: np.ndarray | None) -> dict:
        """Subset arrays in ``dtype``; with ``identity`` given, the identity is folded into the template."""
        tables = {"template": self._sub_template, "dirs": self._sub_dirs, "joint_template": self._joint_template,
                  "joint_dirs": self._joint_dirs, "posedirs": self._sub_posedirs, "weights": self._sub_weights,
                  "bary": self._sub_bary}
        if identity is not None:
            beta = torch.as_tensor(identity, dtype=torch.float64)
            tables["template"] = tables["template"] + torch.einsum(
                "k,udk->ud", beta, self._sub_dirs[..., :self.num_shape])
            tables["joint_template"] = tables["joint_template"] + torch.einsum(
                "k,jdk->jd", beta, self._joint_dirs[..., :self.num_shape])
            tables["dirs"] = tables["dirs"][..., self.num_shape:]
            tables["joint_dirs"] = tables["joint_dirs"][..., self.num_shape:]
        return {key: value.to(dtype).contiguous() for key, value in tables.items()}

    def _initial_pose(self, landmarks: np.ndarray, identity: np.ndarray):
        """Closed-form per-frame scale, rotation, translation of the identity's neutral landmarks."""
        shape = self.landmarks(self.shape_vertices(identity, np.zeros((1, self.num_expression))))[0]
        return weighted_similarity_procrustes(shape, landmarks, self.landmark_weights)

    def _optimise(self, landmarks: np.ndarray, identity: np.ndarray, fit_identity: bool, temporal: bool,
                  iterations: int, image_size: tuple[int, int], frame_weights: np.ndarray | None = None,
                  previous: dict | None = None) -> dict:
        """One batched L-BFGS problem over ``landmarks`` `(T, 478, 3)`; ``previous``: the preceding chunk's
        result, whose last frame anchors this chunk's temporal terms.

        The head's size and position are parametrised on screen for both cameras (``scale``: pixels per cm at
        the head, ``translation``: where the origin projects), so the temporal terms read the same; the
        perspective camera turns them into a depth ``f / scale`` and a camera-space position."""
        config = self.config
        dtype = torch.float32
        num_frames = landmarks.shape[0]
        scale0, rotation0, translation0 = self._initial_pose(landmarks, identity)
        tables = self._tables(dtype, None if fit_identity else identity)
        target = torch.as_tensor(landmarks[..., :2], dtype=dtype)
        weights = torch.as_tensor(self.landmark_weights, dtype=dtype)[None] * torch.as_tensor(
            np.ones(num_frames) if frame_weights is None else frame_weights, dtype=dtype)[:, None]
        scale0_t = torch.as_tensor(scale0, dtype=dtype)
        rotation0_t = torch.as_tensor(rotation0, dtype=dtype)
        translation0_t = torch.as_tensor(translation0[:, :2], dtype=dtype)

        zeros = lambda *shape: torch.zeros(*shape, dtype=dtype, requires_grad=True)  # noqa: E731
        params = {"delta_rotation": zeros(num_frames, 3), "log_scale": zeros(num_frames),
                  "delta_translation": zeros(num_frames, 2), "jaw": zeros(num_frames, 3),
                  "eyes": zeros(num_frames, 2, 3)}
        if self.num_expression:
            params["expression"] = zeros(num_frames, self.num_expression)
        if config.fit_neck:
            params["neck"] = zeros(num_frames, 3)
        if fit_identity:
            params["identity"] = torch.as_tensor(identity, dtype=dtype).clone().requires_grad_(True)

        sigma2 = config.landmark_sigma_px ** 2
        huber = config.huber_px
        eye3 = torch.eye(3, dtype=dtype)
        jaw_w = 0.5 / np.deg2rad(config.jaw_sigma_deg) ** 2
        eye_w = 0.5 / np.deg2rad(config.eye_sigma_deg) ** 2
        vergence_w = 0.5 / np.deg2rad(config.vergence_sigma_deg) ** 2
        neck_w = 0.5 / np.deg2rad(config.neck_sigma_deg) ** 2

        def smooth_weight(sigma: float) -> float:
            return 0.5 / sigma ** 2 if (temporal and sigma > 0) else 0.0

        w_rot = smooth_weight(np.deg2rad(config.smooth_rotation_deg))
        w_trans = smooth_weight(config.smooth_translation_px)
        w_scale = smooth_weight(config.smooth_scale)
        w_expr = smooth_weight(config.smooth_expression)

        perspective = config.camera == "perspective"
        focal = self._focal_px(image_size)
        centre = torch.tensor([image_size[1] / 2.0, image_size[0] / 2.0], dtype=dtype)

        def forward():
            rotation = batch_rodrigues(params["delta_rotation"]) @ rotation0_t  # (T, 3, 3)
            scale = scale0_t * torch.exp(params["log_scale"])
            translation = translation0_t + params["delta_translation"] * scale0_t[:, None]
            coefficient_parts = []
            if fit_identity:
                coefficient_parts.append(params["identity"].expand(num_frames, -1))
            if self.num_expression:
                coefficient_parts.append(params["expression"])
            coefficients = (torch.cat(coefficient_parts, dim=1) if coefficient_parts
                            else torch.zeros(num_frames, 0, dtype=dtype))
            flip = rotation.new_tensor(_FLIP)
            local = [eye3.expand(num_frames, 3, 3),
                     batch_rodrigues(params["neck"] * flip) if config.fit_neck else eye3.expand(num_frames, 3, 3),
                     batch_rodrigues(params["jaw"] * flip)]
            joint_rotations = torch.cat([torch.stack(local, dim=1), batch_rodrigues(params["eyes"] * flip)], dim=1)
            points = self._subset_landmarks(coefficients, joint_rotations, tables)  # (T, L, 3) model frame
            if perspective:
                camera = _screen_to_camera(scale, translation, focal, centre)
                camera_points = points @ rotation.transpose(1, 2) + camera[:, None]
                projected = focal * camera_points[..., :2] / camera_points[..., 2:] + centre
            else:
                projected = scale[:, None, None] * (points @ rotation[:, :2].transpose(1, 2)) + translation[:, None]
            return projected, rotation, scale, translation

        step_delta = float(np.deg2rad(config.smooth_rotation_huber_deg))

        def robust_step(difference: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.huber_loss(difference, torch.zeros_like(difference), reduction="none",
                                                  delta=step_delta)

        anchor = None
        if temporal and previous is not None:
            last_joints = torch.as_tensor(previous["joint_rotations"][-1], dtype=dtype)
            anchor = {"rotation": torch.as_tensor(axis_angle_to_matrix(previous["rotation"][-1]), dtype=dtype),
                      "translation": torch.as_tensor(previous["translation"][-1, :2], dtype=dtype),
                      "log_scale": torch.log(torch.as_tensor(previous["scale"][-1], dtype=dtype)),
                      "neck": last_joints[0], "jaw": last_joints[1], "eyes": last_joints[2:4],
                      "expression": torch.as_tensor(previous["expression"][-1], dtype=dtype)}
        temporal = temporal and (num_frames > 1 or anchor is not None)

        def steps(name: str, values: torch.Tensor) -> torch.Tensor:
            """First differences along time, starting from the anchor frame when there is one."""
            if anchor is not None:
                values = torch.cat([anchor[name][None], values], dim=0)
            return values[1:] - values[:-1]

        def objective():
            projected, rotation, scale, translation = forward()
            residual = projected - target
            data = torch.nn.functional.huber_loss(residual, torch.zeros_like(residual), reduction="none",
                                                  delta=huber).sum(-1)
            loss = (data * weights).sum() / sigma2
            if fit_identity:
                loss = loss + 0.5 * config.shape_prior * (params["identity"] ** 2).sum()
            if self.num_expression:
                loss = loss + 0.5 * config.expression_prior * (params["expression"] ** 2).sum()
            loss = loss + jaw_w * (params["jaw"] ** 2).sum() + eye_w * (params["eyes"] ** 2).sum()
            loss = loss + vergence_w * ((params["eyes"][:, 0] - params["eyes"][:, 1]) ** 2).sum()
            if config.fit_neck:
                loss = loss + neck_w * (params["neck"] ** 2).sum()
            if temporal:
                # Robust (Huber) on rotation changes: jitter is damped, fast genuine turns are barely biased.
                # |R_t - R_{t-1}|_F^2 ~ 2 * angle^2 for small angles.
                loss = loss + w_rot * robust_step(steps("rotation", rotation)).sum()
                for name in ("jaw", "eyes") + (("neck",) if config.fit_neck else ()):
                    loss = loss + 2.0 * w_rot * robust_step(steps(name, params[name])).sum()
                loss = loss + w_trans * (steps("translation", translation) ** 2).sum()
                loss = loss + w_scale * (steps("log_scale", torch.log(scale)) ** 2).sum()
                if self.num_expression:
                    loss = loss + w_expr * (steps("expression", params["expression"]) ** 2).sum()
            return loss / num_frames

        optimiser = torch.optim.LBFGS(list(params.values()), lr=1.0, max_iter=iterations,
                                      max_eval=int(iterations * 1.25) + 1, history_size=20,
                                      tolerance_grad=1e-10, tolerance_change=1e-14, line_search_fn="strong_wolfe")

        def closure():
            optimiser.zero_grad()
            loss = objective()
            loss.backward()
            return loss

        if iterations > 0:
            optimiser.step(closure)

        with torch.no_grad():
            projected, rotation, scale, translation = forward()
            residual = torch.linalg.norm(projected - target, dim=-1).mean(-1)
        rotation = rotation.numpy()
        joints = np.zeros((num_frames, NUM_JOINT_ROTATIONS, 3))
        if config.fit_neck:
            joints[:, 0] = params["neck"].detach().numpy()
        joints[:, 1] = params["jaw"].detach().numpy()
        joints[:, 2:] = params["eyes"].detach().numpy()
        expression = (params["expression"].detach().numpy() if self.num_expression
                      else np.zeros((num_frames, 0)))
        result_identity = params["identity"].detach().numpy().copy() if fit_identity else identity
        # Depth: the orthographic camera ignores it; put the landmarks' mean depth where the tracker had it.
        shape = self.landmarks(self.shape_vertices(result_identity, expression, joints))
        depth = scale.numpy() * np.einsum("tj,tnj->tn", rotation[:, 2], shape).mean(-1)
        translation_z = landmarks[..., 2].mean(-1) - depth
        result = {"identity": result_identity, "expression": expression,
                  "rotation": matrix_to_axis_angle(rotation), "joint_rotations": joints,
                  "scale": scale.numpy(), "translation": np.concatenate([translation.numpy(),
                                                                         translation_z[:, None]], axis=1),
                  "residual": residual.numpy()}
        if perspective:
            result["camera_scale"] = np.ones(num_frames)
            result["camera_translation"] = _screen_to_camera(scale, translation, focal, centre).numpy()
        return result


def _screen_to_camera(scale: torch.Tensor, origin: torch.Tensor, focal: float, centre: torch.Tensor) -> torch.Tensor:
    """`(T, 3)` camera-space position (cm) of a head origin seen at ``origin`` (px) with ``scale`` px per cm."""
    depth = focal / scale
    return torch.cat([(origin - centre) * (depth / focal)[:, None], depth[:, None]], dim=1)


def rotation_error_degrees(axis_angle_a: np.ndarray, axis_angle_b: np.ndarray) -> np.ndarray:
    """Angle (degrees) between two batches of axis-angle rotations."""
    relative = np.swapaxes(axis_angle_to_matrix(axis_angle_a), -1, -2) @ axis_angle_to_matrix(axis_angle_b)
    return np.degrees(np.linalg.norm(matrix_to_axis_angle(relative), axis=-1))
