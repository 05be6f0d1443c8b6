"""Faults and load with real components: a rate limit shared through a real redis-server by two
Gunicorn workers, a worker killed with SIGKILL mid-request, and a short soak with flat memory."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests

from . import servers

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

REDIS = shutil.which("redis-server")


def post(url: str, png: bytes, **fields: str) -> requests.Response:
    # A new connection per request, so Gunicorn's workers take turns accepting.
    with requests.Session() as s:
        return s.post(url + "/segment_file", files={"file": ("d.png", png)}, data=fields, timeout=300)


def wait_for_workers(server: servers.ServerProcess, n: int, exclude: set[int] = frozenset(), timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = {p.pid for p in server.workers()} - exclude
        if len(pids) >= n:
            return pids
        time.sleep(0.2)
    raise AssertionError(f"{n} workers not up after {timeout} s:\n{server.log()[-2000:]}")


def seen_worker_pids(server: servers.ServerProcess, want: int, timeout: float = 60) -> set[int]:
    """Pids that answered /health (new connection each time) until ``want`` different ones have."""
    pids: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(pids) < want and time.monotonic() < deadline:
        with requests.Session() as s:
            pids.add(s.get(server.url + "/health", timeout=10).json()["pid"])
        time.sleep(0.05)
    return pids


@pytest.fixture()
def redis_url(tmp_path):
    if REDIS is None:
        pytest.skip("redis-server is not installed (.ci/run installs Debian's redis-server)")
    port = servers.free_port()
    proc = subprocess.Popen(
        [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while (
        subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True).stdout.strip() != "PONG"
    ):
        assert time.monotonic() < deadline and proc.poll() is None, "redis-server did not start"
        time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


def test_rate_limit_holds_across_gunicorn_workers_with_redis(redis_url, small_png, tmp_path):
    env = {"SEGMENTER": "classical", "RATE_LIMIT": "6 per minute", "RATELIMIT_STORAGE_URI": redis_url}
    server = servers.gunicorn(servers.free_port(), tmp_path / "gunicorn.log", env, workers=2)
    try:
        server.wait_healthy()
        wait_for_workers(server, 2)
        assert len(seen_worker_pids(server, 2)) == 2, "both workers should answer"
        with ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(lambda _: post(server.url, small_png).status_code, range(24)))
        assert codes.count(200) == 6 and codes.count(429) == 18, codes
        r = post(server.url, small_png)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
        served = {line.split("pid=")[1] for line in server.log().splitlines() if "POST /segment_file" in line}
        assert len(served) == 2, f"requests went to {served}: the limit must hold across both workers"
        # /metrics adds up both workers (prometheus multiprocess mode), whichever worker answers.
        for _ in range(3):
            text = requests.get(server.url + "/metrics", timeout=10).text
            counts = {
                status: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith('sam_droplet_requests_total{endpoint="api.segment_file"')
                for status in [line.split('status="')[1].split('"')[0]]
            }
            assert counts == {"200": 6.0, "429": 19.0}, counts
            assert "sam_droplet_model_loaded 0.0" in text
    finally:
        server.stop()


def test_worker_killed_mid_request_is_respawned(server_env, slow_png, small_png, tmp_path):
    server = servers.gunicorn(servers.free_port(), tmp_path / "gunicorn.log", server_env, workers=2)
    try:
        server.wait_healthy()
        before = wait_for_workers(server, 2)
        outcome: dict = {}

        def slow() -> None:
            try:
                outcome["status"] = post(server.url, slow_png).status_code
            except requests.RequestException as exc:
                outcome["error"] = type(exc).__name__

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(2.0)
        busiest = max(before, key=lambda pid: psutil.Process(pid).cpu_times().user)
        psutil.Process(busiest).send_signal(signal.SIGKILL)
        t.join(300)
        # The client is told (the connection drops), never left hanging; had the other worker
        # served it, it completes.
        assert not t.is_alive() and ("error" in outcome or outcome.get("status") == 200), outcome
        after = wait_for_workers(server, 2, exclude={busiest})
        assert busiest not in after
        server.wait_healthy()
        for _ in range(4):
            r = post(server.url, small_png)
            assert r.status_code == 200 and r.json()["num_droplets"] > 0
        assert server.proc.poll() is None
    finally:
        server.stop()


def test_soak_memory_is_flat(small_png, tmp_path):
    env = {"SEGMENTER": "classical", "RATE_LIMIT": "off"}
    server = servers.gunicorn(servers.free_port(), tmp_path / "gunicorn.log", env, workers=1)
    try:
        server.wait_healthy()
        (pid,) = wait_for_workers(server, 1)
        worker = psutil.Process(pid)
        with requests.Session() as s:
            for i in range(200):
                r = s.post(server.url + "/segment_file", files={"file": ("d.png", small_png)}, timeout=60)
                assert r.status_code == 200, r.text[:300]
                if i == 19:
                    warm = worker.memory_info().rss
        end = worker.memory_info().rss
        assert end < warm * 1.10, f"RSS grew from {warm / 2**20:.0f} MB to {end / 2**20:.0f} MB over 180 requests"
    finally:
        server.stop()
