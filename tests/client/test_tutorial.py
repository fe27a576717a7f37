"""docs/client.md, run as written against a fresh server: its sh and python blocks in order.

Only the server's address is replaced (the page says http://localhost:8080);
the password is typed on standard input, as a person would at the prompt.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.client.conftest import subprocess_env
from tests.test_server_e2e import ADMIN_PASSWORD, Server

PAGE = Path(__file__).resolve().parents[2] / "docs" / "client.md"
BLOCK = re.compile(r"^```(sh|python)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def test_the_tutorial_runs_verbatim(server: Server, tmp_path: Path) -> None:
    blocks = BLOCK.findall(PAGE.read_text())
    assert len(blocks) >= 8
    env = subprocess_env(tmp_path / "config")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    work = tmp_path / "work"
    work.mkdir()
    for language, code in blocks:
        code = code.replace("http://localhost:8080", server.base_url)
        command = (
            ["bash", "-euo", "pipefail", "-c", code] if language == "sh" else [sys.executable, "-c", code]
        )
        done = subprocess.run(
            command,
            cwd=work,
            env=env,
            input=ADMIN_PASSWORD + "\n",
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert (work / "values.csv").read_text() == (
        "patient_id,age,arm,responder\n1CT1,54,A,true\n4MR1,61,B,\nSUBJ-003,17,A,false\n"
    )
    assert "1CT1" in (work / "adults.csv").read_text()
    assert len(list((work / "downloads").rglob("*.dcm"))) == 1
