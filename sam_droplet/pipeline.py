"""The droplet pipeline: read, detect, refine with SAM, resolve, measure, filter.

:func:`segment` is the one call that segments an image (an array, a path or a file's bytes), as
Cellpose's ``model.eval(img)`` does; :func:`load_model` loads SAM once into a reusable
:class:`Engine`. Every entry point goes through :func:`segment`: the web API, the command line, the
evaluator, the benchmark and the throughput instrument.

An :class:`Engine` holds what a segmentation must not rebuild: its settings and the loaded SAM
model. It knows nothing of the web: callers may pass ``check`` (called at bounded intervals inside
every stage and between SAM batches; it may raise to stop the work, as a request's deadline does)
and ``on_encoding`` (each SAM encoding, for a cache of the caller's).
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from .engine.border import trim_border_leaks
from .engine.contents import absorb_enclosed, count_contents, enclosed_droplets, free_contents, gathered_in_droplets
from .engine.detect import APPEARANCES, DetectionParams, detect_droplets
from .engine.detect.learned import TWICE_SIZE_MAX_PX
from .engine.detect.normalize import is_dark_field
from .engine.detect.overlays import off_annotations, shared_annotation_mask
from .engine.filters import PRESETS, apply_filters, choose_preset, resolve_filters
from .engine.fluorescence import THRESHOLD_METHODS, fluorescence_of_added, measure_fluorescence, occupancy
from .engine.instances import paint_labels, resolve_overlaps
from .engine.measure import Droplet, measure_droplets
from .engine.point import PointQuery, detect_at_point
from .errors import InvalidOptions, NotReady, OutOfMemory, StartupError
from .io.read import ImageData, ImageSource, read_image
from .memory import return_freed_memory
from .result import Result
from .sam.model import CheckpointError, LoadedModel, load_sam
from .settings import DETECTORS, SEGMENTERS, EngineSettings

__all__ = [
    "AUTO_DETECTOR",
    "Engine",
    "ImageContext",
    "PointResult",
    "SegmentOptions",
    "load_model",
    "segment",
]

log = logging.getLogger(__name__)

Check = Callable[[str], None]

# (bytes, bytes per pixel) of one segmentation's working memory, beyond the decoded image: see
# Engine.working_bytes. Measured peak rises: classical 0.8 GB at 13 Mpx (packed monolayer, 60 B/px
# on pixel noise, 100 B/px on a 16 px strip); sam 0.43, 0.54 and 0.62 GB at 1, 4 and 9.6 Mpx
# (its encoder's activations at 1024 px, then the masks).
# The droplet model's figure bounds its peaks measured on 1-16 Mpx emulsion, blank and noise
# pictures (2026-11-26: 0.2, 0.7, 0.8 and 1.3 GB): most of it is the network's activations on one
# tile of up to 2048 px a side, which grow with the picture up to 4 Mpx and then stay.
_WORKING_SET = {"classical": (160 * 2**20, 72), "sam": (450 * 2**20, 32), "net": (500 * 2**20, 52)}
# On pictures of up to TWICE_SIZE_MAX_PX the model may also look at the picture enlarged twice
# (small droplets): (bytes per pixel, their cap, bytes per pixel beyond). Its activations grow by
# 760 B/px until its tiles bound them near 1 Mpx; its maps and their decoding add 100 B/px.
# Measured on generated boiling bubbles of 0.26-2.1 Mpx (2026-11-26: 174, 377, 743, 695, 665 MB).
_TWICE_SIZE_SET = (760, 650 * 2**20, 100)
# The combined detector runs its two detectors side by side (0.84 of the time) up to this many
# pixels (a 4 MP camera; 2200x1700 is 3.7 Mpx) and one after the other beyond, where memory, not
# time, is what limits a request (MAX_REQUEST_MEMORY_MB).
_SIDE_BY_SIDE_PX = 4_200_000
OnEncoding = Callable[[Any, Any], None]

# What DETECTOR=auto runs: chosen by held-out F1 (docs/benchmarks.md, "Detectors").
AUTO_DETECTOR = "combined"


@dataclass(frozen=True)
class SegmentOptions:
    """What one segmentation asks for.

    Attributes:
        segmenter: auto, sam, classical or grid; None for the engine's default.
        filters: filters (a JSON-like object), merged over the preset's.
        preset: a name from :data:`sam_droplet.engine.filters.PRESETS`; None for ``auto`` (chosen
            from the image after detection: :func:`sam_droplet.engine.filters.choose_preset`).
        um_per_px: calibration in micrometres per pixel; None when uncalibrated.
        appearance: detector hint (auto, rim, bright, dark); None takes the preset's.
        fluorescence_threshold: positive above this background-corrected mean fluorescence; None
            chooses one by ``threshold_method``.
        threshold_method: otsu or gmm (two-component Gaussian mixture).
        spot_diameter_px: typical diameter of the objects (cells, beads) counted per droplet.
        contents: count the objects inside each droplet in bright field; None takes the preset's
            (``droplets_with_contents`` counts them).
        detector: auto, classical, net (the learned droplet model) or combined; None for the
            engine's default.
    """

    segmenter: str | None = None
    filters: dict[str, Any] | None = None
    preset: str | None = None
    um_per_px: float | None = None
    appearance: str | None = None
    fluorescence_threshold: float | None = None
    threshold_method: str = "otsu"
    spot_diameter_px: float = 5.0
    contents: bool | None = None
    detector: str | None = None

    def validate(self) -> None:
        """Raise :class:`InvalidOptions` for values outside what each option accepts."""
        for name, value, accepted in (
            ("segmenter", self.segmenter, SEGMENTERS),
            ("detector", self.detector, DETECTORS),
            ("appearance", self.appearance, APPEARANCES),
            ("preset", self.preset, tuple(PRESETS)),
            ("threshold_method", self.threshold_method, THRESHOLD_METHODS),
        ):
            if value is not None and value not in accepted:
                raise InvalidOptions(f"unknown {name} {value!r}; accepted: {', '.join(accepted)}")
        if self.um_per_px is not None:
            value = self.um_per_px
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise InvalidOptions(f"um_per_px must be a positive number (micrometres per pixel), got {value!r}")
        for name in ("fluorescence_threshold", "spot_diameter_px"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not math.isfinite(value)):
                raise InvalidOptions(f"{name} must be a finite number, got {value!r}")
        if self.contents is not None and not isinstance(self.contents, bool):
            raise InvalidOptions(f"contents must be true or false, got {self.contents!r}")
        if not 1 <= self.spot_diameter_px <= 200:
            raise InvalidOptions(f"spot_diameter_px must be from 1 to 200 pixels, got {self.spot_diameter_px!r}")


OPTION_NAMES = tuple(f.name for f in fields(SegmentOptions))


@dataclass
class ImageContext:
    """What a later point query needs to know of a segmented image (:meth:`Engine.segment_from_point`).

    Attributes:
        image: the image.
        encodings: SAM encoder outputs by view, added as they are computed.
        appearance: the detector cue the segmentation used, so a point is detected the same way.
        diameter_px: median droplet diameter of the segmentation, the scale of a point's search.
        fluorescence: the fluorescence channel, when one was given.
        labels: ids of every droplet found (HxW), so an added droplet's background annulus avoids
            its neighbours as in the segmentation.
        fl_threshold: the positive threshold the segmentation used.
        spot_diameter_px: the object size the segmentation counted.
    """

    image: ImageData
    encodings: dict[Any, Any] = field(default_factory=dict)
    appearance: str | None = None
    diameter_px: float | None = None
    fluorescence: ImageData | None = None
    labels: np.ndarray | None = None
    fl_threshold: float | None = None
    spot_diameter_px: float = 5.0

    def learn(self, result: Result, spot_diameter_px: float = 5.0) -> None:
        """Take over what ``result`` (a segmentation of this image) found out."""
        detector = result.details.get("detector", {})
        self.appearance = detector.get("appearance", self.appearance)
        self.diameter_px = detector.get("median_diameter_px", self.diameter_px)
        if result.fluorescence_image is not None and result.fluorescence_summary is not None:
            self.fluorescence = result.fluorescence_image
            self.labels = result.all_labels
            self.fl_threshold = result.fluorescence_summary["fluorescence"]["call"]["threshold"]
            self.spot_diameter_px = spot_diameter_px

    @property
    def nbytes(self) -> int:
        """Memory held: pixels, their gray and 8-bit copies, the fluorescence channel, labels, encodings."""
        img = self.image
        total = _nbytes(img.pixels) + img.height * img.width * (4 + 3)  # + gray float32 + rgb8
        if self.fluorescence is not None and self.fluorescence is not img:
            total += _nbytes(self.fluorescence.pixels) + img.height * img.width * 4
        total += _nbytes(self.labels)
        return total + sum(_nbytes(e) for e in self.encodings.values())


def _nbytes(obj: Any) -> int:
    """Bytes held by arrays and tensors in ``obj`` (a dataclass, mapping, sequence or array)."""
    if obj is None:
        return 0
    if hasattr(obj, "element_size") and hasattr(obj, "nelement"):  # torch.Tensor
        return int(obj.element_size() * obj.nelement())
    if hasattr(obj, "nbytes"):  # numpy.ndarray
        return int(obj.nbytes)
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    if hasattr(obj, "__dataclass_fields__"):
        return sum(_nbytes(getattr(obj, name)) for name in obj.__dataclass_fields__)
    return 0


@dataclass
class PointResult:
    """The droplet found at a point (:meth:`Engine.segment_from_point`).

    Attributes:
        droplet: the droplet, measured (its id is 1; the client numbers it), or None when none is there.
        segmenter: classical or sam.
        verdict: ``sam`` when SAM's mask was used, ``detector`` for the classical detection, or why
            SAM's mask was not used; ``none`` when nothing was found.
        timing_ms: milliseconds per stage (``encode`` only when SAM had to encode the view).
    """

    droplet: Droplet | None
    segmenter: str
    verdict: str
    timing_ms: dict[str, float] = field(default_factory=dict)


class Engine:
    """Settings plus the loaded SAM model (if any): what segments images, reusable and thread-safe.

    Start one with :func:`load_model` or :meth:`start`; segment with :func:`segment` or
    :meth:`segment`.

    Attributes:
        settings: the settings it was started with.
        model: the loaded SAM model, or None.
        status: ``ok``, or ``degraded`` when SEGMENTER=auto fell back to classical.
        status_reason: why it is degraded.
    """

    def __init__(
        self,
        settings: EngineSettings | None = None,
        model: LoadedModel | None = None,
        status: str = "ok",
        status_reason: str | None = None,
    ):
        self.settings = settings or EngineSettings(segmenter="classical")
        self.model = model
        self.status = status
        self.status_reason = status_reason
        # SAM runs one image at a time; callers bound how many segmentations run and wait.
        self._model_lock = threading.Lock()
        self._droplet_net: Any = None
        self._droplet_net_error: str | None = None
        self._net_lock = threading.Lock()

    @classmethod
    def start(cls, settings: EngineSettings) -> Engine:
        """Build the engine and load the model as ``settings.segmenter`` asks.

        ``classical`` loads nothing; ``sam`` and ``grid`` need the checkpoint and raise
        :class:`StartupError` without it; ``auto`` loads it when it can and otherwise runs with
        the classical segmenter, reporting ``degraded``.
        """
        if settings.segmenter == "classical":
            engine = cls(settings)
        else:
            try:
                model = load_sam(settings.model_path, settings.model_type, settings.device, settings.torch_threads)
            except CheckpointError as exc:
                if settings.segmenter in ("sam", "grid"):
                    raise StartupError(f"SEGMENTER={settings.segmenter} needs SAM: {exc}") from None
                log.warning("SAM not loaded, serving with the classical segmenter: %s", exc)
                engine = cls(settings, status="degraded", status_reason=str(exc))
            else:
                engine = cls(settings, model=model)
        if settings.detector != "classical":
            engine.droplet_net()  # load now: a wrong DROPLET_MODEL_PATH stops startup, not a request
        return engine

    def droplet_net(self) -> Any:
        """The learned droplet model (:class:`sam_droplet.modeling.LoadedDropletNet`), loaded on
        first use onto SAM's device (or SAM_DEVICE's); None when the shipped weights cannot be
        loaded (the classical detector is used then, and :meth:`describe` says why).

        Raises:
            StartupError: DROPLET_MODEL_PATH names a file that is not a readable droplet model.
        """
        with self._net_lock:
            if self._droplet_net is None and self._droplet_net_error is None:
                from .modeling.droplet_net import DropletModelError, load_droplet_net
                from .sam.model import resolve_device

                device = self.model.device if self.model is not None else resolve_device(self.settings.device)
                if self.settings.torch_threads > 0:
                    import torch

                    torch.set_num_threads(self.settings.torch_threads)  # a worker's share of the cores
                try:
                    self._droplet_net = load_droplet_net(
                        self.settings.droplet_model_path, device, precision=self.settings.droplet_model_precision
                    )
                except DropletModelError as exc:
                    if self.settings.droplet_model_path is not None or self.settings.detector in ("net", "combined"):
                        raise
                    log.warning("droplet model not loaded, detecting with the classical detector: %s", exc)
                    self._droplet_net_error = str(exc)
            return self._droplet_net

    def resolve_detector(self, requested: str | None) -> str:
        """The detector that runs for ``requested`` (None: DETECTOR; auto: :data:`AUTO_DETECTOR`,
        or classical when the droplet model is not available)."""
        name = requested or self.settings.detector
        if name == "auto":
            name = AUTO_DETECTOR if self.droplet_net() is not None else "classical"
        if name in ("net", "combined") and self.droplet_net() is None:
            raise NotReady(f"the {name} detector needs the droplet model: {self._droplet_net_error}")
        return name

    def working_bytes(self, width: int, height: int, segmenter: str | None = None) -> int:
        """Memory one segmentation of a ``width`` x ``height`` image needs beyond its decoded
        pixels, at its peak: a fixed part and a part per pixel (the detector's float copies,
        pyramid, masks and outlines; SAM's activations and masks). Measured on packed, sparse,
        blank and pure-noise images from 1 to 16 Mpx (docs/reliability.md) and rounded up.

        Raises:
            NotReady: ``segmenter`` needs SAM and no model is loaded."""
        pixels = width * height
        fixed, per_pixel = _WORKING_SET["classical"]
        need = fixed + per_pixel * pixels
        if self.settings.detector != "classical":
            # The droplet model runs in tiles; its maps and their decoding are per pixel. The
            # combined detector (auto's) runs it beside the classical one on pictures up to
            # _SIDE_BY_SIDE_PX, where their memory adds up; after it on larger ones, where the heap the
            # classical one freed is handed back first (the 3600x3600 monolayer's peak rise: 985 MB
            # against 1161 MB without, of 1143 MB estimated).
            fixed, per_pixel = _WORKING_SET["net"]
            by_model = fixed + per_pixel * pixels
            if pixels <= TWICE_SIZE_MAX_PX:
                growing, cap, per_pixel = _TWICE_SIZE_SET
                by_model = max(by_model, min(growing * pixels, cap) + per_pixel * pixels)
            together = self.settings.detector in ("auto", "combined") and pixels <= _SIDE_BY_SIDE_PX
            need = need + by_model if together else max(need, by_model)
        if self.resolve_segmenter(segmenter) != "classical":
            # SAM runs after the detector, whose memory is freed by then: the larger of the two.
            fixed, per_pixel = _WORKING_SET["sam"]
            need = max(need, fixed + per_pixel * pixels)
        return int(need)

    @property
    def default_segmenter(self) -> str:
        if self.settings.segmenter == "auto":
            return "sam" if self.model is not None else "classical"
        return self.settings.segmenter

    @property
    def device(self) -> Any:
        """The torch device the model runs on; None without a model (classical runs on the CPU)."""
        return self.model.device if self.model is not None else None

    @property
    def available_segmenters(self) -> list[str]:
        return list(SEGMENTERS) if self.model is not None else ["auto", "classical"]

    def describe(self) -> dict[str, Any]:
        """What this engine runs: status, default and available segmenters, the model and its device."""
        info: dict[str, Any] = {
            "status": self.status,
            "model_loaded": self.model is not None,
            "segmenter": self.default_segmenter,
            "available_segmenters": self.available_segmenters,
            "model_type": self.settings.model_type if self.model is not None else None,
            "checkpoint": str(self.model.checkpoint) if self.model is not None else None,
            "device": str(self.model.device) if self.model is not None else "cpu",
            "detector": self.resolve_detector(None),
            "droplet_model": self._droplet_net.describe() if self._droplet_net is not None else None,
        }
        if self.status_reason:
            info["reason"] = self.status_reason
        return info

    def resolve_segmenter(self, requested: str | None) -> str:
        """The segmenter that runs for ``requested`` (None: the default; auto: sam when loaded).

        Raises:
            NotReady: sam or grid without a loaded model.
        """
        name = requested or self.settings.segmenter
        if name == "auto":
            return self.default_segmenter
        if name in ("sam", "grid") and self.model is None:
            reason = self.status_reason or "this engine runs the classical segmenter only (load one with load_model)"
            raise NotReady(f"the {name} segmenter needs the SAM model, which is not loaded: {reason}")
        return name

    # -- segmentation ----------------------------------------------------------------------------

    def segment(
        self,
        image: ImageData,
        options: SegmentOptions | None = None,
        *,
        fluorescence: ImageData | None = None,
        check: Check | None = None,
        on_encoding: OnEncoding | None = None,
    ) -> Result:
        """Run the pipeline on an image; options are validated before any work.

        With ``fluorescence`` (a registered picture of the same field and size), each droplet also
        gets its fluorescence, a positive call and an object count, and the summary the ddPCR and
        occupancy figures (:mod:`sam_droplet.engine.fluorescence`). Without ``um_per_px`` in the
        options, the pixel size the file records (``image.um_per_px``) calibrates the result.

        Raises:
            InvalidOptions, NotReady: the image cannot be segmented as asked.
            OutOfMemory: the device ran out of memory (its cache is freed for the next image).
            Whatever ``check`` raises.
        """
        options = options or SegmentOptions()
        options.validate()
        if fluorescence is not None and fluorescence.gray.shape != image.gray.shape:
            raise InvalidOptions(
                f"the fluorescence image is {fluorescence.width}x{fluorescence.height} but the bright-field image "
                f"is {image.width}x{image.height}: they must be the same field at the same size"
            )
        if fluorescence is image and options.appearance is None:
            # Only a fluorescence picture: the droplets are the bright disks on it.
            options = replace(options, appearance="bright")
        calibration = "request" if options.um_per_px is not None else "none"
        if options.um_per_px is None and image.um_per_px is not None:
            # The file's own pixel size (TIFF metadata) calibrates what the caller did not.
            options, calibration = replace(options, um_per_px=image.um_per_px), "file"
        try:
            result = self._segment(image, options, check, on_encoding)
        except RuntimeError as exc:
            if not _is_out_of_memory(exc):
                raise
            _free_device_memory()
            log.warning("out of memory during a segmentation of %dx%d: %s", image.width, image.height, exc)
            raise OutOfMemory(f"the device ran out of memory for this {image.width}x{image.height} image") from None
        finally:
            return_freed_memory()  # a worker keeps none of this image's working set once answered
        result.calibration_source = calibration
        if fluorescence is not None:
            t0 = time.perf_counter()
            population = measure_fluorescence(
                result.found,
                result.all_labels,
                fluorescence.gray,
                options.fluorescence_threshold,
                options.threshold_method,
                options.spot_diameter_px,
                result.um_per_px,
            )
            population["fluorescence"] = {"image": fluorescence.info(), **population["fluorescence"]}
            result.fluorescence_summary = population
            result.fluorescence_image = fluorescence
            result.timing_ms["fluorescence"] = (time.perf_counter() - t0) * 1000
        return result

    def _segment(
        self, image: ImageData, options: SegmentOptions, check: Check | None, on_encoding: OnEncoding | None
    ) -> Result:
        segmenter = self.resolve_segmenter(options.segmenter)
        calibrated = options.um_per_px is not None
        spec, preset = resolve_filters(options.filters, options.preset or "auto", calibrated=calibrated)
        appearance = options.appearance or PRESETS[preset].appearance
        nested = PRESETS[preset].nested_droplets  # droplets seen through droplets, or contents
        timing: dict[str, float] = {}
        details: dict[str, Any] = {}

        t0 = time.perf_counter()
        if segmenter == "grid":
            from .sam.grid import segment_grid

            with self._model_lock:
                raw, grid_stats = segment_grid(
                    self.model,
                    image.rgb8,
                    self.settings.grid_points_per_side,
                    self.settings.grid_crop_n_layers,
                    check=check,
                )
            timing["grid"] = (time.perf_counter() - t0) * 1000
            details["grid"] = grid_stats.as_dict()
        else:
            raw, details["detector"], details["resolved"] = self._detect(
                image, options, appearance, nested, timing, check
            )
            if segmenter == "sam":
                from .sam.refine import SamRefiner

                t1 = time.perf_counter()
                refiner = SamRefiner(self.model, batch_size=self.settings.sam_batch_size)
                with self._model_lock:
                    raw, refine_stats = refiner.refine(image.rgb8, raw, check, on_encoding=on_encoding)
                timing["refine"] = (time.perf_counter() - t1) * 1000
                timing.update({f"refine_{k}": v for k, v in refine_stats.timing_ms.items()})
                details["sam"] = refine_stats.as_dict()

        if check:
            check("refinement")
        if segmenter != "classical":
            # The detector resolved its own outlines; SAM's masks and the grid's are resolved here.
            # The detector's proposals may hold droplets seen through larger ones, on purpose (unless
            # the preset says droplets carry contents); the grid segmenter's nested masks are cells
            # and reflections.
            t0 = time.perf_counter()
            raw, report = resolve_overlaps(raw, keep_nested=nested and segmenter != "grid", check=check)
            timing["postprocess"] = (time.perf_counter() - t0) * 1000
            details["resolved"] = report.as_dict()

        t0 = time.perf_counter()
        # Before the border filter judges them: an outline leaking onto the border is not a cut droplet.
        raw = trim_border_leaks(raw, image.gray.shape)
        droplets = measure_droplets(raw, image.gray, options.um_per_px, check)
        timing["measure"] = (time.perf_counter() - t0) * 1000
        if check:
            check("measurement")

        if preset == "auto":
            t0 = time.perf_counter()
            cue = details.get("detector", {}).get("appearance")
            preset, why, droplets = _auto_preset(droplets, image, cue, options.um_per_px, check)
            spec, _ = resolve_filters(options.filters, preset, calibrated=calibrated)
            details["preset"] = {"requested": "auto", "chosen": preset, **why}
            absorbed, strays = why.get("contents_in_droplets", 0), why.get("contents_outside_droplets", 0)
            timing["preset"] = (time.perf_counter() - t0) * 1000
        elif not nested:
            # The preset says droplets carry contents: an object inside one is not a droplet.
            t0 = time.perf_counter()
            droplets, absorbed, strays = _without_contents(droplets, image, options.um_per_px, check)
            timing["measure"] += (time.perf_counter() - t0) * 1000
        else:
            absorbed = strays = 0
        if absorbed:
            resolved = details.setdefault("resolved", {})
            resolved["nested"] = resolved.get("nested", 0) + absorbed
        if strays:
            details.setdefault("resolved", {})["contents_outside_droplets"] = strays

        t0 = time.perf_counter()
        removed_counts = apply_filters(droplets, spec, options.um_per_px)
        timing["filter"] = (time.perf_counter() - t0) * 1000

        if options.contents if options.contents is not None else PRESETS[preset].count_contents:
            t0 = time.perf_counter()
            details["contents"] = _count_contents(droplets, image, options.spot_diameter_px)
            timing["contents"] = (time.perf_counter() - t0) * 1000

        return Result(
            image=image,
            segmenter=segmenter,
            model=self.model.describe() if self.model is not None and segmenter != "classical" else None,
            found=droplets,
            filters=spec,
            preset=preset,
            um_per_px=options.um_per_px,
            removed_counts=removed_counts,
            timing_ms=timing,
            details=details,
        )

    def _detect(
        self,
        image: ImageData,
        options: SegmentOptions,
        appearance: str,
        nested: bool,
        timing: dict[str, float],
        check: Check | None,
    ) -> tuple[list[Any], dict[str, Any], dict[str, int]]:
        """The droplets the chosen detector finds (resolved), what it reports, and what resolution removed."""
        detector = self.resolve_detector(options.detector)
        info: dict[str, Any] = {"name": detector}
        raw: list[Any] = []
        resolved: dict[str, int] = {}
        # Both detectors leave them out: found once, in colour where the picture has it.
        annotations = shared_annotation_mask(image.gray, image.pixels)

        def by_classical() -> Any:
            t0 = time.perf_counter()
            params = DetectionParams(appearance=appearance, nested_droplets=nested, threads=self.settings.torch_threads)
            detection = detect_droplets(image.gray, params, check, annotations)
            timing["detect"] = (time.perf_counter() - t0) * 1000
            return detection

        def by_model() -> tuple[list[Any], int, Any, tuple[list[Any], list[Any]]]:
            from .engine.detect.learned import detect_with_net

            t0 = time.perf_counter()
            loaded = self.droplet_net()
            maps: tuple[list[Any], list[Any]] = ([], [])  # foreground, centerness per level
            found = detect_with_net(image.gray, loaded, check, foreground=maps[0], centerness=maps[1])
            found, on_annotations = off_annotations(found, image.gray, annotations)
            timing["detect_net"] = (time.perf_counter() - t0) * 1000
            return found, on_annotations, loaded, maps

        if detector == "combined" and image.gray.size <= _SIDE_BY_SIDE_PX:
            # Side by side: much of each detector is single-threaded (NumPy, the decoding), so
            # together they take about 0.84 of their sum on 2 cores.
            with ThreadPoolExecutor(1, thread_name_prefix="droplet-net") as pool:
                model_run = pool.submit(by_model)
                detection = by_classical()
                found, on_annotations, loaded, maps = model_run.result()
        else:
            detection = by_classical() if detector in ("classical", "combined") else None
            if detector != "classical":
                return_freed_memory()  # the model's peak then starts from what the classical one keeps
                found, on_annotations, loaded, maps = by_model()
        if detection is not None:
            info.update(
                appearance=detection.appearance,
                proposals=detection.n_proposals,
                on_annotations=detection.on_annotations,
            )
            raw, resolved = detection.instances, detection.resolve.as_dict()
        if detector in ("net", "combined"):
            from .engine.detect.combine import combine_detections, seen_through_confirmed
            from .engine.detect.learned import off_the_border, sharpen_outlines

            t0 = time.perf_counter()
            info.setdefault("on_annotations", on_annotations)  # combined: the classical count stands
            info["model"] = loaded.describe()
            info["net_droplets"] = len(found)
            if detector == "combined":
                # Where both found a droplet, the outlines more of whose length lies on an image
                # edge stay (classical on a tie); the model adds what the classical one missed, and
                # what only the classical one found goes where the model sees background. The
                # droplets the model saw through a large one both detectors found stay.
                seen_through = seen_through_confirmed(raw)
                found, _ = resolve_overlaps(found, keep_nested=nested, seen_through=seen_through, check=check)
                vetoed: list[Any] = []
                model_found = {id(inst) for inst in found}
                found = combine_detections(raw, found, image.gray, *maps, vetoed=vetoed, check=check)
                info["model_vetoed"] = len(vetoed)  # classical droplets the model sees none in
            # Each pyramid level, and the classical detector, may report the same droplet: one stays.
            raw, report = resolve_overlaps(found, keep_nested=nested, check=check)
            if detector == "combined":
                # Then the model's large droplets are outlined by a finer level: the choices above
                # compared outlines at the precision each detector judged them. (The model alone
                # keeps its coarse outlines: there the finer level lost droplets carrying beads.)
                raw = sharpen_outlines(raw, maps[0], model_found)
                # And no outline reaches the picture's border where the model sees a gap before it
                # (the classical outline of a droplet two pixels off the border reaches it).
                raw = off_the_border(raw, maps[0])
            resolved = {k: resolved.get(k, 0) + v for k, v in report.as_dict().items()}
            timing["combine"] = (time.perf_counter() - t0) * 1000
        if check:
            check("detection")
        diameters = [2.0 * np.sqrt(i.area / np.pi) for i in raw]
        info["droplets"] = len(raw)
        info["median_diameter_px"] = round(float(np.median(diameters)), 3) if diameters else None
        return raw, info, resolved

    def segment_from_point(
        self,
        context: ImageContext,
        x: float,
        y: float,
        segmenter: str | None = None,
        diameter_px: float | None = None,
        appearance: str | None = None,
        on_encoding: OnEncoding | None = None,
    ) -> PointResult:
        """The droplet at (x, y) of an image: a local classical detection, refined by SAM in sam mode
        from the context's encoding of the view that holds it (encoded now when missing).

        Args:
            context: the image and what its segmentation found (:class:`ImageContext`).
            x, y: the point in image pixels.
            segmenter: as in :class:`SegmentOptions`; grid is answered like sam.
            diameter_px: typical droplet diameter; None takes the context's.
            appearance: detector cue; None takes the context's.
            on_encoding: receives a view's encoding when it had to be computed; without it the
                encoding is added to ``context.encodings``.

        With a fluorescence channel in the context, the droplet also gets its fluorescence columns,
        measured as in the segmentation and called positive against the segmentation's threshold.
        """
        image = context.image
        if not (0 <= x < image.width and 0 <= y < image.height):
            raise InvalidOptions(f"the point ({x:g}, {y:g}) lies outside the {image.width}x{image.height} image")
        name = self.resolve_segmenter(segmenter)
        name = "sam" if name == "grid" else name
        timing: dict[str, float] = {}
        t0 = time.perf_counter()
        query = PointQuery(x, y, diameter_px or context.diameter_px, appearance or context.appearance or "auto")
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
            from .sam.refine import SamRefiner, plan_views

            refiner = SamRefiner(self.model, batch_size=1)
            views = plan_views((image.height, image.width), np.array([query.scale_px]))
            view = min(views, key=lambda v: math.hypot((v.x0 + v.x1) / 2 - x, (v.y0 + v.y1) / 2 - y))
            with self._model_lock:
                encoding = context.encodings.get(view)
                if encoding is None:
                    t0 = time.perf_counter()
                    encoding = refiner.encode(image.rgb8, view)
                    timing["encode"] = (time.perf_counter() - t0) * 1000
                    if on_encoding is not None:
                        on_encoding(view, encoding)  # the caller keeps it (a cache shared by threads)
                    else:
                        context.encodings[view] = encoding
                t0 = time.perf_counter()
                inst, verdict = refiner.at_point(
                    encoding, (image.height, image.width), (x, y), query.scale_px / 2, detection=inst
                )
            timing["decode"] = (time.perf_counter() - t0) * 1000
            verdict = verdict if inst is not None else "none"
        t0 = time.perf_counter()
        droplets = measure_droplets([inst], image.gray) if inst is not None else []
        if droplets and context.fluorescence is not None:
            labels = context.labels if context.labels is not None else np.zeros(image.gray.shape, np.uint32)
            fluorescence_of_added(
                droplets[0], labels, context.fluorescence.gray, context.fl_threshold, context.spot_diameter_px
            )
        timing["measure"] = (time.perf_counter() - t0) * 1000
        return PointResult(droplets[0] if droplets else None, name, verdict, timing)

    def analyze_image(self, image: ImageData) -> dict[str, Any]:
        """Quick look at an image: size, intensity histogram, droplet size estimate, suggested preset
        and filters."""
        t0 = time.perf_counter()
        gray = image.gray
        lo, hi = float(gray.min()), float(gray.max())
        counts, edges = np.histogram(gray, bins=64, range=(lo, hi if hi > lo else lo + 1))
        detection = detect_droplets(gray, DetectionParams(threads=self.settings.torch_threads))
        h, w = gray.shape
        # Droplets cut by the border would widen the size distribution: leave them out.
        whole = [i for i in detection.instances if i.x0 > 0 and i.y0 > 0 and i.x1 < w and i.y1 < h]
        diameters = np.array([2 * math.sqrt(i.area / math.pi) for i in whole])
        estimate = float(np.median(diameters)) if diameters.size else None
        area_fraction = float(sum(i.area for i in detection.instances)) / gray.size
        preset, why = choose_preset(detection.appearance, diameters, area_fraction)  # what "auto" does
        suggested: dict[str, Any] = dict(PRESETS[preset].filters)
        if estimate and preset == "packed_monolayer":
            # A size window only around a uniform population: a median made mostly of debris or
            # noise would put the real droplets outside it.
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
            "diameter_robust_cv": why["diameter_robust_cv"],
            "area_fraction": round(area_fraction, 4),
            "suggested_preset": preset,
            "suggested_filters": suggested,
            "timing_ms": {"analyze": round((time.perf_counter() - t0) * 1000, 1)},
        }


# Objects inside droplets are their contents when chance would put this few inside them (a p-value).
_GATHERED = 1e-3


def _auto_preset(
    droplets: list[Droplet], image: ImageData, cue: str | None, um_per_px: float | None, check: Check | None
) -> tuple[str, dict[str, Any], list[Droplet]]:
    """The preset the image chooses by its droplets' look, how much of the field they cover and
    their size spread; and the droplets, without the objects they carry when it is a monolayer.

    Objects found inside a droplet at least 2.5 times their size (``CARRIER_RATIO``) do not count towards the
    choice: beads in a monolayer must not make it look polydisperse. Such an object is the
    droplet's content (a bead, a cell, a speck of debris), not a droplet of its own, in a
    monolayer, where nothing is seen through a droplet, and wherever the objects gather inside
    droplets far beyond chance (:func:`gathered_in_droplets` under ``_GATHERED``; small droplets
    seen through larger ones are spread over the field). Then its pixels go back to its droplet,
    and ``why`` says how many (``contents_in_droplets``; the ``contents`` option counts each
    droplet's). Otherwise (a polydisperse emulsion, several layers deep) it stays a droplet.
    Where they gather, the few objects of their sizes found outside every droplet are contents too
    (``contents_outside_droplets``; see :func:`_without_contents`).
    """
    h, w = image.gray.shape

    def choose(chosen_from: list[Droplet]) -> tuple[str, dict[str, Any]]:
        whole = np.array([d.equivalent_diameter_px for d in chosen_from if not d.touches_edge])
        return choose_preset(cue, whole, sum(d.area_px for d in chosen_from) / float(h * w))

    if (
        cue == "rim"
        and droplets
        and is_dark_field(image.gray, paint_labels([d.instance for d in droplets], (h, w)) > 0)
    ):
        # Bright rims on black (bubbles, background-subtracted) can pass the classical detector's
        # rim model; the picture's own dark background says the droplets are the bright ones.
        cue = "bright"
    enclosed = enclosed_droplets([d.instance for d in droplets], (h, w))
    preset, why = choose([d for k, d in enumerate(droplets) if k not in enclosed])
    gathered = bool(enclosed) and gathered_in_droplets([d.instance for d in droplets], enclosed, (h, w)) < _GATHERED
    if enclosed and (preset == "packed_monolayer" or gathered):
        droplets, why["contents_in_droplets"], strays = _without_contents(
            droplets, image, um_per_px, check, enclosed, gathered
        )
        if strays:
            why["contents_outside_droplets"] = strays
        if preset != "packed_monolayer":
            # The droplets alone choose, without their contents.
            preset, chosen_by = choose(droplets)
            why.update(chosen_by)
    return preset, why, droplets


def _without_contents(
    droplets: list[Droplet],
    image: ImageData,
    um_per_px: float | None,
    check: Check | None,
    enclosed: dict[int, int] | None = None,
    gathered: bool | None = None,
) -> tuple[list[Droplet], int, int]:
    """The droplets measured again without the objects lying inside them (their pixels given back
    to the droplet that carries them), and how many objects that was; and without the objects of
    their sizes outside every droplet, where the objects gather inside droplets far beyond chance,
    and how many of those there were.

    Such a free object belongs to the population the gathering test counted with them, and that
    population lies inside droplets: it is a content whose droplet was not found (cut by the image
    border, its rim too faint), or a loose bead or cell, not a droplet. ``enclosed`` and
    ``gathered`` (whether they gather so) are found here unless given.
    """
    if enclosed is None:
        enclosed = enclosed_droplets([d.instance for d in droplets], image.gray.shape)
    if not enclosed:
        return droplets, 0, 0
    instances = [d.instance for d in droplets]
    if gathered is None:
        gathered = gathered_in_droplets(instances, enclosed, image.gray.shape) < _GATHERED
    strays = free_contents(instances, enclosed) if gathered else []
    loose = {id(instances[k]) for k in strays}
    kept = [inst for inst in absorb_enclosed(instances, enclosed) if id(inst) not in loose]
    return measure_droplets(kept, image.gray, um_per_px, check), len(enclosed), len(strays)


def _count_contents(droplets: list[Droplet], image: ImageData, object_diameter_px: float) -> dict[str, Any]:
    """Set each droplet's bright-field ``contents``; the occupancy of the kept ones beside Poisson."""
    from .engine.instances import paint_labels

    if not droplets:
        return {**occupancy([]), "object_diameter_px": object_diameter_px}
    labels = paint_labels([d.instance for d in droplets], image.gray.shape, [d.id for d in droplets])
    areas = count_contents(image.gray, labels, np.array([d.id for d in droplets]), object_diameter_px)
    for d, found in zip(droplets, areas, strict=True):
        d.contents = {"count": len(found), "areas_px": found}
    kept = [d.contents["count"] for d in droplets if d.removed_reason is None]
    return {**occupancy(np.array(kept, dtype=np.int64)), "object_diameter_px": object_diameter_px}


def _is_out_of_memory(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc).lower()


def _free_device_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


# -- the public calls ----------------------------------------------------------------------------

_classical: Engine | None = None
_classical_lock = threading.Lock()


def _classical_engine() -> Engine:
    """The engine :func:`segment` uses when given no model: the classical segmenter, shared."""
    global _classical
    with _classical_lock:
        if _classical is None:
            _classical = Engine(EngineSettings(segmenter="classical"))
        return _classical


def load_model(
    checkpoint: str | Path = "model/mobile_sam.pt",
    model_type: str = "vit_t",
    device: str = "auto",
    *,
    required: bool = False,
    **settings: Any,
) -> Engine:
    """Load a SAM checkpoint into an :class:`Engine` to pass to :func:`segment` (load once, reuse).

    Args:
        checkpoint: the checkpoint file (``sam-droplet weights download`` fetches MobileSAM's).
        model_type: vit_t (MobileSAM), vit_b, vit_l or vit_h.
        device: auto (cuda when available, else mps, else cpu), cpu, cuda, cuda:N or mps.
        required: raise when the checkpoint cannot be loaded; by default a warning is logged and
            the engine runs the classical segmenter (``segmenter="auto"`` then means classical,
            and the engine's ``status`` says ``degraded`` with the reason).
        **settings: other :class:`~sam_droplet.settings.EngineSettings` fields (``sam_batch_size``,
            ``torch_threads``, ``grid_points_per_side``, ``grid_crop_n_layers``).

    Raises:
        StartupError: ``required`` and the checkpoint is missing, damaged or of another type.
        ConfigError: an unknown model type or device.
    """
    from .settings import ENGINE_VARIABLES

    values = {"model_path": Path(checkpoint), "model_type": model_type, "device": device, **settings}
    unknown = sorted(set(values) - set(ENGINE_VARIABLES) - {"segmenter"})
    if unknown or "segmenter" in settings:
        raise TypeError(f"load_model() got unexpected settings {unknown or ['segmenter']}")
    for name in ("model_type", "device"):
        _, parse = ENGINE_VARIABLES[name]
        values[name] = parse(name, str(values[name]))  # ConfigError naming the argument and what it accepts
    return Engine.start(EngineSettings(segmenter="sam" if required else "auto", **values))


def segment(
    image: ImageSource,
    model: Engine | None = None,
    *,
    fluorescence: ImageSource | None = None,
    max_pixels: int | None = None,
    check: Check | None = None,
    on_encoding: OnEncoding | None = None,
    **options: Any,
) -> Result:
    """Find, outline, measure and filter the droplets of one image.

    Args:
        image: a path, a file's bytes, a NumPy array (HxW gray or HxWx3 RGB; uint8, uint16 or
            float), or an :class:`~sam_droplet.io.read.ImageData`.
        model: an engine from :func:`load_model`; None segments with the classical detector.
        fluorescence: a registered fluorescence picture of the same field (same kinds as ``image``).
        max_pixels: refuse images larger than this many pixels (None: no limit).
        check: called with the stage's name at bounded intervals inside every stage (about a
            second of work apart at most) and between SAM batches; raise in it to stop.
        on_encoding: receives each SAM encoding ``(view, encoding)`` (to cache for point queries).
        **options: the fields of :class:`SegmentOptions`: ``segmenter`` (auto, sam, classical,
            grid), ``preset``, ``filters``, ``um_per_px``, ``appearance``, ``fluorescence_threshold``,
            ``threshold_method``, ``spot_diameter_px``.

    Returns:
        A :class:`~sam_droplet.result.Result`: ``labels``, ``droplets``, ``removed``, ``summary``
        and the renderers ``to_json``, ``to_csv``, ``to_coco``, ``overlay``.

    Raises:
        InvalidImage, UnsupportedImageType, ImageTooLarge: the image cannot be read.
        InvalidOptions: an unknown or wrong option.
        NotReady: sam or grid without a loaded model.
        OutOfMemory: the device ran out of memory.
    """
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise TypeError(f"segment() got unexpected options {unknown}; accepted: {', '.join(OPTION_NAMES)}")
    opts = SegmentOptions(**options)
    opts.validate()  # before reading the image
    engine = model if model is not None else _classical_engine()
    t0 = time.perf_counter()
    picture = read_image(image, max_pixels)
    fl_picture = None
    if fluorescence is not None:
        fl_picture = picture if fluorescence is image else read_image(fluorescence, max_pixels)
    read_ms = (time.perf_counter() - t0) * 1000
    result = engine.segment(picture, opts, fluorescence=fl_picture, check=check, on_encoding=on_encoding)
    if not isinstance(image, ImageData):
        result.timing_ms = {"decode": read_ms, **result.timing_ms}
    return result
