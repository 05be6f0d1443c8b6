"""The monitoring that ships in deploy/monitoring: promtool checks and rule unit tests, the metric
names the dashboard and the alerts use against the app's /metrics, and a real Prometheus scraping
a real Gunicorn with two workers (system tier).

Debian's ``prometheus`` package provides ``promtool`` and the server; .ci/run installs it.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sam_droplet.web import create_app
from sam_droplet.web.config import Config
from tests import servers

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "deploy" / "monitoring"
ALERTS = MONITORING / "alerts.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
OPERATIONS = ROOT / "docs" / "operations.md"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
# Series Prometheus makes itself; everything else the dashboard and rules use must come from /metrics.
PROMETHEUS_OWN = {"up", "ALERTS"}
METRIC = re.compile(r"\b(sam_droplet_[a-z_]+|up|ALERTS)\b(?!\s*\()")
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def promtool(*args: str) -> subprocess.CompletedProcess:
    if PROMTOOL is None:
        pytest.skip("promtool is not installed (.ci/run installs Debian's prometheus)")
    return subprocess.run([PROMTOOL, *args], cwd=MONITORING, capture_output=True, text=True, timeout=120)


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def concrete(expr: str) -> str:
    """A dashboard query with Grafana's variables filled in, for Prometheus itself."""
    return expr.replace("$__rate_interval", "1m").replace("$instance", ".*")


def metric_names(expr: str) -> set[str]:
    return set(METRIC.findall(expr))


def family(name: str) -> str:
    """The metric family of a series name (``x_bucket`` and ``x_total`` belong to ``x``)."""
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


# -- static checks ---------------------------------------------------------------------------------


def test_promtool_checks_the_config_and_the_rules():
    for args in (("check", "config", "prometheus.yml"), ("check", "rules", "alerts.yml")):
        r = promtool(*args)
        assert r.returncode == 0, r.stdout + r.stderr
    # The rules' own unit tests: each alert fires on its condition and stays quiet beside it.
    r = promtool("test", "rules", "alerts.test.yml")
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_every_alert_has_a_summary_and_a_runbook_section():
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("#")
    }
    tested = (MONITORING / "alerts.test.yml").read_text()
    for rule in alert_rules():
        name, notes = rule["alert"], rule["annotations"]
        assert notes.get("summary") and notes.get("description"), name
        assert notes["runbook"] == f"docs/operations.md#{name.lower()}", name
        assert name.lower() in headings, f"docs/operations.md has no section '{name}'"
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert f"alertname: {name}" in tested, f"alerts.test.yml does not test {name}"


def test_kubernetes_rules_are_the_alerts_file():
    rule = yaml.safe_load((ROOT / "deploy/k8s/monitoring/prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"], (
        "deploy/k8s/monitoring/prometheusrule.yaml differs from deploy/monitoring/alerts.yml: copy the groups over"
    )
    monitor = yaml.safe_load((ROOT / "deploy/k8s/monitoring/servicemonitor.yaml").read_text())
    service = next(yaml.safe_load_all((ROOT / "deploy/k8s/service.yaml").read_text()))
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    # The alerts select job="sam-droplet": the ServiceMonitor's job is the Service's name.
    assert service["metadata"]["name"] == "sam-droplet"
    for name in ("deployment.yaml", "deployment-gpu.yaml"):
        pod = yaml.safe_load((ROOT / "deploy/k8s" / name).read_text())["spec"]["template"]["metadata"]
        assert pod["annotations"] == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "9487",
            "prometheus.io/path": "/metrics",
        }, name


