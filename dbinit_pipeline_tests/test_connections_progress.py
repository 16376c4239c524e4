"""One engine per URL for the process, no connection left open by it, throttled progress, GC thresholds."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from dbinit_pipeline.database import engines
from dbinit_pipeline.database.engines import MAX_ENGINES
from dbinit_pipeline.database.server import DatabaseServer, ServerRef, display_url
from dbinit_pipeline.orchestration.stages.schema_progress import throttled
from dbinit_pipeline_tests.conftest import PgServer


def _server(
    pg: PgServer, monkeypatch: pytest.MonkeyPatch, var: str = "DBINIT_TEST_ENGINE_URL"
) -> DatabaseServer:
    monkeypatch.setenv(var, pg.url)
    ref = ServerRef("postgresql", display_url(make_url(pg.url)), f"env:{var}", "postgres")
    return DatabaseServer(ref)


def _our_backends(pg: PgServer) -> int:
    with pg.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dbinit' AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_one_engine_per_url_and_mode_and_no_connection_kept(
    embedded_pg: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _server(embedded_pg, monkeypatch)
    assert server.engine() is server.engine()
    # Another DatabaseServer for the same server (each stage builds its own) shares the engine.
    assert _server(embedded_pg, monkeypatch).engine() is server.engine()
    assert server.engine(autocommit=True) is not server.engine()
    assert server.engine("template1") is not server.engine()
    before = _our_backends(embedded_pg)
    for _ in range(3):
        with server.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
            assert _our_backends(embedded_pg) == before + 1
    # NullPool: nothing of ours stays connected, so a DROP DATABASE never waits for it.
    assert _our_backends(embedded_pg) == before


def test_engines_beyond_the_limit_are_disposed_least_recently_used_first(
    embedded_pg: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _server(embedded_pg, monkeypatch)
    kept = server.engine()
    for i in range(MAX_ENGINES + 4):
        server.engine(f"dbinit_engine_probe_{i}")  # engines are lazy: nothing connects
        assert server.engine() is kept  # used again each time: never the least recent
    assert server.engine("dbinit_engine_probe_0") is not server.engine("dbinit_engine_probe_1")
    assert len(engines._ENGINES) <= MAX_ENGINES
    with server.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1


def test_a_changed_password_gets_a_new_engine(embedded_pg: PgServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server = _server(embedded_pg, monkeypatch)
    first = server.engine()
    monkeypatch.setenv(
        "DBINIT_TEST_ENGINE_URL",
        make_url(embedded_pg.url).set(password="rotated").render_as_string(hide_password=False),
    )
    assert server.engine() is not first


def test_progress_is_throttled_to_tenths_and_the_last() -> None:
    lines: list[tuple[str, int, int]] = []
    report = throttled(lambda p, d, t: lines.append((p, d, t)), every_s=3600)
    total = 2000
    for done in range(1, total + 1):
        report(f"pkg{(done - 1) // 4}", done, total)
    assert lines[0] == ("pkg0", 1, total)
    assert lines[-1] == ("pkg499", total, total)
    assert [d for _, d, _ in lines] == [1, 200, 400, 600, 800, 1000, 1200, 1400, 1600, 1800, 2000]


def test_progress_also_reports_after_a_quiet_interval() -> None:
    lines: list[int] = []
    report = throttled(lambda p, d, t: lines.append(d), every_s=0)
    for done in range(1, 6):
        report("core", done, 1000)
    assert lines == [1, 2, 3, 4, 5]


def test_collect_less_raises_only_a_lower_young_threshold_and_never_reenables_gc() -> None:
    import gc

    from dbinit_pipeline.fastpath.heap import YOUNG_THRESHOLD, collect_less

    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        collect_less()
        assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
        gc.set_threshold(YOUNG_THRESHOLD * 5, 3, 4)
        collect_less()
        assert gc.get_threshold() == (YOUNG_THRESHOLD * 5, 3, 4)
        gc.set_threshold(0, 10, 10)  # someone turned automatic collection off: leave it off
        collect_less()
        assert gc.get_threshold()[0] == 0
    finally:
        gc.set_threshold(*saved)
