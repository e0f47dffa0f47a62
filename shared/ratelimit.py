"""Token buckets per caller, in memory: one misbehaving client cannot starve the others.

Each replica keeps its own buckets, so a client's limit across N replicas is N times the
configured rate; the point is fairness between clients, not an exact global quota.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rate:
    per_s: float  # tokens added per second
    burst: int  # bucket size: requests admitted at once after a quiet spell


@dataclass
class RateLimiter:
    max_keys: int = 10_000  # least recently seen buckets beyond this are forgotten (full again)
    # key -> (tokens left, monotonic time they were counted)
    buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)

    def take(self, key: str, rate: Rate, now_s: float) -> float:
        """Admit one request: 0.0, or the seconds until one would be admitted (refused)."""
        tokens, at = self.buckets.pop(key, (float(rate.burst), now_s))
        tokens = min(float(rate.burst), tokens + max(0.0, now_s - at) * rate.per_s)
        wait_s = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait_s = (1.0 - tokens) / rate.per_s
        self.buckets[key] = (tokens, now_s)
        if len(self.buckets) > self.max_keys:
            self.buckets.popitem(last=False)
        return wait_s
