"""The Python client against the real server process: sessions, projects, patients,
datapoint values with ETags, studies, search."""

from __future__ import annotations

import sys

import httpx
import pytest

from ipacs.client import (
    Client,
    ConcurrentUpdate,
    Conflict,
    NotFound,
    Project,
    Unauthorized,
)
from tests.client.conftest import unique
from tests.test_server_e2e import ADMIN_PASSWORD, Server


def _count_requests(client: Client) -> list[httpx.Request]:
    seen: list[httpx.Request] = []
    client.transport._http.event_hooks["request"].append(seen.append)
    return seen


def test_first_request_uses_basic_then_the_session_cookie(client: Client, server: Server) -> None:
    sent = _count_requests(client)
    assert client.me().username == "admin"
    client.me()
    assert "authorization" in sent[0].headers
    assert "authorization" not in sent[1].headers
    assert "ipacs_session=" in sent[1].headers["cookie"]
    # The session alone is enough, in another client.
    with Client(server.base_url, session=client.session_token) as other:
        assert other.me().username == "admin"


def test_ended_session_logs_in_again_with_the_password(client: Client, server: Server) -> None:
    client.me()
    old = client.session_token
    with Client(server.base_url, session=old) as other:
        other.logout()
    assert client.me().username == "admin"
    assert client.session_token not in (None, old)
    with Client(server.base_url, session=old) as stale, pytest.raises(Unauthorized, match="ipacs login"):
        stale.me()


def test_wrong_password_raises_unauthorized(server: Server) -> None:
    with Client(server.base_url, "admin", "wrong-password") as c, pytest.raises(Unauthorized):
        c.me()


def test_projects_create_get_by_id_and_path_and_list(client: Client) -> None:
    top = client.projects.create(unique("Trial"), description="first")
    site = client.projects.create("Site 1", parent=top)
    assert site.parent_id == top.id
    assert site.etag
    by_path = client.projects.get(f"{top.name}/Site 1")
    assert (by_path.id, by_path.full_path) == (site.id, f"{top.name}/Site 1")
    assert client.projects.get(site.id).name == "Site 1"
    assert client.projects.get(str(top.id)).description == "first"
    assert {p.id for p in client.projects.list()} >= {top.id, site.id}
    assert [p.id for p in client.projects.list(parent=top)] == [site.id]
    with pytest.raises(NotFound):
        client.projects.get(f"{top.name}/Site 2")


def test_patients_iterate_across_page_boundaries(client: Client, project: Project) -> None:
    site = client.projects.create("Site", parent=project)
    created = [client.patients.create(project if i % 2 else site, f"P{i:03d}") for i in range(7)]
    sent = _count_requests(client)
    found = list(client.patients.iter(project, recursive=True, page_size=2))
    assert [p.patient_id for p in found] == [p.patient_id for p in created]
    assert len(sent) == 4  # 2 + 2 + 2 + 1, one request per page
    assert all("after=" in str(r.url) for r in sent[1:])
    assert [p.patient_id for p in client.patients.iter(project, page_size=2)] == ["P001", "P003", "P005"]


def test_patients_get_create_update_with_etag(client: Client, project: Project) -> None:
    created = client.patients.create(project, "P1", patient_name="Doe^Jane", sex="F", birth_date="1980-01-02")
    read = client.patients.get(project, "P1")
    assert (read.id, read.patient_name, str(read.birth_date)) == (created.id, "Doe^Jane", "1980-01-02")
    assert client.patients.get(project, created.id).etag == read.etag
    updated = client.patients.update(project, read, patient_name="Doe^Janet")
    assert updated.patient_name == "Doe^Janet"
    with pytest.raises(ConcurrentUpdate, match="nothing was overwritten"):
        client.patients.update(project, read, patient_name="Lost^Update")  # read's ETag is stale
    assert client.patients.get(project, "P1").patient_name == "Doe^Janet"
    with pytest.raises(NotFound):
        client.patients.get(project, "nobody")


