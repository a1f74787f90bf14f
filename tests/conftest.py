"""Test-session set-up and the fixtures several test folders share.

- ``example``: the bundled example (portrait + driving video) written once per frame count; a module sets
  ``EXAMPLE_FRAMES`` (default 20) to choose its length.
- ``tracker``: a MediaPipe face tracker, one per module.
- ``release``: the tiny random-weight release in the official file layout, written once per session.

Modules import ``shared_paths`` (where ``../shared`` is) from this folder: ``pyproject.toml`` puts ``tests/`` on the
path.
"""

import os

# As the CLI does (see magicportrait.cli.main): spinning OpenMP threads slow torch badly on a busy 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

DEFAULT_EXAMPLE_FRAMES = 20


@pytest.fixture(scope="session")
def _examples(tmp_path_factory):
    """Frame count -> (source.png, driving.mp4), each written on first use."""
    from magicportrait.pipelines.example import write_example

    written: dict[int, tuple] = {}

    def example_of(num_frames: int):
        if num_frames not in written:
            written[num_frames] = write_example(tmp_path_factory.mktemp(f"example{num_frames}"), num_frames=num_frames)
        return written[num_frames]

    return example_of


@pytest.fixture(scope="module")
def example(request, _examples):
    """The bundled example with the module's ``EXAMPLE_FRAMES`` frames: ``(source_path, driving_path)``."""
    return _examples(getattr(request.module, "EXAMPLE_FRAMES", DEFAULT_EXAMPLE_FRAMES))


@pytest.fixture(scope="module")
def tracker():
    from magicportrait.tracking import FaceTracker, TrackerConfig

    with FaceTracker(TrackerConfig(show_progress=False)) as face_tracker:
        yield face_tracker


@pytest.fixture(scope="session")
def release(tmp_path_factory):
    """A tiny MagicPortrait release with random weights, in the official layout (``ckpts/``, SD-1.5, VAE)."""
    from magicportrait.models.tiny import write_tiny_release

    return write_tiny_release(tmp_path_factory.mktemp("release"))


@pytest.fixture(autouse=True, scope="module")
def _torch_threads_restored():
    """A module that changes torch's thread count (for exact reference runs) does not slow the later ones."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
