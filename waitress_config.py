"""Serve the app with Waitress (Windows and Linux workstations): ``python waitress_config.py``.

Settings come from the environment (and ``.env``): FLASK_HOST, FLASK_PORT, WAITRESS_THREADS,
WAITRESS_CONNECTION_LIMIT, WAITRESS_CHANNEL_TIMEOUT; the request body limit follows MAX_UPLOAD_MB.
"""

from __future__ import annotations

import os

from waitress import serve

from app import app

cfg = app.config["SAM_DROPLET"]
settings = {
    "host": cfg.host,
    "port": cfg.port,
    # One model per process; a few threads keep /health answering while an image is segmented.
    "threads": int(os.environ.get("WAITRESS_THREADS", "4")),
    "connection_limit": int(os.environ.get("WAITRESS_CONNECTION_LIMIT", "100")),
    # Segmenting a large image in sam mode on a CPU can take minutes.
    "channel_timeout": int(os.environ.get("WAITRESS_CHANNEL_TIMEOUT", "300")),
    "max_request_body_size": cfg.max_upload_bytes + 1024 * 1024,
}

if __name__ == "__main__":
    print(f"sam-droplet on http://{cfg.host}:{cfg.port} (waitress, {settings['threads']} threads)")
    serve(app, **settings)
