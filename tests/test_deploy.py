"""Deployment, for real: Waitress, Gunicorn (2 workers) and uWSGI serving the app with a random-init
SAM checkpoint, nginx (Debian's) with the project's nginx.conf in front of Gunicorn, SIGTERM while a
segmentation is in flight, and static checks of the systemd unit, the Dockerfiles, docker-compose.yml
and the Kubernetes manifests.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from . import servers
from .conftest import ROOT

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]


def post_image(url: str, png: bytes, **fields: str) -> requests.Response:
    return requests.post(url + "/segment_file", files={"file": ("d.png", png, "image/png")}, data=fields, timeout=300)


def check_answer(r: requests.Response, segmenter: str = "sam") -> dict:
    assert r.status_code == 200, r.text[:500]
    body = r.json()
    assert body["success"] is True and body["segmenter"] == segmenter
    assert body["num_droplets"] == len(body["droplets"]) > 0
    return body


@pytest.mark.parametrize("name", ["waitress", "gunicorn", "uwsgi"])
def test_server_serves_then_stops_gracefully(name, server_env, small_png, slow_png, tmp_path):
    server = servers.SERVERS[name](servers.free_port(), tmp_path / f"{name}.log", server_env)
    try:
        health = server.wait_healthy()
        assert health["model_loaded"] is True and health["segmenter"] == "sam", health
        check_answer(post_image(server.url, small_png))
        check_answer(post_image(server.url, small_png, segmenter="classical"), "classical")

        # SIGTERM while a segmentation runs: the answer still arrives whole, then the server exits.
        answer: dict = {}

        def slow_request() -> None:
            try:
                answer["response"] = post_image(server.url, slow_png)
            except requests.RequestException as exc:
                answer["error"] = exc
            answer["done"] = time.monotonic()

        worker = threading.Thread(target=slow_request)
        worker.start()
        time.sleep(1.5)
        signalled = time.monotonic()
        server.terminate()
        worker.join(300)
        assert "error" not in answer, f"{answer.get('error')}\n{server.log()[-2000:]}"
        body = check_answer(answer["response"])
        assert answer["done"] > signalled + 0.5, "the request finished before the signal: make it slower"
        assert body["summary"]["sam"]["prompts"] > 50
        rc = server.wait_exit(60)
        assert rc == 0, f"exit {rc}\n{server.log()[-2000:]}"
        assert "Traceback" not in server.log(), server.log()[-3000:]
    finally:
        server.stop()


# -- nginx in front of Gunicorn --------------------------------------------------------------------

NGINX = servers.NGINX
nginx_conf_for_test = servers.nginx_conf_for_test


@pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed (.ci/run installs Debian's nginx)")
def test_nginx_in_front_of_gunicorn(server_env, small_png, tmp_path):
    tmp_path.chmod(0o755)  # nginx's workers run as www-data and read the static files and certs
    app_port, http_port, https_port = servers.free_port(), servers.free_port(), servers.free_port()
    conf = nginx_conf_for_test(tmp_path, http_port, https_port, app_port)
    check = subprocess.run([NGINX, "-t", "-c", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    # The shipped file as is: only its certificate paths do not exist here.
    app = servers.gunicorn(app_port, tmp_path / "gunicorn.log", server_env)
    nginx = subprocess.Popen([NGINX, "-c", str(conf), "-g", "daemon off;"], stderr=subprocess.PIPE)
    try:
        app.wait_healthy()
        base = f"https://127.0.0.1:{https_port}"
        s = requests.Session()
        cert = str(tmp_path / "fullchain.pem")  # the test's own CA: verify per request (env may override a session's)
        deadline = time.monotonic() + 20
        while True:
            try:
                assert s.get(base + "/health", timeout=5, verify=cert).status_code == 200
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

        # Plain HTTP redirects to HTTPS.
        r = requests.get(f"http://127.0.0.1:{http_port}/health", allow_redirects=False, timeout=5)
        assert r.status_code == 301 and r.headers["Location"].startswith("https://")

        # A segmentation through nginx; the request id passes through to the app and back.
        r = s.post(
            base + "/segment_file",
            files={"file": ("d.png", small_png, "image/png")},
            headers={"X-Request-ID": "nginx-test-1", "Accept-Encoding": "gzip"},
            timeout=300,
            verify=cert,
        )
        check_answer(r)
        assert r.headers["X-Request-ID"] == "nginx-test-1"
        assert r.headers.get("Content-Encoding") == "gzip"
        for header in ("X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy", "Strict-Transport-Security"):
            assert header in r.headers, header

        # Static files come from nginx itself, revalidated on each load (Last-Modified, 304).
        r = s.get(base + "/static/js/app.js", timeout=5, verify=cert)
        assert r.status_code == 200 and r.headers.get("Cache-Control") == "no-cache" and r.headers.get("Last-Modified")
        assert r.content == (ROOT / "sam_droplet" / "web" / "static" / "js" / "app.js").read_bytes()

        def declared(path: str, megabytes: int) -> tuple[http.client.HTTPResponse, bytes]:
            """nginx's answer to a POST that only declares its size (no body is sent)."""
            context = ssl.create_default_context(cafile=cert)
            conn = http.client.HTTPSConnection("127.0.0.1", https_port, context=context)
            conn.putrequest("POST", path)
            conn.putheader("Content-Type", "multipart/form-data; boundary=x")
            conn.putheader("Content-Length", str(megabytes * 2**20))
            conn.endheaders()
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            return resp, body

        # Larger than client_max_body_size: 413 JSON from nginx, from the header alone.
        resp, body = declared("/segment_file", 60)
        assert resp.status == 413 and b'"too_large"' in body and resp.getheader("Content-Type") == "application/json"
        # Jobs take larger uploads (JOB_MAX_UPLOAD_MB): 60 MB passes nginx to the app, which reads
        # it and refuses the junk for what it is (400); 600 MB stops at nginx.
        r = s.post(base + "/jobs", files={"file": ("big.avi", b"\0" * (60 * 2**20))}, timeout=120, verify=cert)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_image", r.text[:300]
        resp, body = declared("/jobs", 600)
        assert resp.status == 413 and b"500 MB for a job" in body

        app.stop()
        # With the app down, nginx answers a JSON 503, not an HTML error page.
        r = s.get(base + "/defaults", timeout=15, verify=cert)
        assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
    finally:
        nginx.terminate()
        nginx.wait(10)
        app.stop()
    gunicorn_log = (tmp_path / "gunicorn.log").read_text()
    assert "rid=nginx-test-1" in gunicorn_log, gunicorn_log[-2000:]


