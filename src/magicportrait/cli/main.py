"""The ``magicportrait`` command: a thin layer over the pipelines (each subcommand = one pipeline call)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

# OpenMP threads that spin while waiting cost several times their work when another process holds one of a few
# cores (measured: CSIM 8 s instead of 1 s for 100 frames on a busy 2-core machine). Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from magicportrait import __version__
from magicportrait.cli.args import add_config_arguments, argument_group, config_from_args, positive_int
from magicportrait.cli.batch import add_batch_command
from magicportrait.cli.retarget import add_retarget_command
from magicportrait.cli.ui import add_ui_command
from magicportrait.cli.weights import add_weights_command
from magicportrait.config import INPUT, OUTPUT
from magicportrait.console import NORMAL, QUIET, VERBOSE, console
from magicportrait.errors import MagicPortraitError, OutputError

logger = logging.getLogger("magicportrait")
# generate runs the diffusion generator alone: the tracking, alignment and paste-back options do nothing there.
GENERATE_SKIPS = ("backend", "paste_back", "max_output_size", "write_result_frames", "guide", "geometric")
# Commands whose -o is a folder, with the file in it a user most likely wants (for the error below).
FOLDER_OUTPUTS = {"guide": "preview.mp4", "animate": "result.mp4", "demo": "result.mp4", "generate": "result.mp4",
                  "evaluate": "metrics.md",
                  "benchmark": "summary.md", "prepare": "manifest.json", "example": "source.png",
                  "retarget": "result.png", "batch": "summary.md"}
# Names that look like a file: a folder called result.mp4 would only confuse.
FILE_SUFFIXES = (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi", ".gif", ".png", ".jpg", ".jpeg", ".webp", ".bmp",
                 ".tif", ".tiff", ".npz", ".json", ".md")


def check_output_folder(output: str | os.PathLike, command: str, main_file: str | None = None) -> Path:
    """Refuse an ``-o`` for a command that writes a folder when it names a file: an existing file, or a new path
    ending in a file suffix (``-o result.mp4``). An existing folder is accepted whatever its name."""
    path = Path(output)
    if path.is_dir():
        return path
    if path.exists():
        raise OutputError(f"-o {path} is a file, but {command} writes a folder. Give a folder path.")
    if path.suffix.lower() in FILE_SUFFIXES:
        folder = path.with_suffix("")
        inside = f"; it then writes {folder / main_file} among the other files" if main_file else ""
        raise OutputError(f"-o takes a folder: {command} writes several files, so -o {path} would create a "
                          f"folder named like a {path.suffix} file. Give a folder, e.g. -o {folder}{inside}.")
    return path


def _guide(args: argparse.Namespace) -> None:
    from magicportrait.pipelines.guide import GuideConfig, GuidePipeline

    config = config_from_args(GuideConfig, args)  # bad options fail before anything is written
    source, driving = _inputs(args)
    result = GuidePipeline(config).run(source, driving, args.output, motion=args.motion)
    model = "FLAME" if result.head_model == "flame" else "the open face geometry (no FLAME file given)"
    print(f"Wrote {result.num_frames} frames of depth/normal/render guidance at {result.fps:g} fps to "
          f"{result.output_dir}/ using {model}")
    for name, path in result.files.items():
        print(f"  {name:13s} {path}")
    if result.missing_frames:
        print(f"  note: no face in {len(result.missing_frames)} frames; they were interpolated.")


def _animate(args: argparse.Namespace) -> None:
    from magicportrait.pipelines.animate import AnimateConfig

    config = config_from_args(AnimateConfig, args)
    source, driving = _inputs(args)
    _reenact(config, source, driving, args.output, args.quiet, motion=args.motion)


def _reenact(config, source: str, driving: str | None, output: str, quiet: bool = False,
             motion: str | None = None) -> None:
    from magicportrait.pipelines.animate import load_pipeline

    backend = config.resolved_backend()
    if not quiet:
        print(f"Generator: {backend}" + ("" if backend == "diffusion" else
                                         " (no weights needed; give --weights DIR for the diffusion model)"))
    _print_result(load_pipeline(config).run(source, driving, output, motion=motion))


def _print_result(result) -> None:
    print(f"Wrote {result.num_frames} frames at {result.fps:g} fps with the {result.backend} generator to "
          f"{result.output_dir}/")
    for name, path in result.files.items():
        print(f"  {name:13s} {path}")


def _generate(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from magicportrait.pipelines.animate import AnimateConfig, MagicPortraitPipeline

    config = replace(config_from_args(AnimateConfig, args), backend="diffusion")
    pipeline = MagicPortraitPipeline.from_pretrained(config=config)
    _print_result(pipeline.generate(args.reference, args.guidance, args.output, fps=args.fps))


def _demo(args: argparse.Namespace) -> None:
    from magicportrait.pipelines.animate import AnimateConfig

    config = config_from_args(AnimateConfig, args)
    source, driving = _inputs(argparse.Namespace(source=None, driving=None, example=True, output=args.output,
                                                 command="demo", motion=None))
    _reenact(config, source, driving, args.output, args.quiet)


def _evaluate(args: argparse.Namespace) -> None:
    from magicportrait.evaluation.suite import EvaluationConfig
    from magicportrait.pipelines.evaluate import evaluate_files

    config = config_from_args(EvaluationConfig, args)
    report, files = evaluate_files(args.pred, args.driving, args.source, args.gt, args.output, config)
    print(report.markdown())
    for name, path in files.items():
        print(f"  {name:9s} {path}")


def _benchmark(args: argparse.Namespace) -> None:
    from magicportrait.evaluation.suite import EvaluationConfig
    from magicportrait.pipelines.animate import AnimateConfig
    from magicportrait.pipelines.evaluate import run_benchmark

    summary = run_benchmark(args.clips, args.output, config_from_args(AnimateConfig, args),
                            config_from_args(EvaluationConfig, args), args.max_clips)
    print((summary.parent / "summary.md").read_text())
    print(f"Wrote {summary} and one folder per clip under {summary.parent}/")


def _prepare(args: argparse.Namespace) -> None:
    from magicportrait.io.frames import load_manifest
    from magicportrait.training.prepare import PrepareConfig, prepare_dataset

    manifest_path = prepare_dataset(args.videos, args.output, config_from_args(PrepareConfig, args))
    manifest = load_manifest(manifest_path.parent)
    usable = sum(clip["usable"] for clip in manifest["clips"])
    print(f"Prepared {len(manifest['clips'])} clips ({usable} usable) into {manifest_path.parent}/; "
          f"{len(manifest['skipped'])} skipped. Manifest: {manifest_path}")
    for skipped in manifest["skipped"]:
        print(f"  skipped {skipped['video']}: {skipped['reason']}")


def _train(args: argparse.Namespace) -> None:
    from magicportrait.training.trainer import train

    output = train(args.config, [*args.set, *(["run.show_progress=false"] if args.quiet else [])])
    print(f"Training finished; checkpoints (official file layout) and logs in {output}/")


def _inputs(args: argparse.Namespace) -> tuple[str, str]:
    """--source/--driving, or the bundled example written into the output folder's example/."""
    source, driving = args.source, args.driving
    if args.example:
        from magicportrait.pipelines.example import write_example

        logger.info("Writing the bundled example into %s", Path(args.output) / "example")
        source, driving = write_example(Path(args.output) / "example")
    if source is None or (driving is None and args.motion is None):
        raise MagicPortraitError(f"{args.command} needs --source IMAGE and --driving VIDEO (or --motion "
                                 "aligned_head.npz, or --example).")
    return source, driving


