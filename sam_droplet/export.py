"""Serialise droplets: COCO RLE masks, JSON records, CSV, 16-bit label PNG, overlay PNG, COCO.

Masks are encoded straight from each droplet's crop: a full-size mask is never allocated per
droplet, so a thousand droplets on a 2200x1700 image cost kilobytes, not gigabytes.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from .errors import InvalidOptions
from .instances import Instance
from .measure import Droplet

__all__ = [
    "CSV_COLUMNS",
    "droplet_record",
    "encode_rle",
    "label_image",
    "result_json",
    "to_coco",
    "to_csv",
    "to_label_png",
    "to_overlay_png",
]


def encode_rle(inst: Instance, height: int, width: int) -> dict[str, Any]:
    """COCO compressed RLE ``{"size": [h, w], "counts": str}`` of a crop mask in a full image.

    COCO RLE runs go down the columns (Fortran order) of the full image, alternating background and
    mask, starting with background. The runs are computed from the crop alone.
    """
    m = inst.mask
    hc, wc = m.shape
    # A zero row above and below each crop column makes every run start and end inside it.
    padded = np.zeros((hc + 2, wc), dtype=np.int8)
    padded[1:-1] = m
    flat = padded.T.ravel()
    change = np.flatnonzero(np.diff(flat)) + 1  # positions where the value flips
    col, row = np.divmod(change, hc + 2)
    pos = (inst.x0 + col).astype(np.int64) * height + (inst.y0 + row - 1)
    starts, ends = pos[0::2], pos[1::2]
    # Runs that continue from the bottom of one column into the top of the next are one run.
    if starts.size > 1:
        joined = starts[1:] == ends[:-1]
        if joined.any():
            keep_start = np.concatenate([[True], ~joined])
            keep_end = np.concatenate([~joined, [True]])
            starts, ends = starts[keep_start], ends[keep_end]
    bounds = np.empty(2 * starts.size + 2, dtype=np.int64)
    bounds[0] = 0
    bounds[1:-1:2] = starts
    bounds[2:-1:2] = ends
    bounds[-1] = height * width
    counts = np.diff(bounds).tolist()
    if len(counts) > 1 and counts[-1] == 0:
        counts.pop()  # a mask that reaches the last pixel ends on a run, as pycocotools writes it
    rle = coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def droplet_record(
    d: Droplet, shape: tuple[int, int], um_per_px: float | None, include_mask: bool = True
) -> dict[str, Any]:
    """JSON record of a droplet: measurements, calibrated values, mask and removal reason."""
    rec: dict[str, Any] = {
        "id": d.id,
        "bbox": list(d.bbox),
        "centroid": [round(d.centroid[0], 3), round(d.centroid[1], 3)],
        "area_px": d.area_px,
        "perimeter_px": round(d.perimeter_px, 3),
        "equivalent_diameter_px": round(d.equivalent_diameter_px, 3),
        "max_feret_px": round(d.max_feret_px, 3),
        "min_feret_px": round(d.min_feret_px, 3),
        "circularity": round(d.circularity, 4),
        "aspect_ratio": round(d.aspect_ratio, 4),
        "intensity_mean": round(d.intensity_mean, 4),
        "intensity_median": round(d.intensity_median, 4),
        "intensity_std": round(d.intensity_std, 4),
        "intensity_min": round(d.intensity_min, 4),
        "intensity_max": round(d.intensity_max, 4),
        "touches_edge": d.touches_edge,
        "min_edge_distance_px": d.min_edge_distance_px,
        "score": round(d.score, 4),
        "source": d.source,
    }
    if um_per_px:
        rec.update({k: round(v, 6) for k, v in d.calibrated(um_per_px).items()})
    rec.update(d.extra)  # fluorescence columns, when a fluorescence channel was given
    if d.removed_reason is not None:
        rec["removed_reason"] = d.removed_reason
    if include_mask:
        rec["mask"] = encode_rle(d.instance, shape[0], shape[1])
    return rec


CSV_COLUMNS = [
    ("id", lambda d: d.id),
    ("centroid_x_px", lambda d: round(d.centroid[0], 3)),
    ("centroid_y_px", lambda d: round(d.centroid[1], 3)),
    ("bbox_x_px", lambda d: d.bbox[0]),
    ("bbox_y_px", lambda d: d.bbox[1]),
    ("bbox_w_px", lambda d: d.bbox[2]),
    ("bbox_h_px", lambda d: d.bbox[3]),
    ("area_px2", lambda d: d.area_px),
    ("perimeter_px", lambda d: round(d.perimeter_px, 3)),
    ("equivalent_diameter_px", lambda d: round(d.equivalent_diameter_px, 3)),
    ("max_feret_px", lambda d: round(d.max_feret_px, 3)),
    ("min_feret_px", lambda d: round(d.min_feret_px, 3)),
    ("circularity", lambda d: round(d.circularity, 4)),
    ("aspect_ratio", lambda d: round(d.aspect_ratio, 4)),
    ("intensity_mean", lambda d: round(d.intensity_mean, 4)),
    ("intensity_median", lambda d: round(d.intensity_median, 4)),
    ("intensity_std", lambda d: round(d.intensity_std, 4)),
    ("intensity_min", lambda d: round(d.intensity_min, 4)),
    ("intensity_max", lambda d: round(d.intensity_max, 4)),
    ("touches_edge", lambda d: int(d.touches_edge)),
    ("min_edge_distance_px", lambda d: d.min_edge_distance_px),
    ("score", lambda d: round(d.score, 4)),
    ("source", lambda d: d.source),
]
CALIBRATED_COLUMNS = [
    "area_um2",
    "perimeter_um",
    "equivalent_diameter_um",
    "max_feret_um",
    "min_feret_um",
    "min_edge_distance_um",
    "volume_pl",
]


def to_csv(droplets: list[Droplet], um_per_px: float | None) -> str:
    """CSV text, one row per droplet given, units in the column names."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    extra = list(droplets[0].extra) if droplets else []
    header = [name for name, _ in CSV_COLUMNS] + (CALIBRATED_COLUMNS if um_per_px else []) + extra
    writer.writerow(header)
    for d in droplets:
        row = [get(d) for _, get in CSV_COLUMNS]
        if um_per_px:
            cal = d.calibrated(um_per_px)
            row += [round(cal[c], 6) for c in CALIBRATED_COLUMNS]
        row += [int(v) if isinstance(v, bool) else v for v in (d.extra.get(k) for k in extra)]
        writer.writerow(row)
    return buf.getvalue()


