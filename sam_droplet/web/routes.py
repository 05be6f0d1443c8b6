"""HTTP API blueprint: the only module that knows about requests, form fields and status codes.

Routes: ``GET /`` (upload page), ``GET /health`` (with ``/health/live`` and ``/health/ready``
for probes), ``GET /defaults``, ``POST /segment_file``
(multipart), ``POST /segment`` (JSON with a base64 image), ``POST /segment_point`` (one droplet at a
point of a cached or uploaded image), ``GET /image/<sha256>.png`` (a cached image for display),
``POST /analyze_image``, ``GET /metrics`` (Prometheus). Segmentation goes through
:func:`sam_droplet.segment`, the library's one call.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import time
import unicodedata
from dataclasses import asdict
from pathlib import PurePath
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, g, jsonify, render_template, request

from .. import __version__
from ..engine.detect import APPEARANCES
from ..engine.filters import DEFAULT_FILTERS, FILTER_KEYS, PRESETS
from ..engine.fluorescence import FLUORESCENCE_COLUMNS, THRESHOLD_METHODS
from ..errors import ImageTooLarge, InvalidImage, InvalidOptions
from ..io.read import ImageData, decode_channel, decode_image, probe_image
from ..io.write import BATCH_COLUMNS, CALIBRATED_COLUMNS, DROPLET_COLUMNS, FORMATS, png_bytes, render
from ..pipeline import ImageContext, SegmentOptions, segment
from ..result import Result
from ..settings import DETECTORS
from . import metrics
from .errors import NotCached
from .security import request_tenant
from .service import service

__all__ = ["bp"]

bp = Blueprint("api", __name__)
log = logging.getLogger(__name__)

OPTION_FIELDS = (
    "filters",
    "preset",
    "segmenter",
    "detector",
    "um_per_px",
    "format",
    "appearance",
    "fluorescence_threshold",
    "threshold_method",
    "spot_diameter_px",
    "brightfield_channel",
    "fluorescence_channel",
    "contents",
)
POINT_FIELDS = ("sha256", "x", "y", "segmenter", "diameter_px", "appearance", "um_per_px")
IMAGE_TYPES = ["PNG", "JPEG", "TIFF", "BMP", "WebP"]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DATA_URL = re.compile(r"data:[\w/+.-]*(?:;[\w=.-]+)*;base64,", re.IGNORECASE)
_DATA_URL_HEADER = 256  # characters: a media type and its parameters are short


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


def _as_bool(name: str, value: Any) -> bool | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise InvalidOptions(f"{name} must be true or false, got {value!r}"[:200])


def parse_options(raw: dict[str, Any]) -> tuple[SegmentOptions, str]:
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
        contents=_as_bool("contents", raw.get("contents")),
        detector=_as_text("detector", raw.get("detector")),
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
    for other in file_fields[1:]:
        if other in request.files:
            fields[other] = request.files[other].read()
    upload = request.files.get("file")
    if upload is None:
        if fields.get("fluorescence"):
            return b"", request.files["fluorescence"].filename or "image", fields
        raise InvalidOptions("missing the form field 'file' with the image")
    return upload.read(), upload.filename or "image", fields


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
    """The bytes of a data URL (``data:image/png;base64,...``) or of plain base64, in linear time:
    the header is looked for only in the first ``_DATA_URL_HEADER`` characters."""
    if not isinstance(value, str) or not value:
        raise InvalidImage(f"'{key}' must be a non-empty string: a data URL or base64 data")
    text = value.lstrip()
    if text[:5].lower() == "data:":
        comma = text.find(",", 0, _DATA_URL_HEADER)
        if comma < 0 or not _DATA_URL.fullmatch(text[: comma + 1]):
            raise InvalidImage(f"'{key}' is a data URL without a short 'data:<type>;base64,' header")
        text = text[comma + 1 :]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:  # base64 wrapped in lines: drop the whitespace (str.split is linear)
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage(f"'{key}' is not valid base64") from None


def _decode_images(data: bytes, fluorescence: bytes | None, raw: dict[str, Any]) -> tuple[ImageData, ImageData | None]:
    """(bright-field image, fluorescence image or None) from the upload and the channel options.

    One file and both channel indices: the two channels of a multi-channel file. Only a
    fluorescence image: the droplets are found on it.
    """
    bf_channel = _channel_index("brightfield_channel", raw.get("brightfield_channel"))
    fl_channel = _channel_index("fluorescence_channel", raw.get("fluorescence_channel"))
    limit = service().config.server.max_image_pixels
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


def _check_memory(
    files: list[bytes | None], segmenter: str | None, decodes_per_file: int = 1, working: bool = True
) -> None:
    """Refuse (413) before any pixel is decoded a request whose decoded pixels (from the headers)
    and segmentation working set (unless not ``working``) would need more than MAX_REQUEST_MEMORY_MB."""
    svc = service()
    server = svc.config.server
    headers = [probe_image(f, server.max_image_pixels) for f in files if f]
    if not headers:
        return
    first = headers[0]
    need = decodes_per_file * sum(h.decoded_bytes() for h in headers)
    if working:
        need += svc.engine.working_bytes(first.width, first.height, segmenter)
    if need > server.max_request_memory_mb * 2**20:
        raise ImageTooLarge(
            f"analysing this {first.width}x{first.height} image ({first.samples} sample(s) of "
            f"{8 * first.bytes_per_sample} bit per pixel) needs about {need / 2**20:,.0f} MB; the limit per request is "
            f"{server.max_request_memory_mb:g} MB (MAX_REQUEST_MEMORY_MB): send a smaller or cropped image",
            details={
                "width": first.width,
                "height": first.height,
                "needed_mb": round(need / 2**20),
                "max_request_memory_mb": server.max_request_memory_mb,
            },
        )


# -- responses -----------------------------------------------------------------------------------


def _download_stem(name: str) -> str:
    """A file-name stem safe in a Content-Disposition header (ASCII letters, digits, ``_.-``;
    accents folded: "émulsion" gives "emulsion")."""
    folded = unicodedata.normalize("NFKD", _stem(name)).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", folded)[:80].strip("_.") or "image"


def _stem(name: str) -> str:
    """The file name's stem, whichever separator its path used (a Windows browser sends ``C:\\...``)."""
    return PurePath(name.replace("\\", "/")).stem


