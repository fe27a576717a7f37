"""The clients, the same for both servers: dcmtk `storescu`, `curl`, `wrk`.

Each one runs with the server's `client_prefix()` (nsenter into Orthanc's
namespace), so both servers are reached over a loopback interface by the
same programs. Where `wrk` is missing, a small Python load generator stands in
(enough for the smoke test; its figures are not comparable to wrk's).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.peers.dataset import InstanceFile, chunks
from bench.peers.servers import Server

WRK_THREADS = 2


@dataclass(frozen=True)
class Request:
    path: str
    method: str = "GET"
    body: str | None = None


@dataclass(frozen=True)
class Rate:
    """What a timed run did: requests (or instances) per second and payload bytes per second."""

    per_second: float
    bytes_per_second: float
    count: int
    seconds: float
    tool: str

    @property
    def mb_per_second(self) -> float:
        return self.bytes_per_second / 1e6


class ClientFailed(RuntimeError):
    """A client reported errors: a run whose answers were not all successes is not a figure."""


def _run_all(commands: list[list[str]], env: dict[str, str] | None = None) -> tuple[float, list[str]]:
    """Start the commands together, wait for all; (wall seconds, their stdout)."""
    started = time.perf_counter()
    processes = [
        subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in commands
    ]
    outputs = []
    failures = []
    for command, process in zip(commands, processes, strict=True):
        out, err = process.communicate()
        outputs.append(out)
        if process.returncode:
            failures.append(f"{command[0]} exited {process.returncode}: {err.strip()[-1000:]}")
    seconds = time.perf_counter() - started
    if failures:
        raise ClientFailed("; ".join(failures))
    return seconds, outputs


def storescu(server: Server, files: list[InstanceFile], associations: int) -> Rate:
    """C-STORE every file, over `associations` parallel associations (one storescu each)."""
    env = {**os.environ, "TCP_NODELAY": "1"}  # dcmtk leaves Nagle on without it
    commands = [
        [
            *server.client_prefix(),
            "storescu",
            "--aetitle",
            "BENCHSCU",
            "--call",
            server.ae_title,
            "127.0.0.1",
            str(server.dicom_port),
            *(f.path for f in part),
        ]
        for part in chunks(files, associations)
    ]
    seconds, _ = _run_all(commands, env)
    size = sum(f.size for f in files)
    return Rate(len(files) / seconds, size / seconds, len(files), seconds, "storescu")


def _curl_config(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def _quoted(value: str) -> str:
    return json.dumps(value)


def curl_upload(
    server: Server, files: list[InstanceFile], clients: int, path: str, content_type: str, workdir: Path
) -> Rate:
    """POST each file as its own request, `clients` curl processes each on one kept-alive connection."""
    commands = []
    for index, part in enumerate(chunks(files, clients)):
        sections = []
        for f in part:
            sections.append(
                _curl_config(
                    [
                        f"url = {_quoted(server.base_url + path)}",
                        f"user = {_quoted(server.credentials.pair)}",
                        f"header = {_quoted('Content-Type: ' + content_type)}",
                        'header = "Expect:"',
                        f"data-binary = {_quoted('@' + f.path)}",
                        'output = "/dev/null"',
                        'write-out = "%{http_code}\\n"',
                    ]
                )
            )
        config = workdir / f"upload-{index}.curl"
        config.write_text("next\n".join(sections))
        commands.append([*server.client_prefix(), "curl", "-sS", "-K", str(config)])
    seconds, outputs = _run_all(commands)
    codes = [line for out in outputs for line in out.split()]
    bad = [c for c in codes if not c.startswith("2")]
    if bad or len(codes) != len(files):
        raise ClientFailed(f"upload to {server.name}: {len(codes)} answers, not 2xx: {sorted(set(bad))}")
    size = sum(f.size for f in files)
    return Rate(len(files) / seconds, size / seconds, len(files), seconds, "curl")


def curl_download(server: Server, paths: list[str], workdir: Path) -> Rate:
    """GET each path in turn on one connection; bytes received per second."""
    sections = [
        _curl_config(
            [
                f"url = {_quoted(server.base_url + p)}",
                f"user = {_quoted(server.credentials.pair)}",
                'output = "/dev/null"',
                'write-out = "%{http_code} %{size_download}\\n"',
            ]
        )
        for p in paths
    ]
    config = workdir / "download.curl"
    config.write_text("next\n".join(sections))
    seconds, outputs = _run_all([[*server.client_prefix(), "curl", "-sS", "-K", str(config)]])
    answers = [line.split() for line in outputs[0].splitlines() if line.strip()]
    if len(answers) != len(paths) or any(code != "200" for code, _ in answers):
        raise ClientFailed(f"download from {server.name}: {answers[:5]}")
    size = sum(int(n) for _, n in answers)
    return Rate(len(paths) / seconds, size / seconds, len(paths), seconds, "curl")


_WRK_SCRIPT = """
local requests = %(requests)s
local headers = %(headers)s
local counter = 0
setup = function(thread)
  thread:set("first", counter * 7919)
  counter = counter + 1
