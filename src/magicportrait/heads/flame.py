"""The FLAME head model (Li et al., SIGGRAPH Asia 2017) as a torch module: shape, expression, pose -> vertices.

FLAME's own frame: metres, **y up, z toward the viewer** (out of the face), x toward the subject's left. The
project's model frame (:class:`~magicportrait.heads.base.HeadModel`) is x toward the subject's left, y down, z into
the head: a rotation by pi about x, ``FLAME_TO_IMAGE = diag(1, -1, -1)`` (see :func:`flame_to_model_frame`).

Joints (FLAME's kinematic tree): 0 global/root, 1 neck, 2 jaw, 3 left eye, 4 right eye (the subject's left and
right; the left eye lies at +x). Each pose parameter is a rotation of that joint relative to its parent, about
the joint's rest location; the global rotation therefore turns the head about the root joint, not the origin.
A positive rotation of the jaw about +x opens the mouth.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from magicportrait.heads.flame_loader import FlameAssets, load_flame
from magicportrait.heads.lbs import batch_rodrigues, linear_blend_skinning, rotation_6d_to_matrix

FLAME_TO_IMAGE = np.diag([1.0, -1.0, -1.0])  # FLAME frame (y up, z out) -> model/image frame (y down, z in)
JOINT_NAMES = ("global", "neck", "jaw", "left_eye", "right_eye")
NUM_FLAME_JOINTS = len(JOINT_NAMES)

RotationRepresentation = Literal["axis_angle", "6d"]


@dataclass
class FlameOutput:
    """FLAME forward output in FLAME's frame (metres, y up, z toward the viewer).

    Attributes:
        vertices: `(B, V, 3)` posed vertices.
        joints: `(B, J, 3)` posed joints (global, neck, jaw, left eye, right eye).
    """

    vertices: torch.Tensor
    joints: torch.Tensor


def flame_to_model_frame(points):
    """Map `(..., 3)` points (numpy or torch) from FLAME's frame to the project's model frame: ``(x, -y, -z)``."""
    if isinstance(points, torch.Tensor):
        return points * points.new_tensor([1.0, -1.0, -1.0])
    return np.asarray(points) * np.array([1.0, -1.0, -1.0])


class FlameModel(torch.nn.Module):
    """FLAME with its arrays as (non-trainable) buffers; ``forward`` is batched LBS with pose correctives.

    Attributes (buffers): ``v_template (V, 3)``, ``shapedirs (V, 3, S + E)`` (identity then expression
    components; see :attr:`shape_dirs` / :attr:`expression_dirs`), ``posedirs (P, V*3)``, ``J_regressor (J, V)``,
    ``lbs_weights (V, J)`` in the module's float dtype;
    ``parents (J,)`` and ``faces (F, 3)`` int64.
    """

    def __init__(self, assets: FlameAssets, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if assets.num_joints != NUM_FLAME_JOINTS:
            raise ValueError(f"FLAME has {NUM_FLAME_JOINTS} joints, these assets have {assets.num_joints}.")
        self.variant = assets.variant
        self.num_shape = assets.num_shape
        self.num_expression = assets.num_expression
        for name in ("v_template", "shapedirs", "posedirs", "J_regressor", "lbs_weights"):
            self.register_buffer(name, torch.as_tensor(getattr(assets, name)).to(dtype))
        self.register_buffer("parents", torch.as_tensor(assets.parents, dtype=torch.int64))
        self.register_buffer("faces", torch.as_tensor(assets.faces, dtype=torch.int64))
        self._parent_list = [int(p) for p in assets.parents]

    @classmethod
    def from_file(cls, path: str | os.PathLike, num_shape: int | None = None, num_expression: int | None = None,
                  dtype: torch.dtype = torch.float32, num_shape_total: int | None = None) -> FlameModel:
        """Load a FLAME ``.pkl``/``.npz`` (see :func:`~magicportrait.heads.flame_loader.load_flame`)."""
        return cls(load_flame(path, num_shape=num_shape, num_expression=num_expression,
                              num_shape_total=num_shape_total), dtype=dtype)

    @property
    def shape_dirs(self) -> torch.Tensor:
        """`(V, 3, S)` identity blend shapes (a view of ``shapedirs``)."""
        return self.shapedirs[:, :, :self.num_shape]

    @property
    def expression_dirs(self) -> torch.Tensor:
        """`(V, 3, E)` expression blend shapes (a view of ``shapedirs``)."""
        return self.shapedirs[:, :, self.num_shape:]

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def num_joints(self) -> int:
        return int(self.J_regressor.shape[0])

    def forward(self, shape: torch.Tensor | None = None, expression: torch.Tensor | None = None,
                global_rotation: torch.Tensor | None = None, neck: torch.Tensor | None = None,
                jaw: torch.Tensor | None = None, eyes: torch.Tensor | None = None,
                rotation_representation: RotationRepresentation = "axis_angle", batch_size: int | None = None,
                pose_correctives: bool = True) -> FlameOutput:
        """Posed FLAME vertices and joints in FLAME's frame.

        Args:
            shape: `(B, S)` identity coefficients (zeros if None).
            expression: `(B, E)` expression coefficients (zeros if None).
            global_rotation: `(B, 3)` axis-angle (or `(B, 6)` with ``"6d"``) about the root joint.
            neck: `(B, 3)` / `(B, 6)` neck rotation.
            jaw: `(B, 3)` / `(B, 6)` jaw rotation (positive about +x opens the mouth).
            eyes: `(B, 2, 3)` / `(B, 2, 6)` eyeball rotations, [left, right].
            rotation_representation: "axis_angle" (radians) or "6d" (first two matrix columns, see
                :func:`~magicportrait.heads.lbs.rotation_6d_to_matrix`). Missing rotations are the identity.
            batch_size: B when no argument is given (default 1).
            pose_correctives: apply FLAME's pose-corrective blend shapes (the published model does).

        Returns:
            :class:`FlameOutput` with vertices `(B, V, 3)` and joints `(B, 5, 3)`, in the buffers' dtype/device.
        """
        if rotation_representation not in ("axis_angle", "6d"):
            raise ValueError(f"rotation_representation must be 'axis_angle' or '6d', got {rotation_representation!r}.")
        width = 3 if rotation_representation == "axis_angle" else 6
        given = [t for t in (shape, expression, global_rotation, neck, jaw, eyes) if t is not None]
        batch = int(given[0].shape[0]) if given else (batch_size or 1)
        dtype, device = self.v_template.dtype, self.v_template.device

        def coefficients(value, count: int, name: str) -> torch.Tensor:
            if value is None:
                return torch.zeros(batch, count, dtype=dtype, device=device)
            value = torch.as_tensor(value, dtype=dtype, device=device)
            if value.shape != (batch, count):
                raise ValueError(f"{name} must have shape ({batch}, {count}), got {tuple(value.shape)}.")
            return value

        def rotation(value, name: str, leading: tuple[int, ...]) -> torch.Tensor:
            expected = (batch, *leading, width)
            if value is None:
                return torch.eye(3, dtype=dtype, device=device).expand(*expected[:-1], 3, 3)
            value = torch.as_tensor(value, dtype=dtype, device=device)
            if value.shape != expected:
                raise ValueError(f"{name} must have shape {expected} for {rotation_representation}, "
                                 f"got {tuple(value.shape)}.")
            return batch_rodrigues(value) if width == 3 else rotation_6d_to_matrix(value)

        betas = torch.cat([coefficients(shape, self.num_shape, "shape"),
                           coefficients(expression, self.num_expression, "expression")], dim=1)
        rotations = torch.cat([rotation(global_rotation, "global_rotation", ())[:, None],
                               rotation(neck, "neck", ())[:, None],
                               rotation(jaw, "jaw", ())[:, None],
                               rotation(eyes, "eyes", (2,))], dim=1)  # (B, 5, 3, 3)
        vertices, joints = linear_blend_skinning(betas, rotations, self.v_template, self.shapedirs, self.posedirs,
                                                 self.J_regressor, self._parent_list, self.lbs_weights,
                                                 pose_correctives=pose_correctives)
        return FlameOutput(vertices=vertices, joints=joints)
