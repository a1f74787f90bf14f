"""``magicportrait weights download|check``: get the official release (only the files we load) and verify it."""

from __future__ import annotations

import argparse
from pathlib import Path

from magicportrait.cli.args import argument_group
from magicportrait.config import OUTPUT
from magicportrait.errors import CheckpointError


def add_weights_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("weights", help="Download the official diffusion weights (only the files the "
                                 "generator loads) or check a folder of them.")
    actions = parser.add_subparsers(dest="action", required=True)
    download = actions.add_parser("download", help="Fetch the release from the Hugging Face hub (resumable), then "
                                  "check every file.")
    argument_group(download, OUTPUT).add_argument(
        "--dir", help="Folder to download into (default: the Hugging Face cache, where animate finds it without "
        "--weights).")
    download.add_argument("--motion-module", action="store_true", help="Also fetch AnimateDiff's mm_sd_v15_v2.ckpt.")
    download.add_argument("--endpoint", default=None, help="Hub address (default: $HF_ENDPOINT or huggingface.co).")
    download.set_defaults(handler=_download)
    check = actions.add_parser("check", help="Check a release folder you filled by hand: every tensor's name and "
                               "shape, per file.")
    check.add_argument("folder", help="The folder with ckpts/, stable-diffusion-v1-5/ and sd-vae-ft-mse/.")
    check.add_argument("--motion-module", help="A motion-module file to check instead of the release's own.")
    check.set_defaults(handler=_check)


def _download(args: argparse.Namespace) -> None:
    from magicportrait.models.download import download_release

    folder = download_release(args.dir, endpoint=args.endpoint, motion_module=args.motion_module,
                              report=lambda line: print(line, flush=True))
    _report(folder, None)


def _check(args: argparse.Namespace) -> None:
    folder = Path(args.folder).expanduser()
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder; give the release folder (with ckpts/ inside).")
    _report(folder, args.motion_module)


def _report(folder: Path, motion_module: str | None) -> None:
    from magicportrait.models.manifest import check_release

    checks = check_release(folder, motion_module)
    print(f"Checked {folder}:")
    for check in checks:
        name = check.path.relative_to(folder) if check.path.is_relative_to(folder) else check.path
        print(f"  {check.status:12s} {name}" + (f"  ({check.detail})" if check.detail else ""))
    bad = [check for check in checks if not check.ok]
    if bad:
        raise CheckpointError(f"{len(bad)} of {len(checks)} files of {folder} are not as the generator needs them "
                              f"(listed above); download them again or fix them.")
    print(f"All {len(checks)} files are complete; use them with --weights {folder} (or $MAGICPORTRAIT_WEIGHTS).")
