"""Orthanc (Debian's package) with its own configuration and storage in a temp dir.

Orthanc 1.10 cannot bind to loopback only, so it runs inside a network
namespace of its own holding nothing but `lo` (`unshare -n`), and every
client reaches it through `nsenter --net=/proc/PID/ns/net`. Authentication is
on (HTTP Basic, one registered user); the rest is Orthanc's defaults,
including `SyncStorageArea` (an fsync per stored file) and its SQLite index.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from bench.peers.servers import Credentials, Server, install_debian_package

HTTP_PORT = 8042
DICOM_PORT = 4242
AE_TITLE = "ORTHANC"


def orthanc_id(*uids: str) -> str:
    """Orthanc's resource id: SHA-1 of the identifying UIDs joined by '|', in groups of 8."""
    digest = hashlib.sha1("|".join(uids).encode(), usedforsecurity=False).hexdigest()
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


class OrthancServer(Server):
    name = "Orthanc"

    def __init__(self, workdir: Path, credentials: Credentials) -> None:
        super().__init__(workdir, credentials)
        self.http_port = HTTP_PORT
        self.dicom_port = DICOM_PORT
        self.ae_title = AE_TITLE
        self._log: IO[str] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("Orthanc") is not None and shutil.which("unshare") is not None

    @staticmethod
    def install() -> bool:
        return install_debian_package("orthanc", "Orthanc")

    def version(self) -> str:
        out = subprocess.run(["Orthanc", "--version"], capture_output=True, text=True, check=False)
        return (out.stdout.splitlines() or ["Orthanc"])[0].strip()

    def config(self) -> dict[str, Any]:
        storage = str(self.workdir / "storage")
        return {
            "Name": "bench",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "Plugins": [],
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.ae_title,
            "DicomCheckCalledAet": False,
            "RemoteAccessAllowed": True,  # only `lo` exists in its namespace
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.credentials.username: self.credentials.password},
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "HttpCompressionEnabled": False,
        }

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / "orthanc.json"
        path.write_text(json.dumps(self.config(), indent=2))
        self._log = (self.workdir / "orthanc.log").open("w")
        # Orthanc's DICOM server is dcmtk's: without TCP_NODELAY=1 its sockets keep Nagle on,
        # and each C-STORE response waits for a delayed ACK (~20 instances/s).
        self.process = subprocess.Popen(
            ["unshare", "-n", "sh", "-c", f"ip link set lo up && exec Orthanc {path}"],
            env={**os.environ, "TCP_NODELAY": "1"},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.workdir / 'orthanc.log').read_text()[-2000:]}")
            if self.process is not None and Path(f"/proc/{self.process.pid}/exe").resolve().name == "Orthanc":
                try:
                    self.get_json("/system")
                    return
                except (RuntimeError, json.JSONDecodeError):
                    pass
            time.sleep(0.2)
        raise RuntimeError("Orthanc did not answer within 60 s")

    def stop(self) -> None:
        super().stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def client_prefix(self) -> list[str]:
        assert self.process is not None
        return ["nsenter", f"--net=/proc/{self.process.pid}/ns/net"]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def pids(self) -> list[int]:
        assert self.process is not None
        return [self.process.pid]
