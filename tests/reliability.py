"""Reliability figures: ``python -m tests.reliability --write docs/reliability.md``.

Measures, on this machine:

1. fuzz: hostile and broken requests (``tests/fuzz_cases.py``) through the app, counted by kind and
   by answer; any 5xx is a failure;
2. load: 8 concurrent clients for 2 minutes against a real Gunicorn (default settings: one worker
   per 4 cores, at least one) in classical mode on a ddPCR sample; throughput, p50/p95/p99
   latency, answers by status, worker RSS after warm-up and at the end;
3. soak: sequential requests against a real Gunicorn, worker RSS after warm-up and at the end.

It lives beside the tests because it drives the same real servers and generated cases they do.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import requests

from sam_droplet.tools import synthetic
from sam_droplet.tools.bench import markdown_table

from . import servers
from .conftest import SHARED_DATA, png_bytes

ROOT = Path(__file__).resolve().parent.parent
DDPCR = SHARED_DATA / "samples" / "ddpcr_original" / "ddPCR_0_0.png"


def run_fuzz(n: int) -> dict[str, Any]:
    from hypothesis import HealthCheck, given, settings

    from sam_droplet.web import create_app
    from sam_droplet.web.config import Config
    from sam_droplet.web.logs import configure_logging

    from .fuzz_cases import cases, send

    config = Config.from_mapping(
        {"SEGMENTER": "classical", "RATE_LIMIT": "off", "MAX_UPLOAD_MB": "8", "MAX_IMAGE_PIXELS": "4000000"}
    )
    client = create_app(config).test_client()
    configure_logging("ERROR", "json")
    valid = png_bytes(synthetic.sparse_emulsion(shape=(192, 256), n=8, r_min=10, r_max=24, seed=3).image)
    by_kind: Counter[str] = Counter()
    by_status: Counter[int] = Counter()
    failures: list[str] = []

    @settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(cases(valid))
    def one(case: Any) -> None:
        r = send(client, case)
        by_kind[case.kind] += 1
        by_status[r.status_code] += 1
        body = r.get_json(silent=True) or {}
        if r.status_code >= 500 or (r.status_code != 200 and not body.get("error", {}).get("message")):
            failures.append(f"{case.kind}: {r.status_code}")
        if r.status_code == 200 and not case.ok_allowed:
            failures.append(f"{case.kind}: accepted")

    started = time.perf_counter()
    one()
    return {
        "cases": sum(by_kind.values()),
        "seconds": time.perf_counter() - started,
        "by_kind": dict(sorted(by_kind.items())),
        "by_status": {str(k): v for k, v in sorted(by_status.items())},
        "failures": failures,
    }


def run_load(png: bytes, seconds: float, clients: int, tmp: Path) -> dict[str, Any]:
    env = {"SEGMENTER": "classical", "RATE_LIMIT": "off", "LOG_LEVEL": "WARNING"}
    server = servers.gunicorn(servers.free_port(), tmp / "load.log", env, workers=0)
    try:
        server.wait_healthy()
        time.sleep(2)
        with requests.Session() as s:  # warm-up: one request per worker, then memory settles
            for _ in range(2 * max(1, len(server.workers()))):
                s.post(server.url + "/segment_file", files={"file": ("d.png", png)}, timeout=600)
        latencies: list[float] = []
        statuses: Counter[str] = Counter()
        lock = threading.Lock()
        stop_at = time.monotonic() + seconds

        def client() -> None:
            with requests.Session() as s:
                while time.monotonic() < stop_at:
                    t0 = time.perf_counter()
                    try:
                        r = s.post(server.url + "/segment_file", files={"file": ("d.png", png)}, timeout=600)
                        status = str(r.status_code)
                    except requests.RequestException as exc:
                        status = type(exc).__name__
                    with lock:
                        latencies.append(time.perf_counter() - t0)
                        statuses[status] += 1

        samples: list[tuple[float, float]] = []

        def sample() -> None:  # worker RSS once a second while the clients run
            while time.monotonic() < stop_at:
                samples.append((time.monotonic() - started, server.workers_rss_mb()))
                time.sleep(1.0)

        started = time.monotonic()
        threads = [threading.Thread(target=client) for _ in range(clients)] + [threading.Thread(target=sample)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        # Warm-up is the first quarter of the run: every connection and buffer has been used by then.
        rss_warm = next(rss for t, rss in samples if t >= seconds / 4)
        rss_end = server.workers_rss_mb()
        q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else latencies * 99
        return {
            "clients": clients,
            "seconds": elapsed,
            "workers": len(server.workers()),
            "requests": len(latencies),
            "throughput_rps": len(latencies) / elapsed,
            "p50_s": q[49],
            "p95_s": q[94],
            "p99_s": q[98],
            "statuses": dict(statuses),
            "rss_warm_mb": rss_warm,
            "rss_end_mb": rss_end,
            "rss_growth": rss_end / rss_warm - 1,
            "rss_peak_mb": max(rss for _, rss in samples),
        }
    finally:
        server.terminate()
        server.wait_exit(120)


def run_soak(png: bytes, n: int, tmp: Path) -> dict[str, Any]:
    env = {"SEGMENTER": "classical", "RATE_LIMIT": "off", "LOG_LEVEL": "WARNING"}
    server = servers.gunicorn(servers.free_port(), tmp / "soak.log", env, workers=1)
    try:
        server.wait_healthy()
        statuses: Counter[int] = Counter()
        warm = None
        started = time.perf_counter()
        with requests.Session() as s:
            for i in range(n):
                statuses[
                    s.post(server.url + "/segment_file", files={"file": ("d.png", png)}, timeout=120).status_code
                ] += 1
                if i == min(19, n - 1):
                    warm = server.workers_rss_mb()
        end = server.workers_rss_mb()
        return {
            "requests": n,
            "seconds": time.perf_counter() - started,
            "statuses": {str(k): v for k, v in statuses.items()},
            "rss_warm_mb": warm,
            "rss_end_mb": end,
            "rss_growth": end / warm - 1,
        }
    finally:
        server.terminate()
        server.wait_exit(120)


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Reliability",
        "",
        f"Regenerate with `{report['command']}`. Machine: {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gb']} GB RAM, Python {m['python']}. Date: {report['date']}.",
        "",
        "Tested on every CI run (`make test-all`): API keys, rate limits (a real redis-server shared by two "
        "Gunicorn workers), CORS, security headers, backpressure (503 + Retry-After), deadlines (504), an "
        "injected CUDA out-of-memory (503, next request served), a Gunicorn worker killed with SIGKILL "
        "mid-request (respawned, next requests served), 300 fuzz cases, a 200-request soak with flat "
        "memory, /metrics and JSON logs: `tests/test_hardening.py`, `tests/test_resilience.py`, "
        "`tests/test_fuzz.py`. The figures below come from the longer runs of this command.",
        "",
    ]
    f = report.get("fuzz")
    if f:
        lines += [
            "## Fuzz",
            "",
            f"{f['cases']} generated cases in {f['seconds']:.0f} s through /segment_file and /segment; "
            f"answers by status: {', '.join(f'{k}: {v}' for k, v in f['by_status'].items())}. "
            f"Server errors (5xx) or rejections without a message: **{len(f['failures'])}**.",
            "",
        ]
        lines += markdown_table(["kind of case", "cases"], [[k, v] for k, v in f["by_kind"].items()])
    load = report.get("load")
    if load:
        lines += [
            "## Load",
            "",
            f"{load['clients']} concurrent clients for {load['seconds']:.0f} s against Gunicorn "
            f"({load['workers']} worker(s), default settings) in classical mode on {report['load_image']}.",
            "",
        ]
        lines += markdown_table(
            [
                "requests",
                "throughput",
                "p50",
                "p95",
                "p99",
                "answers",
                "worker RSS after warm-up (first quarter)",
                "at the end",
                "growth",
            ],
            [
                [
                    load["requests"],
                    f"{load['throughput_rps']:.2f} req/s",
                    f"{load['p50_s']:.1f} s",
                    f"{load['p95_s']:.1f} s",
                    f"{load['p99_s']:.1f} s",
                    ", ".join(f"{k}: {v}" for k, v in load["statuses"].items()),
                    f"{load['rss_warm_mb']:.0f} MB",
                    f"{load['rss_end_mb']:.0f} MB",
                    f"{100 * load['rss_growth']:+.1f} %",
                ]
            ],
        )
        lines += [
            "Latency is queueing: one worker segments one image at a time (each takes every core), so "
            "with 8 clients a request waits for the ones ahead of it. Throughput is what the machine "
            "can segment; add workers only with cores (or GPUs) to match.",
            "",
        ]
    soak = report.get("soak")
    if soak:
        lines += [
            "## Soak",
            "",
            f"{soak['requests']} sequential requests on a generated image in {soak['seconds']:.0f} s: answers "
            f"{', '.join(f'{k}: {v}' for k, v in soak['statuses'].items())}; worker RSS {soak['rss_warm_mb']:.0f} MB "
            f"after 20 requests, {soak['rss_end_mb']:.0f} MB at the end ({100 * soak['rss_growth']:+.1f} %).",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fuzz", type=int, default=3000, help="fuzz cases (0 = skip)")
    parser.add_argument("--load-seconds", type=float, default=120, help="load test duration (0 = skip)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--soak", type=int, default=1000, help="sequential soak requests (0 = skip)")
    parser.add_argument("--write", type=Path, help="write the Markdown report here (e.g. docs/reliability.md)")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="sam_droplet_reliability_"))
    report: dict[str, Any] = {
        "command": "python -m tests.reliability --write docs/reliability.md",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": psutil.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30),
            "python": platform.python_version(),
        },
    }
    if args.fuzz:
        print(f"fuzz: {args.fuzz} cases ...", file=sys.stderr, flush=True)
        report["fuzz"] = run_fuzz(args.fuzz)
        print(f"  {report['fuzz']['by_status']}, failures {report['fuzz']['failures'][:5]}", file=sys.stderr)
    if args.load_seconds:
        if DDPCR.is_file():
            png, report["load_image"] = DDPCR.read_bytes(), f"`{DDPCR.name}` (1024x1024, ~700 droplets)"
        else:
            png = png_bytes(synthetic.packed_monolayer(shape=(1024, 1024), radius=15.0, seed=7).image)
            report["load_image"] = "a generated 1024x1024 packed monolayer"
        print(f"load: {args.clients} clients for {args.load_seconds:.0f} s ...", file=sys.stderr, flush=True)
        report["load"] = run_load(png, args.load_seconds, args.clients, tmp)
        print(f"  {json.dumps(report['load'])}", file=sys.stderr)
    if args.soak:
        print(f"soak: {args.soak} requests ...", file=sys.stderr, flush=True)
        small = png_bytes(synthetic.sparse_emulsion(shape=(192, 256), n=8, r_min=10, r_max=24, seed=3).image)
        report["soak"] = run_soak(small, args.soak, tmp)
        print(f"  {json.dumps(report['soak'])}", file=sys.stderr)
    text = render(report)
    if args.write:
        args.write.write_text(text)
        args.write.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
    print(text)
    fuzz_failed = bool(report.get("fuzz", {}).get("failures"))
    return 1 if fuzz_failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
