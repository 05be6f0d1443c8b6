"""Errors the pipeline raises for input it cannot accept.

Each error carries a stable machine-readable ``code`` and a message written for the person who sent
the input. They know nothing of HTTP: the blueprint (:mod:`sam_droplet.api`) maps each class to a
status code, and the CLI prints the message.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "DeadlineExceeded",
    "DropletError",
    "ImageTooLarge",
    "InvalidImage",
    "InvalidOptions",
    "NotCached",
    "NotReady",
    "Overloaded",
    "StartupError",
    "Unauthorized",
    "UnsupportedImageType",
]


class DropletError(Exception):
    """Base class of input errors: ``code`` names the kind, ``details`` adds structured context."""

    code = "bad_request"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class InvalidImage(DropletError):
    """The bytes are not a decodable image (empty, corrupt, truncated, unsupported layout)."""

    code = "invalid_image"


class UnsupportedImageType(DropletError):
    """The bytes are a file type the service does not read (sniffed from content, not the name)."""

    code = "unsupported_media_type"


class ImageTooLarge(DropletError):
    """Too many bytes or too many pixels."""

    code = "too_large"


class InvalidOptions(DropletError):
    """A request option (filters, preset, segmenter, calibration, format) is wrong."""

    code = "invalid_options"


class NotReady(DropletError):
    """The requested segmenter cannot run (no model loaded)."""

    code = "not_ready"


class NotCached(DropletError):
    """The image named by its SHA-256 is no longer in this process's cache: send the image again."""

    code = "image_not_cached"


class Unauthorized(DropletError):
    """No valid API key where one is required."""

    code = "unauthorized"


class Overloaded(DropletError):
    """Too many segmentations waiting, a slot did not free in time, or the GPU ran out of memory;
    ``retry_after_s`` says when to try again."""

    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 5, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(DropletError):
    """A segmentation ran past REQUEST_TIMEOUT_S and was stopped."""

    code = "deadline_exceeded"


class ConfigError(Exception):
    """A configuration value is wrong; the message names the variable and what it accepts."""


class StartupError(Exception):
    """The service cannot start as configured (for example SEGMENTER=sam without a checkpoint)."""
