"""The bundled example: a real public-domain portrait and a driving video made from it with a known motion.

The portrait is NASA's astronaut Eileen Collins as shipped by scikit-image (``skimage.data.astronaut()``,
public domain). The driving video re-renders that portrait on its own tracked face mesh while the head turns
(yaw, pitch, roll), opens the jaw and raises the brows by known amounts, so the ground truth of every frame is
known: tests use it to close the loop through the tracker. Its sound is a synthetic hum as loud as the jaw is
open, so the demo shows the driving audio being kept (and in sync).
"""

from __future__ import annotations

import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from magicportrait.geometry.procrustes import weighted_similarity_procrustes
from magicportrait.geometry.rotations import axis_angle_to_matrix, euler_degrees_to_matrix, matrix_to_axis_angle
from magicportrait.heads.mediapipe_mesh import MediaPipeHeadModel
from magicportrait.heads.mediapipe_topology import INNER_LIP_LOOP, orient_like, strip_triangles
from magicportrait.types import HeadTrack

EXAMPLE_FPS = 25.0
EXAMPLE_NUM_FRAMES = 50
EXAMPLE_JAW_DEGREES = 14.0  # widest jaw opening of the example motion
EXAMPLE_SAMPLE_RATE = 16000
HUM_PITCH_HZ = 140.0  # a low speaking voice
HUM_HARMONICS = (1.0, 0.5, 0.3, 0.18, 0.1)  # falling amplitudes: a soft, voice-like timbre
HUM_VIBRATO = (5.5, 0.012)  # rate (Hz) and depth (fraction of the pitch)
HUM_PEAK = 10 ** (-12 / 20)  # -12 dBFS at the widest jaw opening: audible, never harsh
LOWER_LIP = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
UPPER_LIP = (185, 40, 39, 37, 0, 267, 269, 270, 409, 191, 80, 81, 82, 13, 312, 311, 310, 415)
MOUTH_CORNERS = (61, 291, 78, 308)
EYEBROWS = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46, 300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
JAW_HINGE_CM = np.array([0.0, 3.0, 1.0])  # model frame: below the eyes, level with the ears


def example_portrait() -> np.ndarray:
    """`(512, 512, 3)` uint8 RGB public-domain portrait bundled with scikit-image."""
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut())


@dataclass
class ExampleMotion:
    """Ground-truth motion of the example, per frame: rotation relative to the portrait, jaw, brows."""

    euler_degrees: np.ndarray  # (T, 3) yaw, pitch, roll relative to the portrait's own pose
    jaw_open_degrees: np.ndarray  # (T,)
    brow_raise_cm: np.ndarray  # (T,)

    @property
    def relative_rotation(self) -> np.ndarray:
        """`(T, 3, 3)` rotation of each frame relative to frame 0 (which is the portrait itself)."""
        return euler_degrees_to_matrix(self.euler_degrees)


def example_motion(num_frames: int = EXAMPLE_NUM_FRAMES) -> ExampleMotion:
    """A smooth loop starting at rest: a head turn, a nod, a tilt, the jaw opening, the brows going up."""
    phase = np.arange(num_frames) / num_frames
    euler = np.stack([18.0 * np.sin(2 * np.pi * phase),
                      8.0 * np.sin(4 * np.pi * phase),
                      6.0 * np.sin(2 * np.pi * phase) * np.cos(2 * np.pi * phase)], axis=-1)
    jaw = EXAMPLE_JAW_DEGREES * np.sin(np.pi * np.clip(phase * 2 - 0.5, 0, 1)) ** 2
    brows = 0.4 * np.sin(np.pi * np.clip(phase * 2 - 1.0, 0, 1)) ** 2
    return ExampleMotion(euler, jaw, brows)


