"""schemathesis over the hub's own OpenAPI document: generated requests, valid and not, to
every documented operation; none may get a 5xx.

Bounded so that it stays under about two minutes on a 2-core machine: a fixed number of
examples per operation, no shrinking, and the generation a valid chat request starts is
capped (at most 2 choices of 16 tokens): the fuzzing is for the request surface, the
engine's limits have their own tests.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error

EXAMPLES = 25

schema = schemathesis.pytest.from_fixture("hub_schema")


@pytest.fixture(scope="session")
def hub_schema(hostile_server):
    return schemathesis.openapi.from_url(hostile_server.base_url + "/openapi.json")


def _cap_generation(body: dict) -> None:
    body.setdefault("max_tokens", 16)
    for key, cap in (("max_tokens", 16), ("max_completion_tokens", 16), ("n", 2)):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            body[key] = min(value, cap)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    phases=[Phase.explicit, Phase.generate],
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_generated_request_gets_a_5xx(case, hostile_server):
    if isinstance(case.body, dict):
        _cap_generation(case.body)
    response = case.call(base_url=hostile_server.base_url, timeout=120)
    case.validate_response(response, checks=[not_a_server_error])
