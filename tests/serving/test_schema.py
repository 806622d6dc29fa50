"""Property-based tests from the OpenAPI schema (schemathesis): whatever a client sends, no 5xx, and every
error is the JSON error body."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from omnibind.serving import ApiKeys, ServeSettings, create_app
from tests.serving.conftest import WRITE_KEY

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is absent (pip install -e '.[dev]')")

MAX_EXAMPLES = 15  # per operation; the whole test stays around 20 s on a loaded 2-core machine


def test_no_server_errors_from_schema(writable_index):
    # a writable copy with a write key, so POST /v1/items and DELETE run their real code paths too
    app = create_app(writable_index, ServeSettings(keys=ApiKeys.from_keys(write=[WRITE_KEY])))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 7
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call(headers={"X-API-Key": WRITE_KEY})
            where = f"{case.method} {case.formatted_path}"
            assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
            if response.status_code >= 400:
                assert response.json()["error"]["message"], f"{where}: {response.text}"

        check()
