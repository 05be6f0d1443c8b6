"""Errors only the web service raises, and the one place where errors become HTTP status codes.

The library's errors (:mod:`sam_droplet.errors`) describe bad input and work that cannot be done;
the service adds what only a server meets (keys, busy slots, deadlines, its image cache) and maps
every error class to a status code and a JSON body ``{success: false, error: {code, message}}``.
"""

from __future__ import annotations

from typing import Any

from flask import Response, g, has_request_context, jsonify

from ..errors import (
    DropletError,
    ImageTooLarge,
    InvalidImage,
    InvalidOptions,
    NotReady,
    OutOfMemory,
    UnsupportedImageType,
)

__all__ = [
    "STATUS",
    "DeadlineExceeded",
    "JobNotDone",
    "JobNotFound",
    "NotCached",
    "Overloaded",
    "TooManyJobs",
    "Unauthorized",
    "error_response",
    "respond_to",
]


class NotCached(DropletError):
    """The image named by its SHA-256 is no longer in this process's cache: send the image again."""

    code = "image_not_cached"


class Unauthorized(DropletError):
    """No valid API key where one is required."""

    code = "unauthorized"


class Overloaded(DropletError):
    """Too many segmentations waiting, or a slot did not free in time; ``retry_after_s`` says when
    to try again."""

    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 5, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(DropletError):
    """A segmentation ran past REQUEST_TIMEOUT_S and was stopped."""

    code = "deadline_exceeded"


class JobNotFound(DropletError):
    """No such job for this key (it never existed, belongs to another key, or expired)."""

    code = "job_not_found"


class JobNotDone(DropletError):
    """The job has no result (yet): it is queued, running, failed or cancelled."""

    code = "job_not_done"


class TooManyJobs(DropletError):
    """This key already has JOBS_PER_KEY jobs queued or running."""

    code = "too_many_jobs"


STATUS: dict[type[DropletError], int] = {
    InvalidImage: 400,
    InvalidOptions: 400,
    Unauthorized: 401,
    NotCached: 404,
    JobNotFound: 404,
    JobNotDone: 409,
    TooManyJobs: 429,
    ImageTooLarge: 413,
    UnsupportedImageType: 415,
    NotReady: 503,
    Overloaded: 503,
    OutOfMemory: 503,
    DeadlineExceeded: 504,
}

# Seconds a client should wait after a device ran out of memory (its memory is freed by then).
OUT_OF_MEMORY_RETRY_S = 10


# Messages quote what was wrong with a request; a 40 MB option must not come back 40 MB long.
MAX_MESSAGE_CHARS = 1000


def _bounded(text: str) -> str:
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    return f"{text[:MAX_MESSAGE_CHARS]}... ({len(text) - MAX_MESSAGE_CHARS} more characters not shown)"


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> tuple[Response, int]:
    """The JSON error body and status every error of the service answers with (the message and
    string details at most MAX_MESSAGE_CHARS long)."""
    message = _bounded(message)
    if details:
        details = {k: _bounded(v) if isinstance(v, str) else v for k, v in details.items()}
    if has_request_context():
        g.error_code = code  # counted by code in /metrics (after_request)
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return jsonify({"success": False, "error": error}), status


def respond_to(exc: DropletError) -> tuple[Response, int]:
    """The answer to a :class:`DropletError`, with Retry-After or WWW-Authenticate where it applies."""
    message = exc.message
    if isinstance(exc, OutOfMemory):
        message = f"{message}; try again, or use a smaller image"
    response, status = error_response(STATUS.get(type(exc), 400), exc.code, message, exc.details or None)
    if isinstance(exc, Overloaded):
        response.headers["Retry-After"] = str(exc.retry_after_s)
    elif isinstance(exc, OutOfMemory):
        response.headers["Retry-After"] = str(OUT_OF_MEMORY_RETRY_S)
    if isinstance(exc, Unauthorized):
        response.headers["WWW-Authenticate"] = 'Bearer realm="sam-droplet"'
    return response, status