# -- static checks of the other deployment files ---------------------------------------------------


def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (.ci/run installs Debian's systemd)")
    unit = (ROOT / "deploy" / "sam-droplet.service").read_text()
    for key in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "Restart=on-failure",
    ):
        assert key in unit, key
    assert "ReadWritePaths=" in unit and "gunicorn -c gunicorn.conf.py app:app" in unit
    # verify checks that ExecStart's program exists: point it at this checkout's (paths only).
    exec_start = re.search(r"^ExecStart=(\S+)", unit, re.M).group(1)
    unit = unit.replace(exec_start, str(servers.BIN / "gunicorn"))
    local = tmp_path / "sam-droplet.service"
    local.write_text(unit)
    r = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True)
    problems = [line for line in r.stderr.splitlines() if "sam-droplet.service" in line]
    assert r.returncode == 0 and not problems, r.stderr


DOCKERFILES = ["Dockerfile", "Dockerfile.gpu"]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_sources_and_commands_exist(name):
    lines = (ROOT / name).read_text().splitlines()
    joined = "\n".join(lines).replace("\\\n", " ")
    copies = [line.split()[1:] for line in joined.splitlines() if line.startswith("COPY ")]
    assert copies
    for args in copies:
        sources = [a for a in args[:-1] if not a.startswith("--")]
        for src in sources:
            assert (ROOT / src).exists(), f"{name}: COPY source {src} does not exist"
    assert "HEALTHCHECK" in joined and "/health" in joined and "\nUSER " in joined
    cmd = next(line for line in joined.splitlines() if line.startswith("CMD "))
    for word in re.findall(r'"([^"]+)"', cmd):
        if word.endswith((".py", ".ini")) or (":" in word and word.split(":")[0] == "app"):
            path = word.split(":")[0] + ".py" if ":" in word else word
            assert (ROOT / path).exists(), f"{name}: CMD names {word}, which does not exist"
    ignore = (ROOT / ".dockerignore").read_text()
    assert "model/*" in ignore and ".venv" in ignore


