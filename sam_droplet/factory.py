"""The application factory: configuration, logging, the engine (model loaded here), blueprint, errors."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from pathlib import Path

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .api import bp, error_response
from .config import Config
from .errors import (
    DropletError,
    ImageTooLarge,
    InvalidImage,
    InvalidOptions,
    NotReady,
    UnsupportedImageType,
)
from .pipeline import Engine

__all__ = ["create_app"]

log = logging.getLogger("sam_droplet")

# The page and its assets live at the top of the repository, beside the package.
ROOT = Path(__file__).resolve().parent.parent

STATUS = {InvalidImage: 400, InvalidOptions: 400, UnsupportedImageType: 415, ImageTooLarge: 413, NotReady: 503}


def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("sam_droplet").setLevel(level)


def create_app(config: Config | Mapping[str, str] | None = None, engine: Engine | None = None) -> Flask:
    """Build the Flask app.

    Args:
        config: a :class:`Config`; a mapping of environment-variable names to values (defaults for
            the rest; the process environment is not read); or None to read the environment and
            ``.env``.
        engine: an already started engine to share (tests); by default one is started here, which
            loads the SAM model as SEGMENTER asks.

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
    _configure_logging(cfg.log_level)

    app = Flask(__name__, template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static"))
    app.config.update(
        MAX_CONTENT_LENGTH=cfg.max_upload_bytes,
        # Uploads are read into memory once; Werkzeug's form parser may not buffer more than this.
        MAX_FORM_MEMORY_SIZE=cfg.max_upload_bytes,
        DEBUG=cfg.debug,
        JSON_SORT_KEYS=False,
        SAM_DROPLET=cfg,
    )
    app.json.sort_keys = False
    app.extensions["sam_droplet"] = engine or Engine.start(cfg)
    app.register_blueprint(bp)

    @app.before_request
    def _request_id() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else uuid.uuid4().hex

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["X-Request-ID"] = getattr(g, "request_id", "")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    @app.errorhandler(DropletError)
    def _droplet_error(exc: DropletError):
        return error_response(STATUS.get(type(exc), 400), exc.code, exc.message, exc.details or None)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge):
        return error_response(413, "too_large", f"the request is larger than {cfg.max_upload_mb:g} MB (MAX_UPLOAD_MB)")

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
