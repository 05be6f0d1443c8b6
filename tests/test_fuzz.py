"""Fuzz /segment_file and /segment: no 5xx, ever; each rejection a specific 4xx with a message.

A few hundred generated cases per CI run; ``python -m tests.reliability`` runs thousands and writes
the count to docs/reliability.md.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from sam_droplet.web import create_app
from sam_droplet.web.config import Config

from .fuzz_cases import Case, cases, send

pytestmark = pytest.mark.system

EXPECTED_4XX = {400, 413, 415}


def check_answer(case: Case, response) -> None:
    status = response.status_code
    assert status < 500, f"{case.kind}: {status} {response.get_data(as_text=True)[:300]}"
    if status == 200:
        assert case.ok_allowed, f"{case.kind}: accepted"
        return
    assert status in EXPECTED_4XX, f"{case.kind}: {status}"
    body = response.get_json()
    assert body["success"] is False and body["error"]["code"] and len(body["error"]["message"]) > 10, body


@pytest.fixture(scope="module")
def fuzz_client(classical_engine):
    config = Config.from_mapping(
        {"SEGMENTER": "classical", "RATE_LIMIT": "off", "MAX_UPLOAD_MB": "8", "MAX_IMAGE_PIXELS": "4000000"}
    )
    return create_app(config, engine=classical_engine).test_client()


def test_fuzz_no_server_errors(fuzz_client, small_png):
    seen: dict[str, int] = {}

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(cases(small_png))
    def run(case: Case) -> None:
        seen[case.kind] = seen.get(case.kind, 0) + 1
        check_answer(case, send(fuzz_client, case))

    run()
    assert len(seen) >= 20, seen  # the strategies reach most kinds of case
