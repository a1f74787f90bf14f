"""Linear blend skinning with blend shapes and pose correctives (FLAME/SMPL family), as batched torch functions.

Every function takes its device and dtype from its inputs (CPU or CUDA, float32 or float64) and is
differentiable. Rotations act on column vectors: ``x' = R @ x``. Kinematic trees are given as a parent index per
joint with ``-1`` for the root, and parents must precede their children.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_SMALL_ANGLE_SQ = 1e-6  # below this squared angle, Rodrigues' coefficients use their Taylor series


def skew_symmetric(vectors: torch.Tensor) -> torch.Tensor:
    """`(..., 3)` -> `(..., 3, 3)` cross-product matrices ``[v]_x`` with ``[v]_x @ u = v x u``."""
    x, y, z = vectors.unbind(-1)
    zeros = torch.zeros_like(x)
    return torch.stack([zeros, -z, y, z, zeros, -x, -y, x, zeros], dim=-1).reshape(*vectors.shape[:-1], 3, 3)


def batch_rodrigues(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rotation vectors `(..., 3)` (axis * angle in radians) -> rotation matrices `(..., 3, 3)`.

    ``R = I + a K + b K^2`` with ``K = [v]_x``, ``a = sin(t)/t`` and ``b = (1 - cos t)/t^2 = 2 sin^2(t/2)/t^2``
    (the half-angle form keeps ``b`` accurate in float32). Near ``t = 0`` both use their Taylor series, so the
    values and gradients are exact and finite at the zero rotation.
    """
    if axis_angle.shape[-1] != 3:
        raise ValueError(f"axis_angle must have shape (..., 3), got {tuple(axis_angle.shape)}.")
    angle_sq = (axis_angle * axis_angle).sum(-1, keepdim=True)
    small = angle_sq < _SMALL_ANGLE_SQ
    safe_sq = torch.where(small, torch.ones_like(angle_sq), angle_sq)
    safe_angle = torch.sqrt(safe_sq)
    sin_coef = torch.where(small, 1.0 - angle_sq / 6.0, torch.sin(safe_angle) / safe_angle)
    cos_coef = torch.where(small, 0.5 - angle_sq / 24.0, 2.0 * torch.sin(0.5 * safe_angle) ** 2 / safe_sq)
    skew = skew_symmetric(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + sin_coef[..., None] * skew + cos_coef[..., None] * (skew @ skew)


def rotation_6d_to_matrix(rotation_6d: torch.Tensor) -> torch.Tensor:
    """Continuous 6D rotation representation (Zhou et al., CVPR 2019) `(..., 6)` -> rotation matrices `(..., 3, 3)`.

    The 6 numbers are the first two *columns* of the matrix, ``(c1, c2)``; any non-degenerate pair is mapped to
    the nearest rotation by Gram-Schmidt: ``b1 = c1/|c1|``, ``b2 = normalise(c2 - (b1.c2) b1)``, ``b3 = b1 x b2``.
    """
    if rotation_6d.shape[-1] != 6:
        raise ValueError(f"rotation_6d must have shape (..., 6), got {tuple(rotation_6d.shape)}.")
    first, second = rotation_6d[..., :3], rotation_6d[..., 3:]
    b1 = torch.nn.functional.normalize(first, dim=-1)
    b2 = torch.nn.functional.normalize(second - (b1 * second).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rotation_6d(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrices `(..., 3, 3)` -> `(..., 6)`, the first two columns (inverse of
    :func:`rotation_6d_to_matrix`)."""
    if matrix.shape[-2:] != (3, 3):
        raise ValueError(f"matrix must have shape (..., 3, 3), got {tuple(matrix.shape)}.")
    return torch.cat([matrix[..., :, 0], matrix[..., :, 1]], dim=-1)


def blend_shapes(coefficients: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Linear blend-shape offsets: coefficients `(B, K)`, directions `(V, 3, K)` -> offsets `(B, V, 3)`.

    ``K = 0`` gives zero offsets.
    """
    if coefficients.shape[-1] != directions.shape[-1]:
        raise ValueError(f"{coefficients.shape[-1]} coefficients for {directions.shape[-1]} blend shapes.")
    if directions.shape[-1] == 0:
        return coefficients.new_zeros(coefficients.shape[0], directions.shape[0], 3)
    return torch.einsum("bk,vdk->bvd", coefficients, directions)


def vertices_to_joints(J_regressor: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """Joint locations from vertices: regressor `(J, V)`, vertices `(B, V, 3)` -> joints `(B, J, 3)`."""
    return torch.einsum("jv,bvd->bjd", J_regressor, vertices)


def _parent_list(parents: torch.Tensor | Sequence[int], num_joints: int) -> list[int]:
    parent_list = [int(p) for p in (parents.tolist() if isinstance(parents, torch.Tensor) else parents)]
    if len(parent_list) != num_joints:
        raise ValueError(f"{len(parent_list)} parents for {num_joints} joints.")
    for joint, parent in enumerate(parent_list):
        if (joint == 0) != (parent < 0) or parent >= joint:
            raise ValueError(f"Invalid kinematic tree {parent_list}: joint 0 must be the only root and parents "
                             "must precede their children.")
    return parent_list


def batch_rigid_transform(rotations: torch.Tensor, joints: torch.Tensor,
                          parents: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose a kinematic chain.

    Args:
        rotations: `(B, J, 3, 3)` local rotation of each joint (relative to its parent's frame), about the joint.
        joints: `(B, J, 3)` rest-pose joint locations.
        parents: `(J,)` parent of each joint, ``-1`` for the root (joint 0), parents before children.

    Returns:
        posed_joints: `(B, J, 3)` joint locations after posing.
        transforms: `(B, J, 4, 4)` world transform of each joint *relative to the rest pose*: it maps a rest-pose
            point rigidly attached to joint ``k`` to its posed location (``G_k`` with the rest joint location
            subtracted: ``A_k x = R_k^world (x - j_k) + posed_j_k``).
    """
    batch, num_joints = joints.shape[:2]
    if rotations.shape != (batch, num_joints, 3, 3):
        raise ValueError(f"rotations must have shape {(batch, num_joints, 3, 3)}, got {tuple(rotations.shape)}.")
    parent_list = _parent_list(parents, num_joints)

    # Compose A_k = A_parent o L_k with L_k x = R_k (x - j_k) + j_k, the local rotation about the rest joint.
    # L_k's translation is computed as (I - R_k) j_k so that a zero pose gives exactly zero translations.
    eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    local_translation = ((eye - rotations) @ joints[..., None])[..., 0]  # (B, J, 3)
    world_rotations: list[torch.Tensor] = []
    world_translations: list[torch.Tensor] = []
    for joint, parent in enumerate(parent_list):
        if parent < 0:
            world_rotations.append(rotations[:, joint])
            world_translations.append(local_translation[:, joint])
        else:
            parent_rotation = world_rotations[parent]
            world_rotations.append(parent_rotation @ rotations[:, joint])
            world_translations.append((parent_rotation @ local_translation[:, joint, :, None])[..., 0]
                                      + world_translations[parent])
    world_rotation = torch.stack(world_rotations, dim=1)  # (B, J, 3, 3)
    translation = torch.stack(world_translations, dim=1)  # (B, J, 3)
    posed_joints = (world_rotation @ joints[..., None])[..., 0] + translation

    top = torch.cat([world_rotation, translation[..., None]], dim=-1)  # (B, J, 3, 4)
    bottom = joints.new_tensor([0.0, 0.0, 0.0, 1.0]).expand(batch, num_joints, 1, 4)
    return posed_joints, torch.cat([top, bottom], dim=-2)


def pose_feature(rotations: torch.Tensor) -> torch.Tensor:
    """Pose-corrective features: `(B, J, 3, 3)` -> `(B, 9 * (J - 1))`, the entries of ``R_k - I`` of the non-root
    joints ``k = 1..J-1``, flattened row-major (joint-major)."""
    batch, num_joints = rotations.shape[:2]
    eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    return (rotations[:, 1:] - eye).reshape(batch, 9 * (num_joints - 1))


def linear_blend_skinning(coefficients: torch.Tensor, rotations: torch.Tensor, v_template: torch.Tensor,
                          blend_directions: torch.Tensor, posedirs: torch.Tensor, J_regressor: torch.Tensor,
                          parents: torch.Tensor | Sequence[int], lbs_weights: torch.Tensor,
                          pose_correctives: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Full LBS: blend shapes, joint regression, pose correctives, skinning.

    Args:
        coefficients: `(B, K)` blend-shape coefficients (identity and expression together).
        rotations: `(B, J, 3, 3)` local joint rotations (joint 0 is the global rotation about the root joint).
        v_template: `(V, 3)` (or `(B, V, 3)`) rest template.
        blend_directions: `(V, 3, K)` blend shapes.
        posedirs: `(P, V * 3)` pose correctives with ``P = 9 * (J - 1)``, applied to :func:`pose_feature`.
        J_regressor: `(J, V)` joint regressor (applied to the shaped, unposed vertices).
        parents: `(J,)` kinematic parents, ``-1`` for the root.
        lbs_weights: `(V, J)` skinning weights (each row summing to 1).
        pose_correctives: add the pose-corrective offsets (True for the model as published).

    Returns:
        vertices: `(B, V, 3)` posed vertices.
        joints: `(B, J, 3)` posed joints.
    """
    batch = coefficients.shape[0]
    num_vertices = v_template.shape[-2]
    v_shaped = v_template + blend_shapes(coefficients, blend_directions)  # (B, V, 3)
    rest_joints = vertices_to_joints(J_regressor, v_shaped)  # (B, J, 3)
    if pose_correctives:
        features = pose_feature(rotations)  # (B, P)
        if posedirs.shape != (features.shape[1], num_vertices * 3):
            raise ValueError(f"posedirs must have shape {(features.shape[1], num_vertices * 3)}, "
                             f"got {tuple(posedirs.shape)}.")
        v_posed = v_shaped + (features @ posedirs).reshape(batch, num_vertices, 3)
    else:
        v_posed = v_shaped
    posed_joints, transforms = batch_rigid_transform(rotations, rest_joints, parents)
    # sum_k w_k A_k v, written as v + sum_k w_k (A_k - I) v: identical when the weights sum to 1, and exactly v
    # at the rest pose even where stored weights sum to 1 only up to rounding.
    eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    motion = torch.cat([transforms[:, :, :3, :3] - eye, transforms[:, :, :3, 3:]], dim=-1)  # (B, J, 3, 4)
    blended = torch.einsum("vj,bjmn->bvmn", lbs_weights, motion)  # (B, V, 3, 4)
    vertices = v_posed + (blended[..., :3] @ v_posed[..., None])[..., 0] + blended[..., 3]
    return vertices, posed_joints
