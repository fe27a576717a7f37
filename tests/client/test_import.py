"""CSV import and export of datapoint values, and the bulk endpoint behind them."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from ipacs.client import BadRequest, Client, Forbidden, InvalidImportFile, Project
from tests.client.conftest import Cli
from tests.test_server_e2e import ADMIN_PASSWORD, Server


def _values(client: Client, project: Project) -> dict[str, dict[str, object]]:
    return {r.patient_id: r.values or {} for r in client.search(project, "")}  # type: ignore[union-attr]


def test_three_bad_cells_are_all_reported_and_nothing_is_written(
    cli: Cli, client: Client, project: Project, tmp_path: Path
) -> None:
    client.patients.create(project, "P1")
    client.patients.create(project, "P2")
    csv_file = tmp_path / "values.csv"
    csv_file.write_text("patient_id,age,arm\nP1,40,A\nP2,forty,B\nP1,30,C\nP3,,A\n")
    result = cli("datapoints", "import", str(project.id), str(csv_file))
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("line ")]
    assert lines == [
        "line 3, column 2 (age): expected a number for a integer datapoint (type)",
        "line 4, column 1 (patient_id): patient 'P1' again (first on line 2)",
        "line 5, column 1 (patient_id): no patient 'P3' in project "
        f"{project.name!r} or its subprojects (create_patients: true creates it)",
    ]
    assert "3 errors; nothing was written" in result.stderr
    assert _values(client, project) == {"P1": {}, "P2": {}}


def test_every_bad_cell_of_a_row_with_row_and_column(
    client: Client, project: Project, tmp_path: Path
) -> None:
    csv_file = tmp_path / "values.csv"
    csv_file.write_text("patient_id,arm,age,colour\nP1,C,121,red\nP2,A,-1,\n")
    with pytest.raises(InvalidImportFile) as raised:
        client.import_values(project, csv_file, create_patients=True)
    found = [(e.line, e.column, e.name) for e in raised.value.errors]
    assert found == [(1, 4, "colour"), (2, 2, "arm"), (2, 3, "age"), (3, 3, "age")]
    assert list(client.patients.iter(project)) == []  # not even the patients


def test_a_10000_row_file_imports_in_one_command(
    cli: Cli, client: Client, project: Project, tmp_path: Path
) -> None:
    csv_file = tmp_path / "big.csv"
    rows = [f"S{i:05d},{i % 121}" for i in range(10_000)]
    csv_file.write_text("patient_id,age\n" + "\n".join(rows) + "\n")
    result = cli("datapoints", "import", project.full_path, str(csv_file), "--create-patients", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["rows"], report["patients_created"], report["values_created"]) == (10_000, 10_000, 10_000)
    assert report["batches"] == 10
    assert next(iter(client.search(project, "age = 120"))).patient_id == "S00120"
    assert client.search(project, "age >= 0", page_size=1).pages().__next__().total == 10_000


def test_round_trip_export_import_export_is_identical(
    cli: Cli, client: Client, project: Project, tmp_path: Path
) -> None:
    for name, kind, extra in (
        ("weight", "decimal", {}),
        ("smoker", "boolean", {}),
        ("visit_date", "date", {}),
        ("seen_at", "datetime", {}),
        ("note", "string", {}),
    ):
        client.datapoints.create(project, name, kind, **extra)
    site = client.projects.create("Site", parent=project)
    source = tmp_path / "source.csv"
    source.write_text(
        "patient_id,age,arm,weight,smoker,visit_date,seen_at,note\n"
        'P1,40,A,72.5,true,2024-01-02,2024-01-02T10:30:00Z,"commas, ""quotes"" and é"\n'
        "P2,,B,80,false,,,\n"
        "P3,7,,1e-07,,2023-12-31,2024-06-01T00:00:00+02:00,  spaced  \n"
    )
    assert cli("datapoints", "import", site.full_path, str(source), "--create-patients").exit_code == 0
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    assert cli("datapoints", "export", project.full_path, "-o", str(first)).exit_code == 0
    result = cli("datapoints", "import", project.full_path, str(first), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["values_created"], report["values_updated"], report["values_unchanged"]) == (0, 0, 15)
    assert cli("datapoints", "export", project.full_path, "-o", str(second)).exit_code == 0
    assert first.read_bytes() == second.read_bytes()
    text = first.read_text()
    assert 'P1,40,A,72.5,true,2024-01-02,2024-01-02T10:30:00Z,"commas, ""quotes"" and é"' in text
    assert "P3,7,,1e-07,,2023-12-31,2024-05-31T22:00:00Z,  spaced  " in text


def test_dry_run_writes_nothing_and_counts(client: Client, project: Project) -> None:
    client.patients.create(project, "P1")
    client.datapoints.set_value(project, "P1", "age", 40)
    rows = [
        {"patient_id": "P1", "values": {"age": 41, "arm": "A"}},
        {"patient_id": "P9", "values": {"age": 1}},
    ]
    summary = client.datapoints.import_rows(project, rows, dry_run=True, create_patients=True)
    assert (summary.values_updated, summary.values_created, summary.patients_created) == (1, 2, 1)
    assert _values(client, project) == {"P1": {"age": 40}}
    summary = client.datapoints.import_rows(project, rows, create_patients=True)
    assert _values(client, project) == {"P1": {"age": 41, "arm": "A"}, "P9": {"age": 1}}
    history = client.datapoints.history(project, "P1", "age")
    assert [v.value for v in history] == [40]


def test_endpoint_reports_every_cell_as_rows_index_name(client: Client, project: Project) -> None:
    rows = [
        {"patient_id": "P1", "values": {"age": "x", "arm": "Z", "nope": 1}},
        {"patient_id": "bad\\id", "values": {}},
    ]
    with pytest.raises(BadRequest) as raised:
        client.datapoints.import_rows(project, rows, create_patients=True)
    fields = [d.field for d in raised.value.details]
    assert fields == ["rows[0].age", "rows[0].arm", "rows[0].nope", "rows[1].patient_id"]


def test_import_is_audited_and_needs_the_user_role(server: Server, client: Client, project: Project) -> None:
    client.transport.request(
        "POST", "/users", json={"username": f"viewer{project.id}", "password": "viewer-password"}
    )
    client.transport.request(
        "PUT", f"/projects/{project.id}/members/viewer{project.id}", json={"role": "viewer"}
    )
    with (
        Client(server.base_url, f"viewer{project.id}", "viewer-password") as viewer,
        pytest.raises(Forbidden),
    ):
        viewer.datapoints.import_rows(
            project, [{"patient_id": "P1", "values": {"age": 3}}], create_patients=True
        )
    client.datapoints.import_rows(project, [{"patient_id": "P1", "values": {"age": 3}}], create_patients=True)
    events = httpx.get(
        f"{server.base_url}/api/v1.0/projects/{project.id}/audit", auth=("admin", ADMIN_PASSWORD)
    ).json()
    kinds = {(e["action"], e["entity_type"]) for e in events}
    assert {("create", "patient"), ("create", "datapoint_value")} <= kinds
