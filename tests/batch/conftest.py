"""The batch tests' inputs: the bundled example and a video without a face, in one folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from batch_inputs import EXAMPLE_FRAMES


@pytest.fixture(scope="session")
def batch_inputs(tmp_path_factory) -> Path:
    """source.png, driving.mp4 (the bundled example) and noface.mp4 (noise) in one folder."""
    from magicportrait.io.video import write_video
    from magicportrait.pipelines.example import write_example

    folder = tmp_path_factory.mktemp("batch-inputs")
    write_example(folder, num_frames=EXAMPLE_FRAMES)
    noise = np.random.default_rng(0).integers(0, 255, (EXAMPLE_FRAMES, 128, 128, 3), dtype=np.uint8)
    write_video(folder / "noface.mp4", noise, fps=25)
    return folder