def example_audio(num_frames: int, fps: float, sample_rate: int = EXAMPLE_SAMPLE_RATE) -> np.ndarray:
    """Mono float32 samples in [-1, 1] of a voiced hum that is loud while the example's jaw is open.

    The demo shows that the driving video's sound is kept; a hum that follows the mouth makes it easy to hear
    that it stays in sync. A few harmonics of ~140 Hz with a slight vibrato; the loudness is the jaw opening
    (relative to its widest) interpolated between frame centres, so it fades in and out softly and is silent
    while the mouth is closed. Exactly ``num_frames / fps`` seconds long (rounded to a sample); deterministic.
    """
    if num_frames < 1 or not fps > 0 or sample_rate < 1:
        raise ValueError(f"example_audio needs num_frames >= 1, fps > 0 and sample_rate >= 1, got {num_frames}, "
                         f"{fps}, {sample_rate}.")
    times = np.arange(round(num_frames / fps * sample_rate)) / sample_rate
    rate, depth = HUM_VIBRATO
    pitch = HUM_PITCH_HZ * (1.0 + depth * np.sin(2 * np.pi * rate * times))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    tone = sum(amplitude * np.sin(k * phase) for k, amplitude in enumerate(HUM_HARMONICS, start=1))
    tone /= max(float(np.abs(tone).max()), 1e-9)
    jaw = example_motion(num_frames).jaw_open_degrees / EXAMPLE_JAW_DEGREES
    loudness = np.interp(times, (np.arange(num_frames) + 0.5) / fps, np.clip(jaw, 0.0, 1.0))
    return (HUM_PEAK * loudness * tone).astype(np.float32)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Write mono float samples in [-1, 1] as a 16-bit PCM WAV file (values outside are clipped)."""
    pcm = np.round(np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(int(sample_rate))
        wav.writeframes(pcm.tobytes())
    return Path(path)


def expression_offsets(neutral: np.ndarray, jaw_open_degrees: float, brow_raise_cm: float) -> np.ndarray:
    """`(478, 3)` displacements (cm, model frame) that open the jaw about a hinge and lift the brows."""
    mouth_level = neutral[list(MOUTH_CORNERS), 1].mean()
    weights = np.clip((neutral[:, 1] - mouth_level) / 1.5, 0.0, 1.0)  # chin and below follow the jaw fully
    weights[list(LOWER_LIP)] = 1.0
    weights[list(UPPER_LIP)] = 0.0
    weights[list(MOUTH_CORNERS)] = 0.5
    hinge_rotation = euler_degrees_to_matrix(np.array([0.0, jaw_open_degrees, 0.0]))  # chin down and back
    jaw_moved = (neutral - JAW_HINGE_CM) @ hinge_rotation.T + JAW_HINGE_CM
    offsets = weights[:, None] * (jaw_moved - neutral)
    brow_level = neutral[list(EYEBROWS), 1].mean()
    brow_weights = np.exp(-(((neutral[:, 1] - brow_level) / 1.2) ** 2)) * (neutral[:, 1] < mouth_level - 2.0)
    offsets[:, 1] -= brow_raise_cm * brow_weights
    return offsets


def example_head_track(source: HeadTrack, motion: ExampleMotion) -> HeadTrack:
    """The ground-truth head of every example frame, in the portrait's image space."""
    neutral = source.identity.reshape(-1, 3).astype(np.float64)
    expression = np.stack([expression_offsets(neutral, jaw, brow).reshape(-1)
                           for jaw, brow in zip(motion.jaw_open_degrees, motion.brow_raise_cm, strict=True)])
    rotation = motion.relative_rotation @ axis_angle_to_matrix(source.rotation[0])
    num_frames = len(expression)
    return HeadTrack(model=source.model, identity=source.identity, expression=expression.astype(np.float32),
                     rotation=matrix_to_axis_angle(rotation).astype(np.float32),
                     scale=np.repeat(source.scale[:1], num_frames), image_size=source.image_size,
                     translation=np.repeat(source.translation[:1], num_frames, axis=0), fps=EXAMPLE_FPS)


def closed_mouth_faces(model: MediaPipeHeadModel) -> np.ndarray:
    """The model's faces plus triangles across the mouth hole, textured with the portrait's own mouth.

    Upper-lip vertices carry the upper teeth and lower-lip vertices the lower ones, so when the jaw opens the
    teeth part with the lips; at rest the portrait's mouth is reproduced exactly.
    """
    mouth = orient_like(strip_triangles(INNER_LIP_LOOP), model.canonical)
    return np.concatenate([model.faces, mouth])


