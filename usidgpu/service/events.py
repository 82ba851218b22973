"""The service's event log: what changed (datasets, jobs), numbered, for the live stream.

Clients follow ``GET /api/v1/events`` (Server-Sent Events): each event has an increasing id, so
a client that reconnects with ``Last-Event-ID`` misses nothing still in the log. The log keeps
the last :data:`KEEP` events in memory; the catalog and the job table stay the record.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from typing import Any

KEEP = 10000


class EventLog:
    """A bounded, thread-safe list of numbered events."""

    def __init__(self, keep: int = KEEP) -> None:
        self._events: deque[tuple[int, str, dict[str, Any]]] = deque(maxlen=keep)
        self._next = 1
        self._cond = threading.Condition()

    def publish(self, kind: str, data: dict[str, Any]) -> int:
        """Add an event (``dataset``, ``job``, ``failed``); returns its id."""
        with self._cond:
            event_id = self._next
            self._next += 1
            self._events.append((event_id, kind, dict(data, time=time.time())))
            self._cond.notify_all()
        return event_id

    @property
    def last_id(self) -> int:
        with self._cond:
            return self._next - 1

    def since(self, after: int) -> list[tuple[int, str, dict[str, Any]]]:
        """Events with ids above ``after`` still in the log, oldest first."""
        with self._cond:
            return [e for e in self._events if e[0] > after]

    def wait(self, after: int, timeout: float) -> list[tuple[int, str, dict[str, Any]]]:
        """Like :meth:`since`, waiting up to ``timeout`` seconds for one to come."""
        with self._cond:
            if self._next - 1 <= after:
                self._cond.wait(timeout)
            return [e for e in self._events if e[0] > after]


def sse(event_id: int, kind: str, data: dict[str, Any]) -> bytes:
    """One event in the Server-Sent Events wire format."""
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()
