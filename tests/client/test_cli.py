"""The remote `ipacs` commands against the real server: login, projects, patients,
datapoints, search, download, logout; tables and --json."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

from ipacs.client import Client, Project
from ipacs.client.credentials import read_file
from tests.client.conftest import Cli, subprocess_env, unique
from tests.dicom_factory import make_study, to_bytes
from tests.test_server_e2e import ADMIN_PASSWORD, Server


def test_login_stores_a_0600_session_and_logout_removes_it(server: Server, tmp_path: Path) -> None:
    env = subprocess_env(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "ipacs", "login", server.base_url, "-u", "admin", "--password-stdin"],
        input=ADMIN_PASSWORD + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    path = tmp_path / "ipacs" / "credentials"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(path.read_text())
    assert stored["url"] == server.base_url and stored["session"] and "password" not in stored
    done = subprocess.run(
        [sys.executable, "-m", "ipacs", "projects", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert isinstance(json.loads(done.stdout), list)
    done = subprocess.run(
        [sys.executable, "-m", "ipacs", "logout"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not path.exists()
    with Client(server.base_url, session=stored["session"]) as ended:
        try:
            ended.me()
        except Exception as exc:
            assert getattr(exc, "status", None) == 401
        else:
            raise AssertionError("the session still works after logout")


def test_login_with_a_wrong_password_fails_and_stores_nothing(cli: Cli, server: Server) -> None:
    path = cli.config_dir / "ipacs" / "credentials"
    path.unlink()
    result = cli("login", server.base_url, "-u", "admin", "--password-stdin", stdin="wrong\n")
    assert result.exit_code == 1 and "error" in result.stderr
    assert not path.exists()


def test_login_can_keep_the_password(cli: Cli, server: Server) -> None:
    result = cli("login", server.base_url, "-u", "admin", "--password-stdin", "--save-password",
                 stdin=ADMIN_PASSWORD + "\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    stored = read_file(cli.config_dir / "ipacs" / "credentials")
    assert stored is not None and stored.password == ADMIN_PASSWORD and stored.session


def test_projects_list_and_create(cli: Cli, client: Client) -> None:
    name = unique("Trial")
    result = cli("projects", "create", name, "--description", "CLI made")
    assert result.exit_code == 0, result.output
    result = cli("projects", "create", "Site 1", "--parent", name, "--json")
    site = json.loads(result.stdout)
    assert site["parent_id"] is not None
    table = cli("projects").stdout
    assert f"{name}/Site 1" in table
    listed = json.loads(cli("projects", "--json").stdout)
    assert site["id"] in [p["id"] for p in listed]
    result = cli("projects", "create", "Site 1", "--parent", name)
    assert result.exit_code == 1 and "error" in result.stderr  # siblings' names are unique


def test_patients_lists_the_subtree(cli: Cli, client: Client, project: Project) -> None:
    site = client.projects.create("Site", parent=project)
    client.patients.create(project, "P1", sex="F")
    client.patients.create(site, "P2")
    table = cli("patients", project.full_path).stdout
    assert "P1" in table and "P2" in table
    found = json.loads(cli("patients", project.full_path, "--no-recursive", "--json").stdout)
    assert [p["patient_id"] for p in found] == ["P1"]
    assert cli("patients", "no such project").exit_code == 1


def test_datapoints_list_and_create(cli: Cli, project: Project) -> None:
    result = cli("datapoints", "create", project.full_path, "visit_date", "--type", "date",
                 "--minimum", "2000-01-01", "--label", "Visit")  # fmt: skip
    assert result.exit_code == 0, result.output
    result = cli(
        "datapoints", "create", project.full_path, "grade", "--type", "choice", "--choices", "I, II,III"
    )
    assert result.exit_code == 0, result.output
    listed = {d["name"]: d for d in json.loads(cli("datapoints", "list", str(project.id), "--json").stdout)}
    assert listed["visit_date"]["minimum"] == "2000-01-01"
    assert listed["grade"]["choices"] == ["I", "II", "III"]
    assert "visit_date" in cli("datapoints", "list", str(project.id)).stdout


def test_search_table_json_and_csv(cli: Cli, client: Client, project: Project, tmp_path: Path) -> None:
    for i, (age, arm) in enumerate([(17, "A"), (30, "A"), (45, "B")]):
        client.patients.create(project, f"P{i}")
        client.datapoints.set_value(project, f"P{i}", "age", age)
        client.datapoints.set_value(project, f"P{i}", "arm", arm)
    query = "age >= 18 AND arm = 'A'"
    table = cli("search", project.full_path, query)
    assert table.exit_code == 0 and "P1" in table.stdout and "P0" not in table.stdout
    found = json.loads(cli("search", project.full_path, query, "--json").stdout)
    assert [(r["patient_id"], r["values"]) for r in found] == [("P1", {"age": 30, "arm": "A"})]
    out = tmp_path / "result.csv"
    assert cli("search", project.full_path, "age >= 18", "--csv", str(out)).exit_code == 0
    lines = out.read_text().splitlines()
    assert lines[0].endswith(",age,arm") and len(lines) == 3
    bad = cli("search", project.full_path, "age >>= 1")
    assert bad.exit_code == 1 and "position" in bad.stderr


def test_download_unpacks_or_keeps_the_zip(
    cli: Cli, client: Client, project: Project, tmp_path: Path
) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    datasets = make_study("P7")
    for i, ds in enumerate(datasets):
        (folder / f"{i}.dcm").write_bytes(to_bytes(ds))
    uploaded = cli("upload", project.full_path, str(folder))
    assert uploaded.exit_code == 0, uploaded.output + uploaded.stderr
    out = tmp_path / "out"
    result = cli("download", project.full_path, "P7", "-o", str(out))
    assert result.exit_code == 0, result.output
    files = sorted(out.rglob("*.dcm"))
    assert len(files) == len(datasets)
    assert {f.read_bytes() for f in files} == {
        (folder / f"{i}.dcm").read_bytes() for i in range(len(datasets))
    }
    study = client.studies.list(project, "P7")[0]
    kept = tmp_path / "kept"
    result = cli("download", project.full_path, "P7", study.study_instance_uid, "-o", str(kept), "--zip")
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(kept / f"{study.study_instance_uid}.zip") as archive:
        assert len(archive.namelist()) == len(datasets)
    assert cli("download", project.full_path, "P7", "999999", "-o", str(kept)).exit_code == 1
