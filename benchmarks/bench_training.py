"""Training (issue 7): step time and peak memory of stage 1 and stage 2 at the tiny configuration on this CPU.

    python benchmarks/bench_training.py            # full (a few minutes on 2 cores)
    python benchmarks/bench_training.py --quick    # fewer steps, a smoke check

The dataset is real: the bundled example video prepared with ``magicportrait prepare`` at 64x64. Each configuration
runs in a fresh process (so its peak RSS, VmHWM, is its own): a short run and a longer one of the same configuration,
and the step time is their difference divided by the extra steps (set-up and the first steps' warm-up cancel out).
Configurations: ``configs/tiny_stage1.yaml`` and ``configs/tiny_stage2.yaml`` (batch 2, 64x64, 4-frame clips), each
with gradient checkpointing off (ours) and on (the baseline it is compared with: less memory, more time).
No GPU run: none was available when this was written (the SD-1.5-size figures at 512x512 need one).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from child import call_in_child, peak_rss_mib

ROOT = Path(__file__).resolve().parents[1]


def make_workspace(folder: Path) -> dict[str, str]:
    """A tiny release (the frozen VAE/text encoder and the starting weights) and a prepared dataset of real video."""
    import shutil

    from magicportrait.models.tiny import write_tiny_release
    from magicportrait.pipelines.example import write_example
    from magicportrait.training.prepare import PrepareConfig, prepare_dataset

    write_tiny_release(folder / "tiny_release")
    _, driving = write_example(folder / "example", num_frames=24)
    (folder / "videos").mkdir()
    shutil.copy(driving, folder / "videos" / "talk.mp4")
    prepare_dataset(folder / "videos", folder / "data", PrepareConfig(size=64, min_face_px=32, show_progress=False))
    return {"root": str(folder)}


def overrides(root: Path, stage: int, output: str, steps: int, checkpointing: bool) -> list[str]:
    values = [f"data.root={root / 'data'}", f"model.sd15={root / 'tiny_release/stable-diffusion-v1-5'}",
              f"model.vae={root / 'tiny_release/sd-vae-ft-mse'}", f"run.output_dir={root / output}",
              f"run.max_steps={steps}", f"run.checkpoint_steps={steps}", "run.show_progress=false",
              "run.resume=false", f"model.gradient_checkpointing={str(checkpointing).lower()}"]
    if stage == 1:
        values.append(f"model.init_checkpoint_dir={root / 'tiny_release/ckpts'}")
    else:
        values.append(f"model.stage1_checkpoint_dir={root / 'run_stage1_start/checkpoint-1'}")
    return values


def measure(root: str, stage: int, steps: int, checkpointing: bool, tag: str) -> dict:
    """Seconds of one ``train`` run of ``steps`` steps, and the process's peak RSS."""
    from magicportrait.training.trainer import train

    config = ROOT / "configs" / f"tiny_stage{stage}.yaml"
    began = time.perf_counter()
    train(config, overrides(Path(root), stage, f"run_{tag}", steps, checkpointing))
    return {"seconds": time.perf_counter() - began, "peak_rss_mib": peak_rss_mib()}


def _in_child(root: str, stage: int, steps: int, checkpointing: bool, tag: str) -> dict:
    """:func:`measure` in a fresh process, so each configuration's peak memory is its own."""
    return call_in_child("bench_training", "measure", root, stage, steps, checkpointing, tag)


def step_time(root: str, stage: int, checkpointing: bool, short: int, long: int) -> dict:
    tag = f"s{stage}_{'ckpt' if checkpointing else 'plain'}"
    first = _in_child(root, stage, short, checkpointing, tag + "_short")
    second = _in_child(root, stage, long, checkpointing, tag + "_long")
    return {"seconds_per_step": (second["seconds"] - first["seconds"]) / (long - short),
            "peak_rss_mib": second["peak_rss_mib"], "steps": [short, long]}


def run(quick: bool = False) -> dict:
    short, long = (2, 12) if quick else (3, 23)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_workspace(Path(tmp))["root"]
        _in_child(root, 1, 1, False, "stage1_start")  # the stage-1 checkpoint stage 2 starts from
        results = {f"stage{stage}": {"plain": step_time(root, stage, False, short, long),
                                     "gradient_checkpointing": step_time(root, stage, True, short, long)}
                   for stage in (1, 2)}
    return {"config": "configs/tiny_stage*.yaml: 64x64, batch 2, 4-frame clips", **results,
            "gpu": "not measured: no GPU was available"}


def summary(results: dict) -> list[str]:
    lines = []
    for stage in ("stage1", "stage2"):
        plain, checkpointed = results[stage]["plain"], results[stage]["gradient_checkpointing"]
        lines.append(f"{stage}, tiny: {plain['seconds_per_step']:.3f} s/step, peak RSS {plain['peak_rss_mib']:.0f} "
                     f"MiB; with gradient checkpointing {checkpointed['seconds_per_step']:.3f} s/step "
                     f"({checkpointed['seconds_per_step'] / plain['seconds_per_step']:.2f}x), "
                     f"{checkpointed['peak_rss_mib']:.0f} MiB")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Fewer steps (smoke check).")
    results = run(parser.parse_args().quick)
    print("\n".join(summary(results)))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
