"""The explorer's one model lock, served by deadline.

Every short computation that touches the explorer's model (hooks, evaluation mode,
ablation) runs under one lock, so two requests never see each other's ablated units.
When several wait, the earliest deadline for its kind goes first.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

TOP5, MAP, ABLATION = 0, 1, 2  # kinds of short request, cheapest first


class DeadlineLock:
    """A lock that serves waiting requests by deadline: each arrives with a deadline of
    its arrival time plus ``slack`` times the usual duration of its kind (an average of
    how long that kind held the lock), and the earliest deadline goes first. A top-5
    waits for the computation running now, not behind a queue of maps and ablations, and
    no kind waits forever: under load every kind waits about in proportion to its cost.
    ``with lock(kind):`` holds it (``kind``: ``TOP5``, ``MAP`` or ``ABLATION``)."""

    def __init__(self, slack: float = 4.0) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._waiting: list[tuple[float, int]] = []  # a heap of (deadline, arrival)
        self._arrival = itertools.count()
        self.slack = slack
        self.usual = [0.005 * (1 + k) for k in range(3)]  # seconds, by kind

    @contextmanager
    def __call__(self, kind: int) -> Iterator[None]:
        with self._cond:
            ticket = (time.monotonic() + self.slack * self.usual[kind], next(self._arrival))
            heapq.heappush(self._waiting, ticket)
            while self._busy or self._waiting[0] != ticket:
                self._cond.wait()
            heapq.heappop(self._waiting)
            self._busy = True
        start = time.monotonic()
        try:
            yield
        finally:
            with self._cond:
                self.usual[kind] = 0.8 * self.usual[kind] + 0.2 * (time.monotonic() - start)
                self._busy = False
                self._cond.notify_all()


__all__ = [
    "ABLATION",
    "MAP",
    "TOP5",
    "DeadlineLock",
]
