"""``magicportrait retarget``: a still portrait's eye opening, lip opening and head turn, set by hand."""

from __future__ import annotations

import argparse
import dataclasses

from magicportrait.cli.args import add_config_arguments, argument_group, config_from_args
from magicportrait.config import INPUT, OUTPUT

USAGE = "%(prog)s --source IMAGE -o DIR [--eye-opening R] [--lip-opening R] [--yaw DEG] [options]"
# Options of a video run that do nothing for a single picture.
VIDEO_ONLY = ("max_frames", "driving_max_size", "write_frames", "write_preview", "keep_audio", "chunk_size",
              "min_tracking_confidence", "box_smoothing", "relock_after_s", "settle_passes")


def _skipped() -> tuple[str, ...]:
    from magicportrait.alignment import AlignmentConfig, MotionEdit

    return (*VIDEO_ONLY, *(item.name for item in dataclasses.fields(AlignmentConfig)),
            *("edit_" + item.name for item in dataclasses.fields(MotionEdit)))


def add_retarget_command(commands: argparse._SubParsersAction) -> None:
    from magicportrait.pipelines.geometric import GeometricConfig
    from magicportrait.pipelines.guide import GuideConfig
    from magicportrait.pipelines.retarget import RetargetConfig

    parser = commands.add_parser("retarget", help="Change a still portrait's eye opening, lip opening and head "
                                 "turn (picture -> picture, geometric generator).")
    argument_group(parser, INPUT).add_argument("--source", "-s", required=True, help="Portrait image.")
    argument_group(parser, OUTPUT).add_argument("--output", "-o", required=True, help="Output folder.")
    add_config_arguments(parser, RetargetConfig)
    add_config_arguments(parser, GuideConfig, skip=_skipped())
    add_config_arguments(parser, GeometricConfig, prefix="geometric_", skip=("geometric_chunk_size",))
    parser.usage = USAGE
    parser.set_defaults(handler=_retarget)


def _retarget(args: argparse.Namespace) -> None:
    from magicportrait.pipelines.animate import AnimateConfig
    from magicportrait.pipelines.geometric import GeometricConfig
    from magicportrait.pipelines.guide import GuideConfig
    from magicportrait.pipelines.retarget import RetargetConfig, RetargetPipeline

    retarget = config_from_args(RetargetConfig, args)
    config = AnimateConfig(backend="geometric", guide=config_from_args(GuideConfig, args),
                           geometric=config_from_args(GeometricConfig, args, "geometric_"))
    result = RetargetPipeline(config).run(args.source, args.output, retarget)
    print(f"Wrote the retargeted portrait to {result.output_dir}/")
    for name, path in result.files.items():
        print(f"  {name:13s} {path}")
