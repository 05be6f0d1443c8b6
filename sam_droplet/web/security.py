"""Who may call the API and what browsers may do with its answers: API keys, CORS, security headers.

Keys are compared as SHA-256 digests with :func:`hmac.compare_digest` against every stored digest,
so neither the comparison time nor the memory of the process reveals a key. The page, /health,
/metrics and static files stay public; everything else needs a key when keys are configured.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from flask import Flask, Response, g, request

from ..errors import ConfigError
from .config import ServerSettings
from .errors import Unauthorized

__all__ = ["PUBLIC_ENDPOINTS", "api_key_digest", "init_security", "load_key_hashes", "request_tenant"]

# Endpoints that never need a key: the page, its assets, health and metrics for probes.
PUBLIC_ENDPOINTS = frozenset(
    {"api.index", "api.health", "api.health_live", "api.health_ready", "api.metrics_endpoint", "static"}
)

# The page loads only its own script and styles: no inline script, no third-party origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


def load_key_hashes(config: ServerSettings) -> frozenset[str]:
    """Digests of API_KEYS and of the keys in API_KEYS_FILE (one per line, # comments).

    Raises:
        ConfigError: the file cannot be read or holds a key shorter than 16 characters.
    """
    hashes = set(config.api_key_hashes)
    if config.api_keys_file is not None:
        path = Path(config.api_keys_file)
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"API_KEYS_FILE={path}: cannot be read ({exc.strerror})") from None
        keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if any(len(k) < 16 for k in keys):
            raise ConfigError(f"API_KEYS_FILE={path}: keys must be at least 16 characters")
        hashes.update(api_key_digest(k) for k in keys)
    return frozenset(hashes)


def api_key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def presented_key() -> str | None:
    """The key of this request: ``X-API-Key``, or ``Authorization: Bearer <key>``."""
    key = request.headers.get("X-API-Key")
    if key is None:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            key = auth[7:]
    return key.strip() if key else None


def request_tenant() -> str:
    """Whose data this request may see (cached images, jobs): its API key's id, or ``""`` for
    everyone when keys are off (one tenant)."""
    return g.get("api_key_id") or ""


def _matches(digest: str, hashes: frozenset[str]) -> bool:
    found = False
    for stored in hashes:  # no early exit: the time does not depend on which key matched
        found |= hmac.compare_digest(digest, stored)
    return found


def init_security(app: Flask, config: ServerSettings) -> bool:
    """Install the API-key check, CORS (only for CORS_ORIGINS) and the security headers; returns
    whether requests need a key."""
    hashes = load_key_hashes(config)
    origins = frozenset(config.cors_origins)

    @app.before_request
    def _authenticate() -> None:
        g.api_key_id = None
        if request.method == "OPTIONS" or not hashes:
            return
        key = presented_key()
        if key:
            digest = api_key_digest(key)
            if _matches(digest, hashes):
                g.api_key_id = digest[:12]  # identifies the key in rate limits and logs, reveals nothing
                return
        if request.endpoint in PUBLIC_ENDPOINTS:
            return
        raise Unauthorized("an API key is required: send it as X-API-Key or Authorization: Bearer")

    @app.after_request
    def _headers(response: Response) -> Response:
        h = response.headers
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("Referrer-Policy", "same-origin")
        h.setdefault("X-Frame-Options", "DENY")
        if response.mimetype == "text/html":
            h.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        origin = request.headers.get("Origin")
        if origin and ("*" in origins or origin.rstrip("/") in origins):
            h["Access-Control-Allow-Origin"] = "*" if "*" in origins else origin
            h["Vary"] = "Origin"
            h["Access-Control-Expose-Headers"] = "X-Request-ID, X-Droplet-Count, Retry-After"
            if request.method == "OPTIONS":
                h["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
                h["Access-Control-Allow-Headers"] = "Content-Type, X-API-Key, Authorization, X-Request-ID"
                h["Access-Control-Max-Age"] = "600"
        return response

    return bool(hashes)
