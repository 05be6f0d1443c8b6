"""Logging: one JSON object per line (LOG_FORMAT=json, for log collectors) or plain text.

Every record made while a request is served carries its request id. Request lines hold the method,
path, status, duration, client and key id; never image data, form contents or API keys.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from flask import g, has_request_context

__all__ = ["JsonFormatter", "configure_logging"]

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged as a field.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if has_request_context() and "request_id" not in record.__dict__:
            out["request_id"] = g.get("request_id")
        out.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        return line + ("  " + " ".join(f"{k}={v}" for k, v in extra.items()) if extra else "")


def configure_logging(level: str, fmt: str = "json") -> None:
    """Send the service's logs (logger ``sam_droplet``) to stderr in ``fmt`` at ``level``."""
    logger = logging.getLogger("sam_droplet")
    logger.setLevel(level)
    handler = next((h for h in logger.handlers if getattr(h, "_sam_droplet", False)), None)
    if handler is None:
        handler = logging.StreamHandler()
        handler._sam_droplet = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else _TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