def _track(args: argparse.Namespace) -> None:
    from magicportrait.tracking import FaceTracker, TrackerConfig

    path = Path(args.input)
    config = config_from_args(TrackerConfig, args)
    with FaceTracker(config) as tracker:
        if path.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}:
            from magicportrait.io.image import load_image

            track = tracker.track_image(load_image(path), source=str(path))
        else:
            from itertools import islice

            from magicportrait.io.video import iter_frames, probe_video

            info = probe_video(path)

            def frames():
                return islice(iter_frames(path, max_size=args.max_size), args.max_frames)

            track = tracker.track_frames(frames(), fps=info.fps, num_frames=info.num_frames, source=str(path))
            if config.pose_refinement == "photometric":
                from magicportrait.tracking.photometric import refine_pose_photometric

                track = refine_pose_photometric(frames, track, show_progress=config.show_progress)
    track.save(args.output)
    print(f"Tracked {track.num_frames} frames ({len(track.missing_frames)} without a face, interpolated) "
          f"-> {args.output}")


def _faces(args: argparse.Namespace) -> None:
    from magicportrait.pipelines.faces import write_faces_picture
    from magicportrait.tracking import TrackerConfig

    faces = write_faces_picture(args.image, args.output, config_from_args(TrackerConfig, args))
    print(f"Found {len(faces)} face{'s' * (len(faces) != 1)} in {args.image} (numbered from the left): "
          f"{args.output}")
    for face in faces:
        print(f"  --face {face.number}   {face.face_box_flag}")


