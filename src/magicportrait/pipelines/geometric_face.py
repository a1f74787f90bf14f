"""Parts of the geometric generator's face that depend on what the portrait shows: closed eyes held closed.

A portrait with closed eyes has no eyes to show: opening its eyelids with the driving video's blinks stretches the
lash line into black slits. Its eyelids therefore keep the portrait's own shape (they move with the head, not with
the driving eyes).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from magicportrait.heads import HeadModel
from magicportrait.types import HeadTrack, SourceFace

__all__ = ["EYE_HOLD_RADII", "eye_hold_weights", "hold_eyes"]

EYE_HOLD_RADII = (0.45, 0.9)
"""Vertices within the first radius of an eye's outline (in eye widths) keep the portrait's shape fully, fading to
the driving shape at the second."""

_EYE_LOOPS = ((33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7),
              (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249))


def eye_hold_weights(head_model: HeadModel, source: SourceFace) -> np.ndarray:
    """`(V,)` in [0, 1]: how much each vertex keeps the portrait's shape (1 on the eyelids, 0 away from the eyes),
    measured on the portrait's head at rest in the model frame."""
    rest = head_model.shape_vertices(source.head.identity, source.head.expression[:1],
                                     source.head.joint_rotations)[0]
    landmarks = head_model.landmarks(rest[None])[0]
    weights = np.zeros(len(rest))
    inner, outer = EYE_HOLD_RADII
    for loop in _EYE_LOOPS:
        outline = landmarks[list(loop)]
        width = max(float(np.linalg.norm(outline[0] - outline[8])), 1e-6)  # corner to corner
        distance = np.linalg.norm(rest[:, None, :] - outline[None], axis=-1).min(1) / width
        weights = np.maximum(weights, np.clip((outer - distance) / (outer - inner), 0, 1))
    return weights


def hold_eyes(head_model: HeadModel, head: HeadTrack, source: SourceFace, vertices: np.ndarray,
              weights: np.ndarray) -> np.ndarray:
    """``vertices`` `(T, V, 3)` of ``head`` with the ``weights`` part moved rigidly with the head in the portrait's
    own shape (its expression) instead of the driving one."""
    frames = head.num_frames
    still = replace(head, expression=np.repeat(source.head.expression[:1], frames, axis=0))
    held = head_model.posed_vertices(still)
    w = weights[None, :, None].astype(np.float32)
    return (vertices * (1 - w) + held * w).astype(np.float32)
