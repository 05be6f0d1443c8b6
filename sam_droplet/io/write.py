"""Render a segmentation: JSON, CSV, a 16-bit label PNG, an overlay PNG, COCO; the batch summary.

:func:`render` is the one renderer of every output format for the web API and the command line;
:class:`~sam_droplet.result.Result`'s ``to_json``, ``to_csv``, ``to_coco`` and ``overlay`` call the
same functions. :data:`BATCH_COLUMNS` is the one schema of a batch summary (the command line's
``summary.csv`` and the page's batch CSV). Masks are encoded straight from each droplet's crop: a
full-size mask is never allocated per droplet.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from ..engine.fluorescence import FLUORESCENCE_COLUMNS
from ..engine.instances import encode_rle
from ..engine.measure import Droplet
from ..errors import InvalidOptions

if TYPE_CHECKING:
    from ..result import Result

__all__ = [
    "BATCH_COLUMNS",
    "CALIBRATED_COLUMNS",
    "CONTENTS_COLUMNS",
    "DROPLET_COLUMNS",
    "FORMATS",
    "SIZE_COLUMNS",
    "Rendered",
    "batch_row",
    "coco_dict",
    "droplets_csv",
    "label_png",
    "overlay_rgb",
    "png_bytes",
    "render",
    "write_batch_csv",
]

# Output formats, with the media type and the file name suffix of each.
FORMATS: dict[str, tuple[str, str]] = {
    "json": ("application/json", ".json"),
    "csv": ("text/csv", "_droplets.csv"),
    "labels": ("image/png", "_labels.png"),
    "overlay": ("image/png", "_overlay.png"),
    "coco": ("application/json", "_coco.json"),
    "imagej": ("application/zip", "_rois.zip"),
    "report": ("application/pdf", "_report.pdf"),
}

# Per-droplet CSV columns, units in the names: these, then the calibrated ones when the image is
# calibrated, then the fluorescence ones when a fluorescence channel was measured.
DROPLET_COLUMNS = {
    "id": lambda d: d.id,
    "centroid_x_px": lambda d: round(d.centroid[0], 3),
    "centroid_y_px": lambda d: round(d.centroid[1], 3),
    "bbox_x_px": lambda d: d.bbox[0],
    "bbox_y_px": lambda d: d.bbox[1],
    "bbox_w_px": lambda d: d.bbox[2],
    "bbox_h_px": lambda d: d.bbox[3],
    "area_px2": lambda d: d.area_px,
    "perimeter_px": lambda d: round(d.perimeter_px, 3),
    "equivalent_diameter_px": lambda d: round(d.equivalent_diameter_px, 3),
    "max_feret_px": lambda d: round(d.max_feret_px, 3),
    "min_feret_px": lambda d: round(d.min_feret_px, 3),
    "circularity": lambda d: round(d.circularity, 4),
    "aspect_ratio": lambda d: round(d.aspect_ratio, 4),
    "intensity_mean": lambda d: round(d.intensity_mean, 4),
    "intensity_median": lambda d: round(d.intensity_median, 4),
    "intensity_std": lambda d: round(d.intensity_std, 4),
    "intensity_min": lambda d: round(d.intensity_min, 4),
    "intensity_max": lambda d: round(d.intensity_max, 4),
    "touches_edge": lambda d: int(d.touches_edge),
    "min_edge_distance_px": lambda d: d.min_edge_distance_px,
    "score": lambda d: round(d.score, 4),
    "source": lambda d: d.source,
}
# Bright-field contents (when counted): objects in the droplet, and their total area.
CONTENTS_COLUMNS = ("contents", "contents_area_px")
CALIBRATED_COLUMNS = (
    "area_um2",
    "perimeter_um",
    "equivalent_diameter_um",
    "max_feret_um",
    "min_feret_um",
    "min_edge_distance_um",
    "volume_pl",
)

# The size-distribution columns of the batch summary (``summary.size``, in ``size_unit``).
SIZE_COLUMNS = ("dn10", "dn50", "dn90", "dv10", "dv50", "dv90", "span", "d32", "d43")

# The batch summary: one row per image, the same columns for the command line and the page. The
# page fills the corrections (removed_by_you, added_by_you); the command line leaves them at 0.
BATCH_COLUMNS = (
    "file",
    "segmenter",
    "droplets",
    "removed_by_filters",
    "removed_by_you",
    "added_by_you",
    "um_per_px",
    "calibration",
    "diameter_mean_px",
    "diameter_median_px",
    "diameter_sd_px",
    "cv",
    "diameter_mean_um",
    "diameter_median_um",
    "volume_mean_pl",
    "size_unit",
    *SIZE_COLUMNS,
    "populations",
    "fl_threshold",
    "threshold_method",
    "ambiguous",
    "positive",
    "p",
    "lambda",
    "lambda_ci_low",
    "lambda_ci_high",
    "copies_per_ul",
    "copies_per_ul_ci_low",
    "copies_per_ul_ci_high",
    "objects_mean",
    "droplets_0",
    "droplets_1",
    "droplets_2",
    "droplets_3plus",
    "contents_mean",
    "contents_0",
    "contents_1",
    "contents_2",
    "contents_3plus",
    "seconds",
    "error",
)


def droplets_csv(droplets: list[Droplet], um_per_px: float | None) -> str:
    """CSV text, one row per droplet given, units in the column names."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    fluorescence = bool(droplets) and bool(droplets[0].fluorescence)
    contents = bool(droplets) and droplets[0].contents is not None
    header = [
        *DROPLET_COLUMNS,
        *(CALIBRATED_COLUMNS if um_per_px else ()),
        *(FLUORESCENCE_COLUMNS if fluorescence else ()),
        *(CONTENTS_COLUMNS if contents else ()),
    ]
    writer.writerow(header)
    for d in droplets:
        row = [get(d) for get in DROPLET_COLUMNS.values()]
        if um_per_px:
            cal = d.calibrated(um_per_px)
            row += [round(cal[c], 6) for c in CALIBRATED_COLUMNS]
        if fluorescence:
            row += [int(v) if isinstance(v, bool) else v for v in (d.fluorescence.get(k) for k in FLUORESCENCE_COLUMNS)]
        if contents:
            row += [d.contents["count"], sum(d.contents["areas_px"])]
        writer.writerow(row)
    return buf.getvalue()


