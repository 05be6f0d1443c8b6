"""Gunicorn settings: ``gunicorn -c gunicorn.conf.py app:app``.

Each worker imports ``app`` after the fork and loads its own model there; ``preload_app`` stays off
because CUDA initialised in the master breaks the forked workers.
"""

import os

bind = os.environ.get(
    "GUNICORN_BIND", f"{os.environ.get('FLASK_HOST', '0.0.0.0')}:{os.environ.get('FLASK_PORT', '9487')}"
)
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
threads = int(os.environ.get("GUNICORN_THREADS", "2"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "300"))
graceful_timeout = 60
preload_app = False
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
