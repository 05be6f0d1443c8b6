"""HTTP API blueprint: the only module that knows about requests, form fields and status codes.

Routes: ``GET /`` (upload page), ``GET /health``, ``GET /defaults``, ``POST /segment_file``
(multipart), ``POST /segment`` (JSON with a base64 image), ``POST /segment_point`` (one droplet at a
point of a cached or uploaded image), ``GET /image/<sha256>.png`` (a cached image for display),
``POST /analyze_image``, ``GET /metrics`` (Prometheus).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import time
from dataclasses import asdict
from pathlib import PurePath
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template, request

from . import __version__, metrics
from .config import Config
from .decode import decode_channel, decode_image
from .errors import InvalidImage, InvalidOptions, NotCached
from .export import droplet_record, result_json, to_coco, to_csv, to_label_png, to_overlay_png
from .filters import DEFAULT_FILTERS, FILTER_KEYS, PRESETS
from .image_cache import CachedImage
from .pipeline import Engine, SegmentationResult, SegmentOptions

__all__ = ["FORMATS", "bp"]

bp = Blueprint("api", __name__)
log = logging.getLogger(__name__)

FORMATS = ("json", "csv", "labels", "overlay", "coco")
OPTION_FIELDS = (
    "filters",
    "preset",
    "segmenter",
    "um_per_px",
    "format",
    "appearance",
    "fluorescence_threshold",
    "threshold_method",
    "spot_diameter_px",
    "brightfield_channel",
    "fluorescence_channel",
)


def engine() -> Engine:
    return current_app.extensions["sam_droplet"]


def settings() -> Config:
    return current_app.config["SAM_DROPLET"]


# -- request parsing ---------------------------------------------------------------------------


def _reject_unknown(given: set[str], accepted: tuple[str, ...], where: str) -> None:
    unknown = sorted(given - set(accepted))
    if unknown:
        raise InvalidOptions(
            f"unknown {where} {', '.join(map(repr, unknown))}; accepted: {', '.join(accepted)}",
            details={"accepted": list(accepted)},
        )


def _parse_json_text(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidOptions(f"{name} is not valid JSON: {exc}"[:300]) from None


def _as_float(name: str, value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise InvalidOptions(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidOptions(f"{name} must be a number, got {value!r}"[:200]) from None
    if not math.isfinite(number) or number <= 0:
        raise InvalidOptions(f"{name} must be a positive number, got {value!r}"[:200])
    return number


def _as_text(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidOptions(f"{name} must be a string, got {type(value).__name__}")
    return value.strip().lower()


def _options(raw: dict[str, Any]) -> tuple[SegmentOptions, str]:
    """SegmentOptions and output format from form fields or JSON keys."""
    filters = raw.get("filters")
    if isinstance(filters, str):
        filters = _parse_json_text("filters", filters) if filters.strip() else None
    if filters is not None and not isinstance(filters, dict):
        raise InvalidOptions(f"filters must be a JSON object, got {type(filters).__name__}")
    fmt = _as_text("format", raw.get("format")) or "json"
    if fmt not in FORMATS:
        raise InvalidOptions(f"unknown format {fmt!r}; accepted: {', '.join(FORMATS)}")
    options = SegmentOptions(
        segmenter=_as_text("segmenter", raw.get("segmenter")),
        filters=filters,
        preset=_as_text("preset", raw.get("preset")),
        um_per_px=_as_float("um_per_px", raw.get("um_per_px")),
        appearance=_as_text("appearance", raw.get("appearance")),
        fluorescence_threshold=_as_float("fluorescence_threshold", raw.get("fluorescence_threshold")),
        threshold_method=_as_text("threshold_method", raw.get("threshold_method")) or "otsu",
        spot_diameter_px=_as_float("spot_diameter_px", raw.get("spot_diameter_px")) or 5.0,
    )
    options.validate()
    return options, fmt


def _channel_index(name: str, value: Any) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else -1
    except ValueError:
        number = -1
    if not 0 <= number < 64:
        raise InvalidOptions(f"{name} must be a whole number from 0 (the first channel), got {value!r}")
    return number


def _upload(
    file_fields: tuple[str, ...] = ("file",), form_fields: tuple[str, ...] = OPTION_FIELDS
) -> tuple[bytes, str, dict[str, Any]]:
    """(file bytes, file name, option fields) of a multipart upload; other file fields (the
    fluorescence channel) are returned among the fields as bytes."""
    if not request.files and not request.form:
        raise InvalidOptions("send the image as multipart/form-data with the field 'file'")
    _reject_unknown(set(request.files), file_fields, "file field(s)")
    _reject_unknown(set(request.form), form_fields, "form field(s)")
    fields: dict[str, Any] = {k: request.form.get(k) for k in request.form}
    for extra in file_fields[1:]:
        if extra in request.files:
            fields[extra] = request.files[extra].read()
    upload = request.files.get("file")
    if upload is None:
        if fields.get("fluorescence"):
            return b"", request.files["fluorescence"].filename or "image", fields
        raise InvalidOptions("missing the form field 'file' with the image")
    return upload.read(), upload.filename or "image", fields


_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)


def _json_body(accepted: tuple[str, ...]) -> dict[str, Any]:
    try:
        # json, not request.get_json: deeply nested input raises RecursionError, which Flask lets through.
        body = json.loads(request.get_data()) if request.data else None
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise InvalidOptions("send a JSON object with the key 'image' (a data URL or base64 string)")
    _reject_unknown(set(body), accepted, "JSON key(s)")
    return body


def _base64_image(value: Any, key: str = "image") -> bytes:
    if not isinstance(value, str) or not value:
        raise InvalidImage(f"'{key}' must be a non-empty string: a data URL or base64 data")
    text = _DATA_URL.sub("", value.strip(), count=1)
    try:
        return base64.b64decode(re.sub(r"\s+", "", text), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage(f"'{key}' is not valid base64") from None


def _decode(data: bytes):
    t0 = time.perf_counter()
    image = decode_image(data, settings().max_image_pixels)
    return image, (time.perf_counter() - t0) * 1000


# -- responses -----------------------------------------------------------------------------------


def _respond(result: SegmentationResult, fmt: str, name: str, started: float) -> Response:
    t0 = time.perf_counter()
    stem = re.sub(r"[^\w.-]+", "_", PurePath(name).stem)[:80] or "image"
    kept = result.kept
    if fmt == "json":
        body = result_json(result)
        result.timing_ms["serialize"] = (time.perf_counter() - t0) * 1000
        body["timing_ms"] = {k: round(v, 1) for k, v in result.timing_ms.items()}
        response = jsonify(body)
    elif fmt == "coco":
        response = jsonify(to_coco(kept, result.shape, file_name=name))
        response.headers["Content-Disposition"] = f'attachment; filename="{stem}_coco.json"'
    elif fmt == "csv":
        response = Response(to_csv(kept, result.um_per_px), mimetype="text/csv")
        response.headers["Content-Disposition"] = f'attachment; filename="{stem}_droplets.csv"'
    elif fmt == "labels":
        response = Response(to_label_png(kept, result.shape), mimetype="image/png")
        response.headers["Content-Disposition"] = f'attachment; filename="{stem}_labels.png"'
    else:
        response = Response(to_overlay_png(result.image.rgb8, kept, result.removed), mimetype="image/png")
        response.headers["Content-Disposition"] = f'attachment; filename="{stem}_overlay.png"'
    response.headers["X-Droplet-Count"] = str(len(kept))
    response.headers["X-Segmenter"] = result.segmenter
    response.headers["X-Processing-Ms"] = f"{(time.perf_counter() - started) * 1000:.0f}"
    return response


def _images(data: bytes, fluorescence: bytes | None, raw: dict[str, Any]) -> tuple[Any, Any]:
    """(bright-field image, fluorescence image or None) from the upload and the channel options.

    One file and both channel indices: the two channels of a multi-channel file. Only a
    fluorescence image: the droplets are found on it.
    """
    bf_channel = _channel_index("brightfield_channel", raw.get("brightfield_channel"))
    fl_channel = _channel_index("fluorescence_channel", raw.get("fluorescence_channel"))
    limit = settings().max_image_pixels
    if (bf_channel is None) != (fl_channel is None):
        raise InvalidOptions("give both brightfield_channel and fluorescence_channel, or neither")
    if bf_channel is not None:
        if fluorescence:
            raise InvalidOptions("channel indices select from one multi-channel file: send it as 'file' only")
        return decode_channel(data, bf_channel, limit), decode_channel(data, fl_channel, limit)
    fl_image = decode_image(fluorescence, limit) if fluorescence else None
    if not data and fl_image is not None:
        return fl_image, fl_image
    return decode_image(data, limit), fl_image


def _segment(data: bytes, name: str, raw: dict[str, Any], fluorescence: bytes | None = None) -> Response:
    started = time.perf_counter()
    options, fmt = _options(raw)  # bad options fail before the image is decoded
    eng = engine()
    with eng.admission.slot() as deadline:
        queued_ms = (time.perf_counter() - started) * 1000
        t0 = time.perf_counter()
        image, fl_image = _images(data, fluorescence, raw)
        decode_ms = (time.perf_counter() - t0) * 1000
        result = eng.segment(image, options, deadline, fluorescence=fl_image)
    result.timing_ms = {"queue": queued_ms, "decode": decode_ms, **result.timing_ms}
    metrics.observe_result(result)
    return _respond(result, fmt, name, started)


# -- routes --------------------------------------------------------------------------------------


@bp.get("/")
def index() -> str:
    eng = engine()
    return render_template(
        "index.html",
        version=__version__,
        segmenters=eng.available_segmenters,
        default_segmenter=eng.default_segmenter,
        presets=PRESETS,
        max_upload_mb=settings().max_upload_mb,
    )


@bp.get("/health")
def health() -> tuple[Response, int]:
    eng = engine()
    info = {
        **eng.health(),
        "auth_required": bool(current_app.extensions.get("sam_droplet_auth")),
        "load": {"running": eng.admission.running, "waiting": eng.admission.waiting},
        "version": __version__,
    }
    code = 200 if info["status"] in ("ok", "degraded") else 503
    return jsonify(info), code


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    return Response(metrics.render(), mimetype=metrics.CONTENT_TYPE_LATEST.split(";")[0])


@bp.get("/defaults")
def defaults() -> Response:
    eng = engine()
    return jsonify(
        {
            "filters": DEFAULT_FILTERS,
            "filter_keys": {k: {"type": kind, "description": desc} for k, (kind, desc) in FILTER_KEYS.items()},
            "presets": {name: asdict(p) for name, p in PRESETS.items()},
            "segmenters": eng.available_segmenters,
            "default_segmenter": eng.default_segmenter,
            "appearances": ["auto", "rim", "bright", "dark"],
            "formats": list(FORMATS),
            "limits": {
                "max_upload_mb": settings().max_upload_mb,
                "max_image_pixels": settings().max_image_pixels,
                "image_types": ["PNG", "JPEG", "TIFF", "BMP", "WebP"],
            },
        }
    )


@bp.post("/segment_file")
def segment_file() -> Response:
    data, name, fields = _upload(("file", "fluorescence"))
    fluorescence = fields.pop("fluorescence", None)
    return _segment(data, name, fields, fluorescence)


@bp.post("/segment")
def segment_json() -> Response:
    body = _json_body(("image", "fluorescence", "filename", *OPTION_FIELDS))
    fluorescence = _base64_image(body["fluorescence"], "fluorescence") if body.get("fluorescence") is not None else None
    data = b"" if body.get("image") is None and fluorescence else _base64_image(body.get("image"))
    return _segment(data, str(body.get("filename") or "image"), body, fluorescence)


@bp.post("/analyze_image")
def analyze_image() -> Response:
    if request.is_json:
        body = _json_body(("image",))
        data = _base64_image(body.get("image"))
    else:
        data, _, fields = _upload(form_fields=())
        _reject_unknown(set(fields), (), "form field(s)")
    eng = engine()
    with eng.admission.slot():
        image, decode_ms = _decode(data)
        out = eng.analyze(image)
    out["timing_ms"] = {"decode": round(decode_ms, 1), **out["timing_ms"]}
    return jsonify({"success": True, **out})


POINT_FIELDS = ("sha256", "x", "y", "segmenter", "diameter_px", "appearance", "um_per_px")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _coordinate(name: str, value: Any) -> float:
    if isinstance(value, bool) or value is None or value == "":
        raise InvalidOptions(f"{name} is required: the point in image pixels")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidOptions(f"{name} must be a number of image pixels, got {value!r}"[:200]) from None
    if not math.isfinite(number):
        raise InvalidOptions(f"{name} must be a finite number of image pixels, got {value!r}"[:200])
    return number


@bp.post("/segment_point")
def segment_point() -> Response:
    """One droplet at a point. JSON ``{"sha256", "x", "y"}`` names an image segmented before (404
    ``image_not_cached`` when this process no longer holds it); multipart with ``file`` sends it."""
    if request.is_json:
        raw = _json_body(POINT_FIELDS)
        data = None
    else:
        data, _, raw = _upload(form_fields=POINT_FIELDS)
    x, y = _coordinate("x", raw.get("x")), _coordinate("y", raw.get("y"))
    segmenter = _as_text("segmenter", raw.get("segmenter"))
    appearance = _as_text("appearance", raw.get("appearance"))
    SegmentOptions(segmenter=segmenter, appearance=appearance).validate()
    diameter = _as_float("diameter_px", raw.get("diameter_px"))
    um_per_px = _as_float("um_per_px", raw.get("um_per_px"))
    eng = engine()
    with eng.admission.slot():
        if data is None:
            digest = _as_text("sha256", raw.get("sha256")) or ""
            if not _SHA256.match(digest):
                raise InvalidOptions(
                    "sha256 must be the 64 hex digits of the image's SHA-256 (image.sha256 of a result)"
                )
            entry = eng.image_cache.get(digest)
            if entry is None:
                raise NotCached("this image is no longer cached here: send it again as multipart 'file' with x and y")
        else:
            image, _ = _decode(data)
            entry = eng.image_cache.get(image.sha256) or eng.image_cache.put(CachedImage(image)) or CachedImage(image)
        found = eng.droplet_at(entry, x, y, segmenter, diameter, appearance)
    body: dict[str, Any] = {
        "success": True,
        "image_sha256": entry.image.sha256,
        "segmenter": found.segmenter,
        "verdict": found.verdict,
        "droplet": None,
        "timing_ms": {k: round(v, 1) for k, v in found.timing_ms.items()},
    }
    if found.droplet is None:
        body["message"] = f"no droplet found at ({x:.0f}, {y:.0f})"
    else:
        shape = (entry.image.height, entry.image.width)
        body["droplet"] = {**droplet_record(found.droplet, shape, um_per_px), "source": "manual"}
    return jsonify(body)


@bp.get("/image/<sha256>.png")
def cached_image(sha256: str) -> Response:
    """A cached image as 8-bit PNG, for pages that cannot display the upload (TIFF, 16-bit)."""
    entry = engine().image_cache.get(sha256.lower()) if _SHA256.match(sha256.lower()) else None
    if entry is None:
        raise NotCached("this image is not cached here: segment it again")
    import cv2

    channel = request.args.get("channel", "brightfield")
    image = entry.fluorescence if channel == "fluorescence" and entry.fluorescence is not None else entry.image
    _, buf = cv2.imencode(".png", cv2.cvtColor(image.rgb8, cv2.COLOR_RGB2BGR))
    response = Response(buf.tobytes(), mimetype="image/png")
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


# -- errors ---------------------------------------------------------------------------------------


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> tuple[Response, int]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return jsonify({"success": False, "error": error}), status
