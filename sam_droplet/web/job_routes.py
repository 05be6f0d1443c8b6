"""HTTP API for jobs: long work submitted, watched, fetched, cancelled: a video or TIFF stack to
track, or a ZIP of images to segment (a batch).

``POST /jobs`` (multipart ``file`` and options, up to JOB_MAX_UPLOAD_MB, streamed to disk) answers
202 with the job's URLs; ``GET /jobs/<id>`` its state, progress and ETA; ``GET /jobs/<id>/result``
the results (a video: ``?format=json|csv|frames|positions|zip``; a batch: ``json|csv|zip``);
``GET /jobs/<id>/frames/<n>`` a tracked frame's droplets with outlines, track ids and tails, and
``/frames/<n>/image`` its preview; ``DELETE /jobs/<id>`` cancels it, or deletes a finished one. A
job belongs to the API key that made it: another key gets 404, as for a job that does not exist.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

from flask import Blueprint, Response, jsonify, request, send_file, url_for

from ..batch import ARCHIVE_FILES, probe_archive
from ..errors import ImageTooLarge, InvalidImage, InvalidOptions
from ..io.frames import FrameViews
from ..io.video import probe_sequence
from ..motion import RESULT_FILES
from .errors import JobNotDone, JobNotFound, TooManyJobs
from .routes import parse_options
from .security import request_tenant
from .service import service

__all__ = ["bp"]

bp = Blueprint("jobs", __name__)

SEGMENT_FIELDS = (
    "segmenter", "detector", "preset", "um_per_px", "appearance", "filters", "contents", "spot_diameter_px",
)  # fmt: skip
JOB_FIELDS = (*SEGMENT_FIELDS, "fps", "frame_step", "max_frames", "max_distance_px", "max_gap")
VIDEO_TYPES = ("AVI", "MP4", "MOV", "multi-page TIFF", "ZIP of images")
MIMETYPES = {".csv": "text/csv", ".zip": "application/zip", ".json": "application/json"}


@bp.before_request
def _job_upload_limit() -> None:
    # Videos and batches are larger than images: this blueprint's own body limit (Flask 3.1).
    request.max_content_length = service().config.server.job_max_upload_bytes


def _files_of(job: dict[str, Any]) -> dict[str, str]:
    return ARCHIVE_FILES if job.get("kind") == "batch" else RESULT_FILES


def _number(name: str, value: Any, kind: type, minimum: float) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise InvalidOptions(f"{name} must be a number, got {str(value)[:40]!r}") from None
    if not number >= minimum:
        raise InvalidOptions(f"{name} must be at least {minimum:g}, got {str(value)[:40]!r}")
    return number


def _job_options(form: Any) -> dict[str, Any]:
    unknown = sorted(set(form) - set(JOB_FIELDS))
    if unknown:
        raise InvalidOptions(
            f"unknown form field(s) {', '.join(map(repr, unknown))}; accepted: file, {', '.join(JOB_FIELDS)}",
        )
    # The segmentation options as /segment_file reads and checks them; only those that were given.
    segment, _ = parse_options({k: form.get(k) for k in SEGMENT_FIELDS})
    given = {k for k in SEGMENT_FIELDS if (form.get(k) or "").strip()}
    options: dict[str, Any] = {k: v for k, v in asdict(segment).items() if k in given}
    options.update(
        fps=_number("fps", form.get("fps"), float, 1e-6),
        frame_step=_number("frame_step", form.get("frame_step"), int, 1) or 1,
        max_frames=_number("max_frames", form.get("max_frames"), int, 1),
        max_distance_px=_number("max_distance_px", form.get("max_distance_px"), float, 1e-6),
        max_gap=_number("max_gap", form.get("max_gap"), int, 0),
    )
    return {k: v for k, v in options.items() if v is not None}


def _view(job: dict[str, Any]) -> dict[str, Any]:
    progress = job["progress"]
    eta = None
    if job["state"] == "running" and job["started"] and progress["done"] and progress["total"]:
        elapsed = time.time() - job["started"]
        eta = round(elapsed / progress["done"] * (progress["total"] - progress["done"]), 1)
    done = job["state"] == "done"
    return {
        "success": True,
        "job_id": job["job_id"],
        "kind": job.get("kind", "video"),
        "state": job["state"],
        "file_name": job["file_name"],
        "progress": progress,
        "eta_s": eta,
        "error": job["error"],
        "created": job["created"],
        "result_url": url_for("jobs.result", job_id=job["job_id"]) if done else None,
        "formats": list(_files_of(job)) if done else [],
    }


def _own_job(job_id: str) -> dict[str, Any]:
    svc = service()
    job = svc.jobs.get(job_id)
    if job is None or job["owner"] != request_tenant():
        raise JobNotFound(f"no job {job_id[:64]!r} for this key (jobs expire after JOB_TTL_S)")
    return svc.jobs.reconcile(job, svc.job_queue.holder_gone if svc.job_queue is not None else None)


def _count_work(path: Any, kind: str, options: dict[str, Any], server: Any) -> int:
    """Frames (or images) the job will analyse, from the file's header or directory.

    Raises:
        InvalidImage: not a readable video, TIFF stack or ZIP.
        ImageTooLarge: more than JOB_MAX_FRAMES, or frames over MAX_IMAGE_PIXELS.
    """
    if kind == "batch":
        count = len(probe_archive(path).images)
        what = "images"
    else:
        info = probe_sequence(path, options.get("fps"))
        count = len(range(0, info.frames, options["frame_step"]))
        count = min(count, options.get("max_frames") or count)
        what = "frames"
        if info.width * info.height > server.max_image_pixels:
            raise ImageTooLarge(f"frames of {info.width}x{info.height} exceed MAX_IMAGE_PIXELS")
    if count > server.job_max_frames:
        hint = "use frame_step or max_frames" if kind == "video" else "split the archive"
        raise ImageTooLarge(
            f"the {kind} has {count} {what} to analyse; at most {server.job_max_frames} (JOB_MAX_FRAMES): {hint}",
            details={what: count, "job_max_frames": server.job_max_frames},
        )
    return count


@bp.post("/jobs")
def submit() -> tuple[Response, int]:
    svc = service()
    server = svc.config.server
    upload = request.files.get("file")
    if upload is None:
        raise InvalidOptions(f"send the file as multipart/form-data with the field 'file' ({', '.join(VIDEO_TYPES)})")
    options = _job_options(request.form)
    svc.jobs.expire(server.job_ttl_s)
    mine = [j for j in svc.jobs.jobs(request_tenant()) if j["state"] in ("queued", "running")]
    if len(mine) >= server.jobs_per_key:
        raise TooManyJobs(
            f"{len(mine)} job(s) of this key are queued or running; at most {server.jobs_per_key} (JOBS_PER_KEY)"
        )
    kind = "batch" if upload.stream.read(4) == b"PK\x03\x04" else "video"
    upload.stream.seek(0)
    limits = {"max_pixels": server.max_image_pixels, "max_memory_bytes": int(server.max_request_memory_mb * 2**20)}
    job = svc.jobs.create(request_tenant(), upload.filename or kind, upload.stream, options, kind, limits)
    try:
        frames = _count_work(svc.jobs.folder(job["job_id"]) / job["input"], kind, options, server)
    except (InvalidImage, ImageTooLarge):
        svc.jobs.delete(job["job_id"])  # a refused upload leaves nothing behind
        raise
    svc.job_queue.submit(job["job_id"])
    body = {
        "success": True,
        "job_id": job["job_id"],
        "kind": kind,
        "state": "queued",
        "frames": frames,
        "status_url": url_for("jobs.status", job_id=job["job_id"]),
        "result_url": url_for("jobs.result", job_id=job["job_id"]),
    }
    response = jsonify(body)
    response.headers["Location"] = body["status_url"]
    return response, 202


@bp.get("/jobs/<job_id>")
def status(job_id: str) -> Response:
    return jsonify(_view(_own_job(job_id)))


@bp.get("/jobs/<job_id>/result")
def result(job_id: str) -> Response:
    job = _own_job(job_id)
    if job["state"] != "done":
        raise JobNotDone(
            f"the job is {job['state']}" + (f": {job['error']}" if job["error"] else "; ask again when it is done"),
            details={"state": job["state"]},
        )
    files = _files_of(job)
    fmt = (request.args.get("format") or "json").lower()
    if fmt not in files:
        raise InvalidOptions(f"unknown format {fmt[:20]!r}; accepted: {', '.join(files)}")
    path = service().jobs.folder(job_id) / files[fmt]
    if fmt == "json":
        body = json.loads(path.read_text())
        return jsonify({"success": True, "job_id": job_id, "kind": job.get("kind", "video"), **body})
    stem = job["file_name"].rsplit(".", 1)[0][:60] or job.get("kind", "video")
    return send_file(path, mimetype=MIMETYPES[path.suffix], as_attachment=True, download_name=f"{stem}_{files[fmt]}")


def _frame_views(job_id: str) -> FrameViews:
    job = _own_job(job_id)
    if job["state"] != "done" or job.get("kind", "video") != "video":
        raise JobNotDone(f"frames exist for a finished video job; this one is a {job.get('kind')} job, {job['state']}")
    return FrameViews(service().jobs.folder(job_id), create=False)


@bp.get("/jobs/<job_id>/frames")
def frames(job_id: str) -> Response:
    """The analysed frames' indices, in order (the slider's stops)."""
    views = _frame_views(job_id)
    return jsonify({"success": True, "job_id": job_id, "frames": views.stored()})


@bp.get("/jobs/<job_id>/frames/<int:index>")
def frame(job_id: str, index: int) -> Response:
    """One analysed frame: size, time, droplets (centre, diameter, outline, track id, tail)."""
    path = _frame_views(job_id).path(index, ".json")
    if not path.is_file():
        raise JobNotFound(f"frame {index} was not analysed (see /jobs/{job_id}/frames)")
    record = json.loads(path.read_text())
    return jsonify({"success": True, "image_url": url_for("jobs.frame_image", job_id=job_id, index=index), **record})


@bp.get("/jobs/<job_id>/frames/<int:index>/image")
def frame_image(job_id: str, index: int) -> Response:
    path = _frame_views(job_id).path(index, ".jpg")
    if not path.is_file():
        raise JobNotFound(f"frame {index} was not analysed (see /jobs/{job_id}/frames)")
    response = send_file(path, mimetype="image/jpeg", max_age=3600)
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


@bp.delete("/jobs/<job_id>")
def cancel(job_id: str) -> Response:
    job = _own_job(job_id)
    jobs = service().jobs
    if job["state"] in ("queued", "running"):
        jobs.cancel(job_id)
        if job["state"] == "queued":
            jobs.update(job_id, state="cancelled", finished=time.time())
        return jsonify(
            {"success": True, "job_id": job_id, "state": "cancelling" if job["state"] == "running" else "cancelled"}
        )
    jobs.delete(job_id)
    return jsonify({"success": True, "job_id": job_id, "state": "deleted"})
