"""Command line: ``sam-droplet serve | segment | weights | config``.

``segment`` runs the same pipeline as the server on files or folders, without a server, and writes
one output per image plus ``summary.csv`` for the batch.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError, DropletError, StartupError

__all__ = ["main"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


def _images(inputs: list[str]) -> list[Path]:
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


def _cmd_serve(args: argparse.Namespace) -> int:
    from .config import Config
    from .factory import create_app

    overrides = {}
    if args.host:
        overrides["FLASK_HOST"] = args.host
    if args.port:
        overrides["FLASK_PORT"] = str(args.port)
    cfg = Config.from_env(overrides)
    app = create_app(cfg)
    if args.server == "waitress":
        from .waitress_server import serve, settings_from_env

        settings = settings_from_env(cfg)
        print(f"sam-droplet on http://{cfg.host}:{cfg.port} (waitress, {settings['threads']} threads)", file=sys.stderr)
        serve(app, **settings)
    else:
        app.run(host=cfg.host, port=cfg.port, debug=cfg.debug, use_reloader=False)
    return 0


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


def _fluorescence_columns(summary: dict[str, Any]) -> dict[str, Any]:
    """Batch-summary columns of the fluorescence analysis (none without a fluorescence channel)."""
    if "ddpcr" not in summary:
        return {}
    dd, call, occ = summary["ddpcr"], summary["fluorescence"]["call"], summary["occupancy"]
    return {
        "positives": dd["k"],
        "threshold": call["threshold"],
        "threshold_method": call["method"],
        "ambiguous": call["ambiguous"],
        "p": dd["p"],
        "lambda": dd["lambda"],
        "lambda_ci_low": (dd["lambda_ci"] or [None, None])[0],
        "lambda_ci_high": (dd["lambda_ci"] or [None, None])[1],
        "copies_per_ul": dd["copies_per_ul"],
        "objects_per_droplet": occ["mean_per_droplet"],
    }


def _cmd_segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .config import Config
    from .decode import decode_channel, decode_image
    from .errors import InvalidOptions
    from .export import result_json, to_coco, to_csv, to_label_png, to_overlay_png
    from .pipeline import Engine, SegmentOptions

    files = _images(args.inputs)
    if not files:
        print("sam-droplet: no images found", file=sys.stderr)
        return 1
    # The model is loaded only when the chosen segmenter needs it.
    # Batch runs never add droplets by a click: keep no image cache.
    cfg = Config.from_env({"IMAGE_CACHE_MB": "0", **({"SEGMENTER": args.segmenter} if args.segmenter else {})})
    filters = json.loads(args.filters) if args.filters else None
    options = SegmentOptions(
        segmenter=args.segmenter,
        filters=filters,
        preset=args.preset,
        um_per_px=args.um_per_px,
        appearance=args.appearance,
        fluorescence_threshold=args.fluorescence_threshold,
        threshold_method=args.threshold_method,
        spot_diameter_px=args.spot_diameter,
    )
    options.validate()
    channels = _channels(args.channels)
    engine = Engine.start(cfg)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    failures = 0
    for path in tqdm(files, desc="segmenting", unit="image", disable=args.quiet):
        start = time.perf_counter()
        try:
            data = path.read_bytes()
            fluorescence = None
            if channels:
                image = decode_channel(data, channels[0], cfg.max_image_pixels)
                fluorescence = decode_channel(data, channels[1], cfg.max_image_pixels)
            else:
                image = decode_image(data, cfg.max_image_pixels)
                if args.fluorescence:
                    fl_path = Path(args.fluorescence.format(stem=path.stem, dir=path.parent, ext=path.suffix))
                    if not fl_path.is_file():
                        raise InvalidOptions(f"fluorescence image {fl_path} not found")
                    fluorescence = decode_image(fl_path.read_bytes(), cfg.max_image_pixels)
            result = engine.segment(image, options, fluorescence=fluorescence)
        except DropletError as exc:
            failures += 1
            tqdm.write(f"{path}: {exc.message}", file=sys.stderr)
            rows.append({"file": str(path), "error": exc.message})
            continue
        stem = path.stem
        if args.format == "json":
            (out_dir / f"{stem}.json").write_text(json.dumps(result_json(result)))
        elif args.format == "csv":
            (out_dir / f"{stem}_droplets.csv").write_text(to_csv(result.kept, result.um_per_px))
        elif args.format == "labels":
            (out_dir / f"{stem}_labels.png").write_bytes(to_label_png(result.kept, result.shape))
        elif args.format == "overlay":
            (out_dir / f"{stem}_overlay.png").write_bytes(to_overlay_png(image.rgb8, result.kept, result.removed))
        else:
            (out_dir / f"{stem}_coco.json").write_text(json.dumps(to_coco(result.kept, result.shape, path.name)))
        s = result.summary()
        d = s["diameter_um"] if result.um_per_px else s["diameter_px"]
        unit = "um" if result.um_per_px else "px"
        rows.append(
            {
                "file": str(path),
                "segmenter": result.segmenter,
                "count": s["count"],
                "removed": sum(s["removed"].values()),
                f"diameter_mean_{unit}": d["mean"],
                f"diameter_median_{unit}": d["median"],
                f"diameter_std_{unit}": d["std"],
                "cv": d["cv"],
                **_fluorescence_columns(s),
                "seconds": round(time.perf_counter() - start, 3),
            }
        )
    fieldnames: list[str] = []
    for row in rows:
        fieldnames.extend(k for k in row if k not in fieldnames)
    with open(out_dir / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    if not args.quiet:
        total = sum(r.get("count", 0) for r in rows)
        print(f"{len(rows) - failures} image(s), {total} droplets -> {out_dir}", file=sys.stderr)
    return 1 if failures else 0


def _cmd_weights(args: argparse.Namespace) -> int:
    from .weights import CHECKPOINTS, WeightsError, download, verify

    try:
        if args.action == "download":
            dest = Path(args.path) if args.path else Path("model") / CHECKPOINTS[args.model].file_name
            path = download(dest, args.model, url=args.url, expected_sha256=args.sha256, progress=not args.quiet)
            print(f"saved {path} (SHA-256 verified)")
        else:
            from .config import Config

            path = Path(args.path) if args.path else Config.from_env().model_path
            digest = verify(path, args.model)
            print(f"{path}: OK (SHA-256 {digest})")
    except WeightsError as exc:
        print(f"sam-droplet: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from .config import Config

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
    serve.set_defaults(func=_cmd_serve)

    seg = sub.add_parser("segment", help="segment images or folders without a server")
    seg.add_argument("inputs", nargs="+", metavar="IMG_OR_DIR")
    seg.add_argument("--out", required=True, help="output folder")
    seg.add_argument("--format", choices=("csv", "json", "labels", "overlay", "coco"), default="csv")
    seg.add_argument("--um-per-px", type=float, help="calibration in micrometres per pixel")
    seg.add_argument("--segmenter", choices=("auto", "sam", "classical", "grid"))
    seg.add_argument("--preset", help="filter preset (see GET /defaults)")
    seg.add_argument("--filters", help="filters as JSON, e.g. '{\"diameter_min\": 10}'")
    seg.add_argument("--appearance", choices=("auto", "rim", "bright", "dark"))
    seg.add_argument(
        "--fluorescence",
        metavar="PATH",
        help="fluorescence image of the same field: a path, or a template with {dir}, {stem}, {ext} "
        "for several inputs, e.g. '{dir}/{stem}_fl{ext}'",
    )
    seg.add_argument("--channels", metavar="BF,FL", help="bright-field and fluorescence channel of multi-channel files")
    seg.add_argument("--fluorescence-threshold", type=float, help="positive above this corrected mean (default: auto)")
    seg.add_argument("--threshold-method", choices=("otsu", "gmm"), default="otsu")
    seg.add_argument("--spot-diameter", type=float, default=5.0, help="objects counted per droplet, diameter in px")
    seg.add_argument("--quiet", action="store_true", help="no progress bar")
    seg.set_defaults(func=_cmd_segment)

    weights = sub.add_parser("weights", help="download or verify SAM checkpoints")
    weights.add_argument("action", choices=("download", "verify"))
    weights.add_argument("--model", choices=("vit_t", "vit_b", "vit_l", "vit_h"), default="vit_t")
    weights.add_argument("--path", help="file to write or check (default: model/<published name>, or SAM_MODEL_PATH)")
    weights.add_argument("--url", help="download from this mirror instead")
    weights.add_argument("--sha256", help="expected SHA-256 when the mirror serves another file")
    weights.add_argument("--quiet", action="store_true")
    weights.set_defaults(func=_cmd_weights)

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
