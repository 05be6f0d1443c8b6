"""Errors the library raises for input it cannot accept or work it cannot do.

Each :class:`DropletError` carries a stable machine-readable ``code`` and a message written for the
person who sent the input. They know nothing of HTTP: the web layer maps each class to a status
code (:mod:`sam_droplet.web.errors`), and the command line prints the message.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "DropletError",
    "ImageTooLarge",
    "InvalidImage",
    "InvalidOptions",
    "NotReady",
    "OutOfMemory",
    "StartupError",
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
    """An option (filters, preset, segmenter, calibration, format) is wrong."""

    code = "invalid_options"


class NotReady(DropletError):
    """The requested segmenter cannot run (no model loaded)."""

    code = "not_ready"


class OutOfMemory(DropletError):
    """The device ran out of memory for this image; its memory was freed, so the next one starts clean."""

    code = "out_of_memory"


class ConfigError(Exception):
    """A configuration value is wrong; the message names the variable and what it accepts."""


class StartupError(Exception):
    """The engine or service cannot start as configured (for example SEGMENTER=sam without a checkpoint)."""
