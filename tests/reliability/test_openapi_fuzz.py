"""schemathesis against the server's own OpenAPI document, over real HTTP: no 5xx, and every
error is OpenAI-shaped (the document declares that shape for every non-2xx status).

TOOLKIT_FUZZ_EXAMPLES sets examples per operation (CI's default is small).
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from reliability_helpers import server_thread
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from toolkit.api.http.openapi import OPERATIONS
from toolkit.config.schema import ServerConfig

MAX_EXAMPLES = int(os.environ.get("TOOLKIT_FUZZ_EXAMPLES", "12"))


@pytest.fixture(scope="module")
def live_url(engine):
    """The app over the real engine, served by uvicorn in its own thread; generation is cut
    at 2 s so that fuzzed max_tokens cannot stall the run."""
    with server_thread(engine, ServerConfig(request_timeout=2.0)) as url:
        yield url


@pytest.fixture(scope="module")
def api_schema(live_url):
    """The document the live server serves."""
    return schemathesis.openapi.from_url(f"{live_url}/openapi.json")


def _operation(schema, label: str):
    return next(r.ok() for r in schema.get_all_operations() if r.ok().label == label)


CASES = [(f"{op.method} {op.path}", mode) for op in OPERATIONS
         for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         if op.bodies or mode is GenerationMode.POSITIVE]
"""Every operation with valid inputs; those with a body with invalid ones too."""


@pytest.mark.parametrize("label,mode", CASES, ids=[f"{l}-{m.value}" for l, m in CASES])
def test_no_server_errors_and_openai_shaped_errors(api_schema, live_url, engine, label, mode):
    operation = _operation(api_schema, label)

    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        response = case.call(base_url=live_url, timeout=60)
        case.validate_response(response, checks=[not_a_server_error,
                                                 response_schema_conformance])
        if response.status_code >= 400:
            assert set(response.json()) == {"error"}, response.text

    run()
    assert engine.healthy
