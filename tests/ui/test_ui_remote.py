"""A UI server reachable by others (--host 0.0.0.0): the page cannot change the server-side paths."""

from __future__ import annotations

import pytest
from page_values import page_values as _values

pytest.importorskip("gradio_client", reason="the web UI needs the ui extra: pip install -e '.[ui]'")
from gradio_client import Client, handle_file  # noqa: E402


def test_a_server_for_others_keeps_its_paths(remote_server, example, tmp_path):
    client = Client(remote_server.url, verbose=False, download_files=str(tmp_path))
    with pytest.raises(Exception, match="--flame is fixed by the server"):
        client.predict(handle_file(str(example[0])), handle_file(str(example[1])), None, "0", "",
                       *_values(flame="/etc/passwd"), api_name="/draft")
    config = client.view_api(print_info=False, return_format="dict")
    assert "/draft" in config["named_endpoints"]


def test_uploads_over_the_limit_are_refused(remote_server, tmp_path):
    big = tmp_path / "big.npz"
    big.write_bytes(b"\0" * (2 << 20))  # 2 MB; this server takes 1 MB
    client = Client(remote_server.url, verbose=False, download_files=str(tmp_path))
    with pytest.raises(Exception, match="(?i)size"):
        client.predict(handle_file(str(big)), api_name="/faces")
