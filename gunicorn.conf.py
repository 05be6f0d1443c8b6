"""Gunicorn settings: ``gunicorn -c gunicorn.conf.py app:app``.

Environment (and ``.env``): GUNICORN_BIND (FLASK_HOST:FLASK_PORT), WEB_CONCURRENCY (workers: one per
visible GPU, else one per 4 CPU cores, at least 1), GUNICORN_THREADS (MAX_CONCURRENT_INFERENCES +
MAX_QUEUE + 2), GUNICORN_WORKER_CONNECTIONS (1000), GUNICORN_TIMEOUT (300 s),
GUNICORN_GRACEFUL_TIMEOUT (120 s), GUNICORN_MAX_REQUESTS (1000, with 10 % jitter; 0 = never recycle),
GUNICORN_ACCESS_LOG ("-" = stdout), LOG_LEVEL.

The master never imports the app, torch or CUDA: ``preload_app`` stays off, so each worker imports
``app`` (and loads its model) after the fork; a CUDA context created before a fork is unusable in
the children. On a GPU server each worker is pinned to one GPU through CUDA_VISIBLE_DEVICES.
"""

import os

try:
    from dotenv import load_dotenv

    load_dotenv(".env", override=False)
except ImportError:  # pragma: no cover - python-dotenv is a dependency
    pass


def _visible_gpus() -> list[str]:
    """GPU ids this server may use, found without initialising CUDA in the master."""
    if os.environ.get("SAM_DEVICE", "auto").strip().lower() == "cpu":
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    try:
        return [str(i) for i in range(len(os.listdir("/proc/driver/nvidia/gpus")))]
    except OSError:
        return []


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


_gpus = _visible_gpus()
_cpus = _cpu_count()

bind = os.environ.get(
    "GUNICORN_BIND", f"{os.environ.get('FLASK_HOST', '0.0.0.0')}:{os.environ.get('FLASK_PORT', '9487')}"
)
# A model per worker: on a GPU one worker per device; on a CPU a worker per 4 cores, because torch
# and the detector scale to about 4 threads per image and workers that each use every core fight.
workers = int(os.environ.get("WEB_CONCURRENCY") or (len(_gpus) if _gpus else max(1, _cpus // 4)))
# A thread for every segmentation admitted (MAX_CONCURRENT_INFERENCES running + MAX_QUEUE waiting)
# and two more, so /health, /metrics and the page always find one. If GUNICORN_THREADS is set
# lower, admission shrinks its queue to fit (post_worker_init) and refuses the excess with 503.
_admitted = int(os.environ.get("MAX_CONCURRENT_INFERENCES") or 1) + int(os.environ.get("MAX_QUEUE") or 8)
threads = int(os.environ.get("GUNICORN_THREADS") or _admitted + 2)
# gthread: idle keep-alive connections wait in the worker's poller, not in a thread. A thread
# reads the request itself, so a client trickling its upload would hold one: in production
# Gunicorn sits behind nginx, which buffers whole requests first (nginx.conf).
worker_class = "gthread"
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))


def _short_first_wait() -> None:
    """Gunicorn 27's gthread hands each new connection to a thread, which waits up to 5 s for its
    first bytes before parking it in the poller: 100 connections that send nothing would hold
    every thread, /health included, for most of a minute. A real client's request arrives with
    its connection, so 50 ms is plenty; a silent one is parked at once and costs no thread."""
    try:
        from gunicorn.workers import gthread
    except ImportError:  # pragma: no cover - Windows has no Gunicorn
        return
    if hasattr(gthread, "DEFAULT_WORKER_DATA_TIMEOUT"):
        gthread.DEFAULT_WORKER_DATA_TIMEOUT = float(os.environ.get("GUNICORN_FIRST_BYTE_WAIT_S", "0.05"))


_short_first_wait()
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "300"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "120"))
keepalive = 5
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "1000"))
max_requests_jitter = max_requests // 10
preload_app = False
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# Client, request line, status, bytes, time in ms, request id (also returned to the client), worker pid.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s pid=%(p)s'
# Workers split the CPU between them (TORCH_THREADS unset or 0); set before torch starts in a worker.
if os.environ.get("TORCH_THREADS", "0").strip() in ("", "0"):
    os.environ["TORCH_THREADS"] = str(max(1, _cpus // workers))
os.environ.setdefault("OMP_NUM_THREADS", os.environ["TORCH_THREADS"])


# /metrics adds up every worker's counters from files in this folder (prometheus_client multiprocess
# mode); a fresh folder per server start, so a restart does not inherit dead workers' numbers.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    import tempfile

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="sam-droplet-metrics-")


def child_exit(server, worker):
    """A worker is gone: drop its live gauges (in-flight, model loaded) from /metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def pre_fork(server, worker):
    """In the master: give the new worker the GPU with the fewest live workers."""
    if _gpus:
        load = {gpu: 0 for gpu in _gpus}
        for other in server.WORKERS.values():
            if getattr(other, "sam_gpu", None) in load:
                load[other.sam_gpu] += 1
        worker.sam_gpu = min(load, key=lambda gpu: load[gpu])


def post_fork(server, worker):
    """In the worker, before the app (and CUDA) is imported: see only its own GPU."""
    gpu = getattr(worker, "sam_gpu", None)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        server.log.info("worker %s uses GPU %s", worker.pid, gpu)


def post_worker_init(worker):
    """The app, and with it the model, was loaded in this worker after the fork: tell admission
    how many threads serve it."""
    app = getattr(worker, "wsgi", None)
    if app is not None and "sam_droplet" in getattr(app, "extensions", {}):
        app.extensions["sam_droplet"].fit_to_threads(worker.cfg.threads)
    worker.log.info("worker %s ready (%s threads)", worker.pid, worker.cfg.threads)
