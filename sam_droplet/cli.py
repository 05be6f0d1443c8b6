"""Command line: ``sam-droplet serve | segment | track | worker | train | weights | config``.

``segment`` runs the same pipeline as the server on files or folders, without a server, and writes
one output per image plus ``summary.csv`` for the batch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .engine.detect import APPEARANCES
from .engine.fluorescence import THRESHOLD_METHODS
from .errors import ConfigError, DropletError, StartupError
from .io.read import IMAGE_SUFFIXES
from .io.write import FORMATS
from .sam.model import MODEL_TYPES
from .settings import DETECTORS, SEGMENTERS, detector_overrides

__all__ = ["main"]


def _image_files(inputs: list[str]) -> list[Path]:
    """Image files named directly or found (non-recursively) in named folders, sorted."""
    out: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))
        elif path.is_file():
            out.append(path)
        else:
            raise SystemExit(f"sam-droplet: {raw}: no such file or folder")
    return out


def _add_detector_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--detector", choices=DETECTORS, help="what finds the droplets (DETECTOR; default auto)")
    parser.add_argument(
        "--droplet-model", metavar="FILE", help="droplet model weights (DROPLET_MODEL_PATH; default: shipped)"
    )


def _detector_overrides(args: argparse.Namespace) -> dict[str, str]:
    """The engine settings ``--detector`` and ``--droplet-model`` override."""
    return detector_overrides(args.detector, args.droplet_model)


def _cmd_serve(args: argparse.Namespace) -> int:
    from .web import create_app
    from .web.config import Config

    overrides = _detector_overrides(args)
    if args.host:
        overrides["FLASK_HOST"] = args.host
    if args.port:
        overrides["FLASK_PORT"] = str(args.port)
    cfg = Config.from_env(overrides)
    app = create_app(cfg)
    server = cfg.server
    if args.server == "waitress":
        from .web.waitress_server import serve, settings_from_env

        settings = settings_from_env(server)
        print(
            f"sam-droplet on http://{server.host}:{server.port} (waitress, {settings['threads']} threads)",
            file=sys.stderr,
        )
        serve(app, **settings)
    else:
        app.run(host=server.host, port=server.port, debug=server.debug, use_reloader=False)
    return 0


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _channels(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        bf, fl = (int(v) for v in text.split(","))
    except ValueError:
        raise SystemExit(
            f"sam-droplet: --channels {text!r}: give two indices, bright-field then fluorescence: 0,1"
        ) from None
    return bf, fl


def _cmd_segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .errors import InvalidOptions
    from .io.read import read_channel, read_image
    from .io.report import page_from_result, report_pdf
    from .io.write import batch_row, render, write_batch_csv
    from .pipeline import Engine, SegmentOptions, segment
    from .settings import EngineSettings

    files = _image_files(args.inputs)
    if not files:
        print("sam-droplet: no images found", file=sys.stderr)
        return 1
    options = SegmentOptions(
        segmenter=args.segmenter,
        filters=json.loads(args.filters) if args.filters else None,
        preset=args.preset,
        um_per_px=args.um_per_px,
        appearance=args.appearance,
        fluorescence_threshold=args.fluorescence_threshold,
        threshold_method=args.threshold_method,
        spot_diameter_px=args.spot_diameter,
        contents=True if args.contents else None,
    )
    options.validate()
    channels = _channels(args.channels)
    # The model is loaded only when the chosen segmenter needs it.
    overrides = {"SEGMENTER": args.segmenter} if args.segmenter else {}
    engine = Engine.start(EngineSettings.from_env({**overrides, **_detector_overrides(args)}))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    pages: list[Any] = []  # report pages, with --report
    failures = 0
    for path in tqdm(files, desc="segmenting", unit="image", disable=args.quiet):
        start = time.perf_counter()
        try:
            if channels:
                image, fluorescence = read_channel(path, channels[0]), read_channel(path, channels[1])
            else:
                image, fluorescence = read_image(path), None
                if args.fluorescence:
                    fl_path = Path(args.fluorescence.format(stem=path.stem, dir=path.parent, ext=path.suffix))
                    if not fl_path.is_file():
                        raise InvalidOptions(f"fluorescence image {fl_path} not found")
                    fluorescence = read_image(fl_path)
            result = segment(image, engine, fluorescence=fluorescence, **asdict(options))
            out = render(result, args.format, file_name=path.name)
        except DropletError as exc:
            failures += 1
            tqdm.write(f"{path}: {exc.message}", file=sys.stderr)
            rows.append({"file": str(path), "error": exc.message})
            continue
        (out_dir / f"{path.stem}{out.suffix}").write_bytes(out.body)
        rows.append(batch_row(result, str(path), time.perf_counter() - start))
        if args.report:
            pages.append(page_from_result(result, path.name))
            (out_dir / f"{path.stem}_report.pdf").write_bytes(report_pdf(pages[-1:]))
        if not args.quiet:
            size, unit = result.summary["size"], result.summary["size"]["unit"]
            tqdm.write(
                f"{path.name}: {size['n']} droplets, mean {_number(size['mean'])} {unit}, CV {_number(size['cv'])}, "
                f"Dv50 {_number(size['dv50'])} {unit}, span {_number(size['span'])}, D[3,2] {_number(size['d32'])} {unit}, "
                f"{len(result.summary['populations'])} population(s)",
                file=sys.stderr,
            )
    write_batch_csv(rows, out_dir / "summary.csv")
    if args.report and len(pages) > 1:
        (out_dir / "batch_report.pdf").write_bytes(report_pdf(pages))
    if not args.quiet:
        total = sum(r.get("droplets") or 0 for r in rows)
        print(f"{len(rows) - failures} image(s), {total} droplets -> {out_dir}", file=sys.stderr)
    return 1 if failures else 0


def _cmd_track(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .motion import track
    from .pipeline import Engine
    from .settings import EngineSettings

    engine = Engine.start(EngineSettings.from_env({"SEGMENTER": args.segmenter} if args.segmenter else {}))
    options = {"segmenter": args.segmenter, "preset": args.preset, "um_per_px": args.um_per_px}
    if args.appearance:
        options["appearance"] = args.appearance
    out_dir = Path(args.out)
    failures = 0
    for path in (Path(p) for p in args.videos):
        with tqdm(desc=path.name, unit="frame", disable=args.quiet) as bar:

            def progress(done: int, total: int, bar: tqdm = bar) -> None:
                bar.total = total
                bar.update(done - bar.n)

            try:
                result = track(
                    path,
                    engine,
                    fps=args.fps,
                    frame_step=args.frame_step,
                    max_frames=args.max_frames,
                    max_distance_px=args.max_distance,
                    max_gap=args.max_gap,
                    on_frame=progress,
                    **{k: v for k, v in options.items() if v is not None},
                )
            except DropletError as exc:
                failures += 1
                tqdm.write(f"{path}: {exc.message}", file=sys.stderr)
                continue
        stems = [Path(v).stem for v in args.videos]
        name = path.stem if stems.count(path.stem) == 1 else f"{path.stem}_{path.suffix.lstrip('.')}"
        folder = out_dir / name if len(args.videos) > 1 else out_dir
        result.write(folder)
        if not args.quiet:
            s = result.summary
            unit = "Hz" if s["fps"] else "per frame"
            frequency = s.get("crossing_frequency_hz", s.get("crossing_frequency_per_frame"))
            speed = s.get("median_speed_px_per_s", s.get("median_speed_px_per_frame"))
            print(
                f"{path.name}: {s['frames']} frames, {s['tracks']} tracks, crossing frequency "
                f"{_number(frequency)} {unit}, median speed {_number(speed)} px/{'s' if s['fps'] else 'frame'}, "
                f"{s['merges']} merge(s), {s['splits']} split(s) -> {folder}",
                file=sys.stderr,
            )
    return 1 if failures else 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from redis import Redis
    from rq import Queue, SimpleWorker

    from .jobs import QUEUE_NAME, JobStore, default_results_dir
    from .web.config import Config

    server = Config.from_env().server
    url = args.url or server.job_queue_url
    if not url:
        raise SystemExit("sam-droplet: set JOB_QUEUE_URL (or --url redis://host:6379/0) to the web service's queue")
    root = server.results_dir or default_results_dir()
    JobStore(root)  # the folder exists before the first job
    connection = Redis.from_url(url)
    # SimpleWorker runs jobs in this process, so the model loads once per worker (and CUDA, if
    # any, is never initialised before a fork).
    worker = SimpleWorker([Queue(QUEUE_NAME, connection=connection)], connection=connection)
    print(
        f"sam-droplet worker {worker.name}: queue {QUEUE_NAME} on {url.split('@')[-1]}, results in {root}",
        file=sys.stderr,
    )
    worker.work(burst=args.burst, logging_level="WARNING")
    return 0


def _cmd_weights(args: argparse.Namespace) -> int:
    from .sam.weights import CHECKPOINTS, WeightsError, download, verify

    try:
        if args.action == "download":
            dest = Path(args.path) if args.path else Path("model") / CHECKPOINTS[args.model].file_name
            path = download(dest, args.model, url=args.url, expected_sha256=args.sha256, progress=not args.quiet)
            print(f"saved {path} (SHA-256 verified)")
        else:
            from .settings import EngineSettings

            path = Path(args.path) if args.path else EngineSettings.from_env().model_path
            digest = verify(path, args.model)
            print(f"{path}: OK (SHA-256 {digest})")
    except WeightsError as exc:
        print(f"sam-droplet: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .training import TrainConfig, train

    if args.patch % 16 or args.patch < 32:
        raise SystemExit("sam-droplet train: --patch must be a multiple of 16, at least 32")
    for name in ("epochs", "steps", "batch"):
        if getattr(args, name) < 1:
            raise SystemExit(f"sam-droplet train: --{name} must be at least 1")
    if not 0 <= args.val_fraction < 1:
        raise SystemExit("sam-droplet train: --val-fraction must be from 0 to under 1")
    config = TrainConfig(
        data=list(args.data),
        out=args.out,
        init=args.init,
        generated=args.generated,
        epochs=args.epochs,
        steps=args.steps,
        batch=args.batch,
        patch=args.patch,
        lr=args.lr,
        seed=args.seed,
        val_fraction=args.val_fraction,
        threads=args.threads,
    )
    try:
        done = train(config, progress=not args.quiet)
    except ValueError as exc:
        raise SystemExit(f"sam-droplet train: {exc}") from None
    best = done["history"][done["best_epoch"] - 1]
    shown = f", validation F1 {best['val_f1']:.3f}" if "val_f1" in best else ""
    print(f"wrote {done['out']} (epoch {done['best_epoch']}{shown}; weights version {done['version']})")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from .web.config import Config

    for key, value in Config.from_env().describe().items():
        print(f"{key}={value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sam-droplet", description="Droplet segmentation and analysis.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the web service (configured by the environment and .env)")
    serve.add_argument("--host", help="bind address (FLASK_HOST)")
    serve.add_argument("--port", type=int, help="port (FLASK_PORT)")
    serve.add_argument(
        "--server",
        choices=("waitress", "flask"),
        default="waitress",
        help="waitress (default, production-grade) or Flask's development server",
    )
    _add_detector_arguments(serve)
    serve.set_defaults(func=_cmd_serve)

    seg = sub.add_parser("segment", help="segment images or folders without a server")
    seg.add_argument("inputs", nargs="+", metavar="IMG_OR_DIR")
    seg.add_argument("--out", required=True, help="output folder")
    seg.add_argument("--format", choices=tuple(FORMATS), default="csv")
    seg.add_argument("--um-per-px", type=float, help="calibration in micrometres per pixel")
    seg.add_argument("--segmenter", choices=SEGMENTERS)
    seg.add_argument("--preset", help="filter preset (see GET /defaults; default auto: chosen from each image)")
    seg.add_argument("--filters", help="filters as JSON, e.g. '{\"diameter_min\": 10}'")
    seg.add_argument("--appearance", choices=APPEARANCES)
    _add_detector_arguments(seg)
    seg.add_argument(
        "--fluorescence",
        metavar="PATH",
        help="fluorescence image of the same field: a path, or a template with {dir}, {stem}, {ext} "
        "for several inputs, e.g. '{dir}/{stem}_fl{ext}'",
    )
    seg.add_argument("--channels", metavar="BF,FL", help="bright-field and fluorescence channel of multi-channel files")
    seg.add_argument("--fluorescence-threshold", type=float, help="positive above this corrected mean (default: auto)")
    seg.add_argument("--threshold-method", choices=tuple(THRESHOLD_METHODS), default="otsu")
    seg.add_argument("--spot-diameter", type=float, default=5.0, help="objects counted per droplet, diameter in px")
    seg.add_argument(
        "--contents",
        action="store_true",
        help="count the objects inside each droplet in bright field (as the preset droplets_with_contents does)",
    )
    seg.add_argument(
        "--report", action="store_true", help="also a one-page PDF report per image, and batch_report.pdf for several"
    )
    seg.add_argument("--quiet", action="store_true", help="no progress bar")
    seg.set_defaults(func=_cmd_segment)

    trk = sub.add_parser("track", help="track droplets through videos (AVI, MP4, MOV) or multi-page TIFF stacks")
    trk.add_argument("videos", nargs="+", metavar="VIDEO")
    trk.add_argument("--out", required=True, help="output folder (a subfolder per video when there are several)")
    trk.add_argument("--fps", type=float, help="frames per second, overriding the file's")
    trk.add_argument("--frame-step", type=int, default=1, help="analyse every N-th frame")
    trk.add_argument("--max-frames", type=int, help="stop after this many analysed frames")
    trk.add_argument(
        "--max-distance", type=float, help="farthest move between analysed frames, px (default: a diameter)"
    )
    trk.add_argument("--max-gap", type=int, default=1, help="frames a droplet may be missed in and keep its track")
    trk.add_argument("--um-per-px", type=float, help="calibration in micrometres per pixel")
    trk.add_argument("--segmenter", choices=SEGMENTERS)
    trk.add_argument("--preset", help="filter preset (see GET /defaults)")
    trk.add_argument("--appearance", choices=APPEARANCES)
    trk.add_argument("--quiet", action="store_true", help="no progress bar")
    trk.set_defaults(func=_cmd_track)

    wk = sub.add_parser("worker", help="run jobs from the queue (JOB_QUEUE_URL), on any machine sharing RESULTS_DIR")
    wk.add_argument("--url", help="redis URL of the queue (default: JOB_QUEUE_URL)")
    wk.add_argument("--burst", action="store_true", help="stop when the queue is empty")
    wk.set_defaults(func=_cmd_worker)

    weights = sub.add_parser("weights", help="download or verify SAM checkpoints")
    weights.add_argument("action", choices=("download", "verify"))
    weights.add_argument("--model", choices=MODEL_TYPES, default="vit_t")
    weights.add_argument("--path", help="file to write or check (default: model/<published name>, or SAM_MODEL_PATH)")
    weights.add_argument("--url", help="download from this mirror instead")
    weights.add_argument("--sha256", help="expected SHA-256 when the mirror serves another file")
    weights.add_argument("--quiet", action="store_true")
    weights.set_defaults(func=_cmd_weights)

    tr = sub.add_parser(
        "train",
        help="train or fine-tune the droplet model on labelled images",
        description="Train or fine-tune the droplet model. Labelled folders hold <stem>.<ext> with "
        "<stem>_labels.png (0 = background, 1..N droplets), <stem>_rois.zip / <stem>_RoiSet.zip (ImageJ ROI "
        "Manager), or a COCO JSON file. Serve the result with DROPLET_MODEL_PATH or serve --droplet-model.",
    )
    tr.add_argument("data", nargs="*", type=Path, metavar="DATA_DIR", help="labelled folders")
    tr.add_argument("--out", type=Path, required=True, metavar="FILE", help="where to write the weights")
    tr.add_argument(
        "--from",
        dest="init",
        metavar="FILE",
        help="start from these weights ('shipped' for the package's): a fine-tune; default: random weights",
    )
    tr.add_argument("--generated", type=int, default=0, metavar="N", help="mix in N generated pictures (default 0)")
    tr.add_argument("--epochs", type=int, default=10)
    tr.add_argument("--steps", type=int, default=200, help="optimiser steps per epoch (default 200)")
    tr.add_argument("--batch", type=int, default=12, help="patches per step (default 12)")
    tr.add_argument("--patch", type=int, default=128, help="patch side in pixels, a multiple of 16 (default 128)")
    tr.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    tr.add_argument("--seed", type=int, default=0, help="same seed, data and threads: same weights")
    tr.add_argument("--val-fraction", type=float, default=0.2, help="labelled pictures held back (default 0.2)")
    tr.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=_cmd_train)

    config = sub.add_parser("config", help="print the effective configuration")
    config.set_defaults(func=_cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, StartupError) as exc:
        print(f"sam-droplet: cannot start: {exc}", file=sys.stderr)
        return 2
    except DropletError as exc:
        print(f"sam-droplet: {exc.message}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as exc:
        print(f"sam-droplet: --filters is not valid JSON: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
