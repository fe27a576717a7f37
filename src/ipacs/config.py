"""Settings, read from IPACS_* environment variables (see the README's table)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IPACS_", extra="ignore")

    data_dir: Path = Path("./ipacs-data")
    # Empty means "embedded SQLite inside data_dir".
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    dicom_port: int = 11112
    dicom_ae_title: str = "IPACS"
    # Worker threads per process for requests (blocking database work; anyio's default),
    # and how many DICOM uploads (HTTP, STOW-RS) a process reads at once, each holding a
    # thread of its own for its whole body.
    threads: int = 40
    concurrent_uploads: int = 16

    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"

    admin_username: str = "admin"
    admin_password: SecretStr | None = None

    session_idle_timeout: int = Field(1800, description="seconds without a request")
    session_absolute_lifetime: int = Field(12 * 3600, description="seconds since login")
    cookie_secure: bool = False
    # Origins (scheme://host[:port]) besides our own allowed to send cookie-authenticated writes.
    allowed_origins: list[str] = []
    max_sessions_per_user: int = 20

    # Basic auth: how long a verified password is remembered in memory.
    credential_cache_seconds: int = 60
    login_max_failures: int = 5
    login_max_failures_per_address: int = 30
    login_failure_window: int = 300

    # Argon2id cost; lower it only for tests.
    argon2_time_cost: int = 3
    argon2_memory_cost_kib: int = 65536
    argon2_parallelism: int = 4

    max_request_bytes: int = 10 * 1024 * 1024
    # Longest query string (the part of the URL after "?") a request may have; longer is 414.
    max_query_bytes: int = 16 * 1024
    # Slow clients: seconds a JSON body may go without data (408), seconds an idle
    # keep-alive connection stays open, bytes of request line and headers (h11).
    body_idle_timeout: float = 60.0
    keep_alive_timeout: int = 5
    max_header_bytes: int = 64 * 1024
    max_upload_bytes: int = 4 * 1024 * 1024 * 1024
    max_instance_bytes: int = 2 * 1024 * 1024 * 1024
    # Run the C-STORE receiver inside the app process (off when `serve`
    # runs several workers and keeps the receiver in the supervisor).
    dicom_in_app: bool = True
    sqlite_busy_timeout_ms: int = 30000
    # `ipacs store sweep` leaves files younger than this alone (seconds).
    store_sweep_grace: int = 3600

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'ipacs.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
