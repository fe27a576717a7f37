"""Property-based fuzzing of the whole API with schemathesis, against the app's own OpenAPI document.

Every operation is called with data generated from its schema, valid
(positive) and invalid (negative), plus the coverage phase's boundary values,
and the stateful run chains operations through the links schemathesis infers
(an id a POST answered is used by the GET, PUT, history... that take it). The
caller is `user`: the `user` role on the target project of
tests/security/world.py, which holds a patient, a DICOM study, datapoints and
a value. Path parameters that name a project, patient, study, datapoint or
UID are replaced by the world's (integers two times in three), so the calls
reach real data rather than a 404; invalid values stay as generated.

Every response must be: not a 5xx; a status the document lists for the
operation; of a documented content type; and valid against the documented
schema (the `invalidRequest` body for every error). Negative data must be
refused with a 4xx, an operation that needs credentials must refuse a call
without them, and a deleted resource must stay gone.

Not checked: that valid-by-schema data is accepted. The schema cannot say
that a StringQuery must parse, that a value must fit its datapoint's type,
that a birth date lies in the past or that `offset` and `after` exclude each
other; those answer 400 by design (and are tested in their domains).

CI runs a bounded, reproducible form: IPACS_FUZZ_EXAMPLES examples per
operation (default 10), a fixed seed (IPACS_FUZZ_SEED to explore others),
derandomized. `make fuzz` runs 500.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis.engine import events
from schemathesis.specs.openapi.schemas import OpenApiSchema

from ipacs.db.engine import Database
from tests.factories import DEFAULT_PASSWORD
from tests.security.world import World, build_world, module_app, security_settings

EXAMPLES = int(os.environ.get("IPACS_FUZZ_EXAMPLES", "10"))
SEED = int(os.environ.get("IPACS_FUZZ_SEED", "20261204"))
FUZZ_USER = "user"
# Checks that hold for every response. `positive_data_acceptance` is left out (see above).
CHECKS = {
    "not_a_server_error": {"enabled": True},
    "status_code_conformance": {"enabled": True},
    "content_type_conformance": {"enabled": True},
    "response_headers_conformance": {"enabled": True},
    "response_schema_conformance": {"enabled": True},
    "negative_data_rejection": {"enabled": True},
    "ignored_auth": {"enabled": True},
    "use_after_free": {"enabled": True},
    "ensure_resource_availability": {"enabled": True},
    "positive_data_acceptance": {"enabled": False},
    "missing_required_header": {"enabled": True},
    "unsupported_method": {"enabled": True},
}


# Known, explained deviations: (check, operation) -> why it is not a bug.
EXPLAINED = {
    ("allow_header_conformance", "GET /api/v1.0/users/me"): (
        "/users/{username} also matches /users/me: PUT and DELETE there act on an account named 'me', "
        "and Allow names what the router really accepts"
    ),
}


@schemathesis.serializer("application/dicom", "application/zip", "multipart/related")
def _raw_bytes(ctx: Any, value: Any) -> bytes:
    """DICOM uploads: the generated binary body, sent as it is (the parsers must cope with anything)."""
    if isinstance(value, bytes):
        return value
    return str(value).encode()


@pytest.fixture(scope="module")
def fuzz_app(
    tmp_path_factory: pytest.TempPathFactory, database: Database, database_url: str
) -> Iterator[FastAPI]:
    # Schemathesis sends wrong credentials on purpose: the login throttle (tested in tests/auth)
    # would otherwise answer 429 to the fuzzing user itself.
    settings_ = security_settings(
        tmp_path_factory.mktemp("fuzz") / "data",
        database_url,
        login_max_failures=1_000_000,
        login_max_failures_per_address=1_000_000,
    )
    yield from module_app(settings_, database)


@pytest.fixture(scope="module")
def world(fuzz_app: FastAPI) -> World:
    with TestClient(fuzz_app) as client, fuzz_app.state.database.session(write=True) as db:
        return build_world(client, db, fuzz_app.state.settings)


def _real_ids(world: World) -> dict[str, Any]:
    return {
        "project_id": world.target,
        "patient_pk": world.patient,
        "patient_uuid": world.patient_uuid,
        "study_pk": world.study,
        "datapoint_id": world.datapoint,
        # Another account: PUT /users/{username} as oneself could change the fuzzing user's password.
        "username": "newcomer",
        "study": world.study_uid,
        "series": world.series_uid,
        "instance": world.sop_uid,
    }


def _in_world(world: World, parameters: dict[str, Any] | None) -> dict[str, Any] | None:
    """Most generated path parameters become the world's; some stay as generated."""
    if not parameters:
        return parameters
    real = _real_ids(world)
    mapped = {}
    for name, value in parameters.items():
        keep = isinstance(value, int) and value % 3 == 1
        mapped[name] = value if keep or name not in real or not _well_typed(value, real[name]) else real[name]
    return mapped


def _well_typed(generated: Any, real: Any) -> bool:
    """Negative cases (a string where an integer or a UUID belongs...) keep their generated value."""
    if isinstance(generated, bool) or not isinstance(generated, type(real)):
        return False
    if isinstance(real, str) and _is_uuid(real):
        return _is_uuid(generated)
    return True


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _configured(app: FastAPI, world: World) -> OpenApiSchema:
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {"max-examples": EXAMPLES, "deterministic": True, "mode": "all"},
            "checks": CHECKS,
            "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
        }
    )
    schema = schemathesis.openapi.from_asgi("/api/v1.0/openapi.json", app, config=config)
    schema.config.update(basic_auth=(FUZZ_USER, DEFAULT_PASSWORD))

    @schema.hook
    def map_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> dict[str, Any] | None:
        return _in_world(world, path_parameters)

    return schema


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_app: FastAPI, world: World) -> OpenApiSchema:
    return _configured(fuzz_app, world)


def _failures(schema: OpenApiSchema) -> tuple[list[str], Counter[str]]:
    """Run every phase of schemathesis (examples, coverage, fuzzing, stateful); describe each failure."""
    problems: list[str] = []
    counts: Counter[str] = Counter()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            counts["scenarios"] += 1
            if event.phase.name == "STATEFUL_TESTING":
                counts["stateful scenarios"] += 1
            for interaction in event.recorder.interactions.values():
                if interaction.response is not None:
                    counts[f"answered {interaction.response.status_code // 100}xx"] += 1
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    counts["checks"] += 1
                    if check.failure_info is None or (check.name, event.recorder.label) in EXPLAINED:
                        continue
                    interaction = event.recorder.interactions.get(case_id)
                    response = interaction.response if interaction else None
                    answer = (
                        f"{response.status_code} {response.content[:300]!r}" if response is not None else "-"
                    )
                    problems.append(
                        f"[{check.name}] {event.recorder.label}: {check.failure_info.failure.title}\n"
                        f"  {check.failure_info.code_sample}\n  -> {answer}"
                    )
        elif isinstance(event, events.NonFatalError):
            problems.append(f"[error] {event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            problems.append(f"[fatal] {event.exception!r}")
    return problems, counts


def test_fuzz_every_operation(fuzz_schema: OpenApiSchema) -> None:
    problems, counts = _failures(fuzz_schema)
    print(dict(sorted(counts.items())))  # shown by `make fuzz` (pytest -s)
    assert counts["checks"] > 0 and counts["stateful scenarios"] > 0 and counts["answered 2xx"] > 0, counts
    unique = sorted(set(problems))
    assert not unique, f"{len(unique)} failures:\n" + "\n".join(unique)