def label_image(droplets: list[Droplet], shape: tuple[int, int]) -> np.ndarray:
    """uint16 label image: 0 = background, value = droplet id."""
    if droplets and max(d.id for d in droplets) > 65535:
        raise InvalidOptions("more than 65535 droplets do not fit a 16-bit label image: use format=json or coco")
    labels = np.zeros(shape, dtype=np.uint16)
    for d in droplets:
        inst = d.instance
        labels[inst.y0 : inst.y1, inst.x0 : inst.x1][inst.mask] = d.id
    return labels


def to_label_png(droplets: list[Droplet], shape: tuple[int, int]) -> bytes:
    """16-bit PNG label image of the input's size (0 = background, value = droplet id)."""
    ok, buf = cv2.imencode(".png", label_image(droplets, shape))
    if not ok:  # pragma: no cover - OpenCV always encodes uint16 PNG
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


_KEPT = (40, 220, 90)  # RGB
_REMOVED = (235, 70, 60)


def to_overlay_png(rgb8: np.ndarray, kept: list[Droplet], removed: list[Droplet], show_ids: bool = True) -> bytes:
    """PNG of the image with droplet outlines (kept green, removed red) and ids."""
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
    ok, buf = cv2.imencode(".png", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def to_coco(droplets: list[Droplet], shape: tuple[int, int], file_name: str = "image.png") -> dict[str, Any]:
    """COCO instances JSON (one image, category ``droplet``, RLE masks) that pycocotools loads."""
    h, w = shape
    annotations = []
    for d in droplets:
        annotations.append(
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
        )
    return {
        "info": {"description": "droplets segmented by sam_droplet", "version": "1.0"},
        "licenses": [],
        "images": [{"id": 1, "width": w, "height": h, "file_name": file_name}],
        "categories": [{"id": 1, "name": "droplet", "supercategory": "droplet"}],
        "annotations": annotations,
    }


def result_json(result: Any, include_masks: bool = True) -> dict[str, Any]:
    """The ``format=json`` response body for a :class:`~sam_droplet.pipeline.SegmentationResult`."""
    shape = result.shape
    kept, removed = result.kept, result.removed
    return {
        "success": True,
        "image": result.image.info(),
        "segmenter": result.segmenter,
        "model": result.model,
        "timing_ms": {k: round(v, 1) for k, v in result.timing_ms.items()},
        "num_droplets": len(kept),
        "droplets": [droplet_record(d, shape, result.um_per_px, include_masks) for d in kept],
        "removed": [droplet_record(d, shape, result.um_per_px, include_masks) for d in removed],
        "summary": result.summary(),
        "filters_applied": {**result.filters.as_dict(), "preset": result.preset, "um_per_px": result.um_per_px},
    }
