"""What a segmentation returns: :class:`Result`, the droplets with their masks, measurements and summary.

A result renders itself in every output format through the same functions the web API and the
command line use (:mod:`sam_droplet.io.write`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .engine.filters import FilterSpec
from .engine.instances import paint_labels
from .engine.measure import Droplet, summarize
from .io import write
from .io.read import ImageData

__all__ = ["Result"]


@dataclass
class Result:
    """Everything one segmentation produced.

    Attributes:
        image: the input, as read.
        segmenter: the segmenter that ran (``auto`` resolved): sam, classical or grid.
        model: the SAM model that ran (type, checkpoint, device), or None.
        found: every droplet found, in id order; those a filter removed carry ``removed_reason``.
        filters: the filters applied; ``preset`` the preset they came from.
        um_per_px: calibration in micrometres per pixel, or None.
        removed_counts: droplets removed per filter reason.
        timing_ms: milliseconds per stage (the combined detector runs ``detect`` and ``detect_net`` at once).
        details: per-stage facts (detector cue, SAM prompts and fallbacks, overlap resolution).
        fluorescence_summary: with a fluorescence channel, the population figures (call, ddPCR,
            occupancy); None otherwise.
        fluorescence_image: the fluorescence channel, when one was given.
        calibration_source: where ``um_per_px`` came from: ``request`` (the caller), ``file`` (the
            image's metadata) or ``none``.
    """

    image: ImageData
    segmenter: str
    model: dict[str, Any] | None
    found: list[Droplet]
    filters: FilterSpec
    preset: str
    um_per_px: float | None
    removed_counts: dict[str, int]
    timing_ms: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    fluorescence_summary: dict[str, Any] | None = None
    fluorescence_image: ImageData | None = None
    calibration_source: str = "none"

    @property
    def droplets(self) -> list[Droplet]:
        """The kept droplets (ids 1..N in reading order, with gaps where a droplet was removed)."""
        return [d for d in self.found if d.removed_reason is None]

    @property
    def removed(self) -> list[Droplet]:
        """The droplets a filter removed, each with its ``removed_reason``."""
        return [d for d in self.found if d.removed_reason is not None]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.image.height, self.image.width)

    @cached_property
    def labels(self) -> np.ndarray:
        """uint32 HxW instance labels of the kept droplets (0 = background, value = droplet id)."""
        kept = self.droplets
        return paint_labels([d.instance for d in kept], self.shape, [d.id for d in kept])

    @cached_property
    def all_labels(self) -> np.ndarray:
        """uint32 HxW labels of every droplet found, removed ones included."""
        return paint_labels([d.instance for d in self.found], self.shape, [d.id for d in self.found])

    @property
    def summary(self) -> dict[str, Any]:
        """Population statistics of the kept droplets (count, diameters, volumes when calibrated,
        histogram, removed counts), stage times and details, and the fluorescence figures."""
        out = summarize(self.droplets, self.shape, self.um_per_px, self.removed_counts)
        out["timing_ms"] = {k: round(v, 1) for k, v in self.timing_ms.items()}
        out.update(self.details)
        if self.fluorescence_summary is not None:
            out.update(self.fluorescence_summary)
        return out

    def as_dict(self, masks: bool = True) -> dict[str, Any]:
        """The result as one JSON-ready record: image, calibration, segmenter, model, timing,
        droplets, removed, summary and the filters applied (the web API's ``format=json`` without
        ``success``)."""
        return {
            "image": self.image.info(),
            "calibration": {"um_per_px": self.um_per_px, "source": self.calibration_source},
            "segmenter": self.segmenter,
            "model": self.model,
            "timing_ms": {k: round(v, 1) for k, v in self.timing_ms.items()},
            "num_droplets": len(self.droplets),
            "droplets": [d.as_dict(mask=masks) for d in self.droplets],
            "removed": [d.as_dict(mask=masks) for d in self.removed],
            "summary": self.summary,
            "filters_applied": {**self.filters.as_dict(), "preset": self.preset, "um_per_px": self.um_per_px},
        }

    def to_json(self, path: str | Path | None = None, masks: bool = True) -> str:
        """:meth:`as_dict` as JSON text, also written to ``path`` when given."""
        text = json.dumps(self.as_dict(masks=masks))
        if path is not None:
            Path(path).write_text(text)
        return text

    def to_csv(self, path: str | Path | None = None) -> str:
        """One CSV row per kept droplet, units in the column names; also written to ``path``."""
        text = write.droplets_csv(self.droplets, self.um_per_px)
        if path is not None:
            Path(path).write_text(text)
        return text

    def to_coco(self, path: str | Path | None = None, file_name: str = "image.png") -> dict[str, Any]:
        """COCO instances (RLE masks of the kept droplets) that pycocotools loads; also written to
        ``path`` as JSON."""
        coco = write.coco_dict(self.droplets, self.shape, file_name)
        if path is not None:
            Path(path).write_text(json.dumps(coco))
        return coco

    def to_imagej(self, path: str | Path | None = None) -> bytes:
        """The kept droplets as an ImageJ / Fiji ROI Manager zip (polygon ROIs named by droplet id);
        also written to ``path``."""
        from .io.imagej import rois_zip

        data = rois_zip(self.droplets)
        if path is not None:
            Path(path).write_bytes(data)
        return data

    def overlay(self, path: str | Path | None = None, show_ids: bool = True) -> np.ndarray:
        """The image as 8-bit RGB with the outlines drawn (kept green, removed red) and the kept
        droplets' ids; also written to ``path`` as PNG."""
        rgb = write.overlay_rgb(self.image.rgb8, self.droplets, self.removed, show_ids)
        if path is not None:
            Path(path).write_bytes(write.png_bytes(rgb))
        return rgb
