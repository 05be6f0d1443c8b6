"""Hardening through the app: API keys, rate limits, CORS, security headers, backpressure, deadlines,
out-of-memory recovery, metrics and structured logs."""

from __future__ import annotations

import io
import json
import logging
import platform
import threading
import time

import pytest

from sam_droplet.errors import ConfigError
from sam_droplet.web import create_app
from sam_droplet.web.admission import Admission
from sam_droplet.web.config import Config
from sam_droplet.web.logs import configure_logging

from .conftest import ROOT

KEY = "k" * 8 + "-lab-key-0123456789"
OTHER_KEY = "another-lab-key-abcdef"


@pytest.fixture()
def service_log():
    """What the service logs, as text: its handler's stream swapped for a buffer."""
    configure_logging("INFO", "json")
    logger = logging.getLogger("sam_droplet")
    handler = next(h for h in logger.handlers if getattr(h, "_sam_droplet", False))
    buffer = io.StringIO()
    old = handler.setStream(buffer)
    yield buffer
    handler.setStream(old)


def make_client(classical_engine, **settings):
    mapping = {"SEGMENTER": "classical", "MAX_UPLOAD_MB": "8", "RATE_LIMIT": "off", **settings}
    return create_app(Config.from_mapping(mapping), engine=classical_engine).test_client()


def post(client, png: bytes, headers: dict | None = None, **fields):
    data = {"file": (io.BytesIO(png), "d.png"), **fields}
    return client.post("/segment_file", data=data, content_type="multipart/form-data", headers=headers or {})


# -- API keys --------------------------------------------------------------------------------------


def test_keys_required_when_configured(classical_engine, small_png, service_log, tmp_path):
    keyfile = tmp_path / "keys.txt"
    keyfile.write_text(f"# lab keys\n{OTHER_KEY}\n")
    client = make_client(classical_engine, API_KEYS=KEY, API_KEYS_FILE=str(keyfile))

    r = post(client, small_png)
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "unauthorized"
    assert "Bearer" in r.headers["WWW-Authenticate"]
    assert post(client, small_png, {"X-API-Key": "wrong-key-wrong-key"}).status_code == 401
    assert post(client, small_png, {"X-API-Key": KEY}).status_code == 200
    assert post(client, small_png, {"Authorization": f"Bearer {OTHER_KEY}"}).status_code == 200
    assert client.post("/segment", json={"image": "x"}).status_code == 401
    # Public: the page, health, metrics and static files.
    for path in ("/", "/health", "/metrics", "/static/js/app.js"):
        assert client.get(path).status_code == 200, path
    assert client.get("/health").get_json()["auth_required"] is True
    # Keys never appear in logs or in the page.
    logged = service_log.getvalue()
    assert '"key_id"' in logged and KEY not in logged and OTHER_KEY not in logged
    assert KEY not in client.get("/").get_data(as_text=True)


def test_key_configuration_errors(tmp_path):
    with pytest.raises(ConfigError, match="API_KEYS"):
        Config.from_mapping({"API_KEYS": "short"})
    assert "API_KEYS" in Config.from_mapping({"API_KEYS": KEY}).describe()
    assert KEY not in str(Config.from_mapping({"API_KEYS": KEY}).describe())
    with pytest.raises(ConfigError, match="API_KEYS_FILE"):
        create_app(Config.from_mapping({"SEGMENTER": "classical", "API_KEYS_FILE": str(tmp_path / "missing")}))


# -- rate limits -----------------------------------------------------------------------------------


