"""Prometheus metrics: traffic, errors, latency, pipeline stages, load, memory, the model, the GPU.

With several worker processes (Gunicorn, uWSGI) each process keeps its own counters; when
PROMETHEUS_MULTIPROC_DIR is set (gunicorn.conf.py and uwsgi.ini set it) they are written to files
there and ``/metrics`` adds them up over all live workers (prometheus_client's multiprocess mode), so
a scrape that lands on any worker sees the whole server. Per-worker gauges (memory, GPU) carry a
``pid`` label instead of being summed.

The names here are a contract: deploy/monitoring/alerts.yml and grafana-dashboard.json use them,
and tests/test_monitoring.py fails when one of those names is missing from ``/metrics``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from pathlib import Path
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

__all__ = [
    "CONTENT_TYPE_LATEST",
    "memory_limit_bytes",
    "observe_error",
    "observe_load",
    "observe_process",
    "observe_request",
    "observe_result",
    "render",
    "set_engine_state",
]

# Workers write their values into files in this folder from the moment a metric is defined.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

_SECONDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320)

REQUESTS = Counter("sam_droplet_requests", "HTTP requests by endpoint and status", ["endpoint", "method", "status"])
ERRORS = Counter(
    "sam_droplet_errors",
    "Error answers by endpoint and error code (the JSON body's error.code: overloaded, not_ready, ...)",
    ["endpoint", "code"],
)
LATENCY = Histogram("sam_droplet_request_seconds", "HTTP request latency", ["endpoint"], buckets=_SECONDS)
STAGE = Histogram("sam_droplet_inference_seconds", "Segmentation time by stage", ["stage"], buckets=_SECONDS)
DROPLETS = Histogram(
    "sam_droplet_droplets_per_image",
    "Droplets returned per segmented image",
    buckets=(0, 1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
)
IN_FLIGHT = Gauge("sam_droplet_requests_in_flight", "HTTP requests being served", multiprocess_mode="livesum")
RUNNING = Gauge("sam_droplet_segmentations_running", "Segmentations holding a slot now", multiprocess_mode="livesum")
WAITING = Gauge("sam_droplet_segmentations_waiting", "Segmentations queued for a slot now", multiprocess_mode="livesum")
SLOTS = Gauge(
    "sam_droplet_segmentation_slots",
    "Segmentations that may run at once (MAX_CONCURRENT_INFERENCES, all workers)",
    multiprocess_mode="livesum",
)
QUEUE_LIMIT = Gauge(
    "sam_droplet_segmentation_queue_limit",
    "Segmentations that may wait (MAX_QUEUE, all workers)",
    multiprocess_mode="livesum",
)
MODEL_LOADED = Gauge(
    "sam_droplet_model_loaded", "1 when every live worker has the SAM model loaded", multiprocess_mode="livemin"
)
DEGRADED = Gauge(
    "sam_droplet_degraded",
    "1 when a worker fell back to the classical segmenter (SEGMENTER=auto and the model failed to load)",
    multiprocess_mode="livemax",
)
RESIDENT_MEMORY = Gauge(
    "sam_droplet_worker_resident_memory_bytes", "Resident memory of each worker process", multiprocess_mode="liveall"
)
MEMORY_LIMIT = Gauge(
    "sam_droplet_memory_limit_bytes",
    "Memory the server may use: the container's cgroup limit, else the machine's memory",
    multiprocess_mode="livemax",
)
LIMIT_STORE_UP = Gauge(
    "sam_droplet_rate_limit_store_up",
    "0 while a worker cannot reach the shared rate-limit store (limits then count per process)",
    multiprocess_mode="livemin",
)
JOBS = Gauge(
    "sam_droplet_jobs",
    "Jobs in RESULTS_DIR by state (the folder every worker shares: the same count from each)",
    ["state"],
    multiprocess_mode="livemax",
)
GPU_USED = Gauge(
    "sam_droplet_gpu_memory_used_bytes",
    "Memory in use on the worker's GPU, all processes (CUDA workers only)",
    ["device"],
    multiprocess_mode="liveall",
)
GPU_RESERVED = Gauge(
    "sam_droplet_gpu_memory_reserved_bytes",
    "GPU memory held by the worker's torch allocator (CUDA workers only)",
    ["device"],
    multiprocess_mode="liveall",
)
GPU_TOTAL = Gauge(
    "sam_droplet_gpu_memory_total_bytes",
    "Memory of the worker's GPU (CUDA workers only)",
    ["device"],
    multiprocess_mode="liveall",
)


def set_engine_state(model_loaded: bool, degraded: bool) -> None:
    """Whether this worker's engine has the SAM model, and whether it fell back without it."""
    MODEL_LOADED.set(1 if model_loaded else 0)
    DEGRADED.set(1 if degraded else 0)
    MEMORY_LIMIT.set(memory_limit_bytes())


