"""How FLAME is fitted to tracked landmarks: :class:`FlameFitConfig` (also the CLI's ``--flame-*`` flags)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from magicportrait.config import HEAD_MODEL, check_at_least, check_choices, check_positive, check_range, option


@dataclass
class FlameFitConfig:
    """How FLAME is fitted to tracked landmarks."""

    cli_group: ClassVar[str] = HEAD_MODEL
    cli_prefix: ClassVar[str] = "flame_"  # its flags: --flame-chunk-size, ...

    camera: Literal["orthographic", "perspective"] = option(
        "orthographic", "orthographic: scale + 2D translation, like the official release; perspective: a pinhole "
        "camera of field of view fov_degrees about the image centre, head position in centimetres.")
    fov_degrees: float = option(20.0, "Field of view across the longer image side of the perspective camera.")
    identity_frames: int = option(32, "Frames (evenly spaced) used to estimate the video's identity shape.")
    chunk_size: int = option(256, "Frames optimised together once the identity is fixed (memory/time scale "
                                  "linearly with the video length).")
    identity_iterations: int = option(300, "L-BFGS iterations of the identity stage (it converges slowly: the "
                                           "face's depth profile trades off against the head rotation).")
    iterations: int = option(60, "L-BFGS iterations per chunk of the per-frame stage.")
    landmark_sigma_px: float = option(1.5, "Expected landmark noise (px); the data term is residual^2 / sigma^2.")
    huber_px: float = option(4.0, "Residuals beyond this (px) count linearly (robust to bad landmarks).")
    oval_weight: float = option(0.2, "Weight of the face-oval silhouette landmarks, which slide on the surface.")
    iris_weight: float = option(1.0, "Weight of the 10 iris landmarks (they drive the eye rotations).")
    shape_prior: float = option(1.0, "Weight of the unit-Gaussian prior on the identity coefficients.")
    expression_prior: float = option(1.0, "Weight of the unit-Gaussian prior on the expression coefficients.")
    jaw_sigma_deg: float = option(15.0, "Prior standard deviation of the jaw rotation (degrees).")
    eye_sigma_deg: float = option(20.0, "Prior standard deviation of the eye rotations (degrees).")
    vergence_sigma_deg: float = option(3.0, "Prior standard deviation of the left/right eye rotation difference.")
    fit_neck: bool = option(False, "Also fit the neck joint (else the neck stays at rest; the global rotation "
                                   "carries the head).")
    neck_sigma_deg: float = option(10.0, "Prior standard deviation of the neck rotation, when fitted (degrees).")
    smooth_rotation_deg: float = option(0.5, "Temporal smoothness: expected frame-to-frame change of the head "
                                             "and joint rotations (degrees); 0 disables.")
    smooth_rotation_huber_deg: float = option(0.5, "Rotation changes beyond this (degrees per frame) are "
                                                   "penalised linearly, so fast head turns are not flattened.")
    smooth_translation_px: float = option(3.0, "Expected frame-to-frame translation change (px); 0 disables.")
    smooth_scale: float = option(0.02, "Expected frame-to-frame relative scale change; 0 disables.")
    smooth_expression: float = option(0.3, "Expected frame-to-frame expression change (sigma units); 0 disables.")
    undetected_weight: float = option(0.2, "Landmark weight in frames where the tracker found no face (their "
                                           "landmarks were interpolated); the temporal terms carry them.")
    threads: int = option(0, "torch CPU threads while fitting (0: leave torch's setting).")

    def __post_init__(self) -> None:
        check_choices(self)
        check_range(self, "fov_degrees", 0, 180, low_open=True, high_open=True)
        check_at_least(self, 1, "identity_frames", "chunk_size", "identity_iterations", "iterations")
        check_positive(self, "landmark_sigma_px", "huber_px", "jaw_sigma_deg", "eye_sigma_deg", "vergence_sigma_deg",
                       "neck_sigma_deg", "smooth_rotation_huber_deg")
        check_at_least(self, 0, "oval_weight", "iris_weight", "shape_prior", "expression_prior", "smooth_rotation_deg",
                       "smooth_translation_px", "smooth_scale", "smooth_expression", "undetected_weight", "threads")
