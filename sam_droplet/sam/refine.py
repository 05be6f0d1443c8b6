"""SAM refinement of detected droplets (sam mode).

Each detected droplet becomes a box prompt with a positive point at its centre. The image is
encoded once (or, when it is large or its droplets are small, once per overlapping tile, so that
droplets stay large enough in the encoder's 1024 px frame). Prompts are decoded in batches by
:class:`~sam_droplet.sam.windowed_decoder.WindowedDecoder`, which shares the prompt-independent work and
computes each prompt's low-resolution logits only in a window around its box. Of SAM's three
outputs per prompt, the one with the best predicted IoU times stability is kept, and it is
resampled to full resolution only inside its own box: no full-image mask is ever allocated per
prompt (the cost that makes SAM's automatic mask generator slow and memory-hungry).

SAM's answer is used when it agrees with the detection it was prompted with (IoU at least
``min_agreement``) and stays inside the prompt's window; otherwise the detector's own mask is kept
and counted as a fallback, so a poor prompt never turns a droplet into a blob of background.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ..engine.instances import Instance, fill_holes, mask_iou
from .model import LoadedModel

__all__ = ["Encoding", "RefineStats", "SamRefiner", "View", "plan_views"]

WINDOW_CELLS = (4, 8, 16, 32, 64)  # window sides on the 64 x 64 embedding grid
MIN_FRAME_DIAMETER = 24.0  # px a droplet should span in the encoder's 1024 px frame


@dataclass(frozen=True)
class View:
    """A part of the image encoded on its own: pixels [x0, x1) x [y0, y1)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def holds(self, box: np.ndarray) -> np.ndarray:
        """Which boxes (N, 4: x0, y0, x1, y1) lie inside this view."""
        return (box[:, 0] >= self.x0) & (box[:, 1] >= self.y0) & (box[:, 2] <= self.x1) & (box[:, 3] <= self.y1)


