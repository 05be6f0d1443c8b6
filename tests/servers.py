"""Real server processes for the deployment tests: start, wait for /health, post, stop."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
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


# -- redis -------------------------------------------------------------------------------------------

REDIS = shutil.which("redis-server")


class RedisServer:
    """A real redis-server on ``port`` (no persistence); :meth:`stop` and :meth:`start` again on
    the same port, as an outage and its end."""

    def __init__(self, tmp: Path, port: int | None = None):
        self.tmp, self.port = tmp, port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        argv = [REDIS or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.tmp)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not self.answers():
            assert time.monotonic() < deadline and self.proc.poll() is None, "redis-server did not start"
            time.sleep(0.1)
        return self

    def answers(self) -> bool:
        ping = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True)
        return ping.stdout.strip() == "PONG"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


# -- nginx in front ---------------------------------------------------------------------------------

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_conf_for_test(tmp: Path, http_port: int, https_port: int, upstream_port: int) -> Path:
    """The project's nginx.conf with paths and ports (only) moved into ``tmp``."""
    cert, key = tmp / "fullchain.pem", tmp / "privkey.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    text = (ROOT / "nginx.conf").read_text()
    replacements = {
        "pid /run/nginx.pid;": f"pid {tmp}/nginx.pid;",
        "/var/log/nginx/": f"{tmp}/",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
        "server 127.0.0.1:9487;": f"server 127.0.0.1:{upstream_port};",
        "/etc/nginx/certs/fullchain.pem": str(cert),
        "/etc/nginx/certs/privkey.pem": str(key),
        "/opt/sam-droplet/sam_droplet/web/static/": f"{ROOT}/sam_droplet/web/static/",
        "/var/www/html": str(tmp),
    }
    for old, new in replacements.items():
        assert old in text, f"nginx.conf no longer contains {old!r}"
        text = text.replace(old, new)
    conf = tmp / "nginx.conf"
    conf.write_text(text)
    return conf


@contextlib.contextmanager
def nginx(tmp: Path, upstream_port: int) -> Iterator[tuple[str, str]]:
    """The shipped nginx.conf in front of ``upstream_port``: yields (https base URL, CA file) once
    it answers /health."""
    tmp.mkdir(parents=True, exist_ok=True)
    tmp.chmod(0o755)  # nginx's workers run as www-data and read the static files and certs
    http_port, https_port = free_port(), free_port()
    conf = nginx_conf_for_test(tmp, http_port, https_port, upstream_port)
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-g", "daemon off;"], stderr=subprocess.PIPE)
    base, cert = f"https://127.0.0.1:{https_port}", str(tmp / "fullchain.pem")
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(base + "/health", timeout=5, verify=cert).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError(f"nginx did not answer: {proc.stderr.read().decode() if proc.poll() else ''}")
            time.sleep(0.2)
        yield base, cert
    finally:
        proc.terminate()
        proc.wait(10)
