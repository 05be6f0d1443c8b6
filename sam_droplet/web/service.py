"""What the web layer keeps per process around the engine: admission, the image cache, health.

The engine (:class:`~sam_droplet.pipeline.Engine`) segments; the :class:`Service` decides when
(admission: how many run and wait, with a deadline each), remembers recent images for point
queries (:class:`~.cache.ImageCache`), and reports the process's health.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from ..jobs import InProcessQueue, JobStore, RQQueue, default_results_dir
from ..pipeline import Engine
from . import metrics
from .admission import Admission
from .cache import ImageCache
from .config import Config
from .limits import LimitStore

__all__ = ["Service", "service"]

log = logging.getLogger("sam_droplet")


@dataclass
class Service:
    """The engine and the per-process state of the web layer around it.

    Attributes:
        config: the configuration; ``config.engine`` is ``engine.settings`` (one source of truth).
        engine: the engine that segments.
        admission: segmentations running and waiting, with their deadlines.
        cache: recent images and their SAM embeddings, for ``/segment_point``.
        auth_required: whether requests need an API key.
        limit_store: the rate-limit counter store and whether it answers.
        jobs: the job store (RESULTS_DIR); job_queue runs them in this process.
        started: when the process started serving (``time.time()``).
    """

    config: Config
    engine: Engine
    admission: Admission
    cache: ImageCache
    auth_required: bool = False
    limit_store: LimitStore | None = None
    jobs: JobStore | None = None
    job_queue: InProcessQueue | RQQueue | None = None
    started: float = field(default_factory=time.time)

    @classmethod
    def create(cls, config: Config, engine: Engine) -> Service:
        server = config.server
        return cls(
            config=config,
            engine=engine,
            admission=Admission(
                server.max_concurrent, server.max_queue, server.request_timeout_s, on_change=_export_load
            ),
            cache=ImageCache(server.image_cache_mb),
        )

    def start_jobs(self) -> None:
        """The job store in RESULTS_DIR and this process's pool that runs them."""
        server = self.config.server
        self.jobs = JobStore(server.results_dir or default_results_dir())
        if server.job_queue_url:
            self.job_queue = RQQueue(self.jobs, server.job_queue_url)
        else:
            self.job_queue = InProcessQueue(self.jobs, self.engine, server.job_workers)

    def fit_to_threads(self, threads: int) -> None:
        """Tell admission how many worker threads the server runs this app with (the servers'
        launchers call it: Waitress's ``serve``, Gunicorn's ``post_worker_init``, uWSGI in app.py)."""
        before = (self.admission.max_concurrent, self.admission.max_queue)
        self.admission.fit_to_threads(threads)
        after = (self.admission.max_concurrent, self.admission.max_queue)
        if after != before:
            log.warning(
                "%d server threads: at most %d segmentation(s) running and %d waiting (asked for %d and %d), "
                "so that 2 threads always answer /health; give the server more threads to queue more",
                threads,
                after[0],
                after[1],
                before[0],
                before[1],
            )

    def readiness(self) -> tuple[bool, str]:
        """Whether this process should be sent new work, and why not: the engine is up (``ok`` or
        ``degraded``) and a segmentation would be admitted (a slot or a place in the queue)."""
        if self.engine.status not in ("ok", "degraded"):
            return False, f"the engine is {self.engine.status}"
        if self.admission.full:
            return False, (
                f"busy: {self.admission.running} segmentation(s) running and {self.admission.waiting} waiting"
            )
        return True, "ready"

    def health(self, full: bool = True) -> dict[str, Any]:
        """Facts for /health: the engine's, the process's memory and CPU, the GPU's, the load, the
        rate-limit store.

        ``memory_usage`` (MB, the deployment guide's name) repeats ``memory_mb``; ``cpu_percent`` is
        this process's CPU use since the previous /health (all cores: up to 100 x cores);
        ``gpu_memory`` (allocated and cached by torch, MB) is null off CUDA. Without ``full`` (an
        anonymous caller while API keys are on) what describes the host is left out: the
        checkpoint's path, the pid, the reason text, the GPU's name.
        """
        import psutil

        from .. import __version__

        process = psutil.Process()
        memory_mb = round(process.memory_info().rss / 2**20, 1)
        cuda = _cuda_memory(self.engine)
        info: dict[str, Any] = {
            **self.engine.describe(),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "gpu_available": _gpu_available(),
            "cuda": cuda,
            "gpu_memory": (
                {"allocated": cuda["memory_allocated_mb"], "cached": cuda["memory_reserved_mb"]} if cuda else None
            ),
            "uptime_s": round(time.time() - self.started, 1),
            "memory_mb": memory_mb,
            "memory_usage": memory_mb,
            "cpu_percent": process.cpu_percent(interval=None),
            "pid": os.getpid(),
            "auth_required": self.auth_required,
            "load": {"running": self.admission.running, "waiting": self.admission.waiting},
            "rate_limit_store": self.limit_store.state() if self.limit_store else None,
            "version": __version__,
        }
        if not full:
            for key in ("checkpoint", "pid", "reason", "cuda"):
                info.pop(key, None)
        return info


def _export_load(admission: Admission) -> None:
    metrics.observe_load(admission.running, admission.waiting, admission.max_concurrent, admission.max_queue)


def _gpu_available() -> bool:
    """Whether a CUDA GPU is usable here, asked of torch only when it is already loaded (a
    classical server never imports it), else of the NVIDIA driver's device list."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return bool(torch.cuda.is_available())
    try:
        return bool(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return False


def _cuda_memory(engine: Engine) -> dict[str, Any] | None:
    model = engine.model
    if model is None or model.device.type != "cuda":
        return None
    import torch

    idx = model.device.index or 0
    free, total = torch.cuda.mem_get_info(idx)
    return {
        "name": torch.cuda.get_device_name(idx),
        "memory_allocated_mb": round(torch.cuda.memory_allocated(idx) / 2**20, 1),
        "memory_reserved_mb": round(torch.cuda.memory_reserved(idx) / 2**20, 1),
        "memory_free_mb": round(free / 2**20, 1),
        "memory_total_mb": round(total / 2**20, 1),
    }


def service() -> Service:
    """The service of the app handling this request."""
    return current_app.extensions["sam_droplet"]