def _attachment(name: str, suffix: str) -> str:
    """Content-Disposition for a download named after ``name``: an ASCII ``filename`` for old
    clients and, when the name is not plain ASCII, the name itself as RFC 5987 ``filename*``."""
    plain = _download_stem(name)
    header = f'attachment; filename="{plain}{suffix}"'
    own = "".join(c for c in _stem(name) if c.isprintable() and c not in '"\\')
    own = own.strip()[:80]
    if own and own != plain:
        header += f"; filename*=UTF-8''{quote(own + suffix, safe='')}"
    return header


def _respond(result: Result, fmt: str, name: str, started: float) -> Response:
    out = render(result, fmt, file_name=name, envelope={"success": True})
    response = Response(out.body, mimetype=out.mimetype)
    if fmt != "json":
        response.headers["Content-Disposition"] = _attachment(name, out.suffix)
    response.headers["X-Droplet-Count"] = str(len(result.droplets))
    response.headers["X-Segmenter"] = result.segmenter
    response.headers["X-Processing-Ms"] = f"{(time.perf_counter() - started) * 1000:.0f}"
    return response


def _segment_upload(data: bytes, name: str, raw: dict[str, Any], fluorescence: bytes | None = None) -> Response:
    started = time.perf_counter()
    options, fmt = parse_options(raw)  # bad options fail before the image is decoded
    channels = raw.get("brightfield_channel") not in (None, "")
    _check_memory([data, fluorescence], options.segmenter, decodes_per_file=2 if channels else 1)
    svc = service()
    with svc.admission.slot() as deadline:
        queued_ms = (time.perf_counter() - started) * 1000
        t0 = time.perf_counter()
        image, fl_image = _decode_images(data, fluorescence, raw)
        decode_ms = (time.perf_counter() - t0) * 1000
        # Keep the image for later point queries; SAM's encodings join it as they are computed.
        tenant = request_tenant()
        context = svc.cache.put(tenant, ImageContext(image))

        def keep_encoding(view: Any, encoding: Any) -> None:
            svc.cache.add_encoding(tenant, image.sha256, view, encoding)

        result = segment(
            image,
            svc.engine,
            fluorescence=fl_image,
            check=deadline.check,
            on_encoding=keep_encoding if context is not None else None,
            **asdict(options),
        )
        if context is not None:
            context.learn(result, options.spot_diameter_px)
            svc.cache.put(tenant, context)  # re-checks the budget with what it learnt
    result.timing_ms = {"queue": queued_ms, "decode": decode_ms, **result.timing_ms}
    metrics.observe_result(result)
    return _respond(result, fmt, name, started)