def test_rate_limit_per_client_with_retry_after(classical_engine, small_png):
    client = make_client(classical_engine, RATE_LIMIT="3 per minute")
    codes = [post(client, small_png).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = post(client, small_png)
    assert r.status_code == 429 and r.get_json()["error"]["code"] == "rate_limited"
    assert 0 < int(r.headers["Retry-After"]) <= 60
    # Health and the page are not limited; another client address has its own budget.
    assert all(client.get("/health").status_code == 200 for _ in range(5))
    r = client.post(
        "/segment_file",
        data={"file": (io.BytesIO(small_png), "d.png")},
        content_type="multipart/form-data",
        environ_base={"REMOTE_ADDR": "10.0.0.9"},
    )
    assert r.status_code == 200


def test_rate_limit_per_key_and_forwarded_for_only_from_trusted_proxies(classical_engine, small_png):
    client = make_client(classical_engine, RATE_LIMIT="2 per minute", API_KEYS=f"{KEY},{OTHER_KEY}")
    assert [post(client, small_png, {"X-API-Key": KEY}).status_code for _ in range(3)] == [200, 200, 429]
    assert post(client, small_png, {"X-API-Key": OTHER_KEY}).status_code == 200

    # Without trusted proxies a forged X-Forwarded-For does not buy a new budget.
    client = make_client(classical_engine, RATE_LIMIT="2 per minute")
    codes = [post(client, small_png, {"X-Forwarded-For": f"10.1.0.{i}"}).status_code for i in range(3)]
    assert codes == [200, 200, 429]
    # Behind one trusted proxy, the address it reports is the client.
    client = make_client(classical_engine, RATE_LIMIT="2 per minute", TRUSTED_PROXIES="1")
    codes = [post(client, small_png, {"X-Forwarded-For": f"10.2.0.{i}"}).status_code for i in range(3)]
    assert codes == [200, 200, 200]


def test_bad_limit_settings_stop_startup():
    with pytest.raises(ConfigError, match="RATE_LIMIT"):
        Config.from_mapping({"RATE_LIMIT": "lots"})
    with pytest.raises(ConfigError, match="CORS_ORIGINS"):
        Config.from_mapping({"CORS_ORIGINS": "not a url"})


# -- CORS and headers ------------------------------------------------------------------------------


def test_cors_off_by_default_and_allowlisted(classical_engine):
    client = make_client(classical_engine)
    r = client.get("/defaults", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers
    client = make_client(classical_engine, CORS_ORIGINS="https://lab.example.org")
    r = client.get("/defaults", headers={"Origin": "https://lab.example.org"})
    assert r.headers["Access-Control-Allow-Origin"] == "https://lab.example.org"
    r = client.options("/segment_file", headers={"Origin": "https://lab.example.org"})
    assert (
        "POST" in r.headers["Access-Control-Allow-Methods"] and "X-API-Key" in r.headers["Access-Control-Allow-Headers"]
    )
    r = client.get("/defaults", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers


def test_security_headers_on_the_page(client):
    r = client.get("/")
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["Referrer-Policy"]
    assert "<script>" not in r.get_data(as_text=True)  # no inline script for the CSP to forbid


def test_debug_is_never_on_by_default():
    assert Config.from_mapping({}).server.debug is False
    for path in ("gunicorn.conf.py", "uwsgi.ini", "waitress_config.py", "docker-compose.yml"):
        text = (ROOT / path).read_text().lower()
        assert "flask_debug=true" not in text.replace(" ", "") and "debug = true" not in text, path


# -- backpressure, deadlines, memory faults ---------------------------------------------------------


def test_queue_full_answers_503_with_retry_after(classical_engine, small_png):
    app = create_app(
        Config.from_mapping({"SEGMENTER": "classical", "RATE_LIMIT": "off"}),
        engine=classical_engine,
    )
    admission = app.extensions["sam_droplet"].admission
    saved = admission.max_queue
    admission.max_queue = 0
    try:
        with admission.slot():  # another request holds the only slot
            r = post(app.test_client(), small_png)
        assert r.status_code == 503 and r.get_json()["error"]["code"] == "overloaded"
        assert int(r.headers["Retry-After"]) >= 2
        assert post(app.test_client(), small_png).status_code == 200  # the slot freed: served again
    finally:
        admission.max_queue = saved


def test_waiting_requests_are_served_in_turn():
    admission = Admission(max_concurrent=1, max_queue=2, timeout_s=10)
    order: list[int] = []

    def work(i: int) -> None:
        with admission.slot():
            order.append(i)
            time.sleep(0.2)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert sorted(order) == [0, 1, 2] and admission.running == 0 and admission.waiting == 0


def test_deadline_stops_a_segmentation_with_504(sam_engine, packed_png):
    app = create_app(Config.from_mapping({"RATE_LIMIT": "off", "REQUEST_TIMEOUT_S": "0.5"}), engine=sam_engine)
    r = post(app.test_client(), packed_png, segmenter="sam")
    assert r.status_code == 504 and r.get_json()["error"]["code"] == "deadline_exceeded"
    assert "REQUEST_TIMEOUT_S" in r.get_json()["error"]["message"]
    assert app.extensions["sam_droplet"].admission.running == 0
    app = create_app(Config.from_mapping({"RATE_LIMIT": "off"}), engine=sam_engine)
    assert post(app.test_client(), packed_png, segmenter="classical").status_code == 200


def test_out_of_memory_answers_503_and_the_next_request_works(sam_engine, small_png, monkeypatch):
    import torch

    from sam_droplet.sam import refine

    app = create_app(Config.from_mapping({"RATE_LIMIT": "off"}), engine=sam_engine)
    real = refine.SamRefiner.refine
    calls = {"n": 0}

    def failing_once(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(refine.SamRefiner, "refine", failing_once)
    client = app.test_client()
    r = post(client, small_png, segmenter="sam")
    assert r.status_code == 503 and r.get_json()["error"]["code"] == "out_of_memory" and r.headers["Retry-After"]
    assert "2.00 GiB" not in r.get_data(as_text=True)
    assert post(client, small_png, segmenter="sam").status_code == 200
    assert app.extensions["sam_droplet"].admission.running == 0


# -- observability ---------------------------------------------------------------------------------


def test_metrics_endpoint(classical_engine, small_png):
    client = make_client(classical_engine)
    post(client, small_png)
    post(client, b"not an image")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'sam_droplet_requests_total{endpoint="api.segment_file",method="POST",status="200"}' in text
    assert 'status="415"' in text or 'status="400"' in text
    for name in (
        "sam_droplet_request_seconds_bucket",
        'sam_droplet_inference_seconds_bucket{le="0.5",stage="detect"}',
        "sam_droplet_droplets_per_image_count",
        "sam_droplet_requests_in_flight",
        "sam_droplet_model_loaded 0.0",
    ):
        assert name in text, name


def test_json_logs_carry_the_request_id(classical_engine, small_png, service_log):
    client = make_client(classical_engine, LOG_FORMAT="json", LOG_LEVEL="INFO")
    post(client, small_png, {"X-Request-ID": "trace-42"})
    lines = [json.loads(line) for line in service_log.getvalue().splitlines() if line.startswith("{")]
    request_lines = [line for line in lines if line.get("msg") == "request" and line.get("request_id") == "trace-42"]
    assert request_lines, lines
    line = request_lines[-1]
    assert line["status"] == 200 and line["path"] == "/segment_file" and line["duration_ms"] > 0
    assert int(line["droplets"]) > 0 and "file" not in line


# -- hostile input and heavy load (the system tier repeats these against real servers) -----------


def test_redis_down_fails_open_with_a_warning(classical_engine, small_png, service_log):
    # Nothing listens on port 1: every call to the store fails at once.
    client = make_client(classical_engine, RATE_LIMIT="2 per minute", RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0")
    codes = [post(client, small_png).status_code for _ in range(3)]
    assert codes == [200, 200, 429]  # still limited, from this process's memory; never a 500
    store = client.get("/health").get_json()["rate_limit_store"]
    assert store["backend"] == "redis" and store["up"] is False and "fail-open" in store["policy"]
    assert "sam_droplet_rate_limit_store_up 0.0" in client.get("/metrics").get_data(as_text=True)
    assert "unreachable" in service_log.getvalue()


def test_one_bucket_per_client_and_retry_after_only_on_refusals(classical_engine, small_png):
    import base64

    client = make_client(classical_engine, RATE_LIMIT="2 per minute")
    first = post(client, small_png)
    assert first.status_code == 200 and "Retry-After" not in first.headers
    image = base64.b64encode(small_png).decode()
    assert client.post("/segment", json={"image": image}).status_code == 200
    refused = client.post("/analyze_image", json={"image": image})  # a third endpoint, same bucket
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    sha = first.get_json()["image"]["sha256"]
    assert [client.get(f"/image/{sha}.png").status_code for _ in range(3)] == [200, 200, 429]


def test_health_live_ready_and_redacted_for_anonymous_callers(classical_engine):
    client = make_client(classical_engine, API_KEYS=KEY)
    assert client.get("/health/live").get_json() == {"status": "alive"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.get_json()["ready"] is True
    anonymous, known = client.get("/health").get_json(), client.get("/health", headers={"X-API-Key": KEY}).get_json()
    assert "pid" not in anonymous and "checkpoint" not in anonymous and "memory_mb" in anonymous
    assert "pid" in known and "checkpoint" in known


def test_ready_is_503_while_every_slot_and_queue_place_is_taken(classical_engine):
    app = create_app(Config.from_mapping({"SEGMENTER": "classical", "MAX_QUEUE": "0"}), engine=classical_engine)
    admission = app.extensions["sam_droplet"].admission
    with admission.slot():
        r = app.test_client().get("/health/ready")
        assert r.status_code == 503 and r.headers["Retry-After"] and "busy" in r.get_json()["reason"]
        assert app.test_client().get("/health/live").status_code == 200
    assert app.test_client().get("/health/ready").status_code == 200


def test_admission_fits_the_server_threads():
    admission = Admission(max_concurrent=1, max_queue=8)
    admission.fit_to_threads(11)
    assert (admission.max_concurrent, admission.max_queue) == (1, 8)
    admission.fit_to_threads(4)  # two threads kept for /health: one running, one waiting
    assert (admission.max_concurrent, admission.max_queue) == (1, 1)
    admission = Admission(max_concurrent=4, max_queue=8)
    admission.fit_to_threads(3)
    assert (admission.max_concurrent, admission.max_queue) == (1, 0)


def test_errors_never_echo_unbounded_input(classical_engine, small_png):
    client = make_client(classical_engine)
    r = post(client, small_png, preset="p" * 100_000)
    assert r.status_code == 400 and len(r.get_json()["error"]["message"]) < 1200
    fields = {f"f{i}": "1" for i in range(1100)}
    r = post(client, small_png, **fields)
    assert r.status_code == 413 and "too many fields" in r.get_json()["error"]["message"]


def test_data_urls_are_parsed_in_linear_time(classical_engine, small_png):
    import base64

    client = make_client(classical_engine, MAX_UPLOAD_MB="50")
    t0 = time.perf_counter()
    r = client.post("/segment", json={"image": "data:" + ";a" * 5_000_000})
    assert r.status_code == 400 and "header" in r.get_json()["error"]["message"] and time.perf_counter() - t0 < 5
    b64 = base64.b64encode(small_png).decode()
    wrapped = "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))  # as MIME tools wrap it
    assert client.post("/segment", json={"image": "data:image/png;base64," + wrapped}).status_code == 200


def test_non_latin_1_names_download_with_rfc_5987(classical_engine, small_png):
    client = make_client(classical_engine)
    for fmt in ("csv", "coco", "labels"):
        r = client.post(
            "/segment_file", data={"file": (io.BytesIO(small_png), "液滴 émulsion.png"), "format": fmt},
            content_type="multipart/form-data",
        )  # fmt: skip
        disposition = r.headers["Content-Disposition"]
        assert r.status_code == 200 and 'filename="emulsion' in disposition
        assert "filename*=UTF-8''%E6%B6%B2%E6%BB%B4%20%C3%A9mulsion" in disposition


def test_memory_budget_refuses_from_the_header(classical_engine):
    import cv2
    import numpy as np

    client = make_client(classical_engine, MAX_UPLOAD_MB="50", MAX_IMAGE_PIXELS="100000000")
    _, blank = cv2.imencode(".png", np.full((8000, 8000), 128, np.uint8))
    r = client.post(
        "/segment_file", data={"file": (io.BytesIO(blank.tobytes()), "b.png")}, content_type="multipart/form-data"
    )
    error = r.get_json()["error"]
    assert r.status_code == 413 and "MAX_REQUEST_MEMORY_MB" in error["message"] and error["details"]["needed_mb"] > 1200


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_memory_goes_back_to_the_system_after_each_segmentation(classical_engine, packed, monkeypatch):
    import psutil

    from sam_droplet import memory, pipeline

    # What malloc keeps: 190 MB freed between small blocks that stay, so only a trim can return it.
    memory.return_freed_memory()  # earlier tests' freed heap would be reused below, not grown
    proc = psutil.Process()
    before = proc.memory_info().rss
    kept, freed = [], []
    for _ in range(3000):
        freed.append(bytearray(64_000))
        kept.append(bytearray(2_000))
    del freed
    assert proc.memory_info().rss - before > 150 * 2**20
    memory.return_freed_memory()
    assert proc.memory_info().rss - before < 60 * 2**20

    calls = []
    monkeypatch.setattr(pipeline, "return_freed_memory", lambda: calls.append(1))
    image = pipeline.read_image(packed.image)
    classical_engine.segment(image)
    assert len(calls) == 1

    def past_deadline(stage: str) -> None:
        raise TimeoutError(stage)

    with pytest.raises(TimeoutError):  # a segmentation stopped half-way returns it too
        classical_engine.segment(image, check=past_deadline)
    assert len(calls) == 2
