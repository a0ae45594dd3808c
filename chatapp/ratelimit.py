"""A per-identity limit on how many answers the API starts per minute (per process)."""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque

WINDOW = 60.0


class RateLimiter:
    """Sliding window: at most ``per_minute`` events in any 60 seconds, per key."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._events: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def check(self, key: str) -> int:
        """0 if allowed (and counted); otherwise the seconds to wait (for Retry-After)."""
        if self.per_minute <= 0:
            return 0
        now = time.monotonic()
        with self._lock:
            events = self._events[key]
            while events and events[0] <= now - WINDOW:
                events.popleft()
            if len(events) >= self.per_minute:
                return max(1, math.ceil(events[0] + WINDOW - now))
            events.append(now)
            return 0