# -- routes --------------------------------------------------------------------------------------


@bp.get("/")
def index() -> str:
    svc = service()
    return render_template(
        "index.html",
        version=__version__,
        segmenters=svc.engine.available_segmenters,
        default_segmenter=svc.engine.default_segmenter,
        detectors=DETECTORS,
        default_detector=svc.engine.resolve_detector(None),
        presets=PRESETS,
        threshold_methods=THRESHOLD_METHODS,
        max_upload_mb=svc.config.server.max_upload_mb,
        job_max_upload_mb=svc.config.server.job_max_upload_mb,
    )


@bp.get("/health")
def health() -> tuple[Response, int]:
    """Everything about this process (200 while it can segment: ``ok`` or ``degraded``). With API
    keys on, an anonymous caller gets the figures without what describes the host."""
    svc = service()
    info = svc.health(full=not svc.auth_required or g.get("api_key_id") is not None)
    code = 200 if info["status"] in ("ok", "degraded") else 503
    return jsonify(info), code


@bp.get("/health/live")
def health_live() -> Response:
    """Liveness: the process answers HTTP. Nothing else is asked, so a busy process stays alive."""
    return jsonify({"status": "alive"})


@bp.get("/health/ready")
def health_ready() -> tuple[Response, int]:
    """Readiness: the engine is up and a segmentation would be admitted now; 503 (with Retry-After)
    takes a full or broken process out of a load balancer's rotation until it has room."""
    ready, reason = service().readiness()
    response = jsonify({"ready": ready, "reason": reason})
    if not ready:
        response.headers["Retry-After"] = "5"
    return response, 200 if ready else 503


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    svc = service()
    metrics.observe_process(svc.engine.device)  # this worker's figures, fresh
    if svc.limit_store is not None:
        svc.limit_store.state()  # asks the rate-limit store at most every 5 s
    if svc.jobs is not None:
        metrics.observe_jobs(svc.jobs.counts())
    return Response(metrics.render(), mimetype=metrics.CONTENT_TYPE_LATEST.split(";")[0])


@bp.get("/defaults")
def defaults() -> Response:
    svc = service()
    return jsonify(
        {
            "filters": DEFAULT_FILTERS,
            "filter_keys": {k: {"type": kind, "description": desc} for k, (kind, desc) in FILTER_KEYS.items()},
            "presets": {name: asdict(p) for name, p in PRESETS.items()},
            "segmenters": svc.engine.available_segmenters,
            "default_segmenter": svc.engine.default_segmenter,
            "detectors": list(DETECTORS),
            "default_detector": svc.engine.resolve_detector(None),
            "appearances": list(APPEARANCES),
            "threshold_methods": list(THRESHOLD_METHODS),
            "formats": list(FORMATS),
            "columns": {
                "droplet": list(DROPLET_COLUMNS),
                "calibrated": list(CALIBRATED_COLUMNS),
                "fluorescence": list(FLUORESCENCE_COLUMNS),
                "batch": list(BATCH_COLUMNS),
            },
            "limits": {
                "max_upload_mb": svc.config.server.max_upload_mb,
                "max_image_pixels": svc.config.server.max_image_pixels,
                "image_types": IMAGE_TYPES,
            },
        }
    )