def label_png(labels: np.ndarray) -> bytes:
    """A 16-bit PNG of a label image (0 = background, value = droplet id).

    Raises:
        InvalidOptions: an id above 65,535 does not fit 16 bits.
    """
    if labels.size and int(labels.max()) > 65535:
        raise InvalidOptions("more than 65535 droplets do not fit a 16-bit label image: use format=json or coco")
    return png_bytes(labels.astype(np.uint16))


def png_bytes(image: np.ndarray) -> bytes:
    """PNG of a gray (HxW, 8 or 16 bit) or RGB (HxWx3, 8 bit) array."""
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, buf = cv2.imencode(".png", pixels)
    if not ok:  # pragma: no cover - OpenCV always encodes these
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


_KEPT = (40, 220, 90)  # RGB
_REMOVED = (235, 70, 60)


def overlay_rgb(rgb8: np.ndarray, kept: list[Droplet], removed: list[Droplet], show_ids: bool = True) -> np.ndarray:
    """The image (8-bit RGB) with droplet outlines drawn (kept green, removed red) and their ids."""
    canvas = rgb8.copy()
    h, w = canvas.shape[:2]
    thickness = max(1, round(min(h, w) / 900))
    for group, color in ((removed, _REMOVED), (kept, _KEPT)):
        for d in group:
            inst = d.instance
            contours, _ = cv2.findContours(
                inst.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(inst.x0, inst.y0)
            )
            cv2.drawContours(canvas, contours, -1, color, thickness, lineType=cv2.LINE_AA)
    if show_ids:
        for d in kept:
            diameter = d.equivalent_diameter_px
            if diameter < 18:
                continue  # a label would hide the droplet
            scale = min(max(diameter / 100.0, 0.3), 1.0)
            text = str(d.id)
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            org = (int(d.centroid[0] - tw / 2), int(d.centroid[1] + th / 2))
            cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def coco_dict(droplets: list[Droplet], shape: tuple[int, int], file_name: str = "image.png") -> dict[str, Any]:
    """COCO instances JSON (one image, category ``droplet``, RLE masks) that pycocotools loads."""
    h, w = shape
    annotations = [
        {
            "id": d.id,
            "image_id": 1,
            "category_id": 1,
            "segmentation": encode_rle(d.instance, h, w),
            "area": d.area_px,
            "bbox": [float(v) for v in d.bbox],
            "iscrowd": 0,
            "score": round(d.score, 4),
        }
        for d in droplets
    ]
    return {
        "info": {"description": "droplets segmented by sam_droplet", "version": "1.0"},
        "licenses": [],
        "images": [{"id": 1, "width": w, "height": h, "file_name": file_name}],
        "categories": [{"id": 1, "name": "droplet", "supercategory": "droplet"}],
        "annotations": annotations,
    }


@dataclass(frozen=True)
class Rendered:
    """One output: its bytes, media type, and the suffix of its file name (after the image's stem)."""

    body: bytes
    mimetype: str
    suffix: str