end
init = function(args)
  index = (first or 0) %% #requests
end
request = function()
  index = index + 1
  if index > #requests then index = 1 end
  local r = requests[index]
  return wrk.format(r[1], r[2], headers, r[3])
end
done = function(summary, latency, requests)
  io.write(string.format(
    'WRK_JSON {"requests": %%d, "duration_us": %%d, "bytes": %%d, "status": %%d, "connect": %%d, ' ..
    '"read": %%d, "write": %%d, "timeout": %%d}\\n',
    summary.requests, summary.duration, summary.bytes, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout))
end
"""


def _lua(value: object) -> str:
    """A Lua literal for strings, lists and string-keyed tables (ASCII only)."""
    if value is None:
        return "nil"
    if isinstance(value, str):
        text = json.dumps(value)
        assert "\\u" not in text, value
        return text
    if isinstance(value, list | tuple):
        return "{" + ", ".join(_lua(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{_lua(k)}] = {_lua(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def has_wrk() -> bool:
    return shutil.which("wrk") is not None


def wrk(
    server: Server,
    requests: list[Request],
    headers: dict[str, str],
    workdir: Path,
    *,
    connections: int = 16,
    seconds: float = 5.0,
) -> Rate:
    """Requests per second over `connections` kept-alive connections, cycling through `requests`."""
    if not has_wrk():
        return python_load(server, requests, headers, connections=min(connections, 4), seconds=seconds)
    script = workdir / "wrk.lua"
    rows = [[r.method, r.path, r.body] for r in requests]
    script.write_text(_WRK_SCRIPT % {"requests": _lua(rows), "headers": _lua(headers)})
    command = [
        *server.client_prefix(),
        "wrk",
        f"-t{min(WRK_THREADS, connections)}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "-s",
        str(script),
        server.base_url,
    ]
    _, outputs = _run_all([command])
    line = next(x for x in outputs[0].splitlines() if x.startswith("WRK_JSON "))
    summary = json.loads(line.removeprefix("WRK_JSON "))
    errors = {k: summary[k] for k in ("status", "connect", "read", "write", "timeout") if summary[k]}
    if errors:
        raise ClientFailed(f"wrk against {server.name} {requests[0].path}: errors {errors}")
    duration = summary["duration_us"] / 1e6
    return Rate(
        summary["requests"] / duration, summary["bytes"] / duration, summary["requests"], duration, "wrk"
    )


def python_load(
    server: Server, requests: list[Request], headers: dict[str, str], *, connections: int, seconds: float
) -> Rate:
    """A stand-in for wrk: threads with http.client, kept-alive connections (no server-side namespace)."""
    if server.client_prefix():
        raise ClientFailed("the Python load generator cannot enter another network namespace: install wrk")
    host, port = server.base_url.removeprefix("http://").split(":")
    counts = [0] * connections
    sizes = [0] * connections
    failures: list[str] = []
    deadline = time.perf_counter() + seconds

    def worker(n: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        i = n * 7919
        while time.perf_counter() < deadline:
            r = requests[i % len(requests)]
            i += 1
            conn.request(r.method, r.path, body=r.body, headers=headers)
            response = conn.getresponse()
            body = response.read()
            if response.status >= 400:
                failures.append(f"{response.status} {r.path}")
                return
            counts[n] += 1
            sizes[n] += len(body)
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise ClientFailed(f"load against {server.name}: {failures[:3]}")
    return Rate(sum(counts) / elapsed, sum(sizes) / elapsed, sum(counts), elapsed, "python")


def install_wrk() -> bool:
    from bench.peers.servers import install_debian_package

    return install_debian_package("wrk", "wrk")
