"""The Dagster instance of this project: where it is stored, and `make ui`, which serves it.

Storage is dagster-postgres (run, event-log and schedule storage) on the database whose URL is
in $DAGSTER_PG_URL: in production an external PostgreSQL. When the variable is unset (a fresh
clone, `make ui`, `dagster job execute` from the project folder with DAGSTER_HOME unset), it is
the `dagster` database of the project's own embedded PostgreSQL in `.dbinit/dagster-instance/`,
started on first use. So every Dagster command run from the project folder shares one instance:
the run-failure sensor of `make ui` sees the runs of `dagster job execute` too.

`python -m dbinit_pipeline.orchestration.instance` (what `make ui` runs) starts dagster-webserver on
127.0.0.1:3000 ($DAGSTER_WEBSERVER_PORT) and dagster-daemon against that instance; Ctrl-C stops
both, then the embedded servers this session started. `--stop` stops an embedded instance
server that a `dagster job execute` left running.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from dagster import Field
from dagster._config.config_schema import UserConfigSchema
from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from sqlalchemy.engine import URL, make_url

from dbinit_pipeline.database.embedded import EmbeddedPostgres
from dbinit_pipeline.redaction import redact, register_secret

URL_ENV = "DAGSTER_PG_URL"
EMBEDDED_DIR = ".dbinit/dagster-instance"
DATABASE = "dagster"
DEFAULT_PORT = 3000
LOCAL_HOME = ".dagster_home"


@dataclass(frozen=True)
class InstanceDatabase:
    """The database that holds the Dagster instance."""

    url: str  # password included: handed to Dagster, never printed
    embedded: EmbeddedPostgres | None
    started: bool  # True when this call started the embedded server

    @property
    def display(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)


def dagster_postgres_url(url: str) -> str:
    """`url` with the psycopg2 driver named: dagster-postgres needs psycopg2, and SQLAlchemy 2.1
    picks psycopg 3 for a bare postgresql:// URL (its NOTIFY then fails with a syntax error)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed.render_as_string(hide_password=False)


def _create_database(admin: URL, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=admin.host,
        port=admin.port,
        user=admin.username,
        password=admin.password,
        dbname=admin.database,
        autocommit=True,
    ) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return
        # another process may create it in between: that is as good
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def prepare_instance_database(
    *,
    url_env: str = URL_ENV,
    embedded_dir: str = EMBEDDED_DIR,
    database: str = DATABASE,
    environ: Mapping[str, str] | None = None,
) -> InstanceDatabase:
    """The instance database: $url_env when set, else a database on the embedded server (started if needed)."""
    env = os.environ if environ is None else environ
    explicit = env.get(url_env)
    if explicit:
        url = dagster_postgres_url(explicit)
        register_secret(make_url(url).password)
        return InstanceDatabase(url=url, embedded=None, started=False)
    server = EmbeddedPostgres(Path(embedded_dir).expanduser().resolve())
    status = server.ensure_running()
    admin = URL.create(
        "postgresql",
        username=status.user,
        password=server.password(),
        host=status.host,
        port=status.port,
        database="postgres",
    )
    _create_database(admin, database)
    url = dagster_postgres_url(admin.set(database=database).render_as_string(hide_password=False))
    return InstanceDatabase(url=url, embedded=server, started=status.started)


