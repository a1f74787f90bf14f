"""A running UI server for the tests of this folder (skipped where Gradio is not installed)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    pytest.importorskip("gradio", reason="the web UI needs the ui extra: pip install -e '.[ui]'")
    from magicportrait.ui.server import UiServer, UiSettings

    server = UiServer(UiSettings(port=None, work_dir=str(tmp_path_factory.mktemp("ui-work"))))
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def remote_server(tmp_path_factory):
    """A server as if reachable by others (0.0.0.0): its path fields are fixed."""
    pytest.importorskip("gradio", reason="the web UI needs the ui extra: pip install -e '.[ui]'")
    from magicportrait.ui.server import UiServer, UiSettings

    server = UiServer(UiSettings(host="0.0.0.0", port=None, work_dir=str(tmp_path_factory.mktemp("ui-remote")),
                                 max_upload_mb=1))
    server.start()
    yield server
    server.close()
