"""Fast path `facts_cache`: what each package file declares, kept under the sha256 of its content.

Off (DBINIT_FAST_PATHS_OFF=facts_cache): every manifest and script is parsed on every run.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from dbinit_pipeline.fastpath import enabled, write_atomic


class FactsCache:
    """Facts of scripts and manifests keyed by the sha256 of their content, kept in one JSON file.

    Entries are only ever added for content that parsed cleanly, so a broken file is read (and
    reported) again every time. The file also records a digest of this module: any change to
    how facts are derived drops the whole cache. A missing, unreadable or foreign file is an
    empty cache; a cache that cannot be written is simply not kept.
    """

    def __init__(self, path: Path | None, derivation: str) -> None:
        # `derivation`: a digest of the code that derives the facts; a file from other code is ignored
        self.derivation = derivation
        self.path = path if enabled("facts_cache") else None
        # Compiled scripts, beside the facts: same key (the content's sha256), same lifetime.
        self.code_dir = path.with_name("code") if path is not None else None
        self._scripts: dict[str, dict[str, Any]] = {}
        self._manifests: dict[str, dict[str, Any]] = {}
        self._used: set[str] = set()
        self._dirty = False
        if self.path is None:
            return
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            data = json.loads(self.path.read_bytes())
            if data.get("derivation") == derivation:
                self._scripts = dict(data["scripts"])
                self._manifests = dict(data["manifests"])

    def script(self, digest: str) -> dict[str, Any] | None:
        found = self._scripts.get(digest)
        if found is not None:
            self._used.add(digest)
        return found

    def put_script(self, digest: str, facts: dict[str, Any]) -> None:
        self._scripts[digest] = facts
        self._used.add(digest)
        self._dirty = True

    def manifest(self, digest: str) -> dict[str, Any] | None:
        found = self._manifests.get(digest)
        if found is not None:
            self._used.add(digest)
        return found

    def put_manifest(self, digest: str, raw: dict[str, Any]) -> None:
        self._manifests[digest] = raw
        self._used.add(digest)
        self._dirty = True

    def save(self) -> None:
        """Write the entries used since loading (entries of files gone or changed are dropped)."""
        unused = (len(self._scripts) + len(self._manifests)) - len(self._used)
        if self.path is None or not (self._dirty or unused > 0):
            return
        payload = {
            "derivation": self.derivation,
            "scripts": {k: v for k, v in self._scripts.items() if k in self._used},
            "manifests": {k: v for k, v in self._manifests.items() if k in self._used},
        }
        write_atomic(self.path, json.dumps(payload, separators=(",", ":")).encode())
        self._dirty = False
