"""Limits per client: requests per second, and jobs waiting or running.

One user's script in a loop must not starve the group: each client (its API key, or its address
on an open loopback service) has a token bucket of requests (``rate`` per second, bursts up to
``burst``) and a cap on its jobs that are queued or running. Over a limit the answer is 429 with
``Retry-After``.
"""

from __future__ import annotations

import math
import threading
import time

from ..core.errors import UsidgpuError


class TooManyRequests(UsidgpuError):
    """A client over its limit (HTTP 429)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimiter:
    """Token buckets, one per client.

    Parameters
    ----------
    rate : float
        Requests per second a client may make on average (0: no limit).
    burst : int
        Requests it may make at once.
    """

    def __init__(self, rate: float = 500.0, burst: int = 1000) -> None:
        self.rate, self.burst = float(rate), max(1, int(burst))
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, client: str) -> None:
        """Spend one request of ``client``'s bucket.

        Raises
        ------
        TooManyRequests
            The bucket is empty.
        """
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < 1:
                wait = (1 - tokens) / self.rate
                self._buckets[client] = (tokens, now)
                raise TooManyRequests(
                    f"more than {self.rate:g} requests per second; retry in {wait:.2f} s", retry_after=wait
                )
            self._buckets[client] = (tokens - 1, now)
            if len(self._buckets) > 10000:  # forget idle clients (their buckets are full anyway)
                full = [c for c, (t, seen) in self._buckets.items() if now - seen > self.burst / self.rate]
                for c in full:
                    del self._buckets[c]


def check_job_quota(active: int, limit: int) -> None:
    """Refuse a job when the client has ``limit`` jobs queued or running already."""
    if limit > 0 and active >= limit:
        raise TooManyRequests(
            f"{active} of your jobs are queued or running (the limit is {limit}); wait for some to finish",
            retry_after=5.0,
        )


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds (at least 1)."""
    return str(max(1, math.ceil(seconds)))
