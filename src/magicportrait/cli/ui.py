"""``magicportrait ui``: serve the web UI (Gradio; ``pip install -e ".[ui]"``)."""

from __future__ import annotations

import argparse

from magicportrait.cli.args import argument_group, positive_int
from magicportrait.config import GENERATOR, HEAD_MODEL, OUTPUT

USAGE = "%(prog)s [--host 127.0.0.1] [--port 7860] [--share] [--weights DIR] [--flame FILE] [options]"
PATH_FLAGS = {"weights": GENERATOR, "sd15": GENERATOR, "vae": GENERATOR, "motion_module": GENERATOR,
              "flame": HEAD_MODEL, "flame_texture": HEAD_MODEL}


def add_ui_command(commands: argparse._SubParsersAction) -> None:
    from magicportrait.ui.forms import PATH_ASSETS

    parser = commands.add_parser("ui", help="Serve the web UI in your browser (needs the ui extra: pip install -e "
                                 "'.[ui]').")
    server = argument_group(parser, "server")
    server.add_argument("--host", default="127.0.0.1", help="Address to listen on; 0.0.0.0 serves other machines "
                        "too (then the server-side paths below are fixed for the page). (default: 127.0.0.1)")
    server.add_argument("--port", type=positive_int, default=7860, help="Port (default: 7860).")
    server.add_argument("--share", action="store_true", help="Also make a public Gradio share link (off unless "
                        "asked; the server-side paths are then fixed for the page).")
    server.add_argument("--max-upload-mb", type=positive_int, default=200, help="Largest upload, MB (default: 200).")
    argument_group(parser, OUTPUT).add_argument(
        "--work-dir", help="Folder for uploads and results (default: a temporary one, removed when the server "
        "stops).")
    for name, group in PATH_FLAGS.items():
        asset = PATH_ASSETS[name]
        argument_group(parser, group).add_argument(
            asset.flag, dest=name, help=f"The {asset.what} the page uses (default: ${asset.env}).")
    parser.usage = USAGE
    parser.set_defaults(handler=_ui)


def _ui(args: argparse.Namespace) -> None:
    from magicportrait.ui.server import UiServer, UiSettings

    settings = UiSettings(host=args.host, port=args.port, share=args.share, work_dir=args.work_dir,
                          max_upload_mb=args.max_upload_mb, paths={name: getattr(args, name) for name in PATH_FLAGS})
    server = UiServer(settings)
    print("Serving the magicportrait UI; stop with Ctrl+C.", flush=True)
    url = server.start(block=False)
    print(f"  open {url}", flush=True)
    try:
        server.app.block_thread()
    finally:
        server.close()
