"""Benchmark: the original app's approach, sam mode and classical mode, side by side in one run.

``sam-droplet-bench [--data DIR] [--write docs/benchmarks.md]`` (or ``python -m
sam_droplet.tools.bench``) measures, on the same images and machine:

(a) ``original``: what the app this service replaces did: Gaussian blur and CLAHE, SAM's automatic
    mask generator (``points_per_side=32, crop_n_layers=1``), per-mask statistics, its post-filters
    (area above 1.5 x the mean, touching the border, circularity under 0.6; area 50 to 15000 px)
    and base64 PNG masks;
(b) ``sam``: this service's droplet-prompted SAM mode, through :func:`sam_droplet.segment` as the
    server runs it;
(c) ``classical``: this service's classical mode.

Every (image, mode) runs in a fresh process, so its peak RSS is its own. Per image it reports wall
time per stage, prompts decoded, droplets found and peak RSS, and the ratios (a)/(b) and (a)/(c).
It also times the mask decoder per prompt (the stock predictor path versus the windowed decoder)
and scores accuracy with the evaluator (:mod:`sam_droplet.tools.evaluate`) on the labelled sets:
generated ones always, and with ``--data DIR`` (a folder holding ``emulsion_gt/``, ``foam_gt/``
and ``samples/ddpcr_original/``) the team's real images too.

Without a real checkpoint (SAM_MODEL_PATH) a randomly initialised vit_t of the same architecture
is used, and the report says so: timings do not depend on the weights' values, masks do.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..settings import DETECTORS
from .throughput import ThroughputResult, child_env, measure_throughput, render_throughput

__all__ = ["decoder_costs", "main", "markdown_table", "original_pipeline", "render"]

# Files of a --data folder the benchmark uses when present.
DDPCR_IMAGES = ("samples/ddpcr_original/ddPCR_0_0.png", "samples/ddpcr_original/ddPCR_1_0.png")
EMULSION_IMAGE = "emulsion_gt/IMG_641.png"
LABELLED_SETS = ("emulsion_gt", "foam_gt")


# -- (a) the original app's pipeline ---------------------------------------------------------------


def _circularity(mask: np.ndarray) -> float:
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8) * 255, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return 0.0
    c = max(contours, key=cv2.contourArea)
    area, perimeter = cv2.contourArea(c), cv2.arcLength(c, True)
    return min(1.0, 4 * np.pi * area / perimeter**2) if perimeter > 0 and area > 0 else 0.0


def original_pipeline(rgb: np.ndarray, model: Any, crop_n_layers: int = 1, points_per_side: int = 32) -> dict[str, Any]:
    """The original app's processing of one image (see the module docstring); stage times in ms.

    ``points_per_side`` is the original's 32; fewer make a quick check of the same code.
    """
    import cv2
    import torch

    from ..sam.grid import generate_masks
    from ..sam.model import sam_package

    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    img = cv2.GaussianBlur(rgb, (3, 3), 1.0)
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)
    lab[:, :, 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(lab[:, :, 0])
    img = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    timing["preprocess"] = (time.perf_counter() - t0) * 1000

    t0 = time.perf_counter()
    generator = sam_package(model.model_type).SamAutomaticMaskGenerator(
        model.sam, points_per_side=points_per_side, crop_n_layers=crop_n_layers
    )
    with torch.inference_mode(), model.autocast():
        masks = generate_masks(generator, img)  # the original crashed when no mask survived
    timing["generate"] = (time.perf_counter() - t0) * 1000
    crops = 1 + sum(4**i for i in range(1, crop_n_layers + 1))
    prompts = crops * points_per_side**2

    t0 = time.perf_counter()
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    for m in masks:
        seg = m["segmentation"]
        m["mean"] = float(gray[seg].mean()) if seg.any() else 0.0
        m["touches_edge"] = bool(seg[0].any() or seg[-1].any() or seg[:, 0].any() or seg[:, -1].any())
        m["circularity"] = _circularity(seg)
    kept = []
    if len(masks) >= 3:
        limit = 1.5 * float(np.mean([m["area"] for m in masks]))
        kept = [m for m in masks if m["area"] <= limit and not m["touches_edge"] and m["circularity"] >= 0.6]
    else:
        kept = list(masks)
    kept = [m for m in kept if 50 <= m["area"] <= 15000]
    timing["postfilter"] = (time.perf_counter() - t0) * 1000

    t0 = time.perf_counter()
    payload = 0
    for m in masks + kept:  # the original returned every mask and the kept ones, as PNGs
        _, png = cv2.imencode(".png", m["segmentation"].astype(np.uint8) * 255)
        payload += len(base64.b64encode(png.tobytes()))
    timing["serialize"] = (time.perf_counter() - t0) * 1000
    return {
        "timing_ms": timing,
        "prompts": prompts,
        "masks": len(masks),
        "droplets": len(kept),
        "payload_bytes": payload,
    }


# -- one (image, mode) in a fresh process -------------------------------------------------------------


def _measure_one(mode: str, image_path: str, checkpoint: str) -> dict[str, Any]:
    from ..io.read import read_image
    from ..io.write import render
    from ..pipeline import Engine, load_model, segment

    data = Path(image_path).read_bytes()
    t_load = time.perf_counter()
    engine = Engine() if mode == "classical" else load_model(checkpoint, required=True)
    load_s = time.perf_counter() - t_load
    start = time.perf_counter()
    if mode == "original":
        t0 = time.perf_counter()
        image = read_image(data)
        decode_ms = (time.perf_counter() - t0) * 1000
        out = original_pipeline(image.rgb8, engine.model)
        out["timing_ms"] = {"decode": decode_ms, **out["timing_ms"]}
    else:
        result = segment(data, engine, segmenter=mode)
        body = render(result, "json").body  # adds the serialize stage
        out = {
            "timing_ms": dict(result.timing_ms),
            "prompts": result.details.get("sam", {}).get("prompts", 0),
            "droplets": len(result.droplets),
            "payload_bytes": len(body),
        }
    out["seconds"] = time.perf_counter() - start
    out["load_seconds"] = load_s
    out["peak_rss_mb"] = _peak_rss_mb()
    out["device"] = str(engine.model.device) if engine.model is not None else "cpu"
    return out


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    Linux's ``ru_maxrss`` keeps the peak of the process image before ``exec``: a worker started by
    the benchmark would report the benchmark's own size (the parent holds torch and a model). The
    peak of the process's own memory is ``VmHWM`` in /proc/self/status; ``ru_maxrss`` elsewhere.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure_in_fresh_process(mode: str, image: Path, checkpoint: Path, timeout: float) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "sam_droplet.tools.bench",
        "--worker",
        mode,
        str(image),
        "--checkpoint",
        str(checkpoint),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env())
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} on {image.name} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- decoder cost per prompt ----------------------------------------------------------------------------


def decoder_costs(
    checkpoint: Path, image: Path, batches: tuple[int, ...] = (4, 64), seconds: float = 4.0
) -> list[dict]:
    """Milliseconds per decoded prompt: the stock predictor path (full-resolution masks, as
    ``SamPredictor.predict_torch`` returns them) versus the windowed decoder and low-res paste."""
    import torch

    from ..engine.detect import detect_droplets
    from ..io.read import read_image
    from ..sam.model import load_sam, sam_package
    from ..sam.refine import SamRefiner

    model = load_sam(checkpoint, "vit_t", "auto")
    img = read_image(image)
    dets = detect_droplets(img.gray).instances
    refiner = SamRefiner(model, batch_size=1)
    enc = refiner.encode(img.rgb8)
    predictor = sam_package(model.model_type).SamPredictor(model.sam)
    predictor.set_image(img.rgb8)
    h, w = img.height, img.width
    c = np.array([d.center for d in dets])
    # The prompts sam mode sends: the same boxes and paste regions.
    boxes, regions = refiner.prompt_geometry(c, np.array([d.radius for d in dets]), (h, w))
    rows = []
    for b in batches:
        sl = slice(0, b)

        def stock(sl: slice = sl) -> None:
            with torch.inference_mode(), model.autocast():
                tb = predictor.transform.apply_boxes_torch(torch.as_tensor(boxes[sl], dtype=torch.float32), (h, w))
                tp = predictor.transform.apply_coords_torch(
                    torch.as_tensor(c[sl][:, None, :], dtype=torch.float32), (h, w)
                )
                masks, _, _ = predictor.predict_torch(tp, torch.ones(tp.shape[:2]), boxes=tb, multimask_output=True)
                masks.cpu()

        def ours(sl: slice = sl) -> None:
            logits, _, tops, _ = refiner.decode(enc, boxes[sl], c[sl], regions[sl])
            for k in range(len(logits)):
                refiner.paste(logits[k], tuple(tops[k]), enc.scale, enc.view, tuple(regions[k]))

        row = {"batch": b}
        for name, fn in (("stock", stock), ("windowed", ours)):
            fn()
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                fn()
                n += b
            row[name] = (time.perf_counter() - t0) * 1000 / n
        row["ratio"] = row["windowed"] / row["stock"]
        rows.append(row)
    return rows


# -- accuracy ------------------------------------------------------------------------------------------


def synthetic_sets(folder: Path) -> dict[str, Path]:
    """Write the synthetic evaluation sets (seeds 1 and 2, images and exact labels) into ``folder``."""
    from .synthetic import write_sets

    return {f"synthetic {kind.replace('_', ' ')}": sub for kind, sub in write_sets(folder, (1, 2)).items()}


def accuracy(
    folders: dict[str, Path], segmenter: str = "classical", checkpoint: Path | None = None
) -> list[dict[str, Any]]:
    """Scores per folder (:func:`sam_droplet.tools.evaluate.evaluate_folder`); sam mode needs ``checkpoint``."""
    from ..pipeline import load_model
    from .evaluate import evaluate_folder, summarize_scores

    engine = load_model(checkpoint, required=True) if segmenter != "classical" else None
    rows = []
    for name, folder in folders.items():
        scores = evaluate_folder(folder, engine, segmenter=segmenter)
        if scores:
            sam = [s.details.get("sam", {}) for s in scores]
            rows.append(
                {
                    "set": name,
                    "segmenter": segmenter,
                    "views": [s.get("views", 0) for s in sam],
                    "prompts": sum(s.get("prompts", 0) for s in sam),
                    **summarize_scores(scores),
                }
            )
    return rows


# -- report -----------------------------------------------------------------------------------------------


def _machine() -> dict[str, str]:
    import psutil
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory_gb": f"{psutil.virtual_memory().total / 2**30:.0f}",
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": str(torch.get_num_threads()),
    }


def _describe_machine(m: dict[str, str]) -> str:
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, GPU: {m['gpu']}; "
        f"Python {m['python']}, torch {m['torch']} ({m['torch_threads']} threads)."
    )


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """Lines of a Markdown table, followed by a blank line."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Regenerate with `{report['command']}` (about {report['minutes']:.0f} minutes on the machine below).",
        "",
        f"Machine: {_describe_machine(m)} Date: {report['date']}.",
        "",
        f"Checkpoint: {report['checkpoint']}",
        "",
        "## Speed: the original approach (a) against sam mode (b) and classical mode (c)",
        "",
        "Wall time per image in seconds (model loading excluded), prompts decoded by SAM, droplets "
        "returned, peak RSS of the process. Stages in ms.",
        "",
    ]
    lines += markdown_table(
        ["image", "mode", "seconds", "prompts", "droplets", "peak RSS MB", "stages (ms)"],
        [
            [
                r["image"],
                r["mode"],
                f"{r['seconds']:.2f}",
                r["prompts"],
                r["droplets"],
                f"{r['peak_rss_mb']:.0f}",
                ", ".join(f"{k} {v:.0f}" for k, v in r["timing_ms"].items()),
            ]
            for r in report["speed"]
        ],
    )
    if report["ratios"]:
        lines += markdown_table(
            ["image", "(a)/(b)", "(a)/(c)"],
            [[r["image"], _fmt(r.get("a_over_b"), 1), _fmt(r.get("a_over_c"), 1)] for r in report["ratios"]],
        )
    if report.get("decoder"):
        lines += [
            "## Mask decoder cost per prompt",
            "",
            "Milliseconds per decoded prompt on one image embedding: the stock predictor path "
            "(`SamPredictor.predict_torch`, three masks upsampled to full resolution) against the "
            "windowed decoder with low-resolution paste used by sam mode.",
            "",
        ]
        lines += markdown_table(
            ["batch", "stock ms/prompt", "windowed ms/prompt", "windowed / stock"],
            [[r["batch"], f"{r['stock']:.1f}", f"{r['windowed']:.1f}", f"{r['ratio']:.2f}"] for r in report["decoder"]],
        )
    if report.get("accuracy"):
        lines += [
            "## Accuracy (classical mode, default filters)",
            "",
            "Instances match at IoU >= 0.5; ground truth touching the border is ignored with its "
            "matches; unmatched predictions under 10 px across are ignored (`sam-droplet-evaluate`).",
            "",
        ]
        lines += markdown_table(
            ["set", "images", "precision", "recall", "F1", "mean IoU", "median diameter error", "s/image"],
            [
                [
                    r["set"],
                    r["images"],
                    f"{r['precision']:.3f}",
                    f"{r['recall']:.3f}",
                    f"{r['f1']:.3f}",
                    _fmt(r["mean_iou"], 3),
                    _fmt(r["median_diameter_error"], 3),
                    _fmt(r["seconds_per_image"]),
                ]
                for r in report["accuracy"]
            ],
        )
    if report.get("tiling"):
        classical = {r["set"]: r for r in report.get("accuracy", [])}
        lines += [
            "## Tiling in sam mode",
            "",
            "The same synthetic images through sam mode: droplets under 12 px across make it prompt SAM "
            "per overlapping tile (views per image below) and merge duplicates at the seams. Recall "
            "equal to classical mode's means no droplet is lost between tiles. With random weights SAM's "
            "own masks fail the agreement check, so this measures the tiling and seam merge, not SAM's "
            "masks.",
            "",
        ]
        lines += markdown_table(
            ["set", "views per image", "prompts", "recall (sam)", "recall (classical)", "F1 (sam)", "s/image"],
            [
                [
                    r["set"],
                    ", ".join(str(v) for v in r["views"]),
                    r["prompts"],
                    f"{r['recall']:.3f}",
                    f"{classical[r['set']]['recall']:.3f}" if r["set"] in classical else "",
                    f"{r['f1']:.3f}",
                    _fmt(r["seconds_per_image"]),
                ]
                for r in report["tiling"]
            ],
        )
    if report.get("throughput"):
        lines += render_throughput(ThroughputResult(**report["throughput"]))
    return "\n".join(lines)


