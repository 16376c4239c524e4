"""The off switches of the fast paths, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbinit_pipeline.fastpath import FAST_PATHS, OFF_VARIABLE, enabled
from dbinit_pipeline.fastpath.code_cache import cached_code, keep_code, save_compiled
from dbinit_pipeline.fastpath.facts_cache import FactsCache


@pytest.mark.parametrize("value", ["", " ", "nothing_known"])
def test_every_fast_path_is_on_unless_named(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(OFF_VARIABLE, value)
    assert all(enabled(name) for name in FAST_PATHS)


def test_a_named_fast_path_is_off_and_all_turns_every_one_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OFF_VARIABLE, "code_cache, collector")
    assert [name for name in FAST_PATHS if not enabled(name)] == ["code_cache", "collector"]
    monkeypatch.setenv(OFF_VARIABLE, "all")
    assert not any(enabled(name) for name in FAST_PATHS)


def test_an_unknown_fast_path_name_in_code_is_a_bug_named_at_once() -> None:
    with pytest.raises(ValueError, match="unknown fast path 'write_ahead'"):
        enabled("write_ahead")


def test_the_facts_cache_off_neither_reads_nor_writes_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cache" / "facts.json"
    on = FactsCache(path, "d1")
    on.put_script("abc", {"revision": "r1"})
    on.save()
    assert FactsCache(path, "d1").script("abc") == {"revision": "r1"}
    assert FactsCache(path, "other code").script("abc") is None  # facts of other code are dropped
    monkeypatch.setenv(OFF_VARIABLE, "facts_cache")
    off = FactsCache(path, "d1")
    assert off.script("abc") is None
    off.put_script("def", {"revision": "r2"})
    off.save()
    monkeypatch.delenv(OFF_VARIABLE)
    assert FactsCache(path, "d1").script("def") is None


def test_the_code_cache_off_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = compile("x = 1", "/scripts/a.py", "exec")
    found, key = cached_code(tmp_path, "sum1", "/scripts/a.py")
    assert found is None and key
    keep_code(tmp_path, key, code)
    save_compiled()
    assert cached_code(tmp_path, "sum1", "/scripts/a.py")[0] is code
    assert cached_code(tmp_path, "sum2", "/scripts/a.py")[0] is None  # other content, other key
    monkeypatch.setenv(OFF_VARIABLE, "code_cache")
    assert cached_code(tmp_path, "sum1", "/scripts/a.py") == (None, "")
