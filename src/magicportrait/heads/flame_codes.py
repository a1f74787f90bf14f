"""FLAME codes in DECA's conventions (:class:`~magicportrait.types.FlameCodes`) -> our FLAME head tracks and render
appearance.

The official preprocessing poses FLAME with the global rotation about its root joint, projects it orthographically
(``s * (xy + t)``, then y and z negated) into the encoder crop's NDC, maps NDC to crop pixels with
``(ndc + 1) * crop_size / 2`` and the crop pixels back to the image with the inverse crop matrix. A
:class:`~magicportrait.types.FlameTrack` poses the model-frame head about its origin (``scale * R v + t``), so per
frame: ``R = F R_flame F`` (F = diag(1, -1, -1)), ``scale`` = crop pixels per centimetre times the crop matrix's
inverse scale, and the translation takes up the root-joint pivot, the camera shift and the crop offset. The
result is the same image-space mesh (tested against that chain computed directly).
"""

from __future__ import annotations

import numpy as np
import torch

from magicportrait.errors import InputError
from magicportrait.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from magicportrait.heads.flame_head import METRES_TO_MODEL_UNITS, NUM_JOINT_ROTATIONS, FlameHeadModel
from magicportrait.types import FlameCodes, FlameTrack, RenderAppearance

_FLIP = np.array([1.0, -1.0, -1.0])  # FLAME frame <-> model frame
JAW = 1


def head_track_from_codes(head_model: FlameHeadModel, codes: FlameCodes, fps: float = 0.0) -> FlameTrack:
    """The :class:`FlameTrack` whose posed vertices are the official pipeline's image-space mesh for ``codes``
    (identity from frame 0; shape and expression truncated or zero-padded to the model's components). A model
    with eyelid blend shapes gets the codes' eyelid closures (open where the codes have none)."""
    identity = _fit_width(codes.shape[:1], head_model.num_shape)[0]
    expression = _expression_columns(head_model, codes)
    joints = np.zeros((codes.num_frames, NUM_JOINT_ROTATIONS, 3), np.float32)
    joints[:, JAW] = codes.jaw * _FLIP
    root = _root_joint(head_model, identity, expression)  # (T, 3) FLAME frame, metres
    rotation_flame = axis_angle_to_matrix(codes.global_pose.astype(np.float64))
    pivot = METRES_TO_MODEL_UNITS * _FLIP * (root - np.einsum("tij,tj->ti", rotation_flame, root))  # (T, 3) cm
    rotation_model = _FLIP[:, None] * rotation_flame * _FLIP[None, :]

    inverse = np.linalg.inv(codes.crop_matrix)  # crop pixels -> image pixels
    linear, offset = inverse[:, :2, :2], inverse[:, :2, 2]
    determinant = np.linalg.det(linear)
    if np.any(determinant <= 0):
        raise InputError("FLAME codes: a crop matrix flips or collapses the image; expected a similarity.")
    sigma = np.sqrt(determinant)
    in_plane = np.zeros((codes.num_frames, 3, 3))
    in_plane[:, :2, :2], in_plane[:, 2, 2] = linear / sigma[:, None, None], 1.0
    half = codes.crop_size / 2.0
    s, shift = codes.cam[:, 0].astype(np.float64), codes.cam[:, 1:].astype(np.float64) * np.array([1.0, -1.0])
    scale = half * s / METRES_TO_MODEL_UNITS * sigma  # image pixels per model centimetre
    crop_origin = half * (1.0 + s[:, None] * shift)  # where the model origin lands in crop pixels
    rotation = in_plane @ rotation_model
    translation = scale[:, None] * np.einsum("tij,tj->ti", in_plane, pivot)
    translation[:, :2] += np.einsum("tij,tj->ti", linear, crop_origin) + offset
    return FlameTrack(model="flame", identity=identity.astype(np.float32), expression=expression.astype(np.float32),
                      rotation=matrix_to_axis_angle(rotation).astype(np.float32), scale=scale.astype(np.float32),
                      translation=translation.astype(np.float32), joint_rotations=joints,
                      image_size=codes.image_size, fps=fps, extras={"codes": codes.source})


def _expression_columns(head_model: FlameHeadModel, codes: FlameCodes) -> np.ndarray:
    """`(T, E)` the codes' expression in the model's expression components, eyelid closures last."""
    num_eyelids = head_model.num_eyelids
    expression = _fit_width(codes.expression, head_model.num_expression - num_eyelids)
    if not num_eyelids:
        return expression
    eyelids = np.zeros((codes.num_frames, num_eyelids)) if codes.eyelids is None else codes.eyelids
    return np.concatenate([expression, np.asarray(eyelids, np.float64)], axis=1)


def _fit_width(values: np.ndarray, width: int) -> np.ndarray:
    values = np.asarray(values, np.float64)
    if values.shape[1] >= width:
        return values[:, :width]
    return np.pad(values, ((0, 0), (0, width - values.shape[1])))


def _root_joint(head_model: FlameHeadModel, identity: np.ndarray, expression: np.ndarray) -> np.ndarray:
    """FLAME's root joint (the global rotation's pivot) of each frame's shaped head, FLAME frame, metres (without
    eyelid closures: SMIRK adds those after posing)."""
    flame = head_model.flame
    if head_model.num_eyelids:
        expression = expression.copy()
        expression[:, -head_model.num_eyelids:] = 0.0
    with torch.no_grad():
        output = flame(shape=torch.as_tensor(np.repeat(identity[None], len(expression), axis=0)),
                       expression=torch.as_tensor(expression), pose_correctives=False)
    return output.joints[:, 0].double().numpy()


def appearance_from_codes(head_model: FlameHeadModel, codes: FlameCodes, texture_space) -> RenderAppearance:
    """The render map's appearance from frame 0's texture and light codes, in a FLAME texture space (as the
    official pipeline interprets DECA's ``tex`` code)."""
    from magicportrait.geometry.mesh import unweld

    if codes.tex is None or codes.light is None:
        raise InputError("FLAME codes without tex and light codes cannot colour the render map; give codes from "
                         "DECA (or with 'tex' and 'light'), or leave out the texture space to estimate the albedo.")
    uv_faces, vertex_map, vt_map = unweld(head_model.faces, texture_space.ft)
    coefficients = codes.tex[0, :texture_space.num_components]
    return RenderAppearance(sh_light=codes.light[0], texture=texture_space.texture(coefficients),
                            uv=texture_space.uv_pixels()[vt_map], uv_faces=uv_faces, vertex_map=vertex_map,
                            texture_coefficients=coefficients)


def codes_appearance(head_model: FlameHeadModel, codes: FlameCodes, texture_path, texture_size: int = 256,
                     ) -> RenderAppearance | None:
    """:func:`appearance_from_codes` in the texture space file at ``texture_path``; None when there is no file or
    the codes carry no texture and light (the caller then estimates the appearance from the image)."""
    if texture_path is None or codes.tex is None or codes.light is None:
        return None
    from magicportrait.heads.flame_texture import load_flame_texture_space

    space = load_flame_texture_space(texture_path, num_components=codes.tex.shape[1], size=texture_size)
    return appearance_from_codes(head_model, codes, space)
