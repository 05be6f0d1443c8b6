"""The segmentation pipeline: decode, detect, refine with SAM, resolve, measure, filter.

:class:`Engine` is built once per process at startup (:meth:`Engine.start`) and holds what a
request must not rebuild: the configuration and the loaded SAM model. Requests never mutate it;
everything a request computes lives in its own :class:`SegmentationResult`.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .admission import Admission, Deadline
from .config import SEGMENTERS, Config
from .decode import DecodedImage
from .detect import APPEARANCES, DetectionParams, detect_droplets
from .errors import InvalidOptions, NotReady, Overloaded, StartupError
from .filters import PRESETS, FilterSpec, apply_filters, resolve_filters
from .fluorescence import THRESHOLD_METHODS
from .image_cache import CachedImage, ImageCache
from .instances import resolve_overlaps
from .measure import Droplet, measure_droplets, summarize
from .model import CheckpointError, LoadedModel, load_sam
from .point import PointQuery, detect_at_point

__all__ = ["Engine", "PointResult", "SegmentOptions", "SegmentationResult"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentOptions:
    """What a request asks for (already parsed from HTTP or the command line).

    Attributes:
        segmenter: auto, sam, classical or grid; None for the service default.
        filters: user filters (a JSON object), merged over the preset's.
        preset: a name from :data:`sam_droplet.filters.PRESETS`; None for ``default``.
        um_per_px: calibration in micrometres per pixel; None when uncalibrated.
        appearance: detector hint (auto, rim, bright, dark); None takes the preset's.
        fluorescence_threshold: positive above this background-corrected mean fluorescence; None
            chooses one by ``threshold_method``.
        threshold_method: otsu or gmm (two-component Gaussian mixture).
        spot_diameter_px: typical diameter of the objects (cells, beads) counted per droplet.
    """

    segmenter: str | None = None
    filters: dict[str, Any] | None = None
    preset: str | None = None
    um_per_px: float | None = None
    appearance: str | None = None
    fluorescence_threshold: float | None = None
    threshold_method: str = "otsu"
    spot_diameter_px: float = 5.0

    def validate(self) -> None:
        """Raise :class:`InvalidOptions` for values outside what each option accepts."""
        if self.segmenter is not None and self.segmenter not in SEGMENTERS:
            raise InvalidOptions(f"unknown segmenter {self.segmenter!r}; accepted: {', '.join(SEGMENTERS)}")
        if self.um_per_px is not None:
            value = self.um_per_px
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise InvalidOptions(f"um_per_px must be a positive number (micrometres per pixel), got {value!r}")
        if self.appearance is not None and self.appearance not in APPEARANCES:
            raise InvalidOptions(f"unknown appearance {self.appearance!r}; accepted: {', '.join(APPEARANCES)}")
        if self.preset is not None and self.preset not in PRESETS:
            raise InvalidOptions(f"unknown preset {self.preset!r}; accepted: {', '.join(PRESETS)}")
        if self.threshold_method not in THRESHOLD_METHODS:
            raise InvalidOptions(
                f"unknown threshold_method {self.threshold_method!r}; accepted: {', '.join(THRESHOLD_METHODS)}"
            )
        for name in ("fluorescence_threshold", "spot_diameter_px"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not math.isfinite(value)):
                raise InvalidOptions(f"{name} must be a finite number, got {value!r}")
        if not 1 <= self.spot_diameter_px <= 200:
            raise InvalidOptions(f"spot_diameter_px must be from 1 to 200 pixels, got {self.spot_diameter_px!r}")


@dataclass
class SegmentationResult:
    """Everything one segmentation produced.

    Attributes:
        image: the decoded input.
        segmenter: the segmenter that ran (auto resolved).
        droplets: all droplets, ``removed_reason`` set on those a filter removed.
        filters: the filters applied; ``preset`` the preset they came from.
        um_per_px: calibration, or None.
        timing_ms: milliseconds per stage.
        details: per-stage facts (detector cue, SAM prompts and fallbacks, overlap resolution).
    """

    image: DecodedImage
    segmenter: str
    model: dict[str, Any] | None
    droplets: list[Droplet]
    filters: FilterSpec
    preset: str
    um_per_px: float | None
    removed_counts: dict[str, int]
    timing_ms: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    fluorescence: dict[str, Any] | None = None

    @property
    def kept(self) -> list[Droplet]:
        return [d for d in self.droplets if d.removed_reason is None]

    @property
    def removed(self) -> list[Droplet]:
        return [d for d in self.droplets if d.removed_reason is not None]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.image.height, self.image.width)

    def summary(self) -> dict[str, Any]:
        out = summarize(self.kept, self.shape, self.um_per_px, self.removed_counts)
        out["timing_ms"] = {k: round(v, 1) for k, v in self.timing_ms.items()}
        out.update(self.details)
        if self.fluorescence is not None:
            out.update(self.fluorescence)
        return out


@dataclass
class PointResult:
    """The droplet found at a point (:meth:`Engine.droplet_at`).

    Attributes:
        droplet: the droplet, measured (its id is 1; the client numbers it), or None when none is there.
        segmenter: classical or sam.
        verdict: ``sam`` when SAM's mask was used, ``detector`` for the classical detection, or why
            SAM's mask was not used; ``none`` when nothing was found.
        timing_ms: milliseconds per stage.
    """

    droplet: Droplet | None
    segmenter: str
    verdict: str
    timing_ms: dict[str, float] = field(default_factory=dict)


class Engine:
    """The per-process segmentation service: configuration plus the loaded model (if any).

    Attributes:
        config: the settings it was started with.
        model: the loaded SAM model, or None.
        status: ``ok``, or ``degraded`` when SEGMENTER=auto fell back to classical.
        status_reason: why it is degraded.
        image_cache: recent images and their SAM embeddings, for :meth:`droplet_at`.
    """

    def __init__(
        self, config: Config, model: LoadedModel | None = None, status: str = "ok", status_reason: str | None = None
    ):
        self.config = config
        self.model = model
        self.status = status
        self.status_reason = status_reason
        self.started = time.time()
        # The model runs one image at a time; Admission bounds how many segmentations run and wait.
        self._model_lock = threading.Lock()
        self.admission = Admission(config.max_concurrent, config.max_queue, config.request_timeout_s)
        self.image_cache = ImageCache(config.image_cache_mb)

    @classmethod
    def start(cls, config: Config) -> Engine:
        """Build the engine and load the model as SEGMENTER asks.

        ``classical`` loads nothing; ``sam`` and ``grid`` need the checkpoint and raise
        :class:`StartupError` without it; ``auto`` loads it when it can and otherwise serves with the
        classical segmenter, reporting ``degraded``.
        """
        if config.segmenter == "classical":
            return cls(config)
        try:
            model = load_sam(config.model_path, config.model_type, config.device, config.torch_threads)
        except CheckpointError as exc:
            if config.segmenter in ("sam", "grid"):
                raise StartupError(f"SEGMENTER={config.segmenter} needs SAM: {exc}") from None
            log.warning("SAM not loaded, serving with the classical segmenter: %s", exc)
            return cls(config, status="degraded", status_reason=str(exc))
        return cls(config, model=model)

    @property
    def default_segmenter(self) -> str:
        if self.config.segmenter == "auto":
            return "sam" if self.model is not None else "classical"
        return self.config.segmenter

    @property
    def available_segmenters(self) -> list[str]:
        return ["auto", "sam", "classical", "grid"] if self.model is not None else ["auto", "classical"]

    def health(self) -> dict[str, Any]:
        """Facts for /health (process memory and CUDA memory included)."""
        import psutil

        info: dict[str, Any] = {
            "status": self.status,
            "model_loaded": self.model is not None,
            "segmenter": self.default_segmenter,
            "available_segmenters": self.available_segmenters,
            "model_type": self.config.model_type if self.model is not None else None,
            "checkpoint": str(self.model.checkpoint) if self.model is not None else None,
            "device": str(self.model.device) if self.model is not None else "cpu",
            "cuda": None,
            "uptime_s": round(time.time() - self.started, 1),
            "memory_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
            "pid": os.getpid(),
        }
        if self.status_reason:
            info["reason"] = self.status_reason
        if self.model is not None and self.model.device.type == "cuda":
            import torch

            idx = self.model.device.index or 0
            free, total = torch.cuda.mem_get_info(idx)
            info["cuda"] = {
                "name": torch.cuda.get_device_name(idx),
                "memory_allocated_mb": round(torch.cuda.memory_allocated(idx) / 2**20, 1),
                "memory_reserved_mb": round(torch.cuda.memory_reserved(idx) / 2**20, 1),
                "memory_free_mb": round(free / 2**20, 1),
                "memory_total_mb": round(total / 2**20, 1),
            }
        return info

    # -- segmentation ----------------------------------------------------------------------------

    def resolve_segmenter(self, requested: str | None) -> str:
        name = requested or self.config.segmenter
        if name == "auto":
            return self.default_segmenter
        if name in ("sam", "grid") and self.model is None:
            reason = self.status_reason or "the service runs with SEGMENTER=classical"
            raise NotReady(f"the {name} segmenter needs the SAM model, which is not loaded: {reason}")
        return name

    def segment(
        self,
        image: DecodedImage,
        options: SegmentOptions,
        deadline: Deadline | None = None,
        fluorescence: DecodedImage | None = None,
    ) -> SegmentationResult:
        """Run the whole pipeline on a decoded image; options are validated before any work.

        With ``fluorescence`` (a registered picture of the same field and size), each droplet also
        gets its fluorescence, a positive call and an object count, and the summary the ddPCR and
        occupancy figures (:mod:`sam_droplet.fluorescence`).

        Raises:
            InvalidOptions, NotReady: the request cannot be served as asked.
            DeadlineExceeded: ``deadline`` passed (checked between stages and SAM batches).
            Overloaded: the device ran out of memory; the next request starts clean.
        """
        options.validate()
        if fluorescence is not None and fluorescence.gray.shape != image.gray.shape:
            raise InvalidOptions(
                f"the fluorescence image is {fluorescence.width}x{fluorescence.height} but the bright-field image "
                f"is {image.width}x{image.height}: they must be the same field at the same size"
            )
        if fluorescence is image and options.appearance is None:
            # Only a fluorescence picture: the droplets are the bright disks on it.
            options = replace(options, appearance="bright")
        try:
            result = self._segment(image, options, deadline.check if deadline else None)
        except RuntimeError as exc:
            if not _is_out_of_memory(exc):
                raise
            _free_device_memory()
            log.warning("out of memory during a segmentation of %dx%d: %s", image.width, image.height, exc)
            raise Overloaded(
                "the device ran out of memory for this image; try again, or use a smaller image", retry_after_s=10
            ) from None
        if fluorescence is not None:
            t0 = time.perf_counter()
            result.fluorescence, labels = analyze_fluorescence(result, fluorescence, options)
            result.timing_ms["fluorescence"] = (time.perf_counter() - t0) * 1000
            entry = self.image_cache.get(image.sha256)
            if entry is not None:
                entry.fluorescence = fluorescence
                entry.labels = labels
                entry.fl_threshold = result.fluorescence["fluorescence"]["call"]["threshold"]
                entry.spot_diameter_px = options.spot_diameter_px
                self.image_cache.put(entry)  # re-checks the budget with the channel added
        return result

    def _segment(
        self, image: DecodedImage, options: SegmentOptions, check: Callable[[str], None] | None
    ) -> SegmentationResult:
        segmenter = self.resolve_segmenter(options.segmenter)
        spec, preset = resolve_filters(options.filters, options.preset, calibrated=options.um_per_px is not None)
        appearance = options.appearance or PRESETS[preset].appearance
        nested = PRESETS[preset].nested_droplets  # droplets seen through droplets, or contents
        timing: dict[str, float] = {}
        details: dict[str, Any] = {}
        cached = self.image_cache.put(CachedImage(image))

        t0 = time.perf_counter()
        if segmenter == "grid":
            from .grid import segment_grid

            with self._model_lock:
                raw, grid_stats = segment_grid(
                    self.model, image.rgb8, self.config.grid_points_per_side, self.config.grid_crop_n_layers
                )
            timing["grid"] = (time.perf_counter() - t0) * 1000
            details["grid"] = grid_stats.as_dict()
        else:
            detection = detect_droplets(
                image.gray,
                DetectionParams(appearance=appearance, nested_droplets=nested, threads=self.config.torch_threads),
            )
            timing["detect"] = (time.perf_counter() - t0) * 1000
            if check:
                check("detection")
            details["detector"] = {
                "appearance": detection.appearance,
                "proposals": detection.n_proposals,
                "droplets": len(detection.instances),
            }
            raw = detection.instances
            if cached is not None:
                cached.appearance = detection.appearance
                cached.diameter_px = detection.median_diameter_px
            if segmenter == "sam":
                from .refine import SamRefiner

                t1 = time.perf_counter()
                refiner = SamRefiner(self.model, batch_size=self.config.sam_batch_size)
                keep = None
                if cached is not None:
                    keep = lambda view, enc: self.image_cache.add_encoding(image.sha256, _view_key(view), enc)  # noqa: E731
                with self._model_lock:
                    raw, refine_stats = refiner.refine(image.rgb8, raw, check, keep=keep)
                timing["refine"] = (time.perf_counter() - t1) * 1000
                timing.update({f"refine_{k}": v for k, v in refine_stats.timing_ms.items()})
                details["sam"] = refine_stats.as_dict()

        if check:
            check("refinement")
        t0 = time.perf_counter()
        # The detector's proposals may hold droplets seen through larger ones, on purpose (unless the
        # preset says droplets carry contents); the grid segmenter's nested masks are cells and
        # reflections.
        instances, report = resolve_overlaps(raw, keep_nested=nested and segmenter != "grid")
        timing["postprocess"] = (time.perf_counter() - t0) * 1000
        details["resolved"] = report.as_dict()

        t0 = time.perf_counter()
        droplets = measure_droplets(instances, image.gray)
        timing["measure"] = (time.perf_counter() - t0) * 1000

        t0 = time.perf_counter()
        removed_counts = apply_filters(droplets, spec, options.um_per_px)
        timing["filter"] = (time.perf_counter() - t0) * 1000

        return SegmentationResult(
            image=image,
            segmenter=segmenter,
            model=self.model.describe() if self.model is not None and segmenter != "classical" else None,
            droplets=droplets,
            filters=spec,
            preset=preset,
            um_per_px=options.um_per_px,
            removed_counts=removed_counts,
            timing_ms=timing,
            details=details,
        )

    def droplet_at(
        self,
        entry: CachedImage,
        x: float,
        y: float,
        segmenter: str | None = None,
        diameter_px: float | None = None,
        appearance: str | None = None,
    ) -> PointResult:
        """The droplet at (x, y) of a cached image: a local classical detection, refined by SAM in
        sam mode from the cached embedding of the view that holds it (encoded now when missing).

        Args:
            entry: the image (from :attr:`image_cache`, or a new :class:`CachedImage`).
            x, y: the point in image pixels.
            segmenter: as in :class:`SegmentOptions`; grid is answered like sam.
            diameter_px: typical droplet diameter; None takes the cached segmentation's.
            appearance: detector cue; None takes the cached segmentation's.

        With a cached fluorescence channel the droplet also gets its fluorescence columns, measured
        as in the segmentation and called positive against the segmentation's threshold.
        """
        image = entry.image
        if not (0 <= x < image.width and 0 <= y < image.height):
            raise InvalidOptions(f"the point ({x:g}, {y:g}) lies outside the {image.width}x{image.height} image")
        name = self.resolve_segmenter(segmenter)
        name = "sam" if name == "grid" else name
        timing: dict[str, float] = {}
        t0 = time.perf_counter()
        query = PointQuery(x, y, diameter_px or entry.diameter_px, appearance or entry.appearance or "auto")
        inst = detect_at_point(image.gray, query)
        if query.appearance != "auto" and (inst is None or inst.score < DetectionParams.min_fit_score):
            # A droplet unlike the others (dyed, carrying a cell) fits the image's cue poorly: let the
            # window choose its own cue, and keep the better outline.
            other = detect_at_point(image.gray, replace(query, appearance="auto"))
            if other is not None and (inst is None or other.score > inst.score):
                inst = other
        timing["detect"] = (time.perf_counter() - t0) * 1000
        verdict = "detector" if inst is not None else "none"
        if name == "sam":
            from .refine import SamRefiner, plan_views

            t0 = time.perf_counter()
            refiner = SamRefiner(self.model, batch_size=1)
            views = plan_views((image.height, image.width), np.array([query.scale_px]))
            view = min(views, key=lambda v: math.hypot((v.x0 + v.x1) / 2 - x, (v.y0 + v.y1) / 2 - y))
            with self._model_lock:
                encoding = entry.encodings.get(_view_key(view))
                if encoding is None:
                    encoding = refiner.encode(image.rgb8, view)
                    self.image_cache.add_encoding(image.sha256, _view_key(view), encoding)
                timing["encode"] = (time.perf_counter() - t0) * 1000
                t0 = time.perf_counter()
                inst, verdict = refiner.at_point(
                    encoding, (image.height, image.width), (x, y), query.scale_px / 2, detection=inst
                )
            timing["decode"] = (time.perf_counter() - t0) * 1000
            verdict = verdict if inst is not None else "none"
        t0 = time.perf_counter()
        droplets = measure_droplets([inst], image.gray) if inst is not None else []
        if droplets and entry.fluorescence is not None:
            _point_fluorescence(droplets[0], entry)
        timing["measure"] = (time.perf_counter() - t0) * 1000
        return PointResult(droplets[0] if droplets else None, name, verdict, timing)

    def analyze(self, image: DecodedImage) -> dict[str, Any]:
        """Quick look at an image: size, intensity histogram, droplet size estimate, suggested filters."""
        t0 = time.perf_counter()
        gray = image.gray
        lo, hi = float(gray.min()), float(gray.max())
        counts, edges = np.histogram(gray, bins=64, range=(lo, hi if hi > lo else lo + 1))
        detection = detect_droplets(gray)
        h, w = gray.shape
        # Droplets cut by the border would widen the size distribution: leave them out.
        whole = [i for i in detection.instances if i.x0 > 0 and i.y0 > 0 and i.x1 < w and i.y1 < h]
        diameters = np.array([2 * math.sqrt(i.area / math.pi) for i in whole])
        estimate = float(np.median(diameters)) if diameters.size else None
        # Robust spread: interquartile range over the median (0.1 for a CV of about 7 %).
        q1, q3 = np.percentile(diameters, [25, 75]) if diameters.size >= 4 else (0.0, 0.0)
        robust_cv = float((q3 - q1) / 1.349 / estimate) if estimate and diameters.size >= 4 else None
        area_fraction = float(sum(i.area for i in detection.instances)) / gray.size
        if detection.appearance == "bright":
            preset = "bright_droplets"
        elif detection.appearance == "dark":
            preset = "dark_droplets"
        elif area_fraction > 0.4 and robust_cv is not None and robust_cv < 0.1:
            preset = "packed_monolayer"
        else:
            preset = "polydisperse"
        suggested: dict[str, Any] = dict(PRESETS[preset].filters)
        if estimate:
            suggested.update(
                {"diameter_min": round(0.5 * estimate, 1), "diameter_max": round(2.0 * estimate, 1), "units": "px"}
            )
        return {
            "image": image.info(),
            "intensity": {
                "min": lo,
                "max": hi,
                "mean": float(gray.mean()),
                "std": float(gray.std()),
                "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
            },
            "appearance": detection.appearance,
            "estimated_droplets": len(detection.instances),
            "estimated_diameter_px": round(estimate, 2) if estimate else None,
            "diameter_robust_cv": round(robust_cv, 4) if robust_cv is not None else None,
            "area_fraction": round(area_fraction, 4),
            "suggested_preset": preset,
            "suggested_filters": suggested,
            "timing_ms": {"analyze": round((time.perf_counter() - t0) * 1000, 1)},
        }


def _point_fluorescence(droplet: Droplet, entry: CachedImage) -> None:
    """Fluorescence columns of an added droplet, its annulus avoiding the droplets already found."""
    from .fluorescence import count_spots, droplet_intensities

    shape = (entry.image.height, entry.image.width)
    labels = (
        np.array(entry.labels, dtype=np.int32, copy=True) if entry.labels is not None else np.zeros(shape, np.int32)
    )
    new_id = int(labels.max()) + 1
    inst = droplet.instance
    window = labels[inst.y0 : inst.y1, inst.x0 : inst.x1]
    window[inst.mask] = new_id  # the added droplet owns its whole mask
    raw = entry.fluorescence.gray
    ids = np.array([new_id])
    fl = droplet_intensities(raw, labels, ids)
    spots = count_spots(raw, labels, ids, entry.spot_diameter_px)
    positive = entry.fl_threshold is not None and fl.corrected_mean[0] > entry.fl_threshold
    droplet.extra.update(_fluorescence_columns(fl, spots, 0, positive))


def _fluorescence_columns(fl: Any, spots: np.ndarray, i: int, positive: bool) -> dict[str, Any]:
    """The per-droplet fluorescence columns of droplet ``i`` (JSON and CSV)."""
    return {
        "fl_mean": round(float(fl.mean[i]), 4),
        "fl_max": round(float(fl.max[i]), 4),
        "fl_integrated": round(float(fl.integrated[i]), 2),
        "fl_background": round(float(fl.background[i]), 4),
        "fl_corrected_mean": round(float(fl.corrected_mean[i]), 4),
        "positive": bool(positive),
        "objects": int(spots[i]),
    }


def _view_key(view: Any) -> tuple[int, int, int, int]:
    return (view.x0, view.y0, view.x1, view.y1)


def _is_out_of_memory(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc).lower()


def _free_device_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def analyze_fluorescence(
    result: SegmentationResult, channel: DecodedImage, options: SegmentOptions
) -> tuple[dict[str, Any], np.ndarray]:
    """Fluorescence per droplet (stored in each droplet's ``extra``) and the population figures,
    with the label image of every droplet found (int32) that the annuli were measured against.

    Every droplet found is measured (removed ones too, so a client can restore them); the positive
    call, ddPCR statistics and occupancy use the kept droplets.
    """
    from .export import label_image
    from .fluorescence import classify_positive, count_spots, ddpcr_statistics, droplet_intensities, occupancy

    droplets = result.droplets
    labels = label_image(droplets, result.shape).astype(np.int32) if droplets else np.zeros(result.shape, np.int32)
    ids = np.array([d.id for d in droplets], dtype=np.int64)
    raw = channel.gray
    fl = droplet_intensities(raw, labels, ids)
    spots = count_spots(raw, labels, ids, options.spot_diameter_px)
    kept_idx = np.array([i for i, d in enumerate(droplets) if d.removed_reason is None], dtype=np.int64)
    call = classify_positive(fl.corrected_mean[kept_idx], options.fluorescence_threshold, options.threshold_method)
    positive = fl.corrected_mean > call.threshold
    for i, d in enumerate(droplets):
        d.extra.update(_fluorescence_columns(fl, spots, i, positive[i]))
    kept = [droplets[i] for i in kept_idx]
    volume = (
        float(np.mean([d.calibrated(result.um_per_px)["volume_pl"] for d in kept]))
        if kept and result.um_per_px
        else None
    )
    corrected = fl.corrected_mean[kept_idx]
    counts, edges = np.histogram(corrected, bins=32) if corrected.size else (np.zeros(0), np.zeros(1))
    summary = {
        "fluorescence": {
            "image": channel.info(),
            "mean_of_droplet_means": round(float(fl.mean[kept_idx].mean()), 4) if kept else None,
            "histogram": {"edges": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]},
            "call": call.as_dict(),
        },
        "ddpcr": ddpcr_statistics(len(kept), int(call.positive.sum()), volume),
        "occupancy": {**occupancy(spots[kept_idx]), "spot_diameter_px": options.spot_diameter_px},
    }
    return summary, labels
