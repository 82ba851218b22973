"""API keys: who may read, who may submit jobs.

A service bound to loopback serves only this machine's users and needs no key. Bound anywhere
else it refuses to start without one: a key is given or generated (and printed once), and
only its SHA-256 is stored (``keys.json`` in the state folder), so the file leaks nothing
usable. Keys are compared in constant time (:func:`hmac.compare_digest` against every stored
hash). A key's scope is ``read`` (datasets and slices) or ``submit`` (also jobs).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import secrets
from pathlib import Path
from typing import Any

from ..core.errors import InvalidInput

SCOPES = ("read", "submit")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; False for anything else (``0.0.0.0`` included)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: may resolve to anything


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """The service's API keys, stored hashed in ``path`` (JSON).

    Parameters
    ----------
    path : path
        The key file (created on the first :meth:`add`).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._keys: list[dict[str, Any]] = []
        if self.path.exists():
            try:
                self._keys = list(json.loads(self.path.read_text())["keys"])
            except (ValueError, KeyError, TypeError):
                raise InvalidInput(f"{self.path}: not a usidgpu key file; move it away to start afresh") from None

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, scope: str = "submit", key: str | None = None, label: str = "") -> str:
        """Store a key (a new random one unless given); returns the key itself, shown only now."""
        if scope not in SCOPES:
            raise InvalidInput(f"key scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        key = key or secrets.token_urlsafe(32)
        if len(key) < 16:
            raise InvalidInput("an API key needs at least 16 characters")
        self._keys.append({"sha256": _hash(key), "scope": scope, "label": label})
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"keys": self._keys}, fh, indent=1)
        os.replace(tmp, self.path)
        return key

    def scope_of(self, key: str | None) -> str | None:
        """The scope of ``key``, or None when it is no key of this service."""
        found = self.lookup(key)
        return found[0] if found else None

    def lookup(self, key: str | None) -> tuple[str, str] | None:
        """``(scope, client id)`` of ``key`` (the id: a short prefix of its hash, for limits and
        logs), or None when it is no key of this service.

        Every stored hash is compared (in constant time), so the time taken does not tell how
        close a guess was nor which entry matched.
        """
        if not key:
            return None
        digest = _hash(key)
        found = None
        for entry in self._keys:
            if hmac.compare_digest(digest, entry["sha256"]):
                found = (entry["scope"], "key:" + entry["sha256"][:12])
        return found