def plan_views(
    shape: tuple[int, int], diameters: np.ndarray, max_side: int = 2048, min_diameter: float = 12.0
) -> list[View]:
    """Split an image into overlapping tiles when it is large or its droplets are small.

    One view (the whole image) serves when the image is at most ``max_side`` px on its longer side
    and its median droplet is at least ``min_diameter`` px across. Otherwise tiles are sized so the
    median droplet spans :data:`MIN_FRAME_DIAMETER` px in the encoder's frame (tiles 256 to
    ``max_side`` px), and overlap by the largest droplet plus a margin, so every droplet fits wholly
    in a tile.
    """
    h, w = shape
    median = float(np.median(diameters)) if len(diameters) else 0.0
    if max(h, w) <= max_side and (median == 0.0 or median >= min_diameter):
        return [View(0, 0, w, h)]
    side = int(np.clip(1024.0 * median / MIN_FRAME_DIAMETER if median else 1024, 256, max_side))
    overlap = int(min(max(float(np.max(diameters)) if len(diameters) else 0.0, 0.0) * 1.5 + 16, side // 2))
    step = max(side - overlap, 1)
    xs = list(range(0, max(w - side, 0) + 1, step))
    ys = list(range(0, max(h - side, 0) + 1, step))
    if xs[-1] + side < w:
        xs.append(max(w - side, 0))
    if ys[-1] + side < h:
        ys.append(max(h - side, 0))
    return [View(x, y, min(x + side, w), min(y + side, h)) for y in ys for x in xs]


@dataclass
class RefineStats:
    """What the refinement did, for the response's summary."""

    prompts: int = 0
    batches: int = 0
    views: int = 0
    sam_masks: int = 0
    fallback: dict[str, int] = field(default_factory=dict)
    timing_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompts": self.prompts,
            "batches": self.batches,
            "views": self.views,
            "sam_masks": self.sam_masks,
            "fallback": dict(self.fallback),
        }

    def add_time(self, key: str, seconds: float) -> None:
        self.timing_ms[key] = self.timing_ms.get(key, 0.0) + seconds * 1000


@dataclass
class Encoding:
    """One view encoded: its embedding, shared decoder state and geometry."""

    view: View
    features: Any
    shared: Any
    scale: float  # encoder-frame pixels per image pixel


class SamRefiner:
    """Prompted SAM decoding for a list of detected droplets.

    Args:
        model: a loaded SAM model.
        batch_size: prompts decoded per batch; 0 picks 4 on a CPU and 64 on a GPU. On a CPU the
            decoder's per-prompt image tensors (4096 x 256) fall out of cache in large batches.
        min_agreement: smallest IoU between SAM's mask and the detection to accept SAM's mask.
        box_margin: prompt boxes extend this fraction of the radius beyond the detected droplet.
    """

    def __init__(self, model: LoadedModel, batch_size: int = 0, min_agreement: float = 0.5, box_margin: float = 0.15):
        from .windowed_decoder import WindowedDecoder

        self.model = model
        if batch_size <= 0:
            batch_size = 4 if model.device.type == "cpu" else 64
        self.batch_size = int(batch_size)
        self.min_agreement = min_agreement
        self.box_margin = box_margin
        self.decoder = WindowedDecoder(model.sam)
        self._target = int(model.sam.image_encoder.img_size)

    # -- encoder ---------------------------------------------------------------------------------

    def encode(self, rgb8: np.ndarray, view: View | None = None) -> Encoding:
        """Encode a view of an 8-bit RGB image: longer side resized to 1024, normalised, padded."""
        import torch

        view = view or View(0, 0, rgb8.shape[1], rgb8.shape[0])
        crop = rgb8[view.y0 : view.y1, view.x0 : view.x1]
        h, w = crop.shape[:2]
        scale = self._target / max(h, w)
        new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(crop, (new_w, new_h), interpolation=interp)
        sam = self.model.sam
        with torch.inference_mode(), self.model.autocast():
            x = torch.as_tensor(np.ascontiguousarray(resized), device=self.model.device)
            x = sam.preprocess(x.permute(2, 0, 1).contiguous()[None].float())
            features = sam.image_encoder(x)
            shared = self.decoder.share(features)
            if features.is_cuda:
                # CUDA runs asynchronously: wait here, so the encoder's time is not billed to the
                # first decoder batch (whose .cpu() would wait for it).
                torch.cuda.synchronize(features.device)
        return Encoding(view=view, features=features, shared=shared, scale=new_w / w)

    # -- decoder ---------------------------------------------------------------------------------

    def decode(
        self, enc: Encoding, boxes: np.ndarray, points: np.ndarray, regions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Decode box+point prompts of one view; keep the best of SAM's three masks per prompt.

        Args:
            enc: the encoded view.
            boxes: (B, 4) prompt boxes x0, y0, x1, y1 in image pixels.
            points: (B, 2) positive points x, y in image pixels.
            regions: (B, 4) paste regions (x0, y0, x1, y1, exclusive) in image pixels; each
                prompt's logits are computed in a window of the embedding grid covering it.

        Returns:
            Window logits (B, 4S, 4S) float32 of the chosen masks, their scores (predicted IoU
            times stability) (B,), each window's top-left (row, col) in low-resolution mask pixels
            (B, 2), and the window side S in embedding cells.
        """
        import torch

        sam = self.model.sam
        s = enc.scale
        dev = self.model.device
        off = np.array([enc.view.x0, enc.view.y0], dtype=np.float64)
        cell = 16.0 / s  # image pixels per embedding cell
        # One window size for the batch: the largest region's, rounded up to a listed size.
        need = np.max((regions[:, 2:] - regions[:, :2]) / cell) + 2
        size = next((c for c in WINDOW_CELLS if c >= need), WINDOW_CELLS[-1])
        grid = enc.shared.grid
        centre = ((regions[:, :2] + regions[:, 2:]) / 2 - off) / cell
        top = np.stack(
            [
                np.clip(np.round(centre[:, 1] - size / 2), 0, grid[0] - size),
                np.clip(np.round(centre[:, 0] - size / 2), 0, grid[1] - size),
            ],
            axis=1,
        ).astype(np.int64)
        with torch.inference_mode(), self.model.autocast():
            box_t = torch.as_tensor((boxes - np.tile(off, 2)) * s, dtype=torch.float32, device=dev)
            pts = torch.as_tensor(((points - off) * s)[:, None, :], dtype=torch.float32, device=dev)
            labels = torch.ones(pts.shape[:2], dtype=torch.int64, device=dev)
            sparse, _ = sam.prompt_encoder(points=(pts, labels), boxes=box_t, masks=None)
            low, iou = self.decoder.decode(enc.shared, sparse, torch.as_tensor(top, device=dev), size)
            low = low.float()
            # Stability: how much the mask changes when its logit threshold moves by +-1.
            hi_area = (low > 1.0).sum(dim=(-1, -2)).float()
            lo_area = (low > -1.0).sum(dim=(-1, -2)).float()
            stability = torch.where(lo_area > 0, hi_area / lo_area.clamp(min=1), torch.zeros_like(lo_area))
            score = iou.float().clamp(0, 1) * stability
            best = score.argmax(dim=1)
            rows = torch.arange(low.shape[0], device=dev)
            chosen = low[rows, best].cpu().numpy()
            chosen_score = score[rows, best].cpu().numpy()
        return chosen, chosen_score, top * 4, size

    @staticmethod
    def paste(
        logits: np.ndarray,
        top: tuple[int, int],
        scale: float,
        view: View,
        region: tuple[int, int, int, int],
        limit: int = 256,
    ) -> tuple[np.ndarray | None, str]:
        """Resample one window of low-resolution logits inside ``region`` (full-res, exclusive).

        Args:
            logits: (L, L) logits of a window whose top-left low-res pixel is ``top`` (row, col).
            scale: encoder-frame pixels per image pixel of the view.
            limit: side of the full low-resolution grid; window edges on it are the view's edge.
            view: the view the logits belong to.
            region: x0, y0, x1, y1 in image pixels.

        Returns:
            The region's boolean mask (None when rejected) and ``ok`` or the rejection reason
            (``empty``: no pixel above threshold; ``escaped``: the mask reaches the window's edge
            or lies mostly outside the region).
        """
        positive = logits > 0
        total = int(positive.sum())
        if total == 0:
            return None, "empty"
        n = logits.shape[0]
        # A mask touching the window's edge goes on beyond it (unless that edge is the view's).
        if (
            (top[0] > 0 and positive[0].any())
            or (top[1] > 0 and positive[:, 0].any())
            or (top[0] + n < limit and positive[-1].any())
            or (top[1] + n < limit and positive[:, -1].any())
        ):
            return None, "escaped"
        a = scale / 4.0  # low-res pixels per image pixel
        x0, y0, x1, y1 = region
        # Image pixel centre (x + 0.5) -> view-local low-res coordinate ((x - vx0) + 0.5) * a - 0.5,
        # then into the window by subtracting its top-left.
        lx0 = int(np.floor((x0 - view.x0) * a)) - top[1]
        ly0 = int(np.floor((y0 - view.y0) * a)) - top[0]
        lx1 = int(np.ceil((x1 - view.x0) * a)) + 1 - top[1]
        ly1 = int(np.ceil((y1 - view.y0) * a)) + 1 - top[0]
        inside = int(positive[max(ly0, 0) : max(ly1, 0), max(lx0, 0) : max(lx1, 0)].sum())
        if inside < 0.8 * total:
            return None, "escaped"
        m = np.array(
            [
                [a, 0.0, (x0 - view.x0 + 0.5) * a - 0.5 - top[1]],
                [0.0, a, (y0 - view.y0 + 0.5) * a - 0.5 - top[0]],
            ],
            dtype=np.float64,
        )
        up = cv2.warpAffine(
            logits,
            m,
            (x1 - x0, y1 - y0),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        return up > 0, "ok"

    def prompt_geometry(
        self, centers: np.ndarray, radii: np.ndarray, shape: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Prompt boxes (N, 4 float: x0, y0, x1, y1, a margin beyond each droplet) and paste regions
        (N, 4 int, exclusive: the box plus half a radius) for droplets at ``centers`` (N, 2)."""
        h, w = shape
        reach = radii * (1.0 + self.box_margin)
        boxes = np.stack(
            [centers[:, 0] - reach, centers[:, 1] - reach, centers[:, 0] + reach, centers[:, 1] + reach], 1
        )
        boxes = np.clip(boxes, 0, [w - 1, h - 1, w - 1, h - 1])
        pad = 0.5 * radii[:, None]
        regions = np.stack(
            [
                np.maximum(np.floor(boxes[:, 0:1] - pad), 0),
                np.maximum(np.floor(boxes[:, 1:2] - pad), 0),
                np.minimum(np.ceil(boxes[:, 2:3] + pad) + 1, w),
                np.minimum(np.ceil(boxes[:, 3:4] + pad) + 1, h),
            ],
            axis=1,
        )[..., 0].astype(np.int64)
        return boxes, regions

    # -- the whole step --------------------------------------------------------------------------

    def refine(
        self,
        rgb8: np.ndarray,
        detections: list[Instance],
        check: Callable[[str], None] | None = None,
        on_encoding: Callable[[View, Encoding], None] | None = None,
    ) -> tuple[list[Instance], RefineStats]:
        """Replace each detection's mask with SAM's, where SAM agrees; see the module docstring.

        ``check(stage)`` is called before each encoding and decoder batch; it may raise to stop the
        work (a request's deadline). ``on_encoding(view, encoding)`` receives each view's encoding
        (the web service caches them for later point prompts).
        """
        stats = RefineStats(prompts=len(detections))
        h, w = rgb8.shape[:2]
        centers = np.array([d.center if d.center else ((d.x0 + d.x1) / 2, (d.y0 + d.y1) / 2) for d in detections])
        radii = np.array([d.radius if d.radius else max(d.mask.shape) / 2 for d in detections])
        views = plan_views((h, w), 2 * radii)
        stats.views = len(views)
        if not detections:
            t0 = time.perf_counter()
            self.encode(rgb8, views[0])
            stats.add_time("encode", time.perf_counter() - t0)
            return [], stats
        boxes, regions = self.prompt_geometry(centers, radii, (h, w))
        owner = _assign(views, regions, centers)
        out: list[Instance | None] = [None] * len(detections)
        for v, view in enumerate(views):
            idx = np.flatnonzero(owner == v)
            if idx.size == 0:
                continue
            if check:
                check("SAM encoding")
            t0 = time.perf_counter()
            enc = self.encode(rgb8, view)
            stats.add_time("encode", time.perf_counter() - t0)
            if on_encoding is not None:
                on_encoding(view, enc)
            # Similar window sizes batch together.
            idx = idx[np.argsort((regions[idx, 2] - regions[idx, 0]), kind="stable")]
            for start in range(0, idx.size, self.batch_size):
                batch = idx[start : start + self.batch_size]
                if check:
                    check("SAM decoding")
                t1 = time.perf_counter()
                logits, scores, tops, _ = self.decode(enc, boxes[batch], centers[batch], regions[batch])
                stats.add_time("decode", time.perf_counter() - t1)
                stats.batches += 1
                t2 = time.perf_counter()
                for k, i in enumerate(batch):
                    out[i] = self._accept(
                        detections[i], logits[k], tuple(tops[k]), enc, regions[i], centers[i], scores[k], stats
                    )
                stats.add_time("paste", time.perf_counter() - t2)
            del enc
        return [o for o in out if o is not None], stats

    def _accept(
        self,
        det: Instance,
        logits: np.ndarray,
        top: tuple[int, int],
        enc: Encoding,
        region: np.ndarray,
        centre: np.ndarray,
        score: float,
        stats: RefineStats,
    ) -> Instance:
        """SAM's mask for one detection when it agrees with it, else the detection (counted)."""
        reg = tuple(int(v) for v in region)
        mask, verdict = self.paste(logits, top, enc.scale, enc.view, reg, limit=4 * enc.shared.grid[0])
        if mask is not None:
            mask = _component_at(fill_holes(mask), centre - np.array(reg[:2]))
            if mask is None:
                verdict = "empty"
        if mask is not None:
            cand = Instance(
                reg[0], reg[1], mask, score=float(score), source="sam", center=det.center, radius=det.radius
            )
            cand = cand.tight()
            if cand is None:
                verdict = "empty"
            elif mask_iou(cand, det) < self.min_agreement:
                verdict = "disagrees"
            else:
                stats.sam_masks += 1
                return cand
        stats.fallback[verdict] = stats.fallback.get(verdict, 0) + 1
        return det

    def at_point(
        self,
        enc: Encoding,
        shape: tuple[int, int],
        point: tuple[float, float],
        radius: float,
        detection: Instance | None = None,
    ) -> tuple[Instance | None, str]:
        """SAM's droplet at a clicked point of an encoded view.

        With a detection there, it is the prompt and SAM's mask is kept where it agrees (as in
        :meth:`refine`); without one, the point and a box of ``radius`` prompt SAM and the
        component at the point is taken.

        Returns:
            The instance (or None) and ``sam`` or why SAM's mask was not used.
        """
        if detection is not None:
            centre = np.array(detection.center or point, dtype=np.float64)
            radius = detection.radius or float(np.sqrt(detection.area / np.pi))
        else:
            centre = np.array(point, dtype=np.float64)
        boxes, regions = self.prompt_geometry(centre[None], np.array([radius]), shape)
        clicked = np.array([point], dtype=np.float64)
        logits, scores, tops, _ = self.decode(enc, boxes, clicked, regions)
        if detection is not None:
            stats = RefineStats(prompts=1)
            inst = self._accept(detection, logits[0], tuple(tops[0]), enc, regions[0], clicked[0], scores[0], stats)
            return inst, ("sam" if stats.sam_masks else next(iter(stats.fallback), "disagrees"))
        reg = tuple(int(v) for v in regions[0])
        mask, verdict = self.paste(logits[0], tuple(tops[0]), enc.scale, enc.view, reg, limit=4 * enc.shared.grid[0])
        if mask is not None:
            mask = _component_at(fill_holes(mask), clicked[0] - np.array(reg[:2]))
        if mask is None:
            return None, verdict if verdict != "ok" else "empty"
        inst = Instance(reg[0], reg[1], mask, score=float(scores[0]), source="sam", center=point).tight()
        return inst, "sam" if inst is not None else "empty"


def _assign(views: list[View], regions: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """For each prompt, the view holding its whole region, nearest to the view's centre.

    A region no tile holds (a droplet larger than the tiles' overlap) goes to the view that holds
    most of it; with a single view everything goes to it.
    """
    if len(views) == 1:
        return np.zeros(len(regions), dtype=np.int64)
    best = np.full(len(regions), -1, dtype=np.int64)
    best_dist = np.full(len(regions), np.inf)
    cover = np.zeros((len(views), len(regions)))
    for v, view in enumerate(views):
        holds = view.holds(regions.astype(np.float64))
        cx, cy = (view.x0 + view.x1) / 2, (view.y0 + view.y1) / 2
        dist = np.hypot(centers[:, 0] - cx, centers[:, 1] - cy)
        better = holds & (dist < best_dist)
        best[better] = v
        best_dist[better] = dist[better]
        ix = np.clip(np.minimum(regions[:, 2], view.x1) - np.maximum(regions[:, 0], view.x0), 0, None)
        iy = np.clip(np.minimum(regions[:, 3], view.y1) - np.maximum(regions[:, 1], view.y0), 0, None)
        cover[v] = ix * iy
    lost = best < 0
    best[lost] = cover[:, lost].argmax(axis=0)
    return best


def _component_at(mask: np.ndarray, point: np.ndarray) -> np.ndarray | None:
    """The connected component of ``mask`` at ``point`` (x, y), or the largest one near it."""
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return None
    x = int(np.clip(round(float(point[0])), 0, mask.shape[1] - 1))
    y = int(np.clip(round(float(point[1])), 0, mask.shape[0] - 1))
    label = labels[y, x]
    if label == 0:
        label = int(np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    return labels == label
