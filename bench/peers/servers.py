"""What both servers have in common: credentials, control requests through curl, peak memory."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    @property
    def pair(self) -> str:
        return f"{self.username}:{self.password}"


def install_debian_package(package: str, command: str) -> bool:
    """Install a Debian package when its command is missing (as root); True when it is there."""
    if shutil.which(command):
        return True
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=False, env=env, capture_output=True)
    return shutil.which(command) is not None


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Server:
    """A server under test, started in `workdir` and driven over loopback."""

    name = "server"
    http_port: int
    dicom_port: int
    ae_title: str

    def __init__(self, workdir: Path, credentials: Credentials) -> None:
        self.workdir = workdir
        self.credentials = credentials
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def client_prefix(self) -> list[str]:
        """What runs a client command where this server's loopback is."""
        return []

    @property
    def base_url(self) -> str:
        raise NotImplementedError

    def pids(self) -> list[int]:
        raise NotImplementedError

    def peak_rss_mb(self) -> float:
        """VmHWM summed over the server's processes (its high-water mark since start)."""
        return sum(status_kib(pid, "VmHWM") for pid in self.pids()) / 1024

    def reset_peak_rss(self) -> None:
        """Start a new high-water mark (`5` to clear_refs resets VmHWM; needs root or the owner)."""
        for pid in self.pids():
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")

    def rss_mb(self) -> float:
        return sum(status_kib(pid, "VmRSS") for pid in self.pids()) / 1024

    def curl(self, path: str, *args: str, credentials: Credentials | None = None) -> bytes:
        user = (credentials or self.credentials).pair
        command = [*self.client_prefix(), "curl", "-sSf", "-u", user, *args, self.base_url + path]
        done = subprocess.run(command, check=False, capture_output=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command[:-1])} {path}: {done.stderr.decode().strip()}")
        return done.stdout

    def get_json(self, path: str) -> Any:
        return json.loads(self.curl(path))

    def send_json(self, method: str, path: str, body: Any, credentials: Credentials | None = None) -> Any:
        data = json.dumps(body)
        headers = ("-H", "Content-Type: application/json")
        return json.loads(
            self.curl(path, "-X", method, *headers, "--data-binary", data, credentials=credentials)
        )

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
