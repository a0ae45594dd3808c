"""Schemathesis against /api/v1/openapi.json: no server errors, answers as the document describes them.

Every operation of the published document gets generated requests (valid and invalid), sent to the
app in-process (WSGI) with a real bearer token and the fake upstream behind it. The answer limits
are off, as for the benchmarks, so a run is not cut short by 429s. The number of examples per
operation bounds the run (about a minute on the 2-core machine).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.modes import GenerationMode

EXAMPLES = 30  # per operation and generation mode
# A request the schema allows may still break a rule the schema cannot state: text that is only
# whitespace, a message over the token budget, a parent from another conversation, a model the
# operator does not allow. Those are 422s that say what to change; every other status is checked.
POSITIVE_STATUSES = ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"positive_data_acceptance": {"expected-statuses": POSITIVE_STATUSES}}}
)


@pytest.fixture
def api_app(make_app):  # noqa: ANN001, ANN201
    # Both names of the answer-limit switch: the limit is being renamed.
    return make_app(API_ANSWERS_PER_MINUTE=0, ANSWER_LIMITS="off")


@pytest.fixture
def bearer(api_app) -> dict[str, str]:  # noqa: ANN001
    token = api_app.test_client().post("/api/v1/auth/guest").get_json()["token"]
    return {"Authorization": f"Bearer {token}"}


def check_operation(operation, mode: GenerationMode, bearer: dict[str, str]) -> None:  # noqa: ANN001
    """Generate requests for one operation and validate every answer (raises on the first failure)."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases on every run: CI does not flake on a lucky draw
        suppress_health_check=list(HealthCheck),
    )
    def run(case) -> None:  # noqa: ANN001
        case.call_and_validate(headers=bearer)

    run()


@pytest.mark.timeout(180)  # about 40 s here; the bound keeps a slow CI run from hanging
def test_api_conforms_to_its_openapi_document(api_app, bearer) -> None:  # noqa: ANN001
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", api_app, config=CONFIG)
    failures = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                check_operation(operation, mode, bearer)
            except Unsatisfiable:
                assert mode == GenerationMode.NEGATIVE, operation.label  # nothing in it can be made invalid
            except (Exception, BaseExceptionGroup) as exc:  # every operation runs; all failures are reported
                failures.append(f"{operation.label} ({mode}): {exc}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.timeout(180)
def test_operations_on_existing_resources_conform_too(api_app, bearer) -> None:  # noqa: ANN001
    """Random ids mostly find nothing (404): here every operation works on a real conversation and message."""
    from tests.conftest import wait_for_status

    client = api_app.test_client()
    conversation = client.post("/api/v1/conversations", json={"title": "real"}, headers=bearer).get_json()
    url = f"/api/v1/conversations/{conversation['id']}/messages"
    sent = client.post(url, json={"content": "hello"}, headers=bearer).get_json()
    question, answer = sent["user_message"]["id"], sent["assistant_message"]["id"]
    wait_for_status(api_app, answer)

    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", api_app, config=CONFIG)
    operations = [result.ok() for result in schema.get_all_operations()]
    operations.sort(key=lambda operation: operation.method.upper() == "DELETE")  # deleting comes last
    failures = []
    for operation in operations:
        ids = {"conversation_id": conversation["id"], "message_id": question if "/edit" in operation.path else answer}
        wanted = {name: value for name, value in ids.items() if "{" + name + "}" in operation.path}
        if not wanted:
            continue
        strategy = operation.as_strategy(path_parameters=wanted)

        @given(case=strategy)
        @settings(
            max_examples=10, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
        )
        def run(case) -> None:  # noqa: ANN001
            case.call_and_validate(headers=bearer)

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