def observe_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    REQUESTS.labels(endpoint, method, str(status)).inc()
    LATENCY.labels(endpoint).observe(seconds)


def observe_error(endpoint: str, code: str) -> None:
    ERRORS.labels(endpoint, code).inc()


def observe_jobs(counts: dict[str, int]) -> None:
    """Jobs by state: queued, running, done, failed, cancelled."""
    for state, n in counts.items():
        JOBS.labels(state).set(n)


def observe_limit_store(up: bool) -> None:
    LIMIT_STORE_UP.set(1 if up else 0)


def observe_load(running: int, waiting: int, slots: int, queue_limit: int) -> None:
    """This worker's admission: segmentations running and waiting, and its limits."""
    RUNNING.set(running)
    WAITING.set(waiting)
    SLOTS.set(slots)
    QUEUE_LIMIT.set(queue_limit)


def observe_result(result: Any) -> None:
    """Stage times (ms in ``result.timing_ms``) and the droplet count of one segmentation."""
    for stage, ms in result.timing_ms.items():
        if not stage.startswith("refine_"):  # sub-stages of refine would double count
            STAGE.labels(stage).observe(ms / 1000)
    DROPLETS.observe(len(result.droplets))


def observe_process(device: Any = None) -> None:
    """This worker's resident memory and, on a CUDA ``device``, its GPU's memory.

    Called after every request and before every scrape, so an idle worker's figures are those of
    its last request (an idle worker's memory does not move).
    """
    import psutil

    RESIDENT_MEMORY.set(psutil.Process().memory_info().rss)
    if device is None or getattr(device, "type", "cpu") != "cuda":
        return
    import torch

    index = device.index or 0
    with contextlib.suppress(RuntimeError):  # a GPU in a bad state must not fail the request
        free, total = torch.cuda.mem_get_info(index)
        name = f"cuda:{index}"
        GPU_USED.labels(name).set(total - free)
        GPU_TOTAL.labels(name).set(total)
        GPU_RESERVED.labels(name).set(torch.cuda.memory_reserved(index))


@functools.cache
def memory_limit_bytes() -> int:
    """The cgroup (v2, else v1) memory limit of this container, else the machine's memory."""
    import psutil

    total = psutil.virtual_memory().total
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            text = Path(path).read_text().strip()
            if text != "max" and 0 < int(text) < total:  # v1 writes a huge number for "no limit"
                return int(text)
    return total


_PID_FILE = re.compile(r"_(\d+)\.db$")


def _forget_dead_workers(folder: str) -> None:
    """Drop the live gauges of workers that are gone (uWSGI has no child-exit hook as Gunicorn does)."""
    import psutil

    for name in os.listdir(folder):
        match = _PID_FILE.search(name)
        if match and name.startswith("gauge_live") and not psutil.pid_exists(int(match.group(1))):
            with contextlib.suppress(OSError):
                multiprocess.mark_process_dead(int(match.group(1)), folder)


def render() -> bytes:
    """The exposition text: this process's metrics, or all workers' in multiprocess mode."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        _forget_dead_workers(folder)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()
