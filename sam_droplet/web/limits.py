"""Rate limits with flask-limiter: per API key, else per client address.

Every endpoint that costs an inference (or a PDF report) draws on one bucket of RATE_LIMIT per
client, whichever endpoint it calls; cached images (``/image/<sha>.png``, up to tens of MB each)
have a bucket of their own of the same size. ``Retry-After`` is sent only with a refusal.

Counters live in RATELIMIT_STORAGE_URI: memory:// keeps them per process (one Waitress), redis://
shares them between every worker and replica, which is what makes a limit hold under Gunicorn.
The client address is the socket's peer unless TRUSTED_PROXIES says how many proxies (nginx) sit in
front; only then is X-Forwarded-For believed, and only that many hops of it (werkzeug's ProxyFix).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from flask import Flask, Response, g, request
from flask_limiter import Limiter
from werkzeug.middleware.proxy_fix import ProxyFix

from . import metrics
from .config import ServerSettings

__all__ = ["LIMITED_ENDPOINTS", "LimitStore", "init_rate_limits"]

log = logging.getLogger("sam_droplet")

# The endpoints that cost an inference (or a PDF report).
LIMITED_ENDPOINTS = frozenset(
    {"api.segment_file", "api.segment_json", "api.analyze_image", "api.segment_point", "api.report", "jobs.submit"}
)


def client_key() -> str:
    """Whom a request counts against: its API key's id when it has one, else its address."""
    key_id = g.get("api_key_id")
    return f"key:{key_id}" if key_id else f"ip:{request.remote_addr or '-'}"


class LimitStore:
    """Whether the shared counter store answers, asked at most every ``CHECK_EVERY_S`` seconds.

    Policy when it does not (redis down): fail open, loudly. Requests are still limited, by
    counters in this process's memory (flask-limiter's in-memory fallback, RATE_LIMIT per worker),
    a warning is logged once per outage, ``sam_droplet_rate_limit_store_up`` is 0 and /health
    names the dependency. An outage of a cache of counters must not turn into an outage of the
    service, nor into 500s.
    """

    CHECK_EVERY_S = 5.0

    def __init__(self, limiter: Limiter | None, uri: str):
        self._limiter = limiter
        self.backend = uri.split("://", 1)[0] if uri else "memory"
        self._up = True
        self._checked = 0.0
        self._checking = False
        self._lock = threading.Lock()
        metrics.observe_limit_store(True)

    def state(self) -> dict[str, Any]:
        """``{"backend", "up", "policy"}`` for /health and /metrics (``up`` is None with limits off).

        The store is asked at most every ``CHECK_EVERY_S`` seconds, and after the first time in a
        background thread: a store that hangs never slows /health down."""
        if self._limiter is None:
            return {"backend": None, "up": None, "policy": "rate limits off"}
        with self._lock:
            stale = time.monotonic() - self._checked > self.CHECK_EVERY_S and not self._checking
            first = self._checked == 0.0
            if stale:
                self._checked, self._checking = time.monotonic(), True
        if stale and first:
            self._refresh()
        elif stale:
            threading.Thread(target=self._refresh, name="limit-store-check", daemon=True).start()
        policy = "shared" if self._up else "fail-open: counted per process in memory until the store answers"
        return {
            "backend": self.backend,
            "up": self._up,
            "policy": policy if self.backend != "memory" else "per process",
        }

    def _refresh(self) -> None:
        up = self.backend == "memory" or _ping(self._limiter)
        if self._up and not up:
            log.warning(
                "rate-limit store %s unreachable: limiting from this process's memory until it answers", self.backend
            )
        elif up and not self._up:
            log.info("rate-limit store %s answers again", self.backend)
        self._up = up
        metrics.observe_limit_store(up)
        with self._lock:
            self._checking = False


def _ping(limiter: Limiter) -> bool:
    try:
        return bool(limiter.storage.check())
    except Exception:  # any client error means the store does not answer
        return False


def init_rate_limits(app: Flask, config: ServerSettings) -> LimitStore:
    """Trust the configured proxies and limit the segmentation endpoints; the store's health."""
    if config.trusted_proxies:
        n = config.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)  # type: ignore[method-assign]
    if not config.rate_limit:
        return LimitStore(None, "")

    # Registered before the limiter's own hook, so it runs after it (Flask runs them in reverse).
    @app.after_request
    def _retry_after_only_on_refusals(response: Response) -> Response:
        if response.status_code in (429, 503):
            try:
                wait = int(response.headers.get("Retry-After", "1"))
            except ValueError:
                wait = 1
            response.headers["Retry-After"] = str(max(1, wait))
        else:
            response.headers.pop("Retry-After", None)
        return response

    redis = config.ratelimit_storage_uri.startswith(("redis", "rediss"))
    limiter = Limiter(
        client_key,
        app=app,
        application_limits=[config.rate_limit],
        application_limits_exempt_when=lambda: request.endpoint not in LIMITED_ENDPOINTS or request.method == "OPTIONS",
        storage_uri=config.ratelimit_storage_uri,
        # A store that does not answer within a second counts as down (never a hung request).
        storage_options={"socket_connect_timeout": 1, "socket_timeout": 1} if redis else {},
        in_memory_fallback_enabled=True,
        in_memory_fallback=[config.rate_limit],
        headers_enabled=True,
        strategy="moving-window",
        key_prefix="sam_droplet",
    )
    images = "api.cached_image"
    app.view_functions[images] = limiter.limit(config.rate_limit)(app.view_functions[images])
    return LimitStore(limiter, config.ratelimit_storage_uri)
