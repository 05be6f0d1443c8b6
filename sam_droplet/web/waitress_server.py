"""Waitress with a graceful stop: settings from the environment, in-flight requests finish on SIGTERM.

Waitress's own ``serve`` dies at once on SIGTERM (the signal's default action), cutting off a
segmentation in progress; a service manager (systemd, Docker, Kubernetes) stops services with
SIGTERM. :func:`serve` runs Waitress's event loop itself: on SIGTERM or SIGINT it closes the
listening sockets, keeps the loop running until every request received has been answered and
flushed (at most ``grace`` seconds), then returns.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from ..settings import env_int
from .config import ServerSettings

__all__ = ["serve", "settings_from_env"]

log = logging.getLogger(__name__)


def settings_from_env(config: ServerSettings, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Waitress settings: address from the app's configuration, the rest from WAITRESS_* variables.

    Returns keyword arguments for :func:`waitress.create_server`: host and port (FLASK_HOST,
    FLASK_PORT), threads (WAITRESS_THREADS, 4), connection_limit (WAITRESS_CONNECTION_LIMIT, 100),
    channel_timeout in seconds (WAITRESS_CHANNEL_TIMEOUT, 300: a large image in sam mode on a CPU
    takes minutes), max_request_body_size in bytes (WAITRESS_MAX_REQUEST_BODY_SIZE, default
    MAX_UPLOAD_MB plus 1 MB for the form's other fields).

    Raises:
        ConfigError: a WAITRESS_* value is not a whole number of at least 1.
    """
    env = os.environ if env is None else env
    return {
        "host": config.host,
        "port": config.port,
        # One model per process and one inference at a time; the other threads keep /health and
        # the page answering while an image is segmented.
        "threads": env_int(env, "WAITRESS_THREADS", 4),
        "connection_limit": env_int(env, "WAITRESS_CONNECTION_LIMIT", 100),
        "channel_timeout": env_int(env, "WAITRESS_CHANNEL_TIMEOUT", 300),
        "max_request_body_size": env_int(env, "WAITRESS_MAX_REQUEST_BODY_SIZE", config.max_upload_bytes + 2**20),
        "ident": "sam-droplet",
    }


def _busy(channel: Any) -> bool:
    """A request is being received, waits for or runs in a worker thread, or its answer is unsent."""
    return bool(channel.requests or channel.request is not None or channel.total_outbufs_len)


def serve(app: Any, grace: float = 300.0, **settings: Any) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then finish the requests in flight and return.

    Args:
        app: the WSGI application.
        grace: seconds to wait for requests in flight after the signal.
        **settings: keyword arguments of :func:`waitress.create_server` (see :func:`settings_from_env`).
    """
    from waitress import create_server, wasyncore
    from waitress.channel import HTTPChannel

    server = create_server(app, **settings)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: no new connections; finishing the requests in flight", signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    socket_map = server.map if hasattr(server, "map") else server._map
    poll = server.adj.asyncore_use_poll
    server.print_listen("Serving on http://{}:{}")
    try:
        while not stop.is_set():
            # One pass at a time, so the flag is seen within a second of the signal.
            wasyncore.loop(timeout=1.0, map=socket_map, use_poll=poll, count=1)
        for listener in [d for d in list(socket_map.values()) if hasattr(d, "active_channels")]:
            listener.accepting = False
            listener.del_channel()
            listener.socket.close()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            channels = [d for d in list(socket_map.values()) if isinstance(d, HTTPChannel)]
            if not any(_busy(c) for c in channels):
                break
            wasyncore.loop(timeout=0.2, map=socket_map, use_poll=poll, count=1)
        else:
            log.warning("requests still in flight after %.0f s; stopping anyway", grace)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
        wasyncore.close_all(socket_map)
        print("sam-droplet: stopped", file=sys.stderr, flush=True)
