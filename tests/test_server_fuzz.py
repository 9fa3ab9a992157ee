"""The HTTP API fuzzed from its own OpenAPI schema (schemathesis, a bounded, derandomized run
on the tiny index): no 500s, every answer conforms to the schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings

from recommender import Recommender
from recommender.server import create_app

EXAMPLES = 30  # per operation: the run stays well under a minute


def test_the_api_conforms_to_its_schema_and_never_fails(tiny_index: Path) -> None:
    # Driven through the operations' hypothesis strategies rather than schemathesis's
    # pytest plugin, which does not load under the installed pytest.
    schema = schemathesis.openapi.from_asgi("/openapi.json",
                                            create_app(Recommender.open(tiny_index)))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 7

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def conforms(case: Any) -> None:
            case.call_and_validate()

        conforms()
