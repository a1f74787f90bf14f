"""The guidance stage's renderer choice and the on-demand maps the diffusion generator reads."""

from __future__ import annotations

import numpy as np
import pytest

from magicportrait.geometry.rotations import axis_angle_to_matrix
from magicportrait.heads import MediaPipeHeadModel
from magicportrait.heads.mediapipe_mesh import load_canonical_face
from magicportrait.rendering.guidance import RenderedGuidance, render_guidance
from magicportrait.types import GUIDANCE_NAMES, SourceFace, Track

SIZE = 64
NUM_FRAMES = 11  # not a multiple of the chunk: the last chunk is short


@pytest.fixture(scope="module")
def scene():
    """The canonical face turning a little in a 64 px crop, fitted by the open geometry, the first frame as source."""
    canonical = load_canonical_face()[0]
    angles = np.linspace(-0.3, 0.3, NUM_FRAMES)
    landmarks = np.stack([canonical @ axis_angle_to_matrix(np.array([0.0, a, 0.0])).T * 2.2 + [32, 34, 40]
                          for a in angles]).astype(np.float32)
    track = Track(landmarks=landmarks, boxes=np.tile([32, 32, 64], (NUM_FRAMES, 1)).astype(np.float32),
                  detected=np.ones(NUM_FRAMES, bool), fps=25.0, image_size=(SIZE, SIZE))
    model = MediaPipeHeadModel()
    head = model.fit(track)
    crop = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    source = SourceFace(crop=crop, crop_matrix=np.eye(2, 3), track=track.select(slice(0, 1)),
                        head=head.select(slice(0, 1)))
    return model, source, head


def test_rendered_guidance_is_what_guide_writes(scene):
    model, source, head = scene
    chunks = list(render_guidance(model, source, head, chunk_size=4))
    assert [len(chunk["depth"]) for chunk in chunks] == [4, 4, 3]
    written = {name: np.concatenate([chunk[name] for chunk in chunks]) for name in GUIDANCE_NAMES}
    assert written["depth"].shape == (NUM_FRAMES, SIZE, SIZE, 3) and written["depth"].max() > 240  # the face is drawn
    maps = RenderedGuidance(model, source, head, chunk_size=4, cached_frames=4)  # two chunks kept: eviction
    for start, stop in [(9, 11), (0, 3), (2, 7), (10, 11), (0, 11), (5, 6)]:  # windows wrap around, out of order
        for name in GUIDANCE_NAMES:  # same machine, same chunks: bit for bit
            assert np.array_equal(maps.read(name, start, stop), written[name][start:stop]), (name, start, stop)
    assert len(maps._chunks) == 2
    assert [panel.shape for panel in maps.frame(3)] == [(SIZE, SIZE, 3)] * 3
    assert np.array_equal(maps.loaders()["normal"](1, 4), written["normal"][1:4])
    with pytest.raises(IndexError):
        maps.read("depth", 8, 12)
