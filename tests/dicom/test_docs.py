"""docs/dicom.md, run as written against a fresh real server: its sh blocks, in order.

Only the server's address, DICOM port and administrator password are replaced.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dicom.real_server import real_server
from tests.test_server_e2e import ADMIN_PASSWORD

PAGE = Path(__file__).resolve().parents[2] / "docs" / "dicom.md"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
TOOLS = ("curl", "storescu", "dcmsend", "echoscu")


@pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in TOOLS), reason=f"needs {', '.join(TOOLS)} (dcmtk, curl)"
)
def test_the_dicom_page_runs_verbatim(tmp_path: Path) -> None:
    blocks = BLOCK.findall(PAGE.read_text())
    assert len(blocks) >= 9
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPACS_")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    with real_server(tmp_path / "ipacs-data") as server:
        server.start()
        outputs = []
        for code in blocks:
            code = (
                code.replace("http://localhost:8080", server.base_url)
                .replace("localhost 11112", f"127.0.0.1 {server.dicom_port}")
                .replace("choose-a-password", ADMIN_PASSWORD)
            )
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", code],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, (
                f"{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}\n"
                f"--- server\n{''.join(server.output[-30:])}"
            )
            outputs.append(done.stdout)
    text = "\n".join(outputs)
    # What the page says the uploads answer.
    assert (
        '"failed":[{"name":"reportsi.dcm","reason":"missing required DICOM attributes: PatientID"}]' in text
    )
    assert '{"stored":0,"duplicates":1,"failed":[]' in text
    assert '"reason":"Different content already stored for SOPInstanceUID' in text
    assert '"message":"Deleted study 2 with 1 series and 1 instances"' in text
    assert '"message":"Deleted patient 1 with 1 studies, 1 series and 1 instances"' in text
    assert "4MR1/" in text  # the archive listing
