"""The one way times are written in responses, approvals and messages: UTC, to the second, `Z`."""

from __future__ import annotations

from datetime import UTC, datetime


def stamp(moment: datetime | None = None) -> str:
    """`moment` (now when None) as `2026-12-03T13:45:39Z`; a naive time is taken to be UTC."""
    moment = moment or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
