"""The API edge's rate-limit storage, on its own (the 429 answers are tested through a service: test_edges)."""

from __future__ import annotations

import threading
import time

from limits import parse
from limits.strategies import MovingWindowRateLimiter

from labornet.shared.edge import InlineExpiryMemoryStorage, rate_limit_storage


def test_counting_starts_no_thread_and_expired_entries_are_dropped_by_later_counts() -> None:
    """``memory://`` counts requests without a timer thread per count (limits' own memory storage started one
    whenever the last had finished), admits what a moving window admits, and still frees the entries of windows
    that ended: the next count after the expiry interval drops them."""
    storage = rate_limit_storage("memory://")
    assert isinstance(storage, InlineExpiryMemoryStorage)
    storage.expiry_interval_s = 0.2
    limiter = MovingWindowRateLimiter(storage)
    per_second = parse("5/second")
    time.sleep(0.05)  # the storage's own first timer (started once, at construction) has run out

    threads = threading.active_count()
    admitted, during = [], []
    for _ in range(8):
        admitted.append(limiter.hit(per_second, "address", "10.0.0.1"))
        during.append(threading.active_count())  # a timer started by the count lives 10 ms
        time.sleep(0.02)  # counts farther apart than limits' timer
    assert during == [threads] * 8, "a count started a thread"
    assert admitted == [True] * 5 + [False] * 3

    assert storage.events, "the window's entries are held"
    time.sleep(1.1)  # the window (1 s) and the expiry interval are over
    assert limiter.hit(per_second, "address", "10.0.0.2")
    held = {key: len(entries) for key, entries in storage.events.items()}
    # 10.0.0.1's entries were dropped (limits keeps the emptied list under its key)
    assert held == {"LIMITER/address/10.0.0.1/5/1/second": 0, "LIMITER/address/10.0.0.2/5/1/second": 1}
    assert limiter.hit(per_second, "address", "10.0.0.1")  # a new window: admitted again
