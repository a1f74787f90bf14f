"""The instant geometric generator: reenactment without learned weights, in real time on a CPU.

Per frame, in the source's square face crop:

1. the face: the source photo re-rendered on the aligned head mesh (:mod:`magicportrait.rendering.texture_transfer`:
   projective texture with soft per-texel visibility, surface the photo never saw filled from the nearest seen skin
   on the same side, the mouth's inside from the source's own teeth or a shaded procedural interior; closed eyes
   in the portrait held closed, :mod:`magicportrait.pipelines.geometric_face`);
2. everything else: the head (hair, ears, hat; the person found once per portrait by selfie segmentation) moves
   rigidly with the face's 2D similarity, the neck bends over a short band below the chin, and the body and the
   background stay still, with what the head uncovers filled from around it
   (:mod:`magicportrait.compositing.warp`, :mod:`magicportrait.compositing.head_layers`);
3. the face blended in with a feathered mask (multi-band) after colour matching.

:class:`GeometricGenerator` does this for a head track; the whole job (tracking, alignment, paste-back, videos) is
``MagicPortraitPipeline`` with ``backend="geometric"`` (:mod:`magicportrait.pipelines.animate`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, Literal

import cv2
import numpy as np

from magicportrait.config import GEOMETRIC, check_at_least, check_choices, check_range, field_flag, option
from magicportrait.errors import InputError
from magicportrait.geometry.rotations import axis_angle_to_matrix, matrix_to_euler_degrees
from magicportrait.heads import HeadModel
from magicportrait.types import HeadTrack, SourceFace

logger = logging.getLogger(__name__)
COLOUR_MATCH_LIMIT = 40.0  # grey levels: a bigger difference at the face's edge is hair or background, not light
GHOST_FADE_DEGREES = 4.0  # over this turn the source's face beyond the re-rendered part fades into the backdrop
SOURCE_TURN_WARNING_DEGREES = 30.0  # a 3/4 view hides enough of the face to say so
FACE_REGION_MARGIN = 0.01  # the re-rendered part of the head: the face outline grown by this fraction of the crop
EDGE_BAND = 0.08  # ... less what the portrait saw badly within this fraction of the crop of the outline (FLAME)
EDGE_MIN_FACING = 0.35  # |normal z| in the portrait below which a triangle there counts as seen badly
DEPTH_SLACK = 0.012  # depth slack of that visibility test, as a fraction of the crop side
CLOSED_EYE_RATIO = 0.12  # eyelid gap / eye width below this counts as closed
EYES = {"right": (33, 133, 159, 145), "left": (362, 263, 386, 374)}  # corners, upper and lower lid (MediaPipe)
LIPS = (0, 17, 37, 84, 267, 314, 13, 14)  # points on the lips, for the mouth cavity's colour
PERSON_ON_FACE = 0.5  # the person mask's mean weight over the face below which it is not trusted


def _warp_points() -> tuple[np.ndarray, np.ndarray]:
    """The landmarks that drive the 2D warp: the face outline and every 6th mesh point (the warp's cost grows
    with the number of points; these give the rigid pose well), and which of them are the outline (the ring around
    the face follows those exactly)."""
    from magicportrait.heads.mediapipe_topology import landmark_groups

    oval = landmark_groups()["face_oval"]
    points = np.unique(np.concatenate([oval, np.arange(0, 468, 6)]))
    return points, np.flatnonzero(np.isin(points, oval))


WARP_POINTS, WARP_OUTLINE = _warp_points()


@dataclass
class GeometricConfig:
    """Options of the geometric (no-weights) generator."""

    cli_group: ClassVar[str] = GEOMETRIC
    cli_prefix: ClassVar[str] = "geometric_"  # its flags: --geometric-blend, ...

    blend: Literal["laplacian", "feather"] = option("laplacian", "How the face is blended into the frame: "
                                                    "multi-band (laplacian) or a plain feathered alpha.")
    feather: float = option(0.012, "Width of the face's soft edge, as a fraction of the crop side.")
    colour_match: bool = option(True, "Match the face's colour to its surroundings at its edge.")
    warp_inner: float = option(1.5, "The head that moves rigidly with the face (hair, ears, hat) reaches this many "
                                    "face half-sizes from the face's centre; the background stays still.")
    warp_outer: float = option(2.1, "Beyond this many face half-sizes from the face's centre the person stays still "
                                    "(the hair between bends gently).")
    neck_length: float = option(0.5, "Below the chin, the neck bends from following the head to the still body over "
                                     "this many face half-heights.")
    segment: bool = option(True, "Find the person in the portrait (selfie segmentation) so the background behind "
                                 "the hair stays still; off: everything near the head moves with it.")
    parallax: bool = option(True, "Move the hair and ears with the head's 3D turn (the face slides in front of "
                                  "the hair, which turns about the neck); off: flat, with the face's 2D motion.")
    max_yaw: float = option(45.0, "Largest head turn left/right away from the portrait's own pose, degrees "
                                  "(a photo shows one side of a head; the driving pose is clamped beyond this).")
    max_pitch: float = option(30.0, "Largest nod up/down away from the portrait's pose, degrees.")
    max_hidden_turn: float = option(15.0, "For a portrait turned over 30 degrees (a 3/4 view): largest turn back "
                                          "toward the side it hides, degrees (that side is only guessed from the "
                                          "skin around it, and smears when shown large).")
    max_roll: float = option(45.0, "Largest tilt in the image plane away from the portrait's pose, degrees.")
    max_turned: float = option(40.0, "Largest yaw of the result's head away from the camera, degrees (further, "
                                     "the far cheek hides behind the nose and the near side shows what a photo "
                                     "taken less turned did not; a portrait turned further keeps its own yaw).")
    chunk_size: int = option(8, "Frames rendered per batch.")

    def __post_init__(self) -> None:
        check_choices(self)
        check_range(self, "feather", 0, 0.2)
        check_range(self, "warp_inner", 0, low_open=True)
        if self.warp_inner >= self.warp_outer:
            raise InputError(f"{field_flag(self, 'warp_inner')} ({self.warp_inner:g}) must be below "
                             f"{field_flag(self, 'warp_outer')} ({self.warp_outer:g}).")
        check_range(self, "neck_length", 0.05, 3)
        for name in ("max_yaw", "max_pitch", "max_roll"):
            check_range(self, name, 0, 180, low_open=True)
        check_range(self, "max_hidden_turn", 0, 180)
        check_range(self, "max_turned", 0, 90, low_open=True)
        check_at_least(self, 1, "chunk_size")

    @property
    def rotation_limits(self) -> tuple[float, float, float]:
        return self.max_yaw, self.max_pitch, self.max_roll

    def rotation_bounds(self, source_euler_degrees: np.ndarray) -> np.ndarray:
        """`(2, 3)` lower and upper (yaw, pitch, roll) turn away from a portrait whose own pose is
        ``source_euler_degrees``: +-the max_* limits, and no further than a yaw of ``max_turned`` from the camera
        (or the portrait's own, if larger); for a yaw or pitch beyond ``SOURCE_TURN_WARNING_DEGREES`` only
        ``max_hidden_turn`` back toward the side the portrait hides (its sign is the opposite of the pose's)."""
        upper = np.array(self.rotation_limits, np.float64)
        bounds = np.stack([-upper, upper])
        yaw = float(source_euler_degrees[0])  # a turn adds to it (its own sign: away from the camera)
        bounds[0, 0] = max(bounds[0, 0], min(0.0, -self.max_turned - yaw))
        bounds[1, 0] = min(bounds[1, 0], max(0.0, self.max_turned - yaw))
        for axis in (0, 1):
            angle = float(source_euler_degrees[axis])
            if abs(angle) > SOURCE_TURN_WARNING_DEGREES:
                side = 0 if angle > 0 else 1  # turning back toward the camera lowers |angle|
                bounds[side, axis] = np.sign(bounds[side, axis]) * min(self.max_hidden_turn, upper[axis])
        return bounds


class GeometricGenerator:
    """Source face + aligned head per frame -> reenacted face crops (see the module docstring).

    Args:
        head_model: the head model the source and the aligned track were fitted with.
        source: the source portrait's crop, track and fitted head (``stages.prepare_source``).
        config: options.
        device: torch device of the rasteriser.
    """

    def __init__(self, head_model: HeadModel, source: SourceFace, config: GeometricConfig | None = None,
                 device: str = "cpu") -> None:
        from magicportrait.heads.mediapipe_mesh import load_canonical_face, rigid_point_weights
        from magicportrait.pipelines.geometric_face import eye_hold_weights
        from magicportrait.rendering.texture_transfer import (
            TextureTransferRenderer,
            mouth_cavity_faces,
            project_source_texture,
        )

        self.config = config or GeometricConfig()
        self.head_model = head_model
        self.source = source
        self.source_crop = source.crop
        # closed eyes in the portrait stay closed (the driving blinks would open its lash line into black slits)
        self.eye_hold = eye_hold_weights(head_model, source) if eyes_closed(source) else None
        size = source.crop.shape[0]
        landmarks = source.track.landmarks[0]
        vertices = head_model.posed_vertices(source.head)[0]
        # The portrait's face is textured only from inside its own outline: a fitted mesh reaching past it would
        # carry background or hair along with the face.
        self.texture = project_source_texture(source.crop, vertices, head_model.faces,
                                              perspective=source.head.camera == "perspective",
                                              region=face_texture_region(landmarks, size))
        rest = head_model.shape_vertices(source.head.identity, np.zeros_like(source.head.expression[:1]),
                                         _neutral_joints(source.head))[0]
        drawn = head_model.faces if head_model.face_only else face_region_faces(
            head_model.faces, vertices, landmarks, size, zbuffer=self.texture.zbuffer)
        self.renderer = TextureTransferRenderer(
            self.texture, drawn,
            mouth_faces=mouth_cavity_faces(head_model.mouth_loop(), rest), rest_vertices=rest,
            template_vertices=_template(head_model, rest),
            cavity_colour=cavity_colour(source.crop, landmarks),
            device=device)
        face_mask = self.renderer.render(vertices[None]).mask[0]  # the re-rendered part, where the source has it
        oval = face_oval_mask(landmarks, face_mask.shape)
        self.backdrop = paint_out(source.crop, face_mask | oval)
        self.source_face = cv2.dilate(face_mask.astype(np.float32), np.ones((5, 5), np.float32))
        # The source's own face beyond the re-rendered part (a 3/4 view's far eye and cheek edge, which the renderer
        # leaves to the 2D warp): moved in 2D while the re-rendered face turns in 3D, it would show as a ghost eye
        # or a second outline, so once the head turns it fades into the backdrop.
        self.beyond_face = np.clip(cv2.dilate(oval.astype(np.float32), np.ones((5, 5), np.float32))
                                   - self.source_face, 0.0, 1.0)
        self.face_parts = np.dstack([self.source_face, self.beyond_face])  # both moved by one remap per frame
        self.source_rotation = axis_angle_to_matrix(source.head.rotation[0].astype(np.float64))
        self.source_xyz = head_model.landmarks(vertices[None])[0, WARP_POINTS].astype(np.float64)
        self.source_points = self.source_xyz[:, :2]
        # The warp points on the portrait's own (pose-free) face: posed per frame, the head's rigid motion. Posing
        # the landmarks, not the mesh, costs no head-model evaluation per frame (exact for the orthographic
        # camera, whose posing is affine).
        own = source.head
        self.own_points = head_model.landmarks(head_model.shape_vertices(
            own.identity, own.expression[:1], own.joint_rotations[:1]))[0, WARP_POINTS].astype(np.float64)
        self.point_weights = rigid_point_weights(load_canonical_face()[0])[WARP_POINTS]
        self.layers = self._head_layers(source.crop, face_mask)
        self.depth = None
        if self.config.parallax:
            from magicportrait.compositing.head_motion import head_depth

            self.depth = head_depth(self.texture.zbuffer, float(head_pivot(head_model, source, rest)[2]),
                                    float(np.mean(self.head_frame.half_size)))
        self.feather_px = self.config.feather * size
        grow = max(1, round(self.feather_px))
        self.cover_kernel = np.ones((2 * grow + 1, 2 * grow + 1), np.float32)

    def render(self, head: HeadTrack) -> np.ndarray:
        """`(T, S, S, 3)` uint8 reenacted face crops for the aligned ``head`` (same camera as the source)."""
        from magicportrait.pipelines.geometric_face import hold_eyes

        vertices = self.head_model.posed_vertices(head)
        if self.eye_hold is not None:
            vertices = hold_eyes(self.head_model, head, self.source, vertices, self.eye_hold)
        faces = self.renderer.render(vertices)
        points = self.head_model.landmarks(vertices)[:, WARP_POINTS, :2]
        rigid = self._rigid_points(head)
        turns = self._turn_degrees(head)
        return np.stack([self._composite(faces.images[i], faces.mask[i], points[i], turns[i], rigid[i])
                         for i in range(len(vertices))])

    def _rigid_points(self, head: HeadTrack) -> np.ndarray:
        """`(T, P, 2)` the warp points of the portrait's own face (its expression) in each frame's pose: the head's
        rigid motion, which an opening jaw or a smile must not change (the hair would move with the mouth)."""
        from magicportrait.heads.base import project_to_image

        points = np.broadcast_to(self.own_points, (head.num_frames, *self.own_points.shape))
        return project_to_image(points, head)[..., :2]

    def _turn_degrees(self, head: HeadTrack) -> np.ndarray:
        """`(T,)` angle of each frame's head rotation away from the portrait's own, degrees."""
        relative = axis_angle_to_matrix(head.rotation.astype(np.float64)) @ self.source_rotation.T
        cosine = (np.trace(relative, axis1=-2, axis2=-1) - 1.0) / 2.0
        return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))

    def _composite(self, face: np.ndarray, mask: np.ndarray, points: np.ndarray, turn: float = 0.0,
                   rigid: np.ndarray | None = None) -> np.ndarray:
        from magicportrait.compositing import feather_mask, laplacian_blend, match_colour

        background, old_face = self._background(mask, points, turn, rigid)
        if not mask.any():  # the head left the crop: the background alone, never a black frame
            return background
        face = np.where(mask[..., None], face, background)
        if self.config.colour_match:  # matched only where the background still shows the portrait's face
            face = match_colour(face, background, mask, same_surface=old_face, max_difference=COLOUR_MATCH_LIMIT)
        soft = feather_mask(mask, self.feather_px)
        if self.config.blend == "laplacian":
            return laplacian_blend(face, background, soft)
        return cv2.blendLinear(face, background, soft, 1.0 - soft)

    def _head_layers(self, crop: np.ndarray, face_mask: np.ndarray):
        """The moving head's alpha and the still layer (once per portrait). The person mask is trusted only when it
        covers the face; otherwise (a drawing, a statue) the whole head ellipse moves."""
        from magicportrait.compositing import HeadFrame, head_layers, person_weights

        config = self.config
        # The body's axis is the image's vertical (a tilted head sits on an upright body), not the face's.
        frame = HeadFrame.from_points(self.source_points, neck_length=config.neck_length, inner=config.warp_inner,
                                      outer=config.warp_outer)
        person = None
        if config.segment:
            from magicportrait.tracking.segmentation import person_mask

            person = person_weights(person_mask(crop), crop)
            if face_mask.any() and float(person[face_mask].mean()) < PERSON_ON_FACE:
                logger.info("The person segmentation misses the face; the whole head area moves with the head.")
                person = None
        self.head_frame = frame
        return head_layers(crop, frame, person, face=face_mask)

    def _background(self, mask: np.ndarray, points: np.ndarray, turn: float = 0.0,
                    rigid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The head moved rigidly over the still layer; where the source's face moved to but the new face does not
        cover (a turn narrows the face), the painted-out backdrop instead of a second face edge; once the head turns
        (``turn`` degrees from the portrait's pose), the same for the source's face beyond the re-rendered part.
        Also returns where the result shows the source's re-rendered face moved (float32 ``(H, W)``). ``rigid``: the
        warp points at the head's pose without its expression, which the hair's depth motion follows."""
        from magicportrait.compositing import rigid_head_maps

        motion = None
        if self.depth is not None:
            from magicportrait.compositing.head_motion import DepthMotion

            motion = DepthMotion.fit(self.source_xyz, points if rigid is None else rigid, self.depth,
                                     self.point_weights)
        map_x, map_y = rigid_head_maps(self.source_points, points, self.head_frame, mask.shape,
                                       weights=self.point_weights, outline=WARP_OUTLINE, motion=motion)
        moved = self.layers.move(map_x, map_y)
        faces = cv2.remap(self.face_parts, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        source_face = faces[..., 0]
        old_face = source_face
        fade = min(1.0, turn / GHOST_FADE_DEGREES)
        if fade > 0.0:
            old_face = np.maximum(old_face, fade * faces[..., 1])
        uncovered = old_face * (1.0 - cv2.dilate(mask.astype(np.float32), self.cover_kernel))
        if uncovered.any():
            backdrop = cv2.remap(self.backdrop, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            weight = cv2.GaussianBlur(uncovered, (0, 0), max(self.feather_px / 2, 0.5))
            moved += weight[..., None] * (backdrop - moved)  # the face moves with alpha 1: its colour, premultiplied
            source_face = source_face * (1.0 - weight)
        return self.layers.compose(moved, map_x, map_y), source_face


def face_region_faces(faces: np.ndarray, vertices: np.ndarray, landmarks: np.ndarray, size: int,
                      margin: float = FACE_REGION_MARGIN, zbuffer: np.ndarray | None = None) -> np.ndarray:
    """The triangles of a whole-head mesh whose corners all lie inside the portrait's face outline (grown by
    ``margin`` of the crop side).

    Only those are re-rendered: a head model that covers more than the face (FLAME's scalp, ears and neck) has its
    texture there from hair, background or clothes, which would smear as the head turns; the 2D warp moves those
    parts instead. (A mesh of the face alone, ``HeadModel.face_only``, is re-rendered whole: dropping its triangles
    would leave holes in the face.) With the source's ``zbuffer`` given, the triangles near the outline that the
    portrait saw edge-on or not at all go to the 2D warp too (FLAME's forehead curving back under the hair, the far
    cheek of a turned face): filled in the re-rendered face, they would stamp a patch of skin over hair or beside the
    warped far side.
    """
    from magicportrait.rendering.appearance import face_region_mask

    region = face_region_mask(landmarks, (size, size)).astype(np.uint8)
    grow = max(1, round(margin * size))
    region = cv2.dilate(region, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)).astype(bool)
    cols = np.clip(np.floor(vertices[:, 0]).astype(int), 0, size - 1)
    rows = np.clip(np.floor(vertices[:, 1]).astype(int), 0, size - 1)
    inside = region[rows, cols]
    kept = faces[inside[faces].all(axis=1)]
    if zbuffer is None or len(kept) == len(faces):
        return kept
    band = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 3)[rows, cols] < EDGE_BAND * size
    seen = vertices[:, 2] <= zbuffer[rows, cols] + DEPTH_SLACK * size
    corners = vertices[kept]
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    facing = np.abs(normal[:, 2]) / np.maximum(np.linalg.norm(normal, axis=1), 1e-12)
    doubtful = band[kept].any(axis=1) & ((facing < EDGE_MIN_FACING) | ~seen[kept].all(axis=1))
    return kept[~doubtful]


def face_texture_region(landmarks: np.ndarray, size: int) -> np.ndarray:
    """`(size, size)` bool: where the portrait shows its face: the hull of all its landmarks (the face outline, and
    the nose and lips of a turned face, which stand out beyond it)."""
    hull = cv2.convexHull(np.round(np.asarray(landmarks)[:, :2] - 0.5).astype(np.int32))
    return cv2.fillConvexPoly(np.zeros((size, size), np.uint8), hull, 1).astype(bool)


def head_pivot(head_model: HeadModel, source: SourceFace, rest: np.ndarray) -> np.ndarray:
    """``(x, y, z)`` image space: where the portrait's head turns, between its ears (``rest``: the head at rest in
    the model frame, z into the head): the face outline's centre moved back to the depth of its deepest points,
    posed like the portrait."""
    from magicportrait.heads.base import project_to_image
    from magicportrait.heads.mediapipe_topology import landmark_groups

    outline = head_model.landmarks(rest[None])[0, landmark_groups()["face_oval"]].astype(np.float64)
    pivot = np.array([outline[:, 0].mean(), outline[:, 1].mean(), outline[:, 2].max()])
    return project_to_image(pivot[None, None], source.head)[0, 0].astype(np.float64)


def _template(head_model: HeadModel, rest: np.ndarray) -> np.ndarray:
    try:
        return head_model.template_vertices()
    except NotImplementedError:
        return rest


def _neutral_joints(head: HeadTrack) -> np.ndarray | None:
    joints = head.joint_rotations
    return None if joints is None or not joints.size else np.zeros_like(joints[:1])


def face_oval_mask(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """`(H, W)` bool: inside the face outline of MediaPipe ``landmarks`` (pixels; the hull of its face-oval points,
    which are stored unordered)."""
    from magicportrait.heads.mediapipe_topology import landmark_groups

    outline = np.round(landmarks[landmark_groups()["face_oval"], :2]).astype(np.int32)
    mask = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(outline), 1)
    return mask.astype(bool)


def paint_out(image: np.ndarray, mask: np.ndarray, grow_px: int = 3) -> np.ndarray:
    """``image`` with the ``mask`` region (grown a little) painted over from its surroundings.

    Where the moved face uncovers what the source's face covered, this shows instead of a second face edge.
    The inpainting runs at a reduced size (it is smooth fill anyway) and only inside the mask.
    """
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((2 * grow_px + 1,) * 2, np.uint8))
    if not grown.any():
        return image.copy()
    height, width = image.shape[:2]
    scale = min(1.0, 256.0 / max(height, width))
    small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)
    small_mask = cv2.resize(grown, small_size, interpolation=cv2.INTER_NEAREST)
    small_mask = cv2.dilate(small_mask, np.ones((3, 3), np.uint8))
    filled = cv2.inpaint(small, small_mask, 3, cv2.INPAINT_TELEA)
    filled = cv2.resize(filled, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.where(grown[..., None].astype(bool), filled, image)


def cavity_colour(crop: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] for the inside of an open mouth: the lips' colour, much darker."""
    points = np.round(landmarks[list(LIPS), :2] - 0.5).astype(int)
    rows = np.clip(points[:, 1], 0, crop.shape[0] - 1)
    cols = np.clip(points[:, 0], 0, crop.shape[1] - 1)
    lips = np.median(crop[rows, cols].astype(np.float64), axis=0) / 255.0
    return (0.3 * lips).astype(np.float32)


def eye_openness(landmarks: np.ndarray) -> dict[str, float]:
    """Eyelid gap over eye width for each eye, from MediaPipe landmarks `(478, 2+)` (about 0.25-0.35 when open)."""
    ratios = {}
    for name, (corner_a, corner_b, upper, lower) in EYES.items():
        width = np.linalg.norm(landmarks[corner_a, :2] - landmarks[corner_b, :2])
        ratios[name] = float(np.linalg.norm(landmarks[upper, :2] - landmarks[lower, :2]) / max(width, 1e-6))
    return ratios


def eyes_closed(source: SourceFace) -> bool:
    """Whether the portrait's eyes look closed (both eyelid gaps below CLOSED_EYE_RATIO of the eye's width)."""
    return max(eye_openness(source.track.landmarks[0]).values()) < CLOSED_EYE_RATIO


def source_pose_degrees(source: SourceFace) -> np.ndarray:
    """(yaw, pitch, roll) of the portrait's own head, degrees."""
    return matrix_to_euler_degrees(axis_angle_to_matrix(source.head.rotation[0].astype(np.float64)))


def source_warnings(source: SourceFace) -> list[str]:
    """What about the portrait or the head model will limit the result (a strongly turned face, closed eyes, a
    head model without expressions), as messages."""
    messages = []
    yaw, pitch, _ = source_pose_degrees(source)
    turn = max(abs(yaw), abs(pitch))
    if turn > SOURCE_TURN_WARNING_DEGREES:
        messages.append(f"The portrait's face is turned {turn:.0f} degrees away from the camera; where the driving "
                        "head turns toward the side it hides, that side is filled from the skin around it and will "
                        "look smooth or smeared there. A more frontal portrait works better.")
    if eyes_closed(source):
        messages.append("The portrait's eyes look closed; the geometric backend re-uses the portrait's own eyes, so "
                        "they stay closed. A portrait with open eyes works better.")
    if source.head.expression.shape[-1] == 0:
        messages.append(f"The {source.head.model} head model has no expression basis (a partial model file?): the "
                        "lips and brows cannot follow the driving video; only the head pose and the jaw move. A "
                        "FLAME file with its expression components works better.")
    return messages
