"""Real server processes for the deployment tests: start, wait for /health, post, stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server started in its own process group, its output in a log file."""

    def __init__(self, argv: list[str], port: int, log_path: Path, env: dict[str, str] | None = None):
        self.argv = argv
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        prefixes = ("UWSGI_", "GUNICORN_", "WAITRESS_", "WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
        full_env.update({"LOG_LEVEL": "warning", "PYTHONUNBUFFERED": "1"})
        full_env.update(env or {})
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def workers(self) -> list[psutil.Process]:
        """The server's worker processes (the children of a Gunicorn or uWSGI master)."""
        return psutil.Process(self.proc.pid).children()

    def workers_rss_mb(self) -> float:
        return sum(p.memory_info().rss for p in self.workers()) / 2**20

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 180.0, path: str = "/health") -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.argv[0]} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                r = requests.get(self.url + path, timeout=5)
                if r.status_code == 200:
                    return r.json()
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise AssertionError(f"{self.argv[0]} not healthy after {timeout} s:\n{self.log()[-3000:]}")

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.stop()

    def stop(self) -> None:
        """Make sure the process group is gone (after a failed test too)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()


def waitress(port: int, log_path: Path, env: dict[str, str]) -> ServerProcess:
    env = {**env, "FLASK_HOST": "127.0.0.1", "FLASK_PORT": str(port)}
    return ServerProcess([sys.executable, "waitress_config.py"], port, log_path, env)


def gunicorn(port: int, log_path: Path, env: dict[str, str], workers: int = 2) -> ServerProcess:
    """Gunicorn with gunicorn.conf.py; ``workers=0`` keeps its default (one per 4 cores, at least 1)."""
    env = {**env, "GUNICORN_BIND": f"127.0.0.1:{port}"}
    if workers:
        env["WEB_CONCURRENCY"] = str(workers)
    return ServerProcess([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "app:app"], port, log_path, env)


def uwsgi(port: int, log_path: Path, env: dict[str, str]) -> ServerProcess:
    env = {**env, "UWSGI_HTTP_SOCKET": f"127.0.0.1:{port}"}
    return ServerProcess([str(BIN / "uwsgi"), "--ini", "uwsgi.ini"], port, log_path, env)


SERVERS = {"waitress": waitress, "gunicorn": gunicorn, "uwsgi": uwsgi}
