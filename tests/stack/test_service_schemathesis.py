"""Property-based requests generated from the OpenAPI schema against the live embedded server: no 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from conftest import Stack
from hypothesis import HealthCheck, given, settings

MAX_EXAMPLES = 20


def test_no_server_errors_on_any_operation(embedded_stack: Stack) -> None:
    schema = schemathesis.openapi.from_url(f"{embedded_stack.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def no_server_error(case: schemathesis.Case) -> None:
            response = case.call(timeout=30)
            if response.status_code >= 500:
                pytest.fail(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text}")

        no_server_error()
    with embedded_stack.client() as client:
        assert client.get("/healthz").status_code == 200
