"""Prometheus metrics: requests, latency, inference stages, droplets per image, in-flight, model loaded.

With several worker processes (Gunicorn, uWSGI) each process keeps its own counters; when
PROMETHEUS_MULTIPROC_DIR is set (gunicorn.conf.py sets it) they are written to files there and
``/metrics`` adds them up over all live workers (prometheus_client's multiprocess mode), so a scrape
that lands on any worker sees the whole server.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

__all__ = ["CONTENT_TYPE_LATEST", "observe_request", "observe_result", "render", "set_model_loaded"]

_SECONDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320)

REQUESTS = Counter("sam_droplet_requests", "HTTP requests by endpoint and status", ["endpoint", "method", "status"])
LATENCY = Histogram("sam_droplet_request_seconds", "HTTP request latency", ["endpoint"], buckets=_SECONDS)
STAGE = Histogram("sam_droplet_inference_seconds", "Segmentation time by stage", ["stage"], buckets=_SECONDS)
DROPLETS = Histogram(
    "sam_droplet_droplets_per_image",
    "Droplets returned per segmented image",
    buckets=(0, 1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
)
IN_FLIGHT = Gauge("sam_droplet_requests_in_flight", "HTTP requests being served", multiprocess_mode="livesum")
MODEL_LOADED = Gauge(
    "sam_droplet_model_loaded", "1 when every live worker has the SAM model loaded", multiprocess_mode="livemin"
)


def set_model_loaded(loaded: bool) -> None:
    MODEL_LOADED.set(1 if loaded else 0)


def observe_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    REQUESTS.labels(endpoint, method, str(status)).inc()
    LATENCY.labels(endpoint).observe(seconds)


def observe_result(result: Any) -> None:
    """Stage times (ms in ``result.timing_ms``) and the droplet count of one segmentation."""
    for stage, ms in result.timing_ms.items():
        if not stage.startswith("refine_"):  # sub-stages of refine would double count
            STAGE.labels(stage).observe(ms / 1000)
    DROPLETS.observe(len(result.droplets))


def render() -> bytes:
    """The exposition text: this process's metrics, or all workers' in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()
