"""Photometric pose refinement: a textured face rendered at known poses, given landmarks that lean toward a frontal
face (as MediaPipe's do), gets its rotation back from the texture."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from magicportrait.errors import InputError
from magicportrait.geometry.rotations import axis_angle_to_matrix, rotation_angle_degrees
from magicportrait.heads.mediapipe_mesh import MediaPipeHeadModel
from magicportrait.pipelines.example import ExampleMotion, example_head_track, render_example_frames
from magicportrait.tracking import TrackerConfig
from magicportrait.tracking.photometric import refine_pose_photometric, rigid_poses
from magicportrait.types import HeadTrack, Track

SIZE = 256
NUM_FRAMES = 8
LEAN = 0.6  # the biased landmarks turn this fraction of the true angles


def motion(scale: float = 1.0) -> ExampleMotion:
    phase = np.linspace(0.0, 1.0, NUM_FRAMES)
    euler = scale * np.stack([16.0 * np.sin(2 * np.pi * phase), 8.0 * np.sin(4 * np.pi * phase),
                              4.0 * np.sin(2 * np.pi * phase)], axis=-1)
    return ExampleMotion(euler, np.zeros(NUM_FRAMES), np.zeros(NUM_FRAMES))


@pytest.fixture(scope="module")
def scene() -> dict:
    """Frames of a noise-textured canonical face turning by known angles, its exact and its biased landmarks."""
    model = MediaPipeHeadModel()
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.float32), (0, 0), 2.0)
    texture = np.clip((texture - texture.mean()) * 4 + 128, 0, 255).astype(np.uint8)
    source = HeadTrack(model=model.name, identity=model.canonical.reshape(-1).astype(np.float32),
                       expression=np.zeros((1, model.canonical.size), np.float32),
                       rotation=np.zeros((1, 3), np.float32), scale=np.array([9.0], np.float32),
                       translation=np.array([[SIZE / 2, SIZE / 2, 0.0]], np.float32), image_size=(SIZE, SIZE),
                       fps=25.0)
    source_landmarks = model.posed_vertices(source)[0]
    truth = example_head_track(source, motion())
    frames = list(render_example_frames(texture, source_landmarks, truth, model))
    biased = model.posed_vertices(example_head_track(source, motion(LEAN))).astype(np.float32)
    track = Track(landmarks=biased, boxes=np.zeros((NUM_FRAMES, 3), np.float32),
                  detected=np.ones(NUM_FRAMES, bool), fps=25.0, image_size=(SIZE, SIZE))
    return {"frames": frames, "track": track, "truth": axis_angle_to_matrix(truth.rotation.astype(np.float64)),
            "exact": model.posed_vertices(truth)}


def rotation_errors(landmarks: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return rotation_angle_degrees(rigid_poses(landmarks).rotation, truth)


def test_refinement_recovers_the_rotation_the_landmarks_understate(scene):
    before = rotation_errors(scene["track"].landmarks, scene["truth"])
    refined = refine_pose_photometric(lambda: iter(scene["frames"]), scene["track"])
    after = rotation_errors(refined.landmarks, scene["truth"])
    assert before.mean() > 3.0  # 40 % of up to 16 degrees
    assert after.mean() < 0.5 and after.max() < 1.0
    # Landmarks land on the rendered face: the points of the exact pose, within a pixel on average.
    assert np.linalg.norm(refined.landmarks[..., :2] - scene["exact"][..., :2], axis=-1).mean() < 1.0
    assert refined.landmarks.dtype == np.float32 and refined.landmarks.shape == scene["track"].landmarks.shape


def test_frames_without_a_face_keep_their_landmarks(scene):
    detected = np.ones(NUM_FRAMES, bool)
    detected[3] = False
    track = Track(landmarks=scene["track"].landmarks, boxes=scene["track"].boxes, detected=detected, fps=25.0,
                  image_size=(SIZE, SIZE))
    refined = refine_pose_photometric(lambda: iter(scene["frames"]), track)
    np.testing.assert_array_equal(refined.landmarks[3], track.landmarks[3])
    assert not np.array_equal(refined.landmarks[1], track.landmarks[1])


def test_single_frame_is_returned_unchanged(scene):
    single = scene["track"].select(slice(0, 1))
    assert refine_pose_photometric(lambda: iter(scene["frames"][:1]), single) is single


def test_too_few_frames_is_a_clear_error(scene):
    with pytest.raises(InputError, match="same video"):
        refine_pose_photometric(lambda: iter(scene["frames"][:3]), scene["track"])


def test_pose_refinement_option_is_validated():
    assert TrackerConfig().pose_refinement == "photometric"
    with pytest.raises(InputError, match="pose"):
        TrackerConfig(pose_refinement="texture")
