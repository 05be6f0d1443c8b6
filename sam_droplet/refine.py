"""SAM refinement of detected droplets (sam mode).

The image is encoded once. Every detected droplet becomes a box prompt with a point at its centre;
prompts are decoded in batches, and of SAM's three outputs per prompt the one with the best
predicted IoU times stability is kept. All of that happens on the decoder's 256x256 low-resolution
logits: each mask is then resampled only inside its own bounding box at full resolution, so no
full-image mask is ever allocated per prompt (the cost that makes SAM's automatic mask generator
slow and memory-hungry).

SAM's answer is used when it agrees with the detection it was prompted with (IoU at least
``min_agreement``) and stays inside the prompt's neighbourhood; otherwise the detector's own mask is
kept and counted as a fallback, so a poor prompt never turns a droplet into a blob of background.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from .instances import Instance, fill_holes
from .model import LoadedModel

__all__ = ["ImageEmbedding", "RefineStats", "SamRefiner"]

LOW_RES = 256  # side of the mask decoder's logits


@dataclass
class ImageEmbedding:
    """The encoder's output for one image (held per request, never shared between requests).

    Attributes:
        features: torch tensor (1, 256, 64, 64).
        original_size: (H, W) of the image.
        input_size: (h, w) of the image resized so its longer side is the encoder's input size.
    """

    features: Any
    original_size: tuple[int, int]
    input_size: tuple[int, int]

    @property
    def scale(self) -> float:
        """Encoder-frame pixels per image pixel."""
        return self.input_size[1] / self.original_size[1]


@dataclass
class RefineStats:
    """What the refinement did, for the response's summary."""

    prompts: int = 0
    batches: int = 0
    sam_masks: int = 0
    fallback: dict[str, int] = field(default_factory=dict)
    timing_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompts": self.prompts,
            "batches": self.batches,
            "sam_masks": self.sam_masks,
            "fallback": dict(self.fallback),
        }


