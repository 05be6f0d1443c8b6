"""Serve the app with Waitress (Windows and Linux workstations): ``python waitress_config.py``.

Settings come from the environment (and ``.env``): FLASK_HOST, FLASK_PORT, WAITRESS_THREADS
(MAX_CONCURRENT_INFERENCES + MAX_QUEUE + 2), WAITRESS_CONNECTION_LIMIT (1000), WAITRESS_CHANNEL_TIMEOUT
(60 s), WAITRESS_MAX_REQUEST_BODY_SIZE (bytes; the larger of MAX_UPLOAD_MB and JOB_MAX_UPLOAD_MB,
+ 1 MB). On SIGTERM or Ctrl+C the requests in flight finish before it exits.
"""

from __future__ import annotations

import sys

from app import app
from sam_droplet.errors import ConfigError
from sam_droplet.web.waitress_server import serve, settings_from_env

try:
    settings = settings_from_env(app.extensions["sam_droplet"].config.server)
except ConfigError as exc:
    print(f"sam-droplet: cannot start: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

if __name__ == "__main__":
    print(f"sam-droplet on http://{settings['host']}:{settings['port']} (waitress, {settings['threads']} threads)")
    serve(app, **settings)
