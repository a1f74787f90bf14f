"""The UI through its API (gradio_client): the example, faces, a geometric draft, readable errors, and what the
page may reach on the server (paths typed into fields, files outside its output folder)."""

from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np
import pytest
from page_values import page_values as _values

from magicportrait.io.image import save_image
from magicportrait.io.video import iter_frames
from magicportrait.ui.forms import form_fields

pytest.importorskip("gradio_client", reason="the web UI needs the ui extra: pip install -e '.[ui]'")
from gradio_client import Client, handle_file  # noqa: E402


@pytest.fixture(scope="module")
def client(ui_server, tmp_path_factory):
    return Client(ui_server.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def test_example_faces_and_a_draft(client, example):
    faces_picture, choices = client.predict(handle_file(str(example[0])), api_name="/faces")
    assert [choice[0] for choice in choices["choices"]] == ["most prominent", "0"] and choices["value"] == "0"
    outputs = client.predict(handle_file(str(example[0])), handle_file(str(example[1])), None, "0", "",
                             *_values(edit_yaw=0.0), api_name="/draft")
    status, result, crop, grid, downloads = outputs[:5]
    length = len(list(iter_frames(example[1])))
    assert status.startswith(f"**Done.** geometric generator: {length} frames at 25 fps")
    assert len(list(iter_frames(result["video"]))) == length
    assert [path.rsplit("/", 1)[-1] for path in downloads] == ["aligned_head.npz"]


def test_errors_are_messages_and_the_server_keeps_serving(client, example, tmp_path):
    blank = tmp_path / "blank.png"
    save_image(blank, np.full((256, 256, 3), 200, np.uint8))
    with pytest.raises(Exception, match="No face found in the portrait"):
        client.predict(handle_file(str(blank)), api_name="/faces")
    with pytest.raises(Exception, match="Give a driving video"):
        client.predict(handle_file(str(example[0])), None, None, "0", "", *_values(), api_name="/draft")
    with pytest.raises(Exception, match="paths with '..' are refused"):
        client.predict(handle_file(str(example[0])), handle_file(str(example[1])), None, "0", "",
                       *_values(flame="../../etc/passwd"), api_name="/draft")
    with pytest.raises(Exception, match="--edit-frames takes START:END"):
        client.predict(handle_file(str(example[0])), handle_file(str(example[1])), None, "0", "",
                       *_values(edit_frames="../../etc/passwd"), api_name="/draft")
    _, choices = client.predict(handle_file(str(example[0])), api_name="/faces")  # still serving
    assert choices["value"] == "0"


def test_the_page_cannot_fetch_files_outside_its_folder(ui_server):
    for route in ("gradio_api/file=/etc/passwd", "file=/etc/passwd", "gradio_api/file=../../../../etc/passwd"):
        try:
            with urllib.request.urlopen(ui_server.url + route, timeout=10) as reply:
                body = reply.read()
        except urllib.error.HTTPError as error:
            assert error.code in (403, 404), route
            continue
        assert b"root:" not in body, route


def test_uploads_of_the_wrong_kind_are_refused(client, example, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    with pytest.raises(Exception, match="Invalid file type|The driving video must be a"):
        client.predict(handle_file(str(example[0])), handle_file(str(text)), None, "0", "", *_values(),
                       api_name="/draft")


def test_retarget_through_the_api(client, example):
    from magicportrait.io.image import load_image
    from magicportrait.pipelines.retarget import RetargetConfig

    names = [field.name for field in form_fields(RetargetConfig)]
    values = {"eye_opening": 0.05, "lip_opening": 0.3, "yaw": 10.0, "pitch": 0.0, "roll": 0.0}
    picture = client.predict(handle_file(str(example[0])), "0", "", *[values[name] for name in names],
                             api_name="/retarget")
    assert load_image(picture).shape == load_image(example[0]).shape


def test_ui_refuses_a_missing_fixed_path(tmp_path, capsys):
    from magicportrait.cli.main import main

    assert main(["ui", "--flame", str(tmp_path / "missing.pkl"), "--port", "7999"]) == 2
    assert "FLAME model file" in capsys.readouterr().err


def test_draft_then_diffusion_render_and_guidance(client, example, release):
    """The diffusion render reuses the draft's aligned motion (the tiny random release, typed under Advanced on a
    local server); the guidance maps of that motion download as a zip."""
    import zipfile

    small = {"size": 64, "max_frames": "4", "steps": 2, "weights": str(release)}
    draft = client.predict(handle_file(str(example[0])), handle_file(str(example[1])), None, "0", "",
                           *_values(**small), api_name="/draft")
    assert draft[0].startswith("**Done.** geometric generator: 4 frames")
    render = client.predict(handle_file(str(example[0])), handle_file(str(example[1])), "0", "",
                            *_values(**small), api_name="/render")
    assert render[0].startswith("**Done.** diffusion generator: 4 frames")
    assert len(list(iter_frames(render[1]["video"]))) == 4
    downloads = client.predict(handle_file(str(example[0])), "0", "", *_values(**small), api_name="/guidance")
    archive = next(path for path in downloads if path.endswith(".zip"))
    names = zipfile.ZipFile(archive).namelist()
    assert sorted({name.split("/")[0] for name in names}) == ["depth", "normal", "render"] and len(names) == 12


def test_the_work_folder_is_removed_when_the_server_stops():
    from magicportrait.ui.server import UiServer, UiSettings

    server = UiServer(UiSettings(port=None))
    server.start()
    root = server.root
    assert root.is_dir()
    server.close()
    assert not root.exists()
