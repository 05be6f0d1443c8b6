"""Rate limits on the segmentation endpoints with flask-limiter: per API key, else per client address.

Counters live in RATELIMIT_STORAGE_URI: memory:// keeps them per process (one Waitress), redis://
shares them between every worker and replica, which is what makes a limit hold under Gunicorn.
The client address is the socket's peer unless TRUSTED_PROXIES says how many proxies (nginx) sit in
front; only then is X-Forwarded-For believed, and only that many hops of it (werkzeug's ProxyFix).
"""

from __future__ import annotations

from flask import Flask, g, request
from flask_limiter import Limiter
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import ServerSettings

__all__ = ["LIMITED_ENDPOINTS", "init_rate_limits"]

# The endpoints that cost an inference (or a PDF report).
LIMITED_ENDPOINTS = frozenset(
    {"api.segment_file", "api.segment_json", "api.analyze_image", "api.segment_point", "api.report"}
)


def client_key() -> str:
    """Whom a request counts against: its API key's id when it has one, else its address."""
    key_id = g.get("api_key_id")
    return f"key:{key_id}" if key_id else f"ip:{request.remote_addr or '-'}"


def init_rate_limits(app: Flask, config: ServerSettings) -> Limiter | None:
    """Trust the configured proxies and limit the segmentation endpoints; None when RATE_LIMIT is off."""
    if config.trusted_proxies:
        n = config.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)  # type: ignore[method-assign]
    if not config.rate_limit:
        return None
    limiter = Limiter(
        client_key,
        app=app,
        default_limits=[config.rate_limit],
        default_limits_exempt_when=lambda: request.endpoint not in LIMITED_ENDPOINTS or request.method == "OPTIONS",
        storage_uri=config.ratelimit_storage_uri,
        headers_enabled=True,
        strategy="moving-window",
        key_prefix="sam_droplet",
    )
    return limiter
