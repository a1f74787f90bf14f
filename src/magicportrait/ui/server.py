"""Start and stop the web UI's server: its work folder, upload limits, queue and what the page may reach."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from magicportrait.errors import DependencyError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
UI_INSTALL = 'pip install -e ".[ui]"  (or: pip install "gradio>=5,<6")'


@dataclass
class UiSettings:
    """How the UI is served (the ``magicportrait ui`` flags)."""

    host: str = "127.0.0.1"
    port: int | None = 7860  # None: the first free port from 7860
    share: bool = False
    work_dir: str | None = None  # None: a temporary folder, removed when the server stops
    max_upload_mb: int = 200
    paths: dict[str, str | None] = field(default_factory=dict)  # server-side paths fixed at launch (flame, ...)
    queue_size: int = 16

    @property
    def remote(self) -> bool:
        """Whether others can reach the page (then the server-side paths are not editable from it)."""
        return self.share or self.host not in LOCAL_HOSTS


class UiServer:
    """The running page: ``url``, and :meth:`close` (stops it and removes the temporary work folder)."""

    def __init__(self, settings: UiSettings) -> None:
        try:
            import gradio  # noqa: F401 - checked before any work
        except ImportError as exc:
            raise DependencyError(f"The web UI needs Gradio ({exc}). Install it with: {UI_INSTALL}") from exc
        self.settings = settings
        _check_paths(settings.paths)
        self._own_root = settings.work_dir is None
        self.root = Path(settings.work_dir or tempfile.mkdtemp(prefix="magicportrait-ui-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self._saved_temp = os.environ.get("GRADIO_TEMP_DIR")
        os.environ["GRADIO_TEMP_DIR"] = str(self.root / "uploads")  # Gradio's uploads and served copies
        self.app = None
        self.url = None

    def start(self, block: bool = False) -> str:
        from magicportrait.ui.app import build_app
        from magicportrait.ui.forms import PathPolicy
        from magicportrait.ui.studio import Studio

        settings = self.settings
        policy = PathPolicy(editable=not settings.remote, fixed=settings.paths)
        studio = Studio(self.root, policy)
        weights = bool(settings.paths.get("weights") or os.environ.get("MAGICPORTRAIT_WEIGHTS"))
        self.app = build_app(studio, weights_configured=weights)
        self.app.queue(default_concurrency_limit=1, max_size=settings.queue_size)
        _, self.url, _ = self.app.launch(
            server_name=settings.host, server_port=settings.port, share=settings.share, quiet=True,
            max_file_size=f"{settings.max_upload_mb}mb", allowed_paths=[str(studio.runs), str(self.root / "example")],
            show_error=True, prevent_thread_lock=True, inbrowser=False)
        if block:
            try:
                self.app.block_thread()
            finally:
                self.close()
        return self.url

    def close(self) -> None:
        if self.app is not None:
            self.app.close()
            self.app = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
        if self._saved_temp is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = self._saved_temp


def _check_paths(paths: dict[str, str | None]) -> None:
    """The server-side paths given at launch exist and are the right kind (a clear error before serving)."""
    from magicportrait.io.assets import resolve_asset
    from magicportrait.ui.forms import PATH_ASSETS

    for name, value in paths.items():
        if value:
            resolve_asset(PATH_ASSETS[name], value)