def _example(args: argparse.Namespace) -> None:
    from magicportrait.pipelines.example import write_example

    source, driving = write_example(args.output)
    print(f"Wrote the bundled example: {source} and {driving}")


def _add_inputs(parser: argparse.ArgumentParser) -> None:
    inputs = argument_group(parser, INPUT)
    inputs.add_argument("--source", "-s", help="Portrait image (jpg/png/webp).")
    inputs.add_argument("--driving", "-d", help="Driving video (mp4/mov/webm/avi/mkv).")
    inputs.add_argument("--motion", "-m", help="A saved aligned head track (aligned_head.npz of an earlier guide / "
                        "animate run of this portrait, possibly edited) to use instead of tracking --driving; "
                        "--driving is then optional (its audio and face crops are used when given).")
    inputs.add_argument("--example", action="store_true", help="Use the bundled example portrait and video.")
    argument_group(parser, OUTPUT).add_argument("--output", "-o", required=True, help="Output folder.")


def _add_console_flags(parser: argparse.ArgumentParser, default: object = NORMAL) -> None:
    """-v / -q, before or after the command (a subcommand's default must not overwrite the main parser's)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=VERBOSE, default=default,
                       help="Show debug messages, the libraries' log lines and warnings, and tracebacks.")
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=QUIET, default=default,
                       help="Print only errors and the final summary (no progress bars, no INFO messages).")


# Short usage lines: --help lists the options in sections.
PAIR_USAGE = "%(prog)s (--source IMAGE (--driving VIDEO | --motion FILE) | --example) -o DIR [options]"
USAGES = {"guide": PAIR_USAGE, "animate": PAIR_USAGE, "track": "%(prog)s INPUT -o TRACK.npz [options]",
          "demo": "%(prog)s [-o DIR] [options]",
          "generate": "%(prog)s --guidance DIR -o DIR [--reference IMAGE] [options]",
          "evaluate": "%(prog)s -p PRED -d DRIVING -s SOURCE [--gt GT] -o DIR [options]",
          "benchmark": "%(prog)s CLIPS -o DIR [options]", "faces": "%(prog)s IMAGE -o FACES.png [options]",
          "prepare": "%(prog)s VIDEOS -o DATA_DIR [options]"}
# Flags of a config that do nothing for a command: not offered there.
CODE_FILES = ("flame_codes", "source_flame_codes")  # one portrait and one driving video's codes: guide / animate
NOT_FOR_EVALUATE = ("flame_texture", *CODE_FILES)  # the head fit matters for motion metrics; its texture does not
NOT_FOR_ANIMATE = ("write_preview",)  # the generators write their own grid.mp4 (a guide-only preview otherwise)
# faces looks at one still image: the video tracking options do nothing there.
FACES_SKIPS = ("pose_refinement", "min_tracking_confidence", "box_scale", "box_smoothing", "relock_after_s",
               "settle_passes", "show_progress")


def build_parser() -> argparse.ArgumentParser:
    from magicportrait.evaluation.suite import EvaluationConfig
    from magicportrait.pipelines.animate import AnimateConfig
    from magicportrait.pipelines.guide import GuideConfig
    from magicportrait.tracking import TrackerConfig

    parser = argparse.ArgumentParser(prog="magicportrait", description=__doc__)
    parser.add_argument("--version", action="version", version=f"magicportrait {__version__}")
    _add_console_flags(parser)
    commands = parser.add_subparsers(dest="command", required=True)

    guide = commands.add_parser("guide", help="Render depth/normal/render guidance of the source face performing "
                                "the driving video's motion.")
    _add_inputs(guide)
    add_config_arguments(guide, GuideConfig)
    guide.set_defaults(handler=_guide)

    animate = commands.add_parser("animate", help="Reenact the portrait with the driving video's motion: the "
                                  "diffusion generator with --weights DIR, else the instant geometric one.")
    _add_inputs(animate)
    add_config_arguments(animate, AnimateConfig, skip=NOT_FOR_ANIMATE)
    animate.set_defaults(handler=_animate)

    generate = commands.add_parser("generate", help="The diffusion generator alone on a guidance folder (guide's "
                                   "output, or the official release's transfers/<name>/ with depth/ normal/ "
                                   "render/): writes result.mp4 and grid.mp4.")
    inputs = argument_group(generate, INPUT)
    inputs.add_argument("--guidance", "-g", required=True, help="Folder with depth/ normal/ render/ PNG frames.")
    inputs.add_argument("--reference", "-r", help="Reference portrait crop (default: the folder's source.png).")
    outputs = argument_group(generate, OUTPUT)
    outputs.add_argument("--output", "-o", required=True, help="Output folder.")
    outputs.add_argument("--fps", type=float, default=None, help="Frame rate of the result (default: the folder's "
                         "aligned_head.npz, else 24 like the official release).")
    add_config_arguments(generate, AnimateConfig, skip=GENERATE_SKIPS)
    generate.set_defaults(handler=_generate)

    track = commands.add_parser("track", help="Track the face in a video (or image) and save a Track .npz.")
    inputs = argument_group(track, INPUT)
    inputs.add_argument("input", help="Video or image file.")
    inputs.add_argument("--max-frames", type=positive_int, default=None, help="Track only the first N frames.")
    inputs.add_argument("--max-size", type=positive_int, default=1280, help="Downscale frames to this longer side.")
    argument_group(track, OUTPUT).add_argument("--output", "-o", required=True, help="Output .npz file.")
    add_config_arguments(track, TrackerConfig)
    track.set_defaults(handler=_track)

    demo = commands.add_parser("demo", help="Run the whole main job on the bundled example: writes result.mp4 and "
                               "grid.mp4 (the geometric generator unless diffusion weights are configured).")
    argument_group(demo, OUTPUT).add_argument("--output", "-o", default="outputs/demo",
                                              help="Output folder (default: outputs/demo).")
    add_config_arguments(demo, AnimateConfig, skip=NOT_FOR_ANIMATE)
    demo.set_defaults(handler=_demo)

    evaluate = commands.add_parser("evaluate", help="The paper's metrics (CSIM, LPIPS, FID, FVD, APD, AED, ...) of a "
                                   "generated video; writes metrics.json, metrics.md and per-frame plots.")
    inputs = argument_group(evaluate, INPUT)
    inputs.add_argument("--pred", "-p", required=True, help="Generated video, folder of frames, or a magicportrait "
                        "output folder (its result.mp4).")
    inputs.add_argument("--driving", "-d", required=True, help="The driving video it was made from.")
    inputs.add_argument("--source", "-s", required=True, help="The source portrait.")
    inputs.add_argument("--gt", help="Ground truth (self-reenactment): adds LPIPS, PSNR, SSIM and LMD.")
    argument_group(evaluate, OUTPUT).add_argument("--output", "-o", required=True,
                                                  help="Output folder for the report.")
    add_config_arguments(evaluate, EvaluationConfig, skip=NOT_FOR_EVALUATE)
    evaluate.set_defaults(handler=_evaluate)

    benchmark = commands.add_parser("benchmark", help="Self-reenactment protocol on a folder of clips: first frame "
                                    "as source, the clip as driving video and ground truth; reenact and evaluate "
                                    "each, then summarise.")
    inputs = argument_group(benchmark, INPUT)
    inputs.add_argument("clips", help="Folder of video clips (searched recursively).")
    inputs.add_argument("--max-clips", type=positive_int, default=None, help="Use only the first N clips.")
    argument_group(benchmark, OUTPUT).add_argument("--output", "-o", required=True, help="Output folder "
                                                   "(resumable: finished clips are skipped).")
    add_config_arguments(benchmark, AnimateConfig, skip=(*NOT_FOR_ANIMATE, *CODE_FILES))
    add_config_arguments(benchmark, EvaluationConfig, skip=CODE_FILES)
    benchmark.set_defaults(handler=_benchmark)

    from magicportrait.training.prepare import PrepareConfig

    prepare = commands.add_parser("prepare", help="Prepare a training dataset from a folder of face videos: 512 "
                                  "crops, tracks, head fits, guidance maps, a manifest with quality flags.")
    argument_group(prepare, INPUT).add_argument("videos", help="Folder of video clips (searched recursively).")
    argument_group(prepare, OUTPUT).add_argument("--output", "-o", required=True,
                                                 help="Dataset folder to write (DATA_DIR).")
    add_config_arguments(prepare, PrepareConfig, skip=CODE_FILES)
    prepare.set_defaults(handler=_prepare)

    train = commands.add_parser("train", help="Train stage 1 (images) or stage 2 (motion modules) from a YAML config "
                                "on one process; use `accelerate launch -m magicportrait.training.trainer` for more.")
    train.add_argument("--config", "-c", required=True, help="configs/stage1.yaml, configs/stage2.yaml, or your own.")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="Override a config value, e.g. --set run.max_steps=100 (repeatable).")
    train.set_defaults(handler=_train)

    faces = commands.add_parser("faces", help="Find every face of a portrait and write it with each face boxed "
                                "and numbered as --face N numbers them (the quickest way to choose one).")
    argument_group(faces, INPUT).add_argument("image", help="Portrait image.")
    argument_group(faces, OUTPUT).add_argument("--output", "-o", required=True,
                                               help="Picture to write, e.g. faces.png.")
    add_config_arguments(faces, TrackerConfig, skip=FACES_SKIPS)
    faces.set_defaults(handler=_faces)

    add_batch_command(commands)
    add_retarget_command(commands)
    add_ui_command(commands)
    add_weights_command(commands)

    example = commands.add_parser("example", help="Write the bundled example (source.png, driving.mp4).")
    example.add_argument("--output", "-o", required=True, help="Output folder.")
    example.set_defaults(handler=_example)
    for name, command in commands.choices.items():
        _add_console_flags(command, default=argparse.SUPPRESS)
        command.usage = USAGES.get(name, command.usage)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.verbose, args.quiet = args.verbosity == VERBOSE, args.verbosity == QUIET
    if args.quiet and hasattr(args, "show_progress"):
        args.show_progress = False
    try:
        with console(args.verbosity):
            if args.command in FOLDER_OUTPUTS:  # before any work: a refused -o must not cost minutes of tracking
                check_output_folder(args.output, args.command, FOLDER_OUTPUTS[args.command])
            status = args.handler(args)  # None, or an exit status (batch: 1 when some jobs failed)
    except MagicPortraitError as error:  # bad input or set-up; any other exception is a bug: its traceback shows
        if args.verbose:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no partial output was kept.", file=sys.stderr)
        return 130
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
