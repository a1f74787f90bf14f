"""magicportrait weights: download through the hub client from a local stand-in for the hub (127.0.0.1, no
network), only the files the loader reads, resuming an interrupted file; check a folder file by file."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import shutil
import threading
from pathlib import Path

import pytest
import torch

from magicportrait.cli.main import main
from magicportrait.io.assets import RELEASE_REPO
from magicportrait.models.download import MOTION_MODULE_FILE, MOTION_MODULE_REPO, RemoteFile, plan_download
from magicportrait.models.manifest import check_release

SHA = "0123456789abcdef0123456789abcdef01234567"
LARGE = "stable-diffusion-v1-5/tokenizer/large.bin"  # 24 MB: the client writes 10 MB chunks, so half of it lands
EXTRA = {"stable-diffusion-v1-5/safety_checker/model.safetensors": b"x" * 4096,
         "third_party_files/models/antelopev2/glintr100.onnx": b"y" * 4096,
         "stable-diffusion-v1-5/text_encoder/pytorch_model.bin": b"z" * 1024}  # safetensors is preferred


class FakeHub(http.server.ThreadingHTTPServer):
    """The hub endpoints huggingface_hub uses for one repository: model info and file resolution (with ranges).
    The first GET of ``interrupt`` sends half the file and drops the connection."""

    def __init__(self, files: dict[str, bytes], interrupt: str | None = None,
                 others: dict[str, dict[str, bytes]] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.repos = {RELEASE_REPO: files, **(others or {})}
        self.files, self.interrupt, self.requests = files, interrupt, []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(body=False)

    def _serve(self, body: bool) -> None:
        hub: FakeHub = self.server
        path = self.path.split("?")[0]
        hub.requests.append((self.command, path, self.headers.get("Range")))
        info = re.fullmatch(r"/api/models/([^/]+/[^/]+)(/revision/[^/]+)?", path)
        if info and info.group(1) in hub.repos:
            siblings = [{"rfilename": name, "size": len(data)} for name, data in hub.repos[info.group(1)].items()]
            return self._send(200, json.dumps({"id": info.group(1), "sha": SHA, "siblings": siblings}).encode(),
                              body, {"Content-Type": "application/json"})
        found = re.fullmatch(r"/([^/]+/[^/]+)/resolve/[^/]+/(.+)", path)
        files = hub.repos.get(found.group(1), {}) if found else {}
        if not found or found.group(2) not in files:
            return self._send(404, b"not found", body, {"X-Error-Code": "EntryNotFound"})
        name, data = found.group(2), files[found.group(2)]
        headers = {"X-Repo-Commit": SHA, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                   "Accept-Ranges": "bytes"}
        start = int(re.match(r"bytes=(\d+)-", self.headers.get("Range") or "bytes=0-").group(1))
        if body and name == hub.interrupt and start == 0:
            hub.interrupt = None
            self.send_response(200)
            for key, value in {**headers, "Content-Length": str(len(data))}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)  # the connection drops mid-file
            return None
        status = 206 if start else 200
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        self._send(status, data[start:], body, headers)

    def _send(self, status: int, data: bytes, body: bool, headers: dict) -> None:
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(data))}.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data)


@pytest.fixture
def hub(release):
    files = {str(path.relative_to(release)): path.read_bytes() for path in sorted(release.rglob("*"))
             if path.is_file()}
    motion = {MOTION_MODULE_FILE: (release / "ckpts" / "motion_module.pth").read_bytes()}
    server = FakeHub({**files, **EXTRA, LARGE: bytes(range(256)) * (24 << 12)}, interrupt=LARGE,
                     others={MOTION_MODULE_REPO: motion})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_plan_keeps_only_what_the_loader_reads():
    names = ["ckpts/denoising_unet.pth", "ckpts/motion_module-47360.pth", "stable-diffusion-v1-5/unet/config.json",
             "stable-diffusion-v1-5/unet/diffusion_pytorch_model.safetensors",
             "stable-diffusion-v1-5/text_encoder/config.json", "stable-diffusion-v1-5/text_encoder/model.safetensors",
             "stable-diffusion-v1-5/text_encoder/pytorch_model.bin", "stable-diffusion-v1-5/tokenizer/vocab.json",
             "sd-vae-ft-mse/config.json", "sd-vae-ft-mse/diffusion_pytorch_model.bin",
             "third_party_files/models/antelopev2/scrfd_10g_bnkps.onnx"]
    plan = [item.name for item in plan_download([RemoteFile(name, 1) for name in names])]
    assert plan == sorted(["ckpts/denoising_unet.pth", "ckpts/motion_module-47360.pth",
                           "stable-diffusion-v1-5/unet/config.json", "stable-diffusion-v1-5/text_encoder/config.json",
                           "stable-diffusion-v1-5/text_encoder/model.safetensors",
                           "stable-diffusion-v1-5/tokenizer/vocab.json", "sd-vae-ft-mse/config.json",
                           "sd-vae-ft-mse/diffusion_pytorch_model.bin"])


def test_download_resumes_and_checks(hub, release, tmp_path, capsys):
    target = tmp_path / "pretrained"
    assert main(["weights", "download", "--dir", str(target), "--endpoint", hub.url]) == 2  # the connection drops
    assert "Run the same command again: it resumes" in capsys.readouterr().err
    assert main(["weights", "download", "--dir", str(target), "--endpoint", hub.url, "--motion-module"]) == 0
    printed = capsys.readouterr().out
    fetched = target / "motion_modules" / MOTION_MODULE_FILE
    assert fetched.read_bytes() == (release / "ckpts" / "motion_module.pth").read_bytes()
    assert f"--motion-module {fetched}" in printed
    assert "ckpts/denoising_unet.pth" in printed and "All 11 files are complete" in printed
    released = sum(1 for path in release.rglob("*") if path.is_file())
    assert f"Fetching {released + 1} files of mengtingwei/MagicPortrait" in printed  # the release and LARGE
    for name in EXTRA:
        assert not (target / name).exists(), name  # never fetched
    for path in release.rglob("*"):
        if path.is_file():
            assert (target / path.relative_to(release)).read_bytes() == path.read_bytes(), path
    assert (target / LARGE).read_bytes() == hub.files[LARGE]
    ranges = [rng for method, path, rng in hub.requests if method == "GET" and path.endswith(LARGE)]
    assert ranges[0] is None and re.fullmatch(r"bytes=\d+-", ranges[-1] or "")  # resumed where it stopped
    assert int(ranges[-1][6:-1]) >= 10 << 20


def test_check_names_missing_and_misshaped(release, tmp_path, capsys):
    folder = tmp_path / "by-hand"
    shutil.copytree(release, folder)
    (folder / "ckpts" / "guidance_encoder_depth.pth").unlink()
    state = torch.load(folder / "ckpts" / "denoising_unet.pth", weights_only=True)
    del state["conv_in.bias"]
    torch.save(state, folder / "ckpts" / "denoising_unet.pth")
    state = torch.load(folder / "ckpts" / "reference_unet.pth", weights_only=True)
    state["conv_in.weight"] = torch.zeros(1, 2, 3, 3)
    torch.save(state, folder / "ckpts" / "reference_unet.pth")
    checks = {str(check.path.relative_to(folder)): check for check in check_release(folder)}
    assert checks["ckpts/guidance_encoder_depth.pth"].status == "missing"
    assert checks["ckpts/reference_unet.pth"].status == "wrong shapes"
    assert "conv_in.weight (1, 2, 3, 3) instead of" in checks["ckpts/reference_unet.pth"].detail
    assert checks["ckpts/denoising_unet.pth"].status == "wrong keys"
    assert checks["ckpts/denoising_unet.pth"].detail == "1 missing (conv_in.bias)"
    assert checks["ckpts/motion_module.pth"].ok and checks["sd-vae-ft-mse/diffusion_pytorch_model.safetensors"].ok
    assert main(["weights", "check", str(folder)]) == 2
    captured = capsys.readouterr()
    assert "missing      ckpts/guidance_encoder_depth.pth" in captured.out
    assert captured.err.startswith("error: 3 of 11 files")
    assert main(["weights", "check", str(release)]) == 0


def test_animate_finds_a_downloaded_release_in_the_cache(hub, tmp_path, monkeypatch, caplog):
    """Downloaded into the hub cache (no --dir), the weights are found without --weights."""
    from magicportrait.io.assets import WEIGHTS, asset_value, resolve_asset
    from magicportrait.models.download import download_release

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MAGICPORTRAIT_WEIGHTS", raising=False)
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    hub.interrupt = None
    assert asset_value(WEIGHTS, None) == (None, "")
    folder = download_release(endpoint=hub.url, report=lambda line: None)
    path, origin = asset_value(WEIGHTS, None)
    assert path == Path(folder) and "Hugging Face cache" in origin
    from magicportrait.pipelines.animate import AnimateConfig

    with caplog.at_level("INFO", logger="magicportrait"):
        assert AnimateConfig().resolved_backend() == "diffusion"  # no --weights, no $MAGICPORTRAIT_WEIGHTS
        assert resolve_asset(WEIGHTS, None) == path
    assert "found in the Hugging Face cache" in caplog.text