def test_datapoint_definitions(client: Client, project: Project) -> None:
    names = [d.name for d in client.datapoints.list(project)]
    assert names == ["age", "arm"]
    weight = client.datapoints.create(project, "weight", "decimal", unit="kg", minimum=0)
    assert (weight.type, weight.unit) == ("decimal", "kg")
    assert client.datapoints.get(project, "WEIGHT").id == weight.id


def test_values_never_overwrite_silently(client: Client, project: Project) -> None:
    client.patients.create(project, "P1")
    unset = client.datapoints.get_value(project, "P1", "age")
    assert (unset.value, unset.etag) == (None, None)
    first = client.datapoints.set_value(project, "P1", "age", 40)
    assert (first.value, first.version) == (40, 1) and first.etag
    with pytest.raises(Conflict, match="not overwritten"):
        client.datapoints.set_value(project, "P1", "age", 41)  # exists, and no ETag given
    second = client.datapoints.set_value(project, "P1", "age", 41, if_match=first)
    assert (second.value, second.version) == (41, 2)
    with pytest.raises(ConcurrentUpdate):
        client.datapoints.set_value(project, "P1", "age", 99, if_match=first)  # a stale read
    assert client.datapoints.get_value(project, "P1", "age").value == 41
    forced = client.datapoints.set_value(project, "P1", "age", 50, overwrite=True)
    assert forced.value == 50
    history = client.datapoints.history(project, "P1", "age")
    assert [v.value for v in history] == [41, 40]
    values = {v.datapoint_name: v.value for v in client.datapoints.values(project, "P1")}
    assert values == {"age": 50, "arm": None}


def test_invalid_value_carries_the_servers_details(client: Client, project: Project) -> None:
    client.patients.create(project, "P1")
    with pytest.raises(Exception) as raised:
        client.datapoints.set_value(project, "P1", "age", 200)
    error = raised.value
    assert getattr(error, "status", None) == 400
    assert error.details[0].field == "value"  # type: ignore[attr-defined]
    assert "maximum" in str(error)


def test_studies_create_list_update(client: Client, project: Project) -> None:
    patient = client.patients.create(project, "P1")
    study = client.studies.create(project, patient, visit="Baseline", study_date="2024-01-02")
    assert study.visit == "Baseline" and study.etag
    assert [s.id for s in client.studies.list(project, "P1")] == [study.id]
    updated = client.studies.update(project, patient, study, visit="Week 12")
    assert updated.visit == "Week 12"
    with pytest.raises(ConcurrentUpdate):
        client.studies.update(project, patient, study, status="done")  # stale ETag
    assert client.studies.get(project, patient, study.id).visit == "Week 12"
    assert client.studies.series(project, patient, study) == []


def test_search_iterates_every_page(client: Client, project: Project) -> None:
    for i in range(5):
        client.patients.create(project, f"P{i}")
        client.datapoints.set_value(project, f"P{i}", "age", 15 + i)
        client.datapoints.set_value(project, f"P{i}", "arm", "A" if i % 2 else "B")
    results = client.search(project, "age >= 16 AND arm = 'A'", page_size=1)
    assert [(r.patient_id, r.values) for r in results] == [
        ("P1", {"age": 16, "arm": "A"}),
        ("P3", {"age": 18, "arm": "A"}),
    ]
    assert results.total == 2
    assert len(list(client.search(project, "age >= 16", page_size=2))) == 4
    with pytest.raises(Exception, match="position"):
        list(client.search(project, "age >>= 3"))


def test_search_dataframe(client: Client, project: Project) -> None:
    client.patients.create(project, "P1")
    client.datapoints.set_value(project, "P1", "age", 30)
    frame = client.search_dataframe(project, "age = 30")
    assert list(frame["patient_id"]) == ["P1"]
    assert list(frame["age"]) == [30]


def test_search_dataframe_without_pandas_says_so(
    client: Client, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if not installed: importing it fails
    with pytest.raises(Exception, match="pip install pandas"):
        client.search_dataframe(project, "")


def test_session_reuse_does_not_spend_sessions(server: Server) -> None:
    with Client(server.base_url, "admin", ADMIN_PASSWORD) as c:
        for _ in range(5):
            c.me()
        token = c.session_token
        assert token is not None and c.session_token == token