def compose_config(*files: str) -> dict:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose is not installed (.ci/run installs Debian's docker-compose)")
    args = [a for f in files for a in ("-f", f)]
    r = subprocess.run([compose, *args, "config"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


def test_docker_compose_validates():
    services = compose_config("docker-compose.yml")["services"]
    assert {"app", "nginx", "redis"} <= set(services)
    app = services["app"]
    assert "container_name" not in app, "a fixed name stops `docker-compose up --scale app=3`"
    assert "ports" not in app, "published ports collide when the app is scaled; nginx publishes"
    assert "/health" in " ".join(app["healthcheck"]["test"]) and app["restart"] == "unless-stopped"
    assert any(v.endswith("/app/model:ro") for v in app["volumes"])
    assert "redis://redis:6379" in app["environment"]["RATELIMIT_STORAGE_URI"]
    for name in ("nginx", "redis"):
        assert services[name]["healthcheck"] and services[name]["restart"]
    # nginx runs the project's nginx.conf; its upstream line is the one the command rewrites.
    assert "server 127.0.0.1:9487;" in (ROOT / "nginx.conf").read_text()
    assert "server 127.0.0.1:9487;/server app:9487;" in " ".join(services["nginx"]["command"])
    # Job workers: the app's queue and results volume, scalable (no fixed name, no ports).
    worker = services["worker"]
    assert worker["command"] == ["sam-droplet", "worker"] and "ports" not in worker and "container_name" not in worker
    for key in ("JOB_QUEUE_URL", "RESULTS_DIR"):
        assert worker["environment"][key] == app["environment"][key]
    targets = {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in worker["volumes"]}
    assert targets >= {"/results", "/app/model"}

    gpu = compose_config("docker-compose.yml", "docker-compose.gpu.yml")["services"]["app"]
    assert gpu["build"]["dockerfile"] == "Dockerfile.gpu" and gpu["environment"]["SAM_DEVICE"] == "cuda"
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_kubernetes_manifests_match_the_app():
    docs = []
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d and "kind" in d)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PersistentVolumeClaim"} <= kinds
    apps = ("sam-droplet-redis", "sam-droplet-worker")
    for dep in (d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] not in apps):
        container = dep["spec"]["template"]["spec"]["containers"][0]
        assert container["ports"][0]["containerPort"] == 9487
        # Live and ready are different questions: a busy pod is alive but not ready.
        probes = {p: container[p]["httpGet"] for p in ("readinessProbe", "livenessProbe", "startupProbe")}
        assert probes["readinessProbe"]["path"] == "/health/ready"
        assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/health/live"
        assert all(p["port"] in (9487, "http") for p in probes.values())
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["TRUSTED_PROXIES"] == "1" and env["RATELIMIT_STORAGE_URI"].startswith("redis://sam-droplet-redis")
        assert container["resources"]["requests"] and container["resources"]["limits"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/app/model" in mounts
    # Job workers share the queue and the results volume with the web pods.
    worker = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "sam-droplet-worker")
    box = worker["spec"]["template"]["spec"]["containers"][0]
    assert box["command"] == ["sam-droplet", "worker"]
    web = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "sam-droplet")
    web_env = {e["name"]: e["value"] for e in web["spec"]["template"]["spec"]["containers"][0]["env"]}
    worker_env = {e["name"]: e["value"] for e in box["env"]}
    assert (
        worker_env["JOB_QUEUE_URL"] == web_env["JOB_QUEUE_URL"] and worker_env["RESULTS_DIR"] == web_env["RESULTS_DIR"]
    )
    redis = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "sam-droplet-redis")
    assert redis["spec"]["ports"][0]["port"] == 6379
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "sam-droplet")
    assert service["spec"]["ports"][0]["targetPort"] in (9487, "http")
    gpu = [d for d in docs if d["kind"] == "Deployment" and "gpu" in d["metadata"]["name"]]
    assert gpu and gpu[0]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_gunicorn_config_never_touches_cuda_in_the_master():
    text = (ROOT / "gunicorn.conf.py").read_text()
    assert "import torch" not in text and "preload_app = False" in text
    for word in ("def post_fork", "def pre_fork", "max_requests_jitter", "graceful_timeout"):
        assert word in text, word


# -- the package as built -----------------------------------------------------------------------------


def test_built_wheel_serves_the_page(tmp_path):
    """`pip wheel .` holds the page (templates and static files are package data), and the app
    imported from the unpacked wheel, away from the checkout, serves it."""
    import zipfile

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = (tmp_path / "dist").glob("sam_droplet-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    page = {"sam_droplet/web/templates/index.html", "sam_droplet/web/static/style.css"}
    page |= {f"sam_droplet/web/static/js/{p.name}" for p in (ROOT / "sam_droplet/web/static/js").glob("*.js")}
    assert page <= names, sorted(page - names)
    assert not any(n.startswith(("tests/", "static/", "templates/")) for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    check = (
        "import json, sam_droplet; from sam_droplet.web import create_app; "
        "c = create_app({'SEGMENTER': 'classical'}).test_client(); "
        "pages = [c.get(p) for p in ('/', '/static/js/app.js', '/static/js/workbench.js', '/static/style.css')]; "
        "print(json.dumps([sam_droplet.__file__, [p.status_code for p in pages], b'/static/js/app.js' in pages[0].data]))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    file, codes, linked = json.loads(out.stdout.strip().splitlines()[-1])
    assert file.startswith(str(site)), file  # the wheel's copy, not the checkout's
    assert codes == [200, 200, 200, 200] and linked
