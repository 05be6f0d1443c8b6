"""Waitress with a graceful stop: settings from the environment, in-flight requests finish on SIGTERM.

Waitress's own ``serve`` dies at once on SIGTERM (the signal's default action), cutting off a
segmentation in progress; a service manager (systemd, Docker, Kubernetes) stops services with
SIGTERM. :func:`serve` runs Waitress's event loop itself: on SIGTERM or SIGINT it closes the
listening sockets, keeps the loop running until every request received has been answered and
flushed (at most ``grace`` seconds), then returns.
"""

from __future__ import annotations

import json
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
    FLASK_PORT); threads (WAITRESS_THREADS; default MAX_CONCURRENT_INFERENCES + MAX_QUEUE + 2, so
    that every admitted segmentation has a thread and two are left for /health and the page);
    connection_limit (WAITRESS_CONNECTION_LIMIT, 1000: idle keep-alive and slow connections cost a
    socket each, not a thread, and hundreds of them must not lock out /health); channel_timeout in
    seconds (WAITRESS_CHANNEL_TIMEOUT, 60: how long a connection may send and receive nothing;
    a request being answered is never cut); max_request_body_size in bytes
    (WAITRESS_MAX_REQUEST_BODY_SIZE, default the larger of MAX_UPLOAD_MB and JOB_MAX_UPLOAD_MB plus
    1 MB for the form's other fields; each endpoint then applies its own limit).

    Waitress reads every request, body included, in its event loop before a thread sees it: a
    client trickling its upload holds a socket, never a thread.

    Raises:
        ConfigError: a WAITRESS_* value is not a whole number of at least 1.
    """
    env = os.environ if env is None else env
    return {
        "host": config.host,
        "port": config.port,
        "threads": env_int(env, "WAITRESS_THREADS", config.max_concurrent + config.max_queue + 2),
        "connection_limit": env_int(env, "WAITRESS_CONNECTION_LIMIT", 1000),
        "channel_timeout": env_int(env, "WAITRESS_CHANNEL_TIMEOUT", 60),
        "max_request_body_size": env_int(env, "WAITRESS_MAX_REQUEST_BODY_SIZE", config.largest_body_bytes + 2**20),
        "ident": "sam-droplet",
    }


def _json_errors(channel_class: type) -> type:
    """``channel_class`` whose own error answers (a body over max_request_body_size, a malformed
    request) are the service's JSON errors instead of Waitress's text/plain page."""
    from waitress.task import ErrorTask

    class JsonErrorTask(ErrorTask):
        def execute(self) -> None:
            error = self.request.error
            code = str(getattr(error, "reason", "error")).lower().replace(" ", "_")
            if error.code == 413:
                code, message = "too_large", f"the request is larger than the server accepts ({error.body})"
            else:
                message = str(error.body)[:1000]
            body = json.dumps({"success": False, "error": {"code": code, "message": message}}).encode()
            self.status = f"{error.code} {error.reason}"
            self.response_headers.append(("Content-Type", "application/json"))
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    return type("JsonErrorChannel", (channel_class,), {"error_task_class": JsonErrorTask})


def _allow_connections(connection_limit: int) -> None:
    """Raise the open-file limit (up to the hard limit) to hold ``connection_limit`` sockets plus
    the files the app opens; Waitress would otherwise fail to accept before its own limit."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = connection_limit + 256
        if soft != resource.RLIM_INFINITY and soft < want:
            new = want if hard == resource.RLIM_INFINITY else min(want, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            if new < want:
                log.warning("open-file limit %d: fewer than %d connections can be held", new, connection_limit)
    except (ImportError, ValueError, OSError):  # pragma: no cover - not Unix, or not allowed
        pass


def _busy(channel: Any) -> bool:
    """A request is being received, waits for or runs in a worker thread, or its answer is unsent."""
    return bool(channel.requests or channel.request is not None or channel.total_outbufs_len)


def serve(app: Any, grace: float = 300.0, **settings: Any) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then finish the requests in flight and return.

    A sam-droplet app is told the thread count (:meth:`Service.fit_to_threads`); Waitress's own
    errors answer in the service's JSON.

    Args:
        app: the WSGI application.
        grace: seconds to wait for requests in flight after the signal.
        **settings: keyword arguments of :func:`waitress.create_server` (see :func:`settings_from_env`).
    """
    from waitress import create_server, wasyncore
    from waitress.channel import HTTPChannel

    if hasattr(app, "extensions") and "sam_droplet" in app.extensions:
        # Admission keeps two of these threads free for /health whatever the queue settings.
        app.extensions["sam_droplet"].fit_to_threads(int(settings.get("threads", 4)))
    _allow_connections(int(settings.get("connection_limit", 100)))
    server = create_server(app, **settings)
    socket_map = server.map if hasattr(server, "map") else server._map
    for listener in [server] if hasattr(server, "channel_class") else list(socket_map.values()):
        if hasattr(listener, "channel_class"):
            listener.channel_class = _json_errors(listener.channel_class)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: no new connections; finishing the requests in flight", signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
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
