"""Plain Alembic, as a user of another project runs it: a minimal env.py and the `alembic` commands,
to compare what dbinit does with what Alembic does, and schema dumps to compare the results."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

# The env.py `alembic init` writes, reduced to the online path (the URL and the version table
# come from the Config, as they would from alembic.ini).
ENV_PY = """\
from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, version_table=config.get_main_option("version_table"))
    with context.begin_transaction():
        context.run_migrations()
"""


def alembic_config(tmp: Path, versions: Path, url: str, version_table: str = "alembic_version") -> Config:
    """An Alembic Config whose env.py is the minimal one and whose scripts are `versions`."""
    env_dir = tmp / "alembic_env"
    env_dir.mkdir(parents=True, exist_ok=True)
    (env_dir / "env.py").write_text(ENV_PY)
    config = Config(stdout=io.StringIO())
    config.set_main_option("script_location", str(env_dir))
    config.set_main_option("version_locations", str(versions))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.set_main_option("version_table", version_table)
    return config


def current(config: Config) -> str:
    """What `alembic current` prints."""
    out = config.stdout
    assert isinstance(out, io.StringIO)
    out.seek(0)
    out.truncate()
    command.current(config)
    return out.getvalue().strip()


def pg_dump_schema(
    url: str, database: str, exclude: tuple[str, ...] = (), *, binary: str = "pg_dump", data_of: str = ""
) -> str:
    """`pg_dump --schema-only` of `database`, without comments and the per-dump restrict key (with
    `data_of`: schema and rows of that one table)."""
    u = make_url(url)
    only = ["-t", data_of] if data_of else ["--schema-only"]
    args = [binary, *only, "--no-owner", "--no-privileges", "-h", str(u.host or "127.0.0.1")]
    args += ["-p", str(u.port or 5432), "-U", str(u.username or "postgres"), "-d", database]
    for pattern in exclude:
        args += ["-T", pattern]
    env = {"PGPASSWORD": u.password or "", "PATH": "/usr/bin:/bin"}
    dump = subprocess.run(args, check=True, capture_output=True, text=True, env=env, timeout=120).stdout
    return "\n".join(
        line
        for line in dump.splitlines()
        if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict"))
    )


def mysqldump_schema(url: str, database: str, exclude: tuple[str, ...] = ()) -> str:
    """`mysqldump --no-data` of `database`, without comments."""
    u = make_url(url)
    args = ["mysqldump", "--no-data", "--skip-comments", "--compact", "-h", str(u.host or "127.0.0.1")]
    args += ["-P", str(u.port or 3306), "-u", str(u.username or "root")]
    if u.password:
        args.append(f"-p{u.password}")
    args += [f"--ignore-table={database}.{t}" for t in exclude]
    args.append(database)
    dump = subprocess.run(args, check=True, capture_output=True, text=True, timeout=120).stdout
    return re.sub(r" AUTO_INCREMENT=\d+", "", dump)


_UPGRADE = """
import sys
from pathlib import Path
from alembic import command
from dbinit_pipeline_tests.support.alembic import alembic_config
command.upgrade(alembic_config(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]), "head")
if sys.argv[5] == "without-dagster":
    assert "dagster" not in sys.modules, "plain Alembic must run without Dagster's SQL storage imported"
"""


def plain_upgrade(
    tmp: Path, versions: Path, url: str, version_table: str, *, scripts_import_dagster: bool = False
) -> subprocess.CompletedProcess[str]:
    """`alembic upgrade head` in a fresh interpreter, where Dagster was never imported (its SQL
    storage rewrites MySQL DDL process-wide): what Alembic does outside Dagster. Dagster's own
    history imports Dagster itself (`scripts_import_dagster`)."""
    root = Path(__file__).resolve().parents[2]  # the checkout, where dbinit_pipeline_tests imports from
    return subprocess.run(
        [
            sys.executable,
            "-c",
            _UPGRADE,
            str(tmp),
            str(versions),
            url,
            version_table,
            "with-dagster" if scripts_import_dagster else "without-dagster",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
    )


def failing_script(stderr: str, versions: Path) -> tuple[str, str] | None:
    """From a traceback: the last frame in `versions` (file, line) of a failed plain upgrade."""
    frames = re.findall(r'File "([^"]+)", line (\d+)', stderr)
    inside = [(f, n) for f, n in frames if f.startswith(str(versions))]
    return inside[-1] if inside else None