@bp.post("/segment_file")
def segment_file() -> Response:
    data, name, fields = _upload(("file", "fluorescence"))
    fluorescence = fields.pop("fluorescence", None)
    return _segment_upload(data, name, fields, fluorescence)


@bp.post("/segment")
def segment_json() -> Response:
    body = _json_body(("image", "fluorescence", "filename", *OPTION_FIELDS))
    fluorescence = _base64_image(body["fluorescence"], "fluorescence") if body.get("fluorescence") is not None else None
    data = b"" if body.get("image") is None and fluorescence else _base64_image(body.get("image"))
    return _segment_upload(data, str(body.get("filename") or "image"), body, fluorescence)


@bp.post("/analyze_image")
def analyze_image() -> Response:
    if request.is_json:
        body = _json_body(("image",))
        data = _base64_image(body.get("image"))
    else:
        data, _, fields = _upload(form_fields=())
        _reject_unknown(set(fields), (), "form field(s)")
    _check_memory([data], "classical")
    svc = service()
    with svc.admission.slot():
        t0 = time.perf_counter()
        image = decode_image(data, svc.config.server.max_image_pixels)
        decode_ms = (time.perf_counter() - t0) * 1000
        out = svc.engine.analyze_image(image)
    out["timing_ms"] = {"decode": round(decode_ms, 1), **out["timing_ms"]}
    return jsonify({"success": True, **out})


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
    if data is not None:
        _check_memory([data], segmenter)
    svc = service()
    tenant = request_tenant()
    with svc.admission.slot():
        if data is None:
            digest = _as_text("sha256", raw.get("sha256")) or ""
            if not _SHA256.match(digest):
                raise InvalidOptions(
                    "sha256 must be the 64 hex digits of the image's SHA-256 (image.sha256 of a result)"
                )
            context = svc.cache.get(tenant, digest)
            if context is None:
                raise NotCached("this image is not cached here: send it again as multipart 'file' with x and y")
        else:
            image = decode_image(data, svc.config.server.max_image_pixels)
            context = (
                svc.cache.get(tenant, image.sha256) or svc.cache.put(tenant, ImageContext(image)) or ImageContext(image)
            )
        sha = context.image.sha256

        def keep_encoding(view: Any, encoding: Any) -> None:
            svc.cache.add_encoding(tenant, sha, view, encoding)

        found = svc.engine.segment_from_point(context, x, y, segmenter, diameter, appearance, keep_encoding)
    body: dict[str, Any] = {
        "success": True,
        "image_sha256": sha,
        "segmenter": found.segmenter,
        "verdict": found.verdict,
        "droplet": None,
        "timing_ms": {k: round(v, 1) for k, v in found.timing_ms.items()},
    }
    if found.droplet is None:
        body["message"] = f"no droplet found at ({x:.0f}, {y:.0f})"
    else:
        found.droplet.um_per_px = um_per_px
        body["droplet"] = {**found.droplet.as_dict(), "source": "manual"}
    return jsonify(body)


REPORT_KEYS = (
    "file_name", "diameters_px", "um_per_px", "calibration", "overlay", "positive", "threshold", "objects",
    "contents", "settings", "removed",
)  # fmt: skip
MAX_REPORT_IMAGES = 500


def _number_list(name: str, value: Any, kind: type, limit: int = 1_000_000) -> list | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > limit:
        raise InvalidOptions(f"{name} must be a list of at most {limit} numbers")
    if kind is bool:
        if not all(isinstance(v, bool) for v in value):
            raise InvalidOptions(f"{name} must be a list of true/false")
        return value
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in value):
        raise InvalidOptions(f"{name} must be a list of finite numbers >= 0")
    return value


