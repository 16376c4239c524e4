"""Keep passwords out of every string the project emits.

Two layers: URLs and DSN key/value pairs are rewritten by pattern, and every password the
process has resolved is registered so that it is replaced wherever it shows up (a driver's
error message, a traceback, a log line).
"""

from __future__ import annotations

import re
import threading

_HIDDEN = "***"
_known: set[str] = set()
_lock = threading.Lock()

# scheme://user:password@host  ->  scheme://user:***@host
_URL_PASSWORD = re.compile(r"(?P<prefix>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?=@)")
# password=secret / password: 'secret' / PGPASSWORD=secret in DSNs and messages
_KV_PASSWORD = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|PGPASSWORD|MasterUserPassword)\b\s*[=:]\s*['\"]?)"
    r"(?P<pw>[^'\"\s,;&)]+)",
    re.IGNORECASE,
)


def register_secret(secret: str | None) -> None:
    """Remember a secret so that `redact` hides it wherever it appears."""
    if secret and len(secret) >= 3:
        with _lock:
            _known.add(secret)


def redact(text: str) -> str:
    """Return `text` with every password hidden."""
    if not text:
        return text
    text = _URL_PASSWORD.sub(lambda m: m.group("prefix") + _HIDDEN, text)
    text = _KV_PASSWORD.sub(lambda m: m.group("key") + _HIDDEN, text)
    with _lock:
        secrets = sorted(_known, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, _HIDDEN)
    return text
