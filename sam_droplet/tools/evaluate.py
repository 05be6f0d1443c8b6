"""Score segmentations against ground-truth label images: ``sam-droplet-evaluate DIR...``
(or ``python -m sam_droplet.tools.evaluate``).

For every ``<stem>_labels.png`` (uint16, 0 = background), or ImageJ / Fiji ROIs
``<stem>_rois.zip`` / ``<stem>_RoiSet.zip``, next to ``<stem>.<ext>`` in the given folders, the
image is segmented by :func:`sam_droplet.segment`, as the server does, and scored. Droplets match when
their IoU is at least 0.5 (then a match is necessarily one-to-one). The scoring follows the
annotation conventions of the evaluation sets: ground-truth droplets cut by the image border are
ignored together with the predictions that match them, and unmatched predictions smaller than 10 px
across are ignored because hand labels skip such droplets.

Reported per image and overall (micro-averaged): precision, recall, F1, mean IoU of the matches,
median relative error of the equivalent diameter, and seconds per image.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..io.read import IMAGE_SUFFIXES
from ..pipeline import Engine, segment
from ..settings import DETECTORS, SEGMENTERS, EngineSettings, detector_overrides

__all__ = [
    "ImageScore",
    "MatchResult",
    "evaluate_folder",
    "main",
    "match_instances",
    "pairs_in",
    "read_truth",
    "summarize_scores",
    "touching_border",
]


@dataclass(frozen=True)
class MatchResult:
    """Outcome of matching predictions to ground truth for one image.

    Attributes:
        tp, fp, fn: counted true positives, false positives and false negatives.
        matched_iou: IoU of each counted match.
        diameter_rel_error: per counted match, (pred - true) / true equivalent diameter.
        pairs: (gt_label, pred_label) of each counted match.
    """

    tp: int
    fp: int
    fn: int
    matched_iou: np.ndarray
    diameter_rel_error: np.ndarray
    pairs: np.ndarray

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def touching_border(labels: np.ndarray, margin: int = 0) -> np.ndarray:
    """Label values (sorted, unique, > 0) that have a pixel on the image border, or within
    ``margin`` px of it."""
    k = margin + 1
    edge = np.concatenate([labels[:k].ravel(), labels[-k:].ravel(), labels[:, :k].ravel(), labels[:, -k:].ravel()])
    values = np.unique(edge)
    return values[values > 0]


def match_instances(
    truth: np.ndarray,
    pred: np.ndarray,
    iou_threshold: float = 0.5,
    ignore_border: bool = True,
    min_unmatched_diameter: float = 10.0,
    border_margin: int = 0,
) -> MatchResult:
    """Match predicted droplets to ground-truth droplets by IoU.

    Args:
        truth: HxW integer label image, 0 = background.
        pred: HxW integer label image of the same shape, 0 = background.
        iou_threshold: minimum IoU for a match.
        ignore_border: ignore ground-truth droplets touching the border and the predictions
            matching them (by the best IoU over the threshold).
        min_unmatched_diameter: unmatched predictions with an equivalent diameter under this many
            pixels are not counted as false positives.
        border_margin: ground truth within this many pixels of the border counts as touching it
            (annotation tools that stop a cut droplet's polygon a pixel or two inside the picture).
    """
    if truth.shape != pred.shape:
        raise ValueError(f"shape mismatch: truth {truth.shape} vs pred {pred.shape}")
    t = truth.astype(np.int64).ravel()
    p = pred.astype(np.int64).ravel()
    n_t, n_p = int(t.max(initial=0)) + 1, int(p.max(initial=0)) + 1
    area_t = np.bincount(t, minlength=n_t)
    area_p = np.bincount(p, minlength=n_p)
    both = (t > 0) & (p > 0)
    pair_keys, inter = np.unique(t[both] * n_p + p[both], return_counts=True)
    gt_ids, pr_ids = pair_keys // n_p, pair_keys % n_p
    iou = inter / (area_t[gt_ids] + area_p[pr_ids] - inter)

    present_t = np.flatnonzero(area_t[1:]) + 1
    present_p = np.flatnonzero(area_p[1:]) + 1
    ok = iou >= iou_threshold
    gt_ids, pr_ids, iou = gt_ids[ok], pr_ids[ok], iou[ok]
    # IoU >= 0.5 already makes matches unique; the assignment keeps lower thresholds correct too.
    if len(iou):
        rows, row_inv = np.unique(gt_ids, return_inverse=True)
        cols, col_inv = np.unique(pr_ids, return_inverse=True)
        cost = np.zeros((len(rows), len(cols)))
        cost[row_inv, col_inv] = -iou
        r_idx, c_idx = linear_sum_assignment(cost)
        keep = cost[r_idx, c_idx] < 0
        m_gt, m_pr, m_iou = rows[r_idx[keep]], cols[c_idx[keep]], -cost[r_idx[keep], c_idx[keep]]
    else:
        m_gt = m_pr = np.zeros(0, dtype=np.int64)
        m_iou = np.zeros(0)

    ignored_gt = set(touching_border(truth, border_margin).tolist()) if ignore_border else set()
    counted = np.array([g not in ignored_gt for g in m_gt], dtype=bool)
    matched_pred = set(m_pr.tolist())
    fn = sum(1 for g in present_t if g not in ignored_gt and g not in set(m_gt[counted].tolist()))
    diam_p = np.sqrt(4 * area_p / np.pi)
    diam_t = np.sqrt(4 * area_t / np.pi)
    fp = sum(1 for q in present_p if q not in matched_pred and diam_p[q] >= min_unmatched_diameter)
    m_gt_c, m_pr_c = m_gt[counted], m_pr[counted]
    rel = (diam_p[m_pr_c] - diam_t[m_gt_c]) / diam_t[m_gt_c]
    return MatchResult(
        tp=int(counted.sum()),
        fp=int(fp),
        fn=int(fn),
        matched_iou=m_iou[counted],
        diameter_rel_error=rel,
        pairs=np.stack([m_gt_c, m_pr_c], axis=1) if len(m_gt_c) else np.zeros((0, 2), np.int64),
    )


@dataclass
class ImageScore:
    """One image's score, and the segmentation's details (detector cue, SAM views and prompts)."""

    image: str
    match: MatchResult
    seconds: float
    predicted: int
    truth: int
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        m = self.match
        return {
            "image": self.image,
            "truth": self.truth,
            "predicted": self.predicted,
            "tp": m.tp,
            "fp": m.fp,
            "fn": m.fn,
            "precision": round(m.precision, 4),
            "recall": round(m.recall, 4),
            "f1": round(m.f1, 4),
            "mean_iou": round(float(m.matched_iou.mean()), 4) if m.tp else None,
            "median_diameter_error": round(float(np.median(m.diameter_rel_error)), 4) if m.tp else None,
            "seconds": round(self.seconds, 3),
        }


# Ground truth beside an image <stem>.<ext>: a label image, or ImageJ / Fiji ROIs (a ROI Manager zip).
TRUTH_SUFFIXES = ("_labels.png", "_rois.zip", "_RoiSet.zip")


def pairs_in(folder: Path) -> list[tuple[Path, Path]]:
    """(image, ground truth) pairs in a folder: ``<stem>_labels.png`` (uint16 labels), or
    ``<stem>_rois.zip`` / ``<stem>_RoiSet.zip`` (ImageJ ROIs), beside ``<stem>.<ext>``; a label
    image wins over ROIs for the same stem."""
    out = []
    seen: set[str] = set()
    for suffix in TRUTH_SUFFIXES:
        for truth in sorted(folder.glob(f"*{suffix}")):
            stem = truth.name[: -len(suffix)]
            image = next(
                (folder / f"{stem}{ext}" for ext in IMAGE_SUFFIXES if (folder / f"{stem}{ext}").is_file()), None
            )
            if image is not None and stem not in seen:
                seen.add(stem)
                out.append((image, truth))
    return sorted(out)


def read_truth(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Ground-truth labels: a label image as it is, or ImageJ ROIs filled as ImageJ fills them."""
    if path.suffix == ".zip" or path.suffix == ".roi":
        from ..io.imagej import labels_from_rois

        return labels_from_rois(path, shape).astype(np.int64)
    from PIL import Image

    return np.asarray(Image.open(path)).astype(np.int64)


def summarize_scores(scores: list[ImageScore]) -> dict[str, Any]:
    """Micro-averaged totals over images."""
    tp = sum(s.match.tp for s in scores)
    fp = sum(s.match.fp for s in scores)
    fn = sum(s.match.fn for s in scores)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    ious = np.concatenate([s.match.matched_iou for s in scores]) if scores else np.zeros(0)
    errors = np.concatenate([s.match.diameter_rel_error for s in scores]) if scores else np.zeros(0)
    return {
        "images": len(scores),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0,
        "mean_iou": round(float(ious.mean()), 4) if ious.size else None,
        "median_diameter_error": round(float(np.median(errors)), 4) if errors.size else None,
        "median_abs_diameter_error": round(float(np.median(np.abs(errors))), 4) if errors.size else None,
        "seconds_per_image": round(float(np.mean([s.seconds for s in scores])), 3) if scores else None,
    }


def evaluate_folder(
    folder: Path, model: Engine | None = None, border_margin: int = 0, **options: Any
) -> list[ImageScore]:
    """Segment (:func:`sam_droplet.segment` with ``model`` and ``options``) and score every
    labelled image of a folder (``border_margin``: see :func:`match_instances`); seconds per image
    count from reading the file to the result."""
    scores = []
    for image_path, labels_path in pairs_in(folder):
        start = time.perf_counter()
        result = segment(image_path, model, **options)
        seconds = time.perf_counter() - start
        truth = read_truth(labels_path, result.shape)
        if truth.shape != result.shape:
            raise SystemExit(f"{labels_path}: labels are {truth.shape}, the image is {result.shape}")
        scores.append(
            ImageScore(
                image=str(image_path),
                match=match_instances(truth, result.labels, border_margin=border_margin),
                seconds=seconds,
                predicted=len(result.droplets),
                truth=int(len(np.unique(truth)) - 1),
                details=result.details,
            )
        )
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sam-droplet-evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "folders", nargs="+", type=Path, help="folders with <stem>.<ext> and <stem>_labels.png or <stem>_rois.zip"
    )
    parser.add_argument("--segmenter", choices=SEGMENTERS, default="classical", help="sam and grid load SAM_MODEL_PATH")
    parser.add_argument(
        "--detector", choices=DETECTORS, default=None, help="what finds the droplets (default: DETECTOR, auto)"
    )
    parser.add_argument(
        "--droplet-model", type=Path, help="droplet model weights (default: DROPLET_MODEL_PATH or shipped)"
    )
    parser.add_argument("--preset", default=None, help="filter preset (default: auto)")
    parser.add_argument(
        "--border-margin",
        type=int,
        default=0,
        metavar="PX",
        help="ground truth within PX pixels of the border counts as touching it, and is ignored as the "
        "droplets the border cuts are (for labels drawn a pixel or two short of the border; default 0)",
    )
    parser.add_argument("--json", type=Path, help="write the full report here")
    parser.add_argument("--quiet", action="store_true", help="print only the totals")
    args = parser.parse_args(argv)
    if args.border_margin < 0:
        parser.error("--border-margin must be 0 or more")

    overrides = {"SEGMENTER": args.segmenter, **detector_overrides(args.detector, args.droplet_model)}
    engine = Engine.start(EngineSettings.from_env(overrides))
    options = {"segmenter": args.segmenter, "preset": args.preset}
    report: dict[str, Any] = {
        "segmenter": args.segmenter,
        "detector": engine.resolve_detector(None),
        "droplet_model": engine.describe()["droplet_model"],
        "preset": args.preset or "auto",
        "border_margin": args.border_margin,
        "folders": {},
    }
    everything: list[ImageScore] = []
    header = (
        f"{'image':32s} {'truth':>5s} {'pred':>5s} {'P':>6s} {'R':>6s} {'F1':>6s} {'IoU':>6s} {'dErr':>7s} {'s':>6s}"
    )
    for folder in args.folders:
        scores = evaluate_folder(folder, engine, args.border_margin, **options)
        if not scores:
            print(
                f"{folder}: no ground truth (<stem>_labels.png or <stem>_rois.zip) with an image beside it",
                file=sys.stderr,
            )
            continue
        everything.extend(scores)
        total = summarize_scores(scores)
        report["folders"][str(folder)] = {"total": total, "images": [s.as_dict() for s in scores]}
        if not args.quiet:
            print(f"\n{folder}\n{header}")
            for s in scores:
                d = s.as_dict()
                print(
                    f"{Path(d['image']).name[:32]:32s} {d['truth']:5d} {d['predicted']:5d} {d['precision']:6.3f} "
                    f"{d['recall']:6.3f} {d['f1']:6.3f} {d['mean_iou'] or 0:6.3f} {d['median_diameter_error'] or 0:+7.3f} "
                    f"{d['seconds']:6.2f}"
                )
        print(
            f"{str(folder)[-32:]:32s} total: P {total['precision']:.3f} R {total['recall']:.3f} F1 {total['f1']:.3f} "
            f"IoU {total['mean_iou'] or 0:.3f} median diameter error {total['median_diameter_error'] or 0:+.3f} "
            f"{total['seconds_per_image']:.2f} s/image"
        )
    report["total"] = summarize_scores(everything)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
