"""WSGI entry point: ``app`` for Waitress, Gunicorn and uWSGI; ``python app.py`` runs the development server.

The model loads when this module is imported, i.e. in each server worker after it forks (never in a
preloading master: CUDA does not survive a fork).
"""

from __future__ import annotations

import os
import sys
import tempfile

try:
    import uwsgi  # importable only inside uWSGI workers
except ImportError:
    uwsgi = None

if uwsgi is not None and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # /metrics sums all uWSGI workers as it does Gunicorn's (gunicorn.conf.py sets this there):
    # a folder per server start, named by the master, the parent of every lazy-apps worker.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(
        tempfile.gettempdir(), f"sam-droplet-metrics-uwsgi-{os.getppid()}"
    )

from sam_droplet.errors import ConfigError, StartupError
from sam_droplet.web import create_app

try:
    app = create_app()
except (ConfigError, StartupError) as exc:
    # One clear line instead of a traceback, then a non-zero exit that servers report.
    print(f"sam-droplet: cannot start: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

if uwsgi is not None:
    # Admission keeps two of this worker's threads free for /health (uwsgi.ini: threads).
    _threads = uwsgi.opt.get("threads", b"1")  # a list when the option was given more than once
    app.extensions["sam_droplet"].fit_to_threads(int(_threads[-1] if isinstance(_threads, list) else _threads))

if __name__ == "__main__":
    server = app.extensions["sam_droplet"].config.server
    app.run(host=server.host, port=server.port, debug=server.debug, use_reloader=False)
