"""Redis clients: one factory, and the one place that holds their timeouts."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import redis

# A healthy Redis answers in a millisecond. One that is down or stalled must cost a
# request half a second, not redis-py's 5 s per wait: every caller of ours falls back
# (the circuit breaker fails open, the rate limiter counts in memory) rather than wait,
# and a request that waits holds one of the worker's few threads.
REDIS_TIMEOUTS: Mapping[str, float] = MappingProxyType({"socket_timeout": 0.5, "socket_connect_timeout": 0.5})


def redis_client(url: str) -> redis.Redis:
    """A client for `url` (redis://, rediss:// or unix://) with the short timeouts."""
    return redis.Redis.from_url(url, **REDIS_TIMEOUTS)