def render_example_frames(portrait: np.ndarray, source_landmarks: np.ndarray, truth: HeadTrack,
                          model: MediaPipeHeadModel, device: str = "cpu"):
    """Yield the example's RGB frames: the portrait re-rendered on the moved face over a similarity-warped copy.

    Everything outside the face (hair, background) follows the head with the 2D similarity that best maps the
    portrait's rigid landmarks onto the moved ones, so the frame stays coherent.
    """
    from magicportrait.rendering import GuidanceRenderer

    height, width = portrait.shape[:2]
    moved = model.posed_vertices(truth)
    uv = source_landmarks[:, :2].astype(np.float32)
    renderer = GuidanceRenderer(closed_mouth_faces(model), image_size=(height, width), device=device)
    rigid = model.weights > 0.5
    backdrop = face_removed(portrait, renderer, source_landmarks)
    scale, rotation, translation = weighted_similarity_procrustes(_flat(source_landmarks[rigid]),
                                                                  _flat(moved[:, rigid]))
    affines = np.concatenate([scale[:, None, None] * rotation[:, :2, :2], translation[:, :2, None]], axis=2)
    for frame_moved, affine in zip(moved, affines, strict=True):
        background = cv2.warpAffine(backdrop, affine, (width, height), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT).astype(np.float32) / 255.0
        face, mask = renderer.render_textured(frame_moved[None], portrait, uv, background=background)
        face, mask = face[0].cpu().numpy(), mask[0].cpu().numpy().astype(np.float32)
        # Soften the rim: blend the composited face back into the background over ~1 px.
        alpha = cv2.GaussianBlur(mask, (0, 0), 0.8)[..., None]
        blended = face * alpha + background * (1.0 - alpha)
        yield np.clip(blended * 255.0, 0, 255).round().astype(np.uint8)


def face_removed(portrait: np.ndarray, renderer, landmarks: np.ndarray) -> np.ndarray:
    """The portrait with its face painted over from the surroundings.

    Without this, where a turning face uncovers the background, the portrait's original face edge shows
    there and looks like a second silhouette.
    """
    _, mask = renderer.render_textured(landmarks[None].astype(np.float32), portrait, landmarks[:, :2])
    mask = cv2.dilate(mask[0].cpu().numpy().astype(np.uint8), np.ones((7, 7), np.uint8))
    return cv2.inpaint(portrait, mask, 5, cv2.INPAINT_TELEA)


def _flat(points: np.ndarray) -> np.ndarray:
    """Drop z so a 2D similarity is fitted (z set to 0)."""
    flat = np.array(points, dtype=np.float64)
    flat[..., 2] = 0.0
    return flat


def write_example(output_dir: str | Path, num_frames: int = EXAMPLE_NUM_FRAMES) -> tuple[Path, Path]:
    """Write ``source.png`` and ``driving.mp4`` (the example driving video) into ``output_dir``.

    The driving video's sound is a hum that follows the jaw (:func:`example_audio`), so a demo shows that the
    driving audio is kept, and in sync.
    """
    from magicportrait.io.image import save_image
    from magicportrait.io.video import write_video
    from magicportrait.tracking import FaceTracker, TrackerConfig

    output_dir = Path(output_dir)
    portrait = example_portrait()
    with FaceTracker(TrackerConfig(show_progress=False)) as tracker:
        source_track = tracker.track_image(portrait)
    model = MediaPipeHeadModel()
    source = model.fit(source_track)
    truth = example_head_track(source, example_motion(num_frames))
    source_path, driving_path = output_dir / "source.png", output_dir / "driving.mp4"
    save_image(source_path, portrait)
    frames = render_example_frames(portrait, source_track.landmarks[0], truth, model)
    with tempfile.TemporaryDirectory(prefix="magicportrait-example-") as tmp:
        sound = write_wav(Path(tmp) / "hum.wav", example_audio(num_frames, EXAMPLE_FPS), EXAMPLE_SAMPLE_RATE)
        write_video(driving_path, frames, fps=EXAMPLE_FPS, audio_from=sound)
    return source_path, driving_path