def test_compose_monitoring_profile_loads_the_config_the_rules_and_the_dashboard():
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose is not installed (.ci/run installs Debian's docker-compose)")
    r = subprocess.run([compose, "--profile", "monitoring", "config"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    services = yaml.safe_load(r.stdout)["services"]
    mounts = {
        name: {v["target"] if isinstance(v, dict) else v.split(":")[1]: v for v in services[name]["volumes"]}
        for name in ("prometheus", "grafana")
    }
    for name, targets in mounts.items():
        assert services[name]["profiles"] == ["monitoring"], name
        for volume in targets.values():
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith("/"):  # a file of the checkout, not a named volume
                assert Path(source).exists(), f"{name} mounts {source}, which does not exist"
    assert {"/etc/prometheus/prometheus.yml", "/etc/prometheus/alerts.yml"} <= set(mounts["prometheus"])
    assert "/var/lib/grafana/dashboards/sam-droplet.json" in mounts["grafana"]
    provisioning = {t for t in mounts["grafana"] if t.startswith("/etc/grafana/provisioning/")}
    assert {p.split("/")[4] for p in provisioning} == {"datasources", "dashboards"}
    # The provisioned dashboard folder is where the dashboard is mounted; the data source is the
    # compose Prometheus, which scrapes the compose service the app runs as.
    provider = yaml.safe_load((MONITORING / "grafana/dashboards.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    source = yaml.safe_load((MONITORING / "grafana/datasources.yml").read_text())["datasources"][0]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    scrape = yaml.safe_load((MONITORING / "prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["dns_sd_configs"][0]["names"] == ["app"] and "app" in services
    # Published on the host's loopback only.
    for name in ("prometheus", "grafana"):
        for port in services[name]["ports"]:  # "ip:host:container" (compose 1) or a mapping (compose 2)
            assert (port["host_ip"] if isinstance(port, dict) else port.split(":")[0]) == "127.0.0.1", port


def test_dashboard_covers_what_an_operator_watches():
    board = json.loads(DASHBOARD.read_text())
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"]), "panel ids must be unique"
    titles = " | ".join(p["title"].lower() for p in board["panels"])
    for topic in (
        "throughput",
        "latency",
        "errors by http status",
        "errors by code",
        "seconds per stage",
        "droplets per image",
        "in flight and queue",
        "memory per worker",
        "gpu memory",
    ):
        assert topic in titles, topic
    for p in panels:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]
    # No two panels overlap on the grid.
    cells = set()
    for p in board["panels"]:
        g = p["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        assert g["x"] + g["w"] <= 24
        cells |= mine


def test_dashboard_and_alerts_use_only_metrics_the_app_exports(classical_engine, small_png):
    """Renaming a metric fails here, not on an operator's dashboard."""
    app = create_app(Config.from_mapping({"SEGMENTER": "classical", "RATE_LIMIT": "off"}), engine=classical_engine)
    client = app.test_client()
    assert client.post("/segment_file", data={"file": (io.BytesIO(small_png), "d.png")}).status_code == 200
    exported = {f.name for f in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))}
    used: dict[str, str] = {}
    for expr in dashboard_exprs():
        used.update(dict.fromkeys(metric_names(expr), "grafana-dashboard.json"))
    for rule in alert_rules():
        used.update(dict.fromkeys(metric_names(rule["expr"]), f"alerts.yml {rule['alert']}"))
    assert len(used) > 15, used
    missing = {
        name: where for name, where in used.items() if name not in PROMETHEUS_OWN and family(name) not in exported
    }
    assert not missing, f"used but not exported by /metrics: {missing}"


def samples(client) -> dict[tuple[str, tuple], float]:
    text = client.get("/metrics").get_data(as_text=True)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_show_the_queue_and_count_refusals_by_code(classical_engine, small_png):
    config = Config.from_mapping({"SEGMENTER": "classical", "RATE_LIMIT": "off", "MAX_QUEUE": "1"})
    app = create_app(config, engine=classical_engine)
    admission = app.extensions["sam_droplet"].admission

    def post() -> int:
        data = {"file": (io.BytesIO(small_png), "d.png")}
        return app.test_client().post("/segment_file", data=data).status_code

    refused = ("sam_droplet_errors_total", (("code", "overloaded"), ("endpoint", "api.segment_file")))
    before = samples(app.test_client()).get(refused, 0)
    codes: list[int] = []
    with admission.slot():  # another request holds the only slot
        waiter = threading.Thread(target=lambda: codes.append(post()))
        waiter.start()
        deadline = time.monotonic() + 10
        while admission.waiting < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        now = samples(app.test_client())
        assert now[("sam_droplet_segmentations_running", ())] == 1
        assert now[("sam_droplet_segmentations_waiting", ())] == 1
        assert now[("sam_droplet_segmentation_slots", ())] == 1
        assert now[("sam_droplet_segmentation_queue_limit", ())] == 1
        assert post() == 503  # the queue is full
    waiter.join(30)
    assert codes == [200]
    after = samples(app.test_client())
    assert after[refused] == before + 1
    assert after[("sam_droplet_segmentations_running", ())] == 0
    assert after[("sam_droplet_segmentations_waiting", ())] == 0
    assert after[("sam_droplet_worker_resident_memory_bytes", ())] > 50e6
    assert after[("sam_droplet_degraded", ())] == 0


# -- a real Prometheus against a real Gunicorn -----------------------------------------------------


class Prometheus:
    def __init__(self, workdir: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / "prometheus.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            try:
                if requests.get(self.url + "/-/ready", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready:\n{self.log_path.read_text()[-3000:]}")

    def query(self, expr: str) -> list[dict]:
        r = requests.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10).json()
        assert r["status"] == "success", (expr, r)
        return r["data"]["result"]

    def until(self, what: str, check, timeout: float = 30):
        """Poll ``check()`` until it returns something truthy (Prometheus scrapes every second)."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value or time.monotonic() > deadline:
                assert value, f"{what}: not seen in {timeout} s"
                return value
            time.sleep(0.5)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def prometheus_config(workdir: Path, app_port: int, prom_port: int) -> None:
    """deploy/monitoring's config and rules, pointed at the test server, scraping every second and
    with every alert's ``for`` at 0 so a condition fires at the next evaluation."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    app_job = jobs["sam-droplet"]
    app_job.pop("dns_sd_configs")
    app_job["static_configs"] = [{"targets": [f"127.0.0.1:{app_port}"]}]
    jobs["prometheus"]["static_configs"] = [{"targets": [f"127.0.0.1:{prom_port}"]}]
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    (workdir / config["rule_files"][0]).write_text(yaml.safe_dump(rules))


def requests_seen(prom: Prometheus) -> dict[tuple[str, str], float]:
    result = prom.query('sum by (endpoint, status) (sam_droplet_requests_total{job="sam-droplet"})')
    return {(r["metric"]["endpoint"], r["metric"]["status"]): float(r["value"][1]) for r in result}


@pytest.mark.system
def test_prometheus_scrapes_gunicorn_sums_workers_and_fires_alerts(tmp_path, small_png):
    if PROMETHEUS is None:
        pytest.skip("prometheus is not installed (.ci/run installs Debian's prometheus)")
    # SEGMENTER=auto with a checkpoint that is not there: the server runs degraded (classical only),
    # answers segmenter=sam with 503 not_ready, and SamDropletDegraded must fire.
    env = {"SEGMENTER": "auto", "SAM_MODEL_PATH": str(tmp_path / "missing.pt"), "TORCH_THREADS": "1"}
    app = servers.gunicorn(servers.free_port(), tmp_path / "gunicorn.log", env, workers=2)
    prom_port = servers.free_port()
    prometheus_config(tmp_path, app.port, prom_port)
    prom = Prometheus(tmp_path, prom_port)
    try:
        assert app.wait_healthy()["status"] == "degraded"
        prom.wait_ready()
        prom.until("the target up", lambda: prom.query('up{job="sam-droplet"} == 1'))
        prom.until("a first scrape with counters", lambda: requests_seen(prom))
        time.sleep(2)  # the probes above are counted and scraped before the baseline
        before = requests_seen(prom)

        sent: dict[tuple[str, str], int] = {}

        def count(endpoint: str, response: requests.Response) -> requests.Response:
            key = (endpoint, str(response.status_code))
            sent[key] = sent.get(key, 0) + 1
            return response

        # /health on new connections until both workers have answered (each says its pid).
        pids: set[int] = set()
        for _ in range(60):
            with requests.Session() as s:
                pids.add(count("api.health", s.get(app.url + "/health", timeout=10)).json()["pid"])
            if len(pids) == 2 and sent[("api.health", "200")] >= 4:
                break
        assert len(pids) == 2, "both workers should have answered /health"

        def upload(body: bytes, **fields: str) -> requests.Response:
            with requests.Session() as s:
                r = s.post(app.url + "/segment_file", files={"file": ("d.png", body)}, data=fields, timeout=120)
            return count("api.segment_file", r)

        assert upload(small_png).status_code == 200
        assert upload(small_png).status_code == 200
        assert upload(b"not an image at all").status_code == 415  # unsupported_media_type
        r = upload(small_png, segmenter="sam")
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"

        def matches() -> bool:
            now = requests_seen(prom)
            return all(now.get(key, 0) - before.get(key, 0) == n for key, n in sent.items())

        prom.until(f"the counters summed over both workers to match {sent}", matches)
        # Memory per worker: one series per worker pid, under the memory limit.
        workers = prom.query('sam_droplet_worker_resident_memory_bytes{job="sam-droplet"}')
        assert {w["metric"]["pid"] for w in workers} >= {str(p) for p in pids}
        assert (
            50e6
            < sum(float(w["value"][1]) for w in workers)
            < float(prom.query("sam_droplet_memory_limit_bytes")[0]["value"][1])
        )
        assert prom.query("sam_droplet_segmentation_slots")[0]["value"][1] == "2"  # 2 workers x 1

        # The rules load and evaluate without error; the forced condition fires, the others do not.
        def firing() -> set[str]:
            alerts = requests.get(prom.url + "/api/v1/alerts", timeout=10).json()["data"]["alerts"]
            return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}

        prom.until("SamDropletDegraded firing", lambda: "SamDropletDegraded" in firing())
        rules = requests.get(prom.url + "/api/v1/rules", timeout=10).json()["data"]["groups"]
        evaluated = [r for g in rules for r in g["rules"]]
        assert len(evaluated) == len(alert_rules())
        assert all(r["health"] == "ok" for r in evaluated), [(r["name"], r.get("lastError")) for r in evaluated]
        # 503 not_ready is neither a server error nor saturation; nothing is down, slow or full.
        assert firing() == {"SamDropletDegraded"}, firing()

        # Every dashboard query is valid PromQL with data behind it, GPU panels aside on a CPU
        # (once the uploads' series have the two samples a rate needs).
        prom.until("a rate of uploads", lambda: prom.query('rate(sam_droplet_requests_total{status="415"}[1m])'))
        for expr in dashboard_exprs():
            result = prom.query(concrete(expr))
            if "gpu" not in expr:
                assert result, f"no data for the dashboard query {expr}"
    finally:
        prom.stop()
        app.stop()


@pytest.mark.system
def test_uwsgi_metrics_sum_all_workers(tmp_path):
    """uWSGI has no hook to name a metrics folder before its workers start; app.py names one per
    master, so /metrics sums every worker as it does under Gunicorn."""
    env = {"SEGMENTER": "classical", "UWSGI_PROCESSES": "2"}
    server = servers.uwsgi(servers.free_port(), tmp_path / "uwsgi.log", env)

    def scrape() -> dict:
        text = requests.get(server.url + "/metrics", timeout=10).text
        return {f.name: f for f in text_string_to_metric_families(text)}

    def worker_memory() -> dict[str, float]:
        return {s.labels["pid"]: s.value for s in scrape()["sam_droplet_worker_resident_memory_bytes"].samples}

    try:
        server.wait_healthy()
        # Each worker loads the app after the fork (lazy-apps): wait until both have. A worker
        # still loading shows 0 (its metrics module is imported, create_app has not measured it).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            memory = worker_memory()
            if len(memory) == 2 and all(v > 50e6 for v in memory.values()):
                break
            time.sleep(0.3)
        assert set(worker_memory()) == {str(p.pid) for p in server.workers()}
        before = sum(
            s.value
            for s in scrape()["sam_droplet_requests"].samples
            if s.name.endswith("_total") and s.labels["endpoint"] == "api.health"
        )
        for _ in range(20):
            with requests.Session() as s:
                s.get(server.url + "/health", timeout=10)
        for _ in range(4):  # whichever worker answers the scrape
            families = scrape()
            health = sum(
                s.value
                for s in families["sam_droplet_requests"].samples
                if s.name.endswith("_total") and s.labels["endpoint"] == "api.health"
            )
            assert health == before + 20
            memory = worker_memory()
            assert len(memory) == 2 and all(v > 50e6 for v in memory.values()), memory
    finally:
        server.stop()