def render(result: Result, fmt: str, file_name: str = "image.png", envelope: dict[str, Any] | None = None) -> Rendered:
    """``result`` in the output format ``fmt`` (a key of :data:`FORMATS`).

    Args:
        result: the segmentation.
        fmt: json (the result's record, :meth:`~sam_droplet.result.Result.as_dict`, with the time
            it took to build in ``timing_ms.serialize``), csv (one row per kept droplet), labels
            (16-bit label PNG of the kept droplets), overlay (PNG), coco, imagej (a ROI Manager zip
            of polygon ROIs named by droplet id), report (a one-page PDF).
        file_name: the image's file name, recorded in COCO.
        envelope: keys put first in the JSON (the web API's ``success``); nothing else has them.

    Raises:
        InvalidOptions: an unknown format, or labels for more than 65,535 droplets.
    """
    if fmt not in FORMATS:
        raise InvalidOptions(f"unknown format {fmt!r}; accepted: {', '.join(FORMATS)}")
    mimetype, suffix = FORMATS[fmt]
    if fmt == "json":
        t0 = time.perf_counter()
        record = result.as_dict()
        result.timing_ms["serialize"] = (time.perf_counter() - t0) * 1000
        record["timing_ms"] = {k: round(v, 1) for k, v in result.timing_ms.items()}
        body = json.dumps({**(envelope or {}), **record}, separators=(",", ":")).encode()
    elif fmt == "csv":
        body = result.to_csv().encode()
    elif fmt == "labels":
        body = label_png(result.labels)
    elif fmt == "overlay":
        body = png_bytes(result.overlay())
    elif fmt == "coco":
        body = json.dumps(result.to_coco(file_name=file_name), separators=(",", ":")).encode()
    elif fmt == "imagej":
        body = result.to_imagej()
    else:
        from .report import page_from_result, report_pdf

        body = report_pdf([page_from_result(result, file_name)])
    return Rendered(body, mimetype, suffix)


def batch_row(result: Result, file: str, seconds: float | None = None) -> dict[str, Any]:
    """The batch-summary row (:data:`BATCH_COLUMNS`) of one segmentation; None where not applicable."""
    s = result.summary
    d_px = s["diameter_px"]
    row: dict[str, Any] = dict.fromkeys(BATCH_COLUMNS)
    row.update(
        file=file,
        segmenter=result.segmenter,
        droplets=s["count"],
        removed_by_filters=sum(s["removed"].values()),
        removed_by_you=0,
        added_by_you=0,
        um_per_px=result.um_per_px,
        calibration=result.calibration_source,
        diameter_mean_px=d_px["mean"],
        diameter_median_px=d_px["median"],
        diameter_sd_px=d_px["std"],
        cv=d_px["cv"],
        seconds=round(seconds, 3) if seconds is not None else None,
        size_unit=s["size"]["unit"],
        populations=len(s["populations"]),
        **{k: s["size"][k] for k in SIZE_COLUMNS},
    )
    if "contents" in s:
        occ = s["contents"]
        row.update(
            contents_mean=occ["mean_per_droplet"],
            contents_0=occ["observed"][0],
            contents_1=occ["observed"][1],
            contents_2=occ["observed"][2],
            contents_3plus=occ["observed"][3],
        )
    if result.um_per_px:
        row.update(
            diameter_mean_um=s["diameter_um"]["mean"],
            diameter_median_um=s["diameter_um"]["median"],
            volume_mean_pl=s["volume_pl"]["mean"],
        )
    if "ddpcr" in s:
        dd, call, occ = s["ddpcr"], s["fluorescence"]["call"], s["occupancy"]
        lam_ci = dd["lambda_ci"] or [None, None]
        cpu_ci = dd.get("copies_per_ul_ci") or [None, None]
        row.update(
            fl_threshold=call["threshold"],
            threshold_method=call["method"],
            ambiguous=call["ambiguous"],
            positive=dd["k"],
            p=dd["p"],
            copies_per_ul=dd.get("copies_per_ul"),
            objects_mean=occ["mean_per_droplet"],
            lambda_ci_low=lam_ci[0],
            lambda_ci_high=lam_ci[1],
            copies_per_ul_ci_low=cpu_ci[0],
            copies_per_ul_ci_high=cpu_ci[1],
            droplets_0=occ["observed"][0],
            droplets_1=occ["observed"][1],
            droplets_2=occ["observed"][2],
            droplets_3plus=occ["observed"][3],
        )
        row["lambda"] = dd["lambda"]
    return row


def write_batch_csv(rows: Iterable[dict[str, Any]], path: str | Path) -> None:
    """Write batch-summary rows (from :func:`batch_row`, or ``{"file", "error"}`` for a failure)."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=BATCH_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (int(v) if isinstance(v, bool) else v) for k, v in row.items()})