def _report_page(raw: Any, index: int) -> Any:
    """A report page from the page's JSON for one image (its droplets as the user kept them)."""
    import numpy as np

    from ..io.report import ReportPage, thumbnail

    if not isinstance(raw, dict):
        raise InvalidOptions(f"images[{index}] must be a JSON object")
    _reject_unknown(set(raw), REPORT_KEYS, f"key(s) of images[{index}]")
    diameters = _number_list("diameters_px", raw.get("diameters_px"), float) or []
    n = len(diameters)
    lists = {
        k: _number_list(k, raw.get(k), bool if k == "positive" else int) for k in ("positive", "objects", "contents")
    }
    for key, values in lists.items():
        if values is not None and len(values) != n:
            raise InvalidOptions(f"images[{index}].{key} must have one value per droplet ({n})")
    overlay = None
    if raw.get("overlay"):
        data = _base64_image(raw["overlay"], "overlay")
        _check_memory([data], None, working=False)
        # Shrunk at once: a batch keeps one per image, and the PDF shows a thumbnail anyway.
        overlay = thumbnail(decode_image(data, service().config.server.max_image_pixels).rgb8)
    for key in ("threshold", "settings", "removed"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise InvalidOptions(f"images[{index}].{key} must be a JSON object")
    calibration = str(raw.get("calibration") or "none")[:40]
    return ReportPage(
        title=str(raw.get("file_name") or f"image {index + 1}")[:200],
        diameters_px=np.asarray(diameters, dtype=np.float64),
        um_per_px=_as_float("um_per_px", raw.get("um_per_px")),
        calibration=calibration,
        overlay=overlay,
        positive=np.asarray(lists["positive"], dtype=bool) if lists["positive"] is not None else None,
        threshold=raw.get("threshold"),
        objects=np.asarray(lists["objects"], dtype=np.int64) if lists["objects"] is not None else None,
        contents=np.asarray(lists["contents"], dtype=np.int64) if lists["contents"] is not None else None,
        settings={
            str(k)[:60]: v
            for k, v in (raw.get("settings") or {}).items()
            if isinstance(v, (str, int, float, bool, dict))
        },
        removed={str(k)[:60]: int(v) for k, v in (raw.get("removed") or {}).items() if isinstance(v, int)},
    )


@bp.post("/report")
def report() -> Response:
    """A PDF report of droplets as the page holds them (with the user's corrections): JSON
    ``{"images": [{file_name, diameters_px, um_per_px, calibration, overlay (data URL), positive,
    threshold, objects, contents, settings, removed}]}``; one page per image, after a batch page
    when there are several."""
    from ..io.report import report_pdf

    body = _json_body(("images",))
    images = body.get("images")
    if not isinstance(images, list) or not 1 <= len(images) <= MAX_REPORT_IMAGES:
        raise InvalidOptions(f"images must be a list of 1 to {MAX_REPORT_IMAGES} images")
    svc = service()
    with svc.admission.slot():
        pages = [_report_page(raw, i) for i, raw in enumerate(images)]
        pdf = report_pdf(pages)
    name = pages[0].title if len(pages) == 1 else "sam_droplet_batch"
    response = Response(pdf, mimetype="application/pdf")
    response.headers["Content-Disposition"] = _attachment(PurePath(name).stem + "_report", ".pdf")
    return response


@bp.get("/image/<sha256>.png")
def cached_image(sha256: str) -> Response:
    """A cached image as 8-bit PNG, for pages that cannot display the upload (TIFF, 16-bit)."""
    context = service().cache.get(request_tenant(), sha256.lower()) if _SHA256.match(sha256.lower()) else None
    if context is None:
        raise NotCached("this image is not cached here: segment it again")
    channel = request.args.get("channel", "brightfield")
    fluorescence = channel == "fluorescence" and context.fluorescence is not None
    image = context.fluorescence if fluorescence else context.image
    response = Response(png_bytes(image.rgb8), mimetype="image/png")
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response