class SamRefiner:
    """Prompted SAM decoding for a list of detected droplets.

    Args:
        model: a loaded SAM model.
        batch_size: prompts decoded per batch; 0 picks 4 on a CPU and 64 on a GPU. On a CPU the
            decoder's per-prompt image tensors (4096 x 256) fall out of cache in large batches:
            batches of 4 run about twice as fast per prompt as batches of 64.
        min_agreement: smallest IoU between SAM's mask and the detection to accept SAM's mask.
        box_margin: prompt boxes extend this fraction of the radius beyond the detected droplet.
    """

    def __init__(self, model: LoadedModel, batch_size: int = 0, min_agreement: float = 0.5, box_margin: float = 0.15):
        self.model = model
        if batch_size <= 0:
            batch_size = 4 if model.device.type == "cpu" else 64
        self.batch_size = int(batch_size)
        self.min_agreement = min_agreement
        self.box_margin = box_margin
        self._target = int(model.sam.image_encoder.img_size)

    # -- encoder ---------------------------------------------------------------------------------

    def encode(self, rgb8: np.ndarray) -> ImageEmbedding:
        """Encode an 8-bit RGB image (HxWx3): resize the longer side to 1024, normalise, pad, run."""
        import torch

        h, w = rgb8.shape[:2]
        scale = self._target / max(h, w)
        new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(rgb8, (new_w, new_h), interpolation=interp)
        sam = self.model.sam
        with torch.inference_mode(), self.model.autocast():
            x = torch.as_tensor(resized, device=self.model.device).permute(2, 0, 1).contiguous()[None].float()
            x = sam.preprocess(x)
            features = sam.image_encoder(x)
        return ImageEmbedding(features=features, original_size=(h, w), input_size=(new_h, new_w))

    # -- decoder ---------------------------------------------------------------------------------

    def decode(self, emb: ImageEmbedding, boxes: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decode box+point prompts; best of three masks per prompt.

        Args:
            emb: the image's embedding.
            boxes: (B, 4) boxes x0, y0, x1, y1 in image pixels.
            points: (B, 2) positive points x, y in image pixels.

        Returns:
            Low-resolution logits (B, 256, 256) float32 of the chosen masks, and their scores
            (predicted IoU times stability) (B,).
        """
        import torch

        sam = self.model.sam
        s = emb.scale
        dev = self.model.device
        with torch.inference_mode(), self.model.autocast():
            box_t = torch.as_tensor(boxes * s, dtype=torch.float32, device=dev)
            pts = torch.as_tensor(points[:, None, :] * s, dtype=torch.float32, device=dev)
            labels = torch.ones(pts.shape[:2], dtype=torch.int64, device=dev)
            sparse, dense = sam.prompt_encoder(points=(pts, labels), boxes=box_t, masks=None)
            low, iou = sam.mask_decoder(
                image_embeddings=emb.features,
                image_pe=sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )
            low = low.float()
            # Stability: how much the mask changes when its logit threshold moves by +-1.
            hi_area = (low > 1.0).sum(dim=(-1, -2)).float()
            lo_area = (low > -1.0).sum(dim=(-1, -2)).float()
            stability = torch.where(lo_area > 0, hi_area / lo_area.clamp(min=1), torch.zeros_like(lo_area))
            score = iou.float().clamp(0, 1) * stability
            best = score.argmax(dim=1)
            rows = torch.arange(low.shape[0], device=dev)
            chosen = low[rows, best]
            return chosen.cpu().numpy(), score[rows, best].cpu().numpy()

    def paste(
        self, logits: np.ndarray, emb: ImageEmbedding, box: tuple[int, int, int, int]
    ) -> tuple[np.ndarray | None, str]:
        """Resample one low-resolution mask inside ``box`` (x0, y0, x1, y1, full-res, exclusive).

        Returns:
            The boolean mask of the box (None when rejected) and ``ok`` or the rejection reason
            (``empty``: no pixel above threshold; ``escaped``: most of the mask lies outside the box).
        """
        x0, y0, x1, y1 = box
        a = emb.scale / 4.0  # low-res pixels per image pixel
        positive = logits > 0
        total = int(positive.sum())
        if total == 0:
            return None, "empty"
        lx0, ly0 = int(np.floor(x0 * a)), int(np.floor(y0 * a))
        lx1, ly1 = int(np.ceil(x1 * a)) + 1, int(np.ceil(y1 * a)) + 1
        inside = int(positive[max(ly0, 0) : ly1, max(lx0, 0) : lx1].sum())
        if inside < 0.8 * total:
            return None, "escaped"
        # Inverse map: image pixel centre (x + 0.5) -> low-res coordinate (x + 0.5) * a - 0.5.
        m = np.array([[a, 0.0, (x0 + 0.5) * a - 0.5], [0.0, a, (y0 + 0.5) * a - 0.5]], dtype=np.float64)
        up = cv2.warpAffine(
            logits,
            m,
            (x1 - x0, y1 - y0),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        return up > 0, "ok"

    # -- the whole step --------------------------------------------------------------------------

    def refine(self, rgb8: np.ndarray, detections: list[Instance]) -> tuple[list[Instance], RefineStats]:
        """Replace each detection's mask with SAM's, where SAM agrees; see the module docstring."""
        stats = RefineStats(prompts=len(detections))
        h, w = rgb8.shape[:2]
        t0 = time.perf_counter()
        emb = self.encode(rgb8)
        stats.timing_ms["encode"] = (time.perf_counter() - t0) * 1000
        if not detections:
            return [], stats
        centers = np.array([d.center if d.center else ((d.x0 + d.x1) / 2, (d.y0 + d.y1) / 2) for d in detections])
        radii = np.array([d.radius if d.radius else max(d.mask.shape) / 2 for d in detections])
        reach = radii * (1.0 + self.box_margin)
        boxes = np.stack(
            [
                np.clip(centers[:, 0] - reach, 0, w - 1),
                np.clip(centers[:, 1] - reach, 0, h - 1),
                np.clip(centers[:, 0] + reach, 0, w - 1),
                np.clip(centers[:, 1] + reach, 0, h - 1),
            ],
            axis=1,
        )
        out: list[Instance] = []
        decode_ms = paste_ms = 0.0
        for start in range(0, len(detections), self.batch_size):
            sl = slice(start, start + self.batch_size)
            t1 = time.perf_counter()
            logits, scores = self.decode(emb, boxes[sl], centers[sl])
            decode_ms += (time.perf_counter() - t1) * 1000
            stats.batches += 1
            t2 = time.perf_counter()
            for k, det in enumerate(detections[sl]):
                i = start + k
                # The paste region: the prompt box grown by half a radius, inside the image.
                pad = 0.5 * radii[i]
                region = (
                    max(int(np.floor(boxes[i, 0] - pad)), 0),
                    max(int(np.floor(boxes[i, 1] - pad)), 0),
                    min(int(np.ceil(boxes[i, 2] + pad)) + 1, w),
                    min(int(np.ceil(boxes[i, 3] + pad)) + 1, h),
                )
                mask, verdict = self.paste(logits[k], emb, region)
                if mask is not None:
                    mask = _component_at(fill_holes(mask), centers[i] - region[:2])
                    if mask is None:
                        verdict = "empty"
                if mask is not None:
                    cand = Instance(
                        region[0],
                        region[1],
                        mask,
                        score=float(scores[k]),
                        source="sam",
                        center=det.center,
                        radius=det.radius,
                    ).tight()
                    if cand is None:
                        verdict = "empty"
                    elif _iou(cand, det) < self.min_agreement:
                        verdict = "disagrees"
                    else:
                        out.append(cand)
                        stats.sam_masks += 1
                        continue
                stats.fallback[verdict] = stats.fallback.get(verdict, 0) + 1
                out.append(det)
            paste_ms += (time.perf_counter() - t2) * 1000
        stats.timing_ms["decode"] = decode_ms
        stats.timing_ms["paste"] = paste_ms
        return out, stats


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


def _iou(a: Instance, b: Instance) -> float:
    """IoU of two crop masks."""
    x0, y0 = min(a.x0, b.x0), min(a.y0, b.y0)
    x1, y1 = max(a.x1, b.x1), max(a.y1, b.y1)
    ma = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    mb = np.zeros_like(ma)
    ma[a.y0 - y0 : a.y1 - y0, a.x0 - x0 : a.x1 - x0] = a.mask
    mb[b.y0 - y0 : b.y1 - y0, b.x0 - x0 : b.x1 - x0] = b.mask
    union = np.count_nonzero(ma | mb)
    return np.count_nonzero(ma & mb) / union if union else 0.0
