"""The application factory: configuration, logging, the engine (model loaded here), blueprint, errors."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import replace

from flask import Flask, Response, g, request
from flask_limiter.errors import RateLimitExceeded
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..errors import DropletError
from ..memory import limit_malloc_arenas
from ..pipeline import Engine
from . import metrics
from .config import Config
from .errors import error_response, respond_to
from .job_routes import bp as jobs_bp
from .limits import init_rate_limits
from .logs import configure_logging
from .routes import bp
from .security import init_security
from .service import Service

__all__ = ["create_app"]

log = logging.getLogger("sam_droplet")


# Each server thread that ran a segmentation kept its malloc arena's share: measured in sam mode on
# Waitress, 8 requests grew a worker from 0.9 to 2.1 GB, and only 1.1 GB with two arenas
# (docs/reliability.md).
_MALLOC_ARENAS = 2


def create_app(config: Config | Mapping[str, str] | None = None, engine: Engine | None = None) -> Flask:
    """Build the Flask app.

    Args:
        config: a :class:`Config`; a mapping of environment-variable names to values (defaults for
            the rest; the process environment is not read); or None to read the environment and
            ``.env``.
        engine: an already started engine to share (tests); its settings replace ``config.engine``.
            By default one is started from ``config.engine``, which loads the SAM model as
            SEGMENTER asks.

    Raises:
        ConfigError: a setting is wrong.
        StartupError: SEGMENTER=sam or grid and the checkpoint cannot be loaded.
    """
    if config is None:
        cfg = Config.from_env()
    elif isinstance(config, Config):
        cfg = config
    else:
        cfg = Config.from_mapping(config)
    server = cfg.server
    configure_logging(server.log_level, server.log_format)
    limit_malloc_arenas(_MALLOC_ARENAS)

    # The page (templates/, static/) is package data beside this module: a built wheel serves it.
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=server.max_upload_bytes,
        # Uploads are read into memory once; Werkzeug's form parser may not buffer more than this.
        MAX_FORM_MEMORY_SIZE=server.max_upload_bytes,
        DEBUG=server.debug,
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False
    engine = engine or Engine.start(cfg.engine)
    # One source of truth: the engine's settings are the configuration's engine part.
    svc = app.extensions["sam_droplet"] = Service.create(replace(cfg, engine=engine.settings), engine)
    metrics.set_engine_state(engine.model is not None, engine.status == "degraded")
    metrics.observe_process(engine.device)  # an idle worker shows its memory with the model loaded
    app.register_blueprint(bp)
    app.register_blueprint(jobs_bp)
    svc.start_jobs()

    # Order matters: the request id first (every later log line carries it), then the API key
    # (the rate limiter counts per key), then the rate limiter (registered by init_rate_limits).
    @app.before_request
    def _request_id() -> None:
        g.started = time.perf_counter()
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else uuid.uuid4().hex
        metrics.IN_FLIGHT.inc()
        g.in_flight = True

    svc.auth_required = init_security(app, server)
    svc.limit_store = init_rate_limits(app, server)

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        endpoint = request.endpoint or "unknown"
        metrics.observe_request(endpoint, request.method, response.status_code, seconds)
        if "error_code" in g:
            metrics.observe_error(endpoint, g.error_code)
        metrics.observe_process(svc.engine.device)
        if endpoint not in ("api.health", "api.health_live", "api.health_ready", "api.metrics_endpoint", "static"):
            log.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round(seconds * 1000, 1),
                    "client": request.remote_addr,
                    "key_id": g.get("api_key_id"),
                    "pid": os.getpid(),  # the worker: the pid label of its memory in /metrics
                    "droplets": response.headers.get("X-Droplet-Count"),
                    "bytes_in": request.content_length,
                },
            )
        return response

    @app.teardown_request
    def _in_flight_done(_exc: BaseException | None) -> None:
        if g.pop("in_flight", False):
            metrics.IN_FLIGHT.dec()

    @app.errorhandler(DropletError)
    def _droplet_error(exc: DropletError):
        return respond_to(exc)

    @app.errorhandler(RateLimitExceeded)
    def _rate_limited(exc: RateLimitExceeded):
        response, status = error_response(
            429, "rate_limited", f"too many requests: the limit is {exc.description}; see Retry-After"
        )
        return response, status

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge):
        limit = request.max_content_length or server.max_upload_bytes
        if (request.content_length or 0) <= limit:
            # Within the size limit: Werkzeug refused the form for its number of fields.
            return error_response(413, "too_large", f"the form has too many fields (at most {request.max_form_parts})")
        if request.path.startswith("/jobs"):
            return error_response(
                413, "too_large", f"the upload is larger than {server.job_max_upload_mb:g} MB (JOB_MAX_UPLOAD_MB)"
            )
        return error_response(
            413, "too_large", f"the request is larger than {server.max_upload_mb:g} MB (MAX_UPLOAD_MB)"
        )

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        # The traceback goes to the log, never to the client.
        log.exception("unhandled error in %s %s (request %s)", request.method, request.path, g.get("request_id"))
        return error_response(
            500, "internal_error", f"internal error; quote request id {g.get('request_id', '-')} to the operator"
        )

    return app
