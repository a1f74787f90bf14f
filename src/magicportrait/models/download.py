"""``magicportrait weights download``: the official release from the Hugging Face hub, only the files we load.

The hub repository (``mengtingwei/MagicPortrait``, about 42 GB) also holds Stable Diffusion's safety checker,
feature extractor, a full UNet and insightface models; :func:`plan_download` keeps the MagicPortrait checkpoints,
SD-1.5's UNet config, text encoder and tokenizer, and the VAE (safetensors where the repository has both formats).
``huggingface_hub`` does the transfer (resumable: an interrupted file continues where it stopped), into the
standard hub cache or a folder; the files are then checked with :func:`~magicportrait.models.manifest.check_release`.
Nothing here runs unless asked: the default path never touches the network.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from pathlib import Path

from magicportrait.errors import CheckpointError, DependencyError
from magicportrait.io.assets import RELEASE_REPO

logger = logging.getLogger(__name__)

MOTION_MODULE_REPO, MOTION_MODULE_FILE = "guoyww/animatediff", "mm_sd_v15_v2.ckpt"
ALWAYS = ("ckpts/*.pth", "stable-diffusion-v1-5/unet/config.json", "stable-diffusion-v1-5/text_encoder/config.json",
          "stable-diffusion-v1-5/tokenizer/*", "sd-vae-ft-mse/config.json")
ONE_OF = (("stable-diffusion-v1-5/text_encoder/model.safetensors",
           "stable-diffusion-v1-5/text_encoder/pytorch_model.bin"),
          ("sd-vae-ft-mse/diffusion_pytorch_model.safetensors", "sd-vae-ft-mse/diffusion_pytorch_model.bin"))


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int | None


def plan_download(files: list[RemoteFile]) -> list[RemoteFile]:
    """The files of the release repository that the loader reads (see the module docstring)."""
    names = {item.name for item in files}
    wanted = [item for item in files if any(fnmatch.fnmatch(item.name, pattern) for pattern in ALWAYS)]
    missing = []
    for choices in ONE_OF:
        chosen = next((name for name in choices if name in names), None)
        if chosen is None:
            missing.append(" or ".join(choices))
        else:
            wanted += [item for item in files if item.name == chosen]
    if not any(item.name.startswith("ckpts/") for item in wanted):
        missing.append("ckpts/*.pth")
    if missing:
        raise CheckpointError(f"The repository does not hold {', '.join(missing)}; is it the MagicPortrait release?")
    return sorted(wanted, key=lambda item: item.name)


def human_size(size: int | None) -> str:
    if size is None:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def download_release(directory: str | Path | None = None, endpoint: str | None = None, motion_module: bool = False,
                     report=print) -> Path:
    """Download the release (see the module docstring) into ``directory`` (default: the hub cache); returns the
    folder holding ``ckpts/``, ``stable-diffusion-v1-5/`` and ``sd-vae-ft-mse/``. ``report`` gets each line of
    what is fetched."""
    try:
        from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    except ImportError as exc:  # a dependency of diffusers / transformers, so normally present
        raise DependencyError(f"Downloading needs huggingface_hub ({exc}): pip install huggingface_hub") from exc
    import requests

    try:
        return _download(HfApi(endpoint=endpoint), snapshot_download, hf_hub_download, directory, endpoint,
                         motion_module, report)
    except (requests.RequestException, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"The download stopped ({first}). Run the same command again: it resumes where it "
                              "stopped.") from None


def _download(api, snapshot_download, hf_hub_download, directory, endpoint, motion_module, report) -> Path:
    info = api.model_info(RELEASE_REPO, files_metadata=True)
    files = plan_download([RemoteFile(item.rfilename, item.size) for item in info.siblings or []])
    report(f"Fetching {len(files)} files of {RELEASE_REPO} ({human_size(sum(f.size or 0 for f in files))}) into "
           f"{directory or 'the Hugging Face cache'}:")
    for item in files:
        report(f"  {item.name}  {human_size(item.size)}")
    local = snapshot_download(RELEASE_REPO, allow_patterns=[item.name for item in files],
                              local_dir=str(directory) if directory else None, endpoint=endpoint)
    if motion_module:
        report(f"Fetching {MOTION_MODULE_FILE} of {MOTION_MODULE_REPO}:")
        path = hf_hub_download(MOTION_MODULE_REPO, MOTION_MODULE_FILE, endpoint=endpoint,
                               local_dir=str(Path(directory) / "motion_modules") if directory else None)
        report(f"  {path}  (use it with --motion-module {path})")
    return Path(local)
