"""schemathesis over the hub's own OpenAPI document: generated requests, valid and not, to
every documented operation; none may get a 5xx.

Bounded so that it stays under about two minutes on a 2-core machine: a fixed number of
examples per operation and mode (valid and invalid data), no shrinking, and the generation a valid chat request starts is
capped (at most 2 choices of 16 tokens): the fuzzing is for the request surface, the
engine's limits have their own tests.
"""

from __future__ import annotations

import itertools

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

EXAMPLES = 50


def _cap_generation(body: dict) -> None:
    body.setdefault("max_tokens", 16)
    for key, cap in (("max_tokens", 16), ("max_completion_tokens", 16), ("n", 2)):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            body[key] = min(value, cap)


def test_no_generated_request_gets_a_5xx(hostile_server):
    schema = schemathesis.openapi.from_url(hostile_server.base_url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 5  # chat, tokenize, models, usage, probes

    calls = []
    for operation, mode in itertools.product(operations, GenerationMode):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            phases=[Phase.explicit, Phase.generate],
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def no_5xx(case):
            if isinstance(case.body, dict):
                _cap_generation(case.body)
            response = case.call(base_url=hostile_server.base_url, timeout=120)
            calls.append(response.status_code)
            case.validate_response(response, checks=[not_a_server_error])

        try:
            no_5xx()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # an operation with no input to spoil
    assert len(calls) >= len(operations) * 2
    print(f"schemathesis: {len(calls)} requests, statuses {sorted(set(calls))}")
