"""Keep passwords out of every string the project emits.

Two layers: URLs and DSN key/value pairs are rewritten by pattern, and every password the
process has resolved is registered so that it is replaced wherever it shows up (a driver's
error message, a traceback, a log line), in the spellings it takes on the way (as typed,
percent-encoded in a URL, escaped inside JSON or a Python repr).
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any
from urllib.parse import quote, quote_plus

_HIDDEN = "***"
_known: set[str] = set()
_lock = threading.Lock()

# scheme://user:password@host -> scheme://user:***@host. The password runs to the last "@"
# before the host, so an unencoded "@" inside it (p@ss) is hidden too.
_URL_PASSWORD = re.compile(
    r"(?P<prefix>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>\S+?)"
    r"(?=@[^@\s/?#]*(?:[/?#\s\"',;)\]}]|$))"
)
# password=secret / password: 'se cret' / "password": "secret" / PGPASSWORD=secret
_KV_PASSWORD = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|PGPASSWORD|MasterUserPassword)\b[\"']?\s*[=:]\s*)"
    r"(?:'(?P<single>[^']*)'|\"(?P<double>(?:[^\"\\]|\\.)*)\"|(?P<bare>[^'\"\s,;&)]+))",
    re.IGNORECASE,
)
MIN_SECRET_LENGTH = 3


def _spellings(secret: str) -> set[str]:
    """The forms a secret takes when it is embedded in a URL, JSON or a repr."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}
    forms.add(repr(secret)[1:-1])
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


def register_secret(secret: str | None) -> None:
    """Remember a secret so that `redact` hides it wherever it appears.

    Secrets shorter than three characters are only hidden by the URL and key=value patterns:
    replacing every "ab" in every message would make the messages unreadable.
    """
    if secret and len(secret) >= MIN_SECRET_LENGTH:
        with _lock:
            _known.update(_spellings(secret))


def _hide_kv(match: re.Match[str]) -> str:
    key = match.group("key")
    if match.group("single") is not None:
        return f"{key}'{_HIDDEN}'"
    if match.group("double") is not None:
        return f'{key}"{_HIDDEN}"'
    return key + _HIDDEN


def redact(text: str) -> str:
    """Return `text` with every password hidden."""
    if not text:
        return text
    text = _URL_PASSWORD.sub(lambda m: m.group("prefix") + _HIDDEN, text)
    text = _KV_PASSWORD.sub(_hide_kv, text)
    with _lock:
        secrets = sorted(_known, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, _HIDDEN)
    return text


def redact_data(value: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, strings) with every string redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)) if isinstance(k, str) else k: redact_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(v) for v in value]
    return value
