"""Instance matching between a predicted and a ground-truth label image.

Droplets match when their IoU is at least a threshold (0.5 by default, where a match is necessarily
one-to-one). The scoring rules follow the annotation conventions of the evaluation sets: ground-truth
droplets cut by the image border are ignored together with the predictions that match them, and
unmatched predictions smaller than ``min_unmatched_diameter`` pixels across are ignored because hand
labels skip such droplets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["MatchResult", "match_instances", "touching_border"]


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


def touching_border(labels: np.ndarray) -> np.ndarray:
    """Label values (sorted, unique, > 0) that have a pixel on the image border."""
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    values = np.unique(edge)
    return values[values > 0]


def match_instances(
    truth: np.ndarray,
    pred: np.ndarray,
    iou_threshold: float = 0.5,
    ignore_border: bool = True,
    min_unmatched_diameter: float = 10.0,
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

    ignored_gt = set(touching_border(truth).tolist()) if ignore_border else set()
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
