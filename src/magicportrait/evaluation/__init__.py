"""Evaluation: the paper's metrics, offline and reproducible (``magicportrait evaluate``).

- identity: CSIM with dlib's face-recognition ResNet (or an ArcFace ONNX you supply) (:mod:`.identity`);
- image quality against a ground truth: LPIPS (AlexNet v0.1, :mod:`.lpips`), PSNR and SSIM (:mod:`.image_quality`);
- distributions: FID and KID on InceptionV3 features (:mod:`.fid`), FVD on I3D features (:mod:`.fvd`);
- motion: APD / P-RMSE, AED / E-RMSE, landmark distance, jitter and face-region flicker with our own tracker
  (:mod:`.motion`, :mod:`.regions`); motion transfer, the correlation of the motion over time (:mod:`.transfer`);
- the artefact score: glitch frames and duplicated structure, with per-frame flags (:mod:`.artefacts`);
- :class:`Evaluator` runs them on a video and returns an :class:`EvaluationReport` (:mod:`.suite`).

Names are imported on first use, so ``import magicportrait.evaluation`` loads no network.
"""

from __future__ import annotations

from magicportrait._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "EvaluationConfig": "suite", "EvaluationReport": "suite", "Evaluator": "suite",
    "compare_heads": "motion", "flicker": "motion", "landmark_distance": "motion", "landmark_jitter": "motion",
    "artefact_score": "artefacts", "ArtefactReport": "artefacts", "motion_signals": "transfer",
    "motion_transfer": "transfer", "face_boxes": "regions",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
