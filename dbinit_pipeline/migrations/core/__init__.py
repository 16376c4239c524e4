"""The core schema (auth and workspaces), shipped as the implicit package `core`."""

from __future__ import annotations

from pathlib import Path

CORE_PACKAGE_DIR = Path(__file__).parent
