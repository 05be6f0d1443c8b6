"""Hostile and heavy load on a real server, shared by the system tests (tests/test_hostile.py) and
the reliability figures (``python -m tests.reliability``).

Each attack holds, floods or bombs a running server while :class:`HealthProbe` asks ``/health``
on a new connection several times a second and :class:`PeakRss` samples every worker's memory.
"""

from __future__ import annotations

import contextlib
import io
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import psutil
import requests


class HealthProbe:
    """GET ``url`` (a new connection each time) every ``interval`` seconds in a thread.

    ``latencies`` holds one entry per probe: seconds, or None when it failed (an error, a timeout
    or a status other than 200).
    """

    def __init__(self, url: str, interval: float = 0.25, timeout: float = 5.0, verify: bool = True):
        self.url, self.interval, self.timeout, self.verify = url, interval, timeout, verify
        self.latencies: list[float | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                with requests.Session() as s:
                    ok = s.get(self.url, timeout=self.timeout, verify=self.verify).status_code == 200
            except requests.RequestException:
                ok = False
            self.latencies.append(time.perf_counter() - t0 if ok else None)
            self._stop.wait(self.interval)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 1)

    @property
    def failures(self) -> int:
        return sum(1 for t in self.latencies if t is None)

    @property
    def worst_s(self) -> float:
        """The slowest answer; a failed probe counts as its timeout."""
        return max((self.timeout if t is None else t for t in self.latencies), default=float("nan"))

    def summary(self) -> dict[str, Any]:
        return {"probes": len(self.latencies), "failures": self.failures, "worst_s": round(self.worst_s, 3)}


class PeakRss:
    """The largest rise of any one worker's resident memory while in the ``with`` block, sampled
    every 20 ms (the server process itself when it has no children, as Waitress)."""

    def __init__(self, server_pid: int, interval: float = 0.02):
        self.server = psutil.Process(server_pid)
        self.interval = interval
        self.baseline: dict[int, int] = {}
        self.peak: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _processes(self) -> list[psutil.Process]:
        return self.server.children() or [self.server]

    def _sample(self) -> None:
        for p in self._processes():
            try:
                rss = p.memory_info().rss
            except psutil.Error:
                continue
            self.baseline.setdefault(p.pid, rss)
            self.peak[p.pid] = max(self.peak.get(p.pid, 0), rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sample()

    @property
    def rise_mb(self) -> float:
        """The largest rise over its baseline of any one worker, in MB."""
        return max((self.peak[p] - self.baseline[p] for p in self.peak), default=0) / 2**20

    @property
    def peak_mb(self) -> float:
        return max(self.peak.values(), default=0) / 2**20


# -- attacks ---------------------------------------------------------------------------------------


def _connect(host: str, port: int, tls: bool) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=10)
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(sock, server_hostname=host)
    return sock


@contextlib.contextmanager
def slow_uploads(
    host: str, port: int, n: int = 4, interval: float = 5.0, tls: bool = False, headers: dict[str, str] | None = None
) -> Iterator[list[socket.socket]]:
    """``n`` uploads to /segment_file that announce 100 kB and then send one byte every
    ``interval`` seconds, for as long as the block lasts."""
    boundary = "slowclientboundary"
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (
        f"POST /segment_file HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: 100000\r\n{extra}\r\n--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="slow.png"\r\nContent-Type: image/png\r\n\r\n'
    ).encode()
    socks = [_connect(host, port, tls) for _ in range(n)]
    for sock in socks:
        sock.sendall(head)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(interval):
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.sendall(b"\x00")

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield socks
    finally:
        stop.set()
        thread.join(interval + 1)
        for sock in socks:
            sock.close()


@contextlib.contextmanager
def idle_sockets(host: str, port: int, n: int = 101, tls: bool = False) -> Iterator[list[socket.socket]]:
    """``n`` connections that send nothing, for as long as the block lasts."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection((host, port), timeout=10))
        yield socks
    finally:
        for sock in socks:
            sock.close()


@contextlib.contextmanager
def segmentations(
    url: str, png: bytes, n: int = 8, fields: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> Iterator[list[int]]:
    """``n`` segmentations posted at once; the list fills with their status codes (0: no answer)
    and is complete after the block."""
    statuses: list[int] = []

    def post() -> None:
        try:
            with requests.Session() as s:
                r = s.post(
                    url + "/segment_file",
                    files={"file": ("d.png", png)},
                    data=fields or {},
                    headers=headers,
                    timeout=600,
                )
                statuses.append(r.status_code)
        except requests.RequestException:
            statuses.append(0)

    threads = [threading.Thread(target=post, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    try:
        yield statuses
    finally:
        for t in threads:
            t.join(600)


# -- payloads ---------------------------------------------------------------------------------------


def png_of(array: np.ndarray) -> bytes:
    """PNG bytes (Pillow: OpenCV's encoder refuses pictures over a million rows)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def memory_bombs() -> dict[str, bytes]:
    """Small files that decode to gigabytes: the issue's reproductions."""
    import tifffile

    tile = np.zeros((16, 256, 256), np.uint8)
    deep = io.BytesIO()
    tifffile.imwrite(
        deep,
        (tile for _ in range(16 * 16 * 16)),
        shape=(256, 4096, 4096),
        dtype=np.uint8,
        tile=(16, 256, 256),
        volumetric=True,
        compression="zlib",
        photometric="minisblack",
    )
    return {
        "16x4,000,000 PNG": png_of(np.zeros((4_000_000, 16), np.uint8)),
        "4096^2 TIFF of depth 256": deep.getvalue(),
        "8000^2 blank PNG": png_of(np.full((8000, 8000), 128, np.uint8)),
    }


def data_url_bomb(megabytes: int = 40) -> dict[str, str]:
    """A /segment JSON body whose image is ``data:;a;a;...``: a header that never ends."""
    return {"image": "data:" + ";a" * (megabytes * 2**20 // 2)}


def noise_png(side: int, seed: int = 0) -> bytes:
    return png_of(np.random.default_rng(seed).integers(0, 255, (side, side), dtype=np.uint8))
