"""``magicportrait batch JOBS -o OUT``: the rows of a job file reenacted, resumably (:mod:`magicportrait.batch`)."""

from __future__ import annotations

import argparse

from magicportrait.cli.args import add_config_arguments, argument_group, config_from_args
from magicportrait.config import INPUT, OUTPUT

USAGE = "%(prog)s JOBS -o DIR [--workers N | --engine ray] [--evaluate] [animate options for every row]"
FAILED_JOBS = 1  # exit status when some jobs failed (bad input is 2, as everywhere)


def add_batch_command(commands: argparse._SubParsersAction) -> None:
    from magicportrait.batch import BatchConfig
    from magicportrait.pipelines.animate import AnimateConfig

    parser = commands.add_parser("batch", help="Reenact every row of a job file (CSV or JSONL: source, driving, "
                                 "name, options) into OUT/<name>/; resumable, on local workers, Ray or shards.")
    argument_group(parser, INPUT).add_argument("jobs", help="Job file: CSV with a header row, or JSONL; columns "
                                               "source, driving (video or aligned_head.npz), name, and any animate "
                                               "option (README, 'Batch runs').")
    argument_group(parser, OUTPUT).add_argument("--output", "-o", required=True, help="Output folder: one folder "
                                                "per job, summary.csv, summary.md.")
    add_config_arguments(parser, BatchConfig)
    add_config_arguments(parser, AnimateConfig, skip=("write_preview",))
    parser.usage = USAGE
    parser.set_defaults(handler=_batch)


def _batch(args: argparse.Namespace) -> int:
    from magicportrait.batch import BatchConfig, run_batch
    from magicportrait.cli.args import args_from_config
    from magicportrait.pipelines.animate import AnimateConfig

    config = config_from_args(BatchConfig, args)
    defaults = args_from_config(config_from_args(AnimateConfig, args))  # a bad batch-wide option fails here
    summary = run_batch(args.jobs, args.output, config, defaults=defaults)
    ran, failed = len(summary.ran), summary.failed
    print(f"{len(summary.jobs)} jobs in {args.jobs}: ran {ran} ({ran - len(failed)} done, {len(failed)} failed), "
          f"{len(summary.skipped_done)} already done, {len(summary.skipped_failed)} failed before (not retried), "
          f"{len(summary.invalid)} invalid. Results in {summary.output_dir}/")
    for name, path in summary.files.items():
        print(f"  {name:13s} {path}")
    for name in failed:
        print(f"  failed: {name}: {summary.ran[name].get('error')}")
    return FAILED_JOBS if failed else 0
