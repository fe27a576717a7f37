"""Where the client finds its server and credentials: arguments, environment, or the file.

`ipacs login URL` writes `~/.config/ipacs/credentials` (or under
$XDG_CONFIG_HOME): JSON with the server's URL, the username and the session
token, and the password only when asked to keep it. The file is created with
mode 0600, and a file that others could read is refused rather than used.

The environment (IPACS_URL, IPACS_USERNAME, IPACS_PASSWORD) wins over the file.
A session from the file is only ever sent to the server it came from.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from ipacs.client.errors import CredentialsError

ENV_URL = "IPACS_URL"
ENV_USERNAME = "IPACS_USERNAME"
ENV_PASSWORD = "IPACS_PASSWORD"  # noqa: S105 (the variable's name, not a password)


@dataclass(frozen=True)
class Credentials:
    url: str
    username: str | None = None
    password: str | None = None
    session: str | None = None


def normalise_url(url: str) -> str:
    """The server's root URL, without a trailing slash or the API prefix."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise CredentialsError(f"Not an http(s) URL: {url!r}")
    return url.removesuffix("/api/v1.0")


def credentials_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ipacs" / "credentials"


def read_file(path: Path | None = None) -> Credentials | None:
    """The stored credentials, or None when there is no file; refuses a file others may read."""
    path = path or credentials_path()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(
            f"{path} is accessible to other users (mode {stat.S_IMODE(mode):04o}); "
            f"it holds a session or password: run `chmod 600 {path}`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Credentials(
            url=normalise_url(str(data["url"])),
            username=data.get("username"),
            password=data.get("password"),
            session=data.get("session"),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise CredentialsError(f"{path} is not a credentials file written by `ipacs login`: {exc}") from exc


def write_file(credentials: Credentials, path: Path | None = None) -> Path:
    """Store credentials with mode 0600, replacing the file atomically."""
    path = path or credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({k: v for k, v in asdict(credentials).items() if v is not None}, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, 0o600)  # O_CREAT's mode does not apply to a file left by a crash
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def remove_file(path: Path | None = None) -> bool:
    path = path or credentials_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def resolve(url: str | None = None, path: Path | None = None) -> Credentials:
    """Credentials for `url` (default: $IPACS_URL, else the file's server)."""
    stored = read_file(path)
    chosen = url or os.environ.get(ENV_URL) or (stored.url if stored else None)
    if not chosen:
        raise CredentialsError("No server given: run `ipacs login URL` first, or set IPACS_URL")
    chosen = normalise_url(chosen)
    same_server = stored if stored is not None and stored.url == chosen else None
    username, password = os.environ.get(ENV_USERNAME), os.environ.get(ENV_PASSWORD)
    if username and password:
        session = same_server.session if same_server and same_server.username == username else None
        return Credentials(chosen, username, password, session)
    if same_server is not None and (same_server.session or same_server.password):
        return same_server
    raise CredentialsError(
        f"Not logged in to {chosen}: run `ipacs login {chosen}`, or set IPACS_USERNAME and IPACS_PASSWORD"
    )
