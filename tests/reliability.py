"""Reliability figures: ``python -m tests.reliability --write docs/reliability.md``.

Measures, on this machine:

1. fuzz: hostile and broken requests (``tests/fuzz_cases.py``) through the app, counted by kind and
   by answer; any 5xx is a failure;
2. load: 8 concurrent clients for 2 minutes against a real Gunicorn (default settings: one worker
   per 4 cores, at least one) in classical mode on a ddPCR sample; throughput, p50/p95/p99
   latency, answers by status, worker RSS after warm-up and at the end;
3. soak: sequential requests against a real Gunicorn, worker RSS after warm-up and at the end;
4. attacks (``tests/attacks.py``) on Waitress and Gunicorn at default settings: slow clients,
   idle sockets and 8 concurrent segmentations (worst /health latency), memory bombs and the
   largest admitted image (peak RSS rise of a worker), tenants (what another key can read) and
   deadlines (overshoot past REQUEST_TIMEOUT_S, and the longest stretch of work between two of the
   checks a deadline stops at, over a whole segmentation of the largest admitted picture).

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


# -- attacks --------------------------------------------------------------------------------------


def _server(kind: str, tmp: Path, env: dict[str, str]) -> servers.ServerProcess:
    kw = {"workers": 1} if kind == "gunicorn" else {}
    server = servers.SERVERS[kind](servers.free_port(), tmp / f"{kind}-{time.time_ns()}.log", env, **kw)
    server.wait_healthy()
    return server


def run_attacks(tmp: Path, hold_s: float) -> dict[str, Any]:
    from sam_droplet.sam.model import save_random_checkpoint

    from . import attacks

    checkpoint = save_random_checkpoint(tmp / "mobile_sam.pt", "vit_t", seed=0)
    sam_env = {
        "SAM_MODEL_PATH": str(checkpoint), "SEGMENTER": "auto", "SAM_DEVICE": "cpu", "TORCH_THREADS": "1",
        "RATE_LIMIT": "off",
    }  # fmt: skip
    small = png_bytes(synthetic.sparse_emulsion(shape=(192, 256), n=8, r_min=10, r_max=24, seed=3).image)
    health: list[dict[str, Any]] = []

    def record(server_name: str, attack: str, probe: Any, rss: Any, answers: str = "") -> None:
        health.append({"server": server_name, "attack": attack, **probe.summary(), "rss_rise_mb": rss.rise_mb,
                       "answers": answers})  # fmt: skip
        print(f"  {server_name}: {attack}: {health[-1]}", file=sys.stderr, flush=True)

    for kind in ("waitress", "gunicorn"):
        server = _server(kind, tmp, sam_env)
        try:
            url, pid = server.url, server.proc.pid
            with (
                attacks.PeakRss(pid) as rss,
                attacks.HealthProbe(url + "/health") as probe,
                attacks.segmentations(url, small, n=8) as statuses,
            ):
                pass
            record(kind, "8 concurrent segmentations (sam mode)", probe, rss, _counts(statuses))
            with (
                attacks.PeakRss(pid) as rss,
                attacks.slow_uploads("127.0.0.1", server.port, n=4, interval=5.0),
                attacks.HealthProbe(url + "/health") as probe,
            ):
                time.sleep(hold_s)
            record(kind, f"4 slow uploads (1 byte / 5 s, {hold_s:.0f} s)", probe, rss)
            with (
                attacks.PeakRss(pid) as rss,
                attacks.idle_sockets("127.0.0.1", server.port, n=101),
                attacks.HealthProbe(url + "/health") as probe,
            ):
                time.sleep(hold_s)
            record(kind, f"101 idle sockets ({hold_s:.0f} s)", probe, rss)
            if kind == "gunicorn" and Path(servers.NGINX).exists():
                with servers.nginx(tmp / "nginx", server.port) as (base, cert):
                    port = int(base.rsplit(":", 1)[1])
                    with (
                        attacks.PeakRss(pid) as rss,
                        attacks.slow_uploads("127.0.0.1", port, n=16, interval=5.0, tls=True),
                        attacks.HealthProbe(base + "/health", verify=cert) as probe,
                    ):
                        time.sleep(hold_s)
                    record("gunicorn behind nginx", f"16 slow uploads over TLS ({hold_s:.0f} s)", probe, rss)
        finally:
            server.terminate()
            server.wait_exit(120)

    memory: list[dict[str, Any]] = []
    classical = {"SEGMENTER": "classical", "RATE_LIMIT": "off"}
    server = _server("waitress", tmp, classical)
    try:
        url, pid = server.url, server.proc.pid
        cases: list[tuple[str, str, dict[str, Any]]] = [
            (name, "/segment_file", {"files": {"file": ("bomb", payload)}})
            for name, payload in attacks.memory_bombs().items()
        ]
        cases.append(("40 MB data:;a;a;... URL", "/segment", {"json": attacks.data_url_bomb(40)}))
        biggest = synthetic.packed_monolayer(shape=(3600, 3600), radius=15.0, seed=2).image
        cases.append(
            (
                "3600^2 packed monolayer (admitted)",
                "/segment_file",
                {"files": {"file": ("big.png", png_bytes(biggest))}},
            )
        )
        for name, path, kwargs in cases:
            with attacks.PeakRss(pid) as rss, attacks.HealthProbe(url + "/health") as probe:
                t0 = time.perf_counter()
                r = requests.post(url + path, timeout=600, **kwargs)
                seconds = time.perf_counter() - t0
            memory.append({"case": name, "status": r.status_code, "seconds": seconds, "rss_rise_mb": rss.rise_mb,
                           "health_worst_s": probe.worst_s, "droplets": r.headers.get("X-Droplet-Count")})  # fmt: skip
            print(f"  memory: {memory[-1]}", file=sys.stderr, flush=True)
    finally:
        server.terminate()
        server.wait_exit(120)

    keys = {"A": "tenant-a-0123456789abcdef", "B": "tenant-b-0123456789abcdef"}
    server = _server("waitress", tmp, {**classical, "API_KEYS": ",".join(keys.values())})
    try:
        url = server.url
        a, b = {"X-API-Key": keys["A"]}, {"X-API-Key": keys["B"]}
        pair = synthetic.fluorescence_pair(n=30, seed=4)
        files = {
            "file": ("bf.png", png_bytes(pair.brightfield.image)),
            "fluorescence": ("fl.png", png_bytes(pair.fluorescence)),
        }
        sha = requests.post(url + "/segment_file", files=files, headers=a, timeout=120).json()["image"]["sha256"]
        x, y = pair.brightfield.centers[len(pair.brightfield.centers) // 2]
        tries = {
            "GET /image/<A's sha>.png": requests.get(f"{url}/image/{sha}.png", headers=b),
            "GET /image/<A's sha>.png?channel=fluorescence": requests.get(
                f"{url}/image/{sha}.png?channel=fluorescence", headers=b
            ),
            "POST /segment_point {A's sha}": requests.post(
                url + "/segment_point", json={"sha256": sha, "x": x, "y": y}, headers=b
            ),
        }
        tenant = {"tries": {k: r.status_code for k, r in tries.items()},
                  "leaked": sum(r.status_code == 200 for r in tries.values())}  # fmt: skip
    finally:
        server.terminate()
        server.wait_exit(120)

    deadline: list[dict[str, Any]] = []
    budget = 5.0
    picture = synthetic.packed_monolayer(shape=(3600, 3600), radius=15.0, seed=3).image
    checks = check_spacing(picture)
    server = _server("waitress", tmp, {**classical, "REQUEST_TIMEOUT_S": f"{budget:g}"})
    try:
        slow = png_bytes(picture)
        for name, png in (
            (f"3600^2 packed monolayer (about {checks['work_s']:.0f} s of work)", slow),
            ("2000^2 pixel noise", attacks.noise_png(2000)),
            ("3600^2 pixel noise", attacks.noise_png(3600)),
            ("4000^2 pixel noise (over the memory budget)", attacks.noise_png(4000)),
        ):
            t0 = time.perf_counter()
            r = requests.post(server.url + "/segment_file", files={"file": ("x.png", png)}, timeout=600)
            seconds = time.perf_counter() - t0
            deadline.append({"case": name, "status": r.status_code, "seconds": seconds,
                             "overshoot_s": max(0.0, seconds - budget)})  # fmt: skip
            print(f"  deadline: {deadline[-1]}", file=sys.stderr, flush=True)
    finally:
        server.terminate()
        server.wait_exit(120)
    return {
        "health": health,
        "memory": memory,
        "tenant": tenant,
        "deadline": deadline,
        "deadline_s": budget,
        "checks": checks,
    }


def check_spacing(picture: Any) -> dict[str, Any]:
    """Segment ``picture`` once (the default detector, no SAM), timing the work between the calls
    of ``check`` a deadline raises in: how late past its deadline a request can stop."""
    import sam_droplet as sd

    sd.segment(picture[:400, :400])  # load the droplet model before timing
    marks: list[tuple[float, str]] = []
    start = time.perf_counter()
    sd.segment(picture, check=lambda stage: marks.append((time.perf_counter(), stage)))
    marks.append((time.perf_counter(), "end"))
    spans = [(b[0] - a[0], a[1], b[1]) for a, b in zip([(start, "start"), *marks[:-1]], marks, strict=True)]
    longest = max(spans)
    return {
        "work_s": marks[-1][0] - start,
        "calls": len(marks) - 1,
        "longest_s": longest[0],
        "between": f"{longest[1]} -> {longest[2]}",
    }


def _counts(statuses: list[int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(Counter(statuses).items()))


def render_attacks(a: dict[str, Any]) -> list[str]:
    lines = [
        "## Under attack",
        "",
        "`/health` probed on a new connection every 0.25 s during each attack (a failure counts as its 5 s "
        "timeout); peak RSS is the largest rise of one worker over its level before the attack, sampled every "
        "20 ms. Default settings (thread counts from MAX_CONCURRENT_INFERENCES + MAX_QUEUE + 2, Waitress "
        "connection_limit 1000); Gunicorn with one gthread worker. Promise: /health within 1 s, no request "
        "raising a worker by more than 1.5 GB, no 5xx.",
        "",
    ]
    lines += markdown_table(
        ["server", "attack", "/health probes", "failed", "worst /health", "peak RSS rise", "answers"],
        [
            [h["server"], h["attack"], h["probes"], h["failures"], f"{h['worst_s']:.3f} s",
             f"{h['rss_rise_mb']:.0f} MB", h["answers"] or "-"]
            for h in a["health"]
        ],
    )  # fmt: skip
    lines += ["### Memory bombs", "", "Waitress, classical mode, MAX_REQUEST_MEMORY_MB 1200 (the default).", ""]
    lines += markdown_table(
        ["request", "answer", "time", "peak RSS rise", "worst /health"],
        [
            [m["case"], m["status"] if not m["droplets"] else f"{m['status']} ({m['droplets']} droplets)",
             f"{m['seconds']:.1f} s", f"{m['rss_rise_mb']:.0f} MB", f"{m['health_worst_s']:.3f} s"]
            for m in a["memory"]
        ],
    )  # fmt: skip
    t = a["tenant"]
    lines += [
        "### Tenants",
        "",
        f"Key B asking for key A's cached image by its SHA-256: "
        f"{', '.join(f'{k}: {v}' for k, v in t['tries'].items())}. Answers with A's data: **{t['leaked']}**.",
        "",
        f"### Deadlines (REQUEST_TIMEOUT_S = {a['deadline_s']:g} s)",
        "",
    ]
    lines += markdown_table(
        ["image", "answer", "answered after", "overshoot"],
        [[d["case"], d["status"], f"{d['seconds']:.1f} s", f"{d['overshoot_s']:.1f} s"] for d in a["deadline"]],
    )
    c = a.get("checks")
    if c:
        lines += [
            "",
            f"A deadline stops the work at the next of the checks every stage makes. Over one whole "
            f"segmentation of the 3600^2 packed monolayer ({c['work_s']:.1f} s, {c['calls']} checks, "
            f"in the library), the longest stretch of work between two was **{c['longest_s']:.2f} s** "
            f"({c['between']}).",
        ]
    return lines


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
        "`tests/test_fuzz.py`. Every reproduction of the hostile-load review runs against real Waitress, "
        "Gunicorn, nginx and redis in `tests/test_hostile.py`: slow uploads, idle sockets, segmentations "
        "beyond the threads, memory bombs, tenants, deadlines, a 40 MB data URL, redis going down, odd "
        "names and shapes, rate-limit buckets. The figures below come from the longer runs of this command.",
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
            f"({load['workers']} worker(s), default settings) in classical mode (no SAM; the default detector) on {report['load_image']}.",
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
    if report.get("attacks"):
        lines += render_attacks(report["attacks"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fuzz", type=int, default=3000, help="fuzz cases (0 = skip)")
    parser.add_argument("--load-seconds", type=float, default=120, help="load test duration (0 = skip)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--soak", type=int, default=1000, help="sequential soak requests (0 = skip)")
    parser.add_argument(
        "--attack-seconds", type=float, default=20, help="how long each attack holds (0 = skip attacks)"
    )
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
    if args.attack_seconds:
        print("attacks ...", file=sys.stderr, flush=True)
        report["attacks"] = run_attacks(tmp, args.attack_seconds)
    text = render(report)
    if args.write:
        args.write.write_text(text)
        args.write.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
    print(text)
    fuzz_failed = bool(report.get("fuzz", {}).get("failures"))
    attacked = report.get("attacks") or {}
    broken = any(h["failures"] or h["worst_s"] > 1.0 for h in attacked.get("health", []))
    broken |= any(m["status"] >= 500 or m["rss_rise_mb"] > 1536 for m in attacked.get("memory", []))
    broken |= bool(attacked.get("tenant", {}).get("leaked"))
    return 1 if fuzz_failed or broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