class ProjectPostgresStorage(DagsterPostgresStorage):
    """dagster-postgres storage on $DAGSTER_PG_URL, or on the project's embedded PostgreSQL.

    Configured in dagster.yaml with the NAME of the variable, so the instance configuration that
    the UI shows never holds a password.
    """

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return {
            "url_env": Field(str, default_value=URL_ENV, description="variable holding the instance URL"),
            "embedded_dir": Field(
                str, default_value=EMBEDDED_DIR, description="embedded server folder when it is unset"
            ),
            "database": Field(str, default_value=DATABASE, description="database on the embedded server"),
            "should_autocreate_tables": Field(bool, default_value=True),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> ProjectPostgresStorage:
        found = prepare_instance_database(
            url_env=config_value.get("url_env", URL_ENV),
            embedded_dir=config_value.get("embedded_dir", EMBEDDED_DIR),
            database=config_value.get("database", DATABASE),
        )
        return cls(
            postgres_url=found.url,
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            inst_data=inst_data,
        )


# -- make ui ------------------------------------------------------------------------------
def storage_settings(dagster_yaml: Path) -> dict[str, Any] | None:
    """The config of ProjectPostgresStorage in `dagster_yaml`, or None when it stores elsewhere."""
    document = yaml.safe_load(dagster_yaml.read_text()) or {}
    storage = (document.get("storage") or {}).get("custom") or {}
    if storage.get("class") != ProjectPostgresStorage.__name__:
        return None
    settings: dict[str, Any] = dict(storage.get("config") or {})
    return settings


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _embedded_environment_servers(root: Path) -> dict[str, EmbeddedPostgres]:
    """The embedded servers of the project's environments (`.dbinit/<env>/`)."""
    try:
        from dbinit_pipeline.configuration import load_config

        config = load_config(root / "dbinit.yaml")
    except Exception:
        return {}
    return {
        env: EmbeddedPostgres(config.state_dir / env)
        for env in config.model.environments
        if config.hosting(env) == "embedded"
    }


class _Children:
    """The webserver and the daemon, each in its own session so that Ctrl-C reaches us first."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> None:
        self.procs[name] = subprocess.Popen(list(argv), env=dict(env), cwd=cwd, start_new_session=True)

    def exited(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is not None]

    def stop(self, *, grace: float = 30.0) -> None:
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        # Code servers and run workers share their parent's group; a code server may wait up to
        # a minute for open calls after SIGTERM, which nobody needs once its parent is gone.
        settle = time.monotonic() + 5
        while time.monotonic() < settle and any(_group_alive(p) for p in self.procs.values()):
            time.sleep(0.2)
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _group_alive(proc: subprocess.Popen[bytes]) -> bool:
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _say(message: str) -> None:
    sys.stderr.write(f"[make ui] {redact(message)}\n")
    sys.stderr.flush()


def serve(root: Path, *, host: str = "127.0.0.1", port: int | None = None) -> int:
    """Run dagster-webserver and dagster-daemon against the project's instance until interrupted."""
    root = root.resolve()
    port = port or int(os.environ.get("DAGSTER_WEBSERVER_PORT") or DEFAULT_PORT)
    if _port_in_use(host, port):
        _say(f"{host}:{port} is already in use; set DAGSTER_WEBSERVER_PORT to another port")
        return 2
    home = Path(os.environ.get("DAGSTER_HOME") or root / LOCAL_HOME).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    if home == root / LOCAL_HOME or not (home / "dagster.yaml").exists():
        shutil.copyfile(root / "dagster.yaml", home / "dagster.yaml")
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(home)
    env.setdefault("DAGSTER_WEBSERVER_URL", f"http://{host}:{port}")
    env.setdefault("DBINIT_CONFIG", str(root / "dbinit.yaml"))

    settings = storage_settings(home / "dagster.yaml")
    database: InstanceDatabase | None = None
    if settings is not None:
        url_env = settings.get("url_env", URL_ENV)
        _say("preparing the instance database")
        database = prepare_instance_database(
            url_env=url_env,
            embedded_dir=str(root / settings.get("embedded_dir", EMBEDDED_DIR)),
            database=settings.get("database", DATABASE),
        )
        env[url_env] = database.url  # children use it as is instead of resolving it again
        how = " (embedded PostgreSQL, started now)" if database.started else ""
        _say(f"instance: {home} on {database.display}{how}")
    environments = _embedded_environment_servers(root)
    running_before = {name for name, server in environments.items() if server.running_port() is not None}

    bin_dir = Path(sys.executable).parent
    workspace = str(root / "workspace.yaml")
    children = _Children()
    interrupted: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        interrupted.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        children.start("dagster-daemon", [str(bin_dir / "dagster-daemon"), "run", "-w", workspace], env, root)
        children.start(
            "dagster-webserver",
            [str(bin_dir / "dagster-webserver"), "-h", host, "-p", str(port), "-w", workspace],
            env,
            root,
        )
        _say(f"Dagster UI on http://{host}:{port} (daemon running); Ctrl-C stops both")
        while not interrupted:
            dead = children.exited()
            if dead:
                _say(f"{', '.join(dead)} exited; stopping")
                code = 1
                break
            time.sleep(0.5)
    finally:
        _say("stopping dagster-webserver and dagster-daemon")
        children.stop()
        for name, server in environments.items():
            if name not in running_before and server.running_port() is not None:
                _say(f"stopping the embedded PostgreSQL of {name} (started during this session)")
                server.stop()
        if database is not None and database.embedded is not None:
            if database.started:
                _say("stopping the instance's embedded PostgreSQL")
                database.embedded.stop()
            else:
                _say("the instance's embedded PostgreSQL was running before make ui: left running")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dbinit_pipeline.orchestration.instance",
        description="The Dagster UI and daemon on this project's instance (what `make ui` runs).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default: $DAGSTER_WEBSERVER_PORT or 3000")
    parser.add_argument("--root", default=".", help="the project folder (dagster.yaml, workspace.yaml)")
    parser.add_argument(
        "--stop",
        action="store_true",
        help="only stop the embedded instance server (e.g. one a `dagster job execute` started)",
    )
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    if args.stop:
        settings = storage_settings(root / "dagster.yaml") or {}
        server = EmbeddedPostgres(root / settings.get("embedded_dir", EMBEDDED_DIR))
        running = server.running_port() is not None
        server.stop()
        _say(
            "stopped the instance's embedded PostgreSQL"
            if running
            else "the instance's embedded PostgreSQL is not running"
        )
        return 0
    return serve(root, host=args.host, port=args.port)


if __name__ == "__main__":
    sys.exit(main())
