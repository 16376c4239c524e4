"""Fast path `code_cache`: compiled revision scripts kept under the sha256 of their content.

A code object is kept under the checksum the ledger records (and the path it names), like a
.pyc but keyed by content and outside the package folder; it can only ever be the code of
those bytes. Off (DBINIT_FAST_PATHS_OFF=code_cache): every script is compiled from its file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import marshal
from contextlib import suppress
from pathlib import Path
from types import CodeType

from dbinit_pipeline.fastpath import enabled, write_atomic

_CODE_TAG = importlib.util.MAGIC_NUMBER.hex()


class CompiledScripts:
    """Compiled scripts kept in one marshal file of a cache folder, read at most once a process.

    Keyed by the content's sha256 (and the path, which the code object names), so an entry can
    only ever be the code of the bytes the ledger's checksum describes. One file rather than one
    per script: opening 2,000 small files cost more than unmarshalling them all.
    """

    MAX_ENTRIES = 20_000  # past this, a save keeps only what this process used

    def __init__(self, folder: Path) -> None:
        self.file = folder / f"scripts-{_CODE_TAG}.marshal"
        self.codes: dict[str, CodeType] | None = None
        self.used: set[str] = set()
        self.dirty = False

    def get(self, key: str, filename: str) -> CodeType | None:
        if self.codes is None:
            self.codes = {}
            with suppress(OSError, ValueError, EOFError, TypeError):
                loaded = marshal.loads(self.file.read_bytes())
                if isinstance(loaded, dict):
                    self.codes = {k: v for k, v in loaded.items() if isinstance(v, CodeType)}
        code = self.codes.get(key)
        if code is None or code.co_filename != filename:
            return None
        self.used.add(key)
        return code

    def put(self, key: str, code: CodeType) -> None:
        if self.codes is None:
            self.codes = {}
        self.codes[key] = code
        self.used.add(key)
        self.dirty = True

    def save(self) -> None:
        if not self.dirty or self.codes is None:
            return
        codes = self.codes
        if len(codes) > self.MAX_ENTRIES:
            codes = {k: v for k, v in codes.items() if k in self.used}
        write_atomic(self.file, marshal.dumps(codes))
        self.dirty = False


_compiled: dict[Path, CompiledScripts] = {}


def save_compiled() -> None:
    """Write every code cache this process added to."""
    for cache in _compiled.values():
        cache.save()


def cached_code(folder: Path | None, checksum: str, filename: str) -> tuple[CodeType | None, str]:
    """(the kept code of this content, its key), or (None, key) when there is none or the fast
    path is off; the key is "" when nothing may be kept."""
    if folder is None or not enabled("code_cache"):
        return None, ""
    cache = _compiled.setdefault(folder, CompiledScripts(folder))
    key = f"{checksum}-{hashlib.sha256(filename.encode()).hexdigest()[:16]}"
    return cache.get(key, filename), key


def keep_code(folder: Path | None, key: str, code: CodeType) -> None:
    """Keep `code` under `key` (from `cached_code`) until `save_compiled`."""
    if folder is not None and key:
        _compiled.setdefault(folder, CompiledScripts(folder)).put(key, code)