def default_images(tmp: Path, data: Path | None) -> list[Path]:
    """A generated 1024x1024 packed monolayer, and the team's images when ``data`` holds them."""
    import cv2

    from . import synthetic

    out = []
    syn = synthetic.packed_monolayer(shape=(1024, 1024), radius=15.0, seed=7)
    path = tmp / "synthetic_packed_1024.png"
    cv2.imwrite(str(path), syn.image)
    out.append(path)
    if data is not None:
        out += [data / rel for rel in (DDPCR_IMAGES[0], EMULSION_IMAGE) if (data / rel).is_file()]
    return out


def throughput_images(tmp: Path, data: Path | None) -> list[Path]:
    """The 1024x1024 ddPCR images when ``data`` holds them (the GPU target's images), else a generated one."""
    found = [data / rel for rel in DDPCR_IMAGES if (data / rel).is_file()] if data is not None else []
    return found or default_images(tmp, None)[:1]


def measure_tracking(tmp: Path, n_frames: int = 120) -> list[str]:
    """Frames per second of ``track`` (read, segment, link) on a generated channel-flow video, as
    AVI and as TIFF, with its error against the truth; a Markdown table."""
    from ..motion import track
    from .synthetic_video import channel_flow, write_avi, write_tiff

    video = channel_flow(n_frames=n_frames)
    rows = []
    for path in (write_avi(video, tmp / "flow.avi"), write_tiff(video, tmp / "flow.tif")):
        t0 = time.perf_counter()
        result = track(path)
        seconds = time.perf_counter() - t0
        s = result.summary
        rows.append(
            [
                path.suffix[1:].upper(),
                f"{n_frames / seconds:.1f}",
                f"{100 * (s['crossing_frequency_hz'] / video.crossing_frequency_hz() - 1):+.2f} %",
                f"{100 * (s['median_speed_px_per_s'] / video.main_speed - 1):+.2f} %",
                s["tracks"],
                s["merges"],
            ]
        )
    head = f"Machine: {_describe_machine(_machine()).rstrip('.')}. {n_frames} frames of 480x160, classical mode, one process."
    table = markdown_table(["container", "frames/s", "frequency error", "speed error", "tracks", "merges"], rows)
    return [head, "", *table]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sam-droplet-bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="*", type=Path, help="images (default: a generated one and --data's)")
    parser.add_argument(
        "--data", type=Path, help="the team's data folder (emulsion_gt/, foam_gt/, samples/ddpcr_original/)"
    )
    parser.add_argument("--modes", default="original,sam,classical", help="comma-separated: original,sam,classical")
    parser.add_argument(
        "--original-images", type=int, default=1, help="run (a) on the first N images only (it is slow)"
    )
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="SAM checkpoint (default: SAM_MODEL_PATH, else random)"
    )
    parser.add_argument("--no-decoder", action="store_true", help="skip the per-prompt decoder timing")
    parser.add_argument("--no-accuracy", action="store_true", help="skip the accuracy evaluation")
    parser.add_argument("--write", type=Path, help="write the Markdown report here (e.g. docs/benchmarks.md)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per (image, mode)")
    parser.add_argument("--no-throughput", action="store_true", help="skip the warm sam-mode throughput run")
    parser.add_argument(
        "--throughput-only",
        action="store_true",
        help="only the warm sam-mode throughput run (default images: the 1024x1024 ddPCR images)",
    )
    parser.add_argument(
        "--tracking-only",
        action="store_true",
        help="only tracking: frames per second of a generated 480x160 channel-flow video, classical mode",
    )
    parser.add_argument("--workers", type=int, default=1, help="throughput: worker processes at once")
    parser.add_argument("--rounds", type=int, default=2, help="throughput: timed passes over the images")
    parser.add_argument(
        "--detector",
        choices=DETECTORS,
        default="auto",
        help="throughput: what finds the droplets SAM refines",
    )
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "IMAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(_measure_one(args.worker[0], args.worker[1], str(args.checkpoint))))
        return 0

    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="sam_droplet_bench_"))
    if args.tracking_only:
        print("\n".join(measure_tracking(tmp)))
        return 0
    checkpoint = args.checkpoint or Path(os.environ.get("SAM_MODEL_PATH", "model/mobile_sam.pt"))
    if checkpoint.is_file():
        described = f"`{checkpoint}` (real weights)"
    else:
        from ..sam.model import save_random_checkpoint

        checkpoint = save_random_checkpoint(tmp / "random_vit_t.pt", "vit_t")
        described = (
            "no real checkpoint available: a randomly initialised MobileSAM (vit_t) of the real "
            "architecture. Timings are faithful; SAM's masks are meaningless, so in sam mode they fail "
            "the agreement check and the detector's masks are returned."
        )
    if args.data is not None and not args.data.is_dir():
        parser.error(f"--data {args.data}: no such folder")
    if args.throughput_only:
        result = measure_throughput(
            args.images or throughput_images(tmp, args.data),
            checkpoint,
            args.workers,
            args.rounds,
            args.timeout,
            args.detector,
        )
        lines = [f"Machine: {_describe_machine(_machine())}", "", f"Checkpoint: {described}", ""]
        return _publish("\n".join(lines + render_throughput(result)), asdict(result), args.write)
    images = args.images or default_images(tmp, args.data)
    modes = [m for m in args.modes.split(",") if m]
    speed: list[dict[str, Any]] = []
    for i, image in enumerate(images):
        for mode in modes:
            if mode == "original" and i >= args.original_images:
                continue
            print(f"{image.name}: {mode} ...", file=sys.stderr, flush=True)
            row = _measure_in_fresh_process(mode, image, checkpoint, args.timeout)
            speed.append({"image": image.name, "mode": mode, **row})
            print(f"  {row['seconds']:.2f} s, {row['droplets']} droplets, {row['peak_rss_mb']:.0f} MB", file=sys.stderr)
    ratios = []
    for image in images:
        by = {r["mode"]: r for r in speed if r["image"] == image.name}
        if "original" in by:
            ratios.append(
                {
                    "image": image.name,
                    "a_over_b": by["original"]["seconds"] / by["sam"]["seconds"] if "sam" in by else None,
                    "a_over_c": by["original"]["seconds"] / by["classical"]["seconds"] if "classical" in by else None,
                }
            )
    command = "sam-droplet-bench" + (f" --data {args.data}" if args.data else "") + " --write docs/benchmarks.md"
    report: dict[str, Any] = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "machine": _machine(),
        "checkpoint": described,
        "speed": speed,
        "ratios": ratios,
    }
    if not args.no_decoder:
        print("decoder cost per prompt ...", file=sys.stderr, flush=True)
        report["decoder"] = decoder_costs(checkpoint, images[0])
    if not args.no_accuracy:
        print("accuracy ...", file=sys.stderr, flush=True)
        folders = synthetic_sets(tmp / "synthetic")
        for name in LABELLED_SETS:
            if args.data is not None and (args.data / name).is_dir():
                folders[name] = args.data / name
        report["accuracy"] = accuracy(folders)
        # Small droplets make sam mode tile the image: the same images through it show whether
        # prompting per tile and merging at the seams loses droplets.
        tiled = {k: v for k, v in folders.items() if k == "synthetic dense small"}
        print("tiling in sam mode ...", file=sys.stderr, flush=True)
        report["tiling"] = accuracy(tiled, "sam", checkpoint)
    if not args.no_throughput:
        print("sam-mode throughput ...", file=sys.stderr, flush=True)
        report["throughput"] = asdict(
            measure_throughput(
                throughput_images(tmp, args.data), checkpoint, args.workers, args.rounds, args.timeout, args.detector
            )
        )
    report["minutes"] = (time.perf_counter() - started) / 60
    return _publish(render(report), report, args.write)


def _publish(text: str, data: dict[str, Any], path: Path | None) -> int:
    """Print the Markdown report; with ``path``, write it there and the data beside it as JSON."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.with_suffix(".json").write_text(json.dumps(data, indent=2, default=str))
    print(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
