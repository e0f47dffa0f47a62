"""The waiting line: tickets by what they need, each class a heap ordered best first.

A class is (pool, channel, category, language): every ticket in it asks the same of an
agent, so an agent with free capacity finds the best ticket it may take by looking at the
top of each class it fits (a few dozen heaps) instead of at every waiting ticket.
Removal is lazy: an entry is live while its token is the ticket's current one; heaps are
compacted when stale entries outnumber live ones.

Beside it, per priority, a heap by waiting-since answers "oldest waiting" and a counter
answers "queue depth" without a scan.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from services.router.priority import PRIORITIES, QueueKey
from shared.contracts.common import Category, Channel, Priority

ClassKey = tuple[str, Channel, Category, str]  # (pool, channel, category, language)


@dataclass
class Waiting:
    """What the queue keeps of a waiting ticket."""

    ticket_id: str
    klass: ClassKey
    key: QueueKey
    priority: Priority
    waiting_since_ts: float
    token: int


@dataclass
class TicketQueue:
    classes: dict[ClassKey, list[tuple[QueueKey, int, str]]] = field(default_factory=dict)
    by_age: dict[Priority, list[tuple[float, int, str]]] = field(
        default_factory=lambda: {p: [] for p in PRIORITIES}
    )
    live: dict[str, Waiting] = field(default_factory=dict)
    depth: dict[Priority, int] = field(default_factory=lambda: dict.fromkeys(PRIORITIES, 0))
    _tokens: int = 0
    _entries: int = 0

    def __len__(self) -> int:
        return len(self.live)

    def __contains__(self, ticket_id: str) -> bool:
        return ticket_id in self.live

    def push(
        self,
        ticket_id: str,
        klass: ClassKey,
        key: QueueKey,
        priority: Priority,
        waiting_since_ts: float,
    ) -> None:
        """Add or re-rank a ticket."""
        self.remove(ticket_id)
        self._tokens += 1
        w = Waiting(ticket_id, klass, key, priority, waiting_since_ts, self._tokens)
        self.live[ticket_id] = w
        self.depth[priority] += 1
        heapq.heappush(self.classes.setdefault(klass, []), (key, w.token, ticket_id))
        heapq.heappush(self.by_age[priority], (waiting_since_ts, w.token, ticket_id))
        self._entries += 1
        if self._entries > 2 * len(self.live) + 1024:
            self._compact()

    def remove(self, ticket_id: str) -> None:
        w = self.live.pop(ticket_id, None)
        if w is not None:
            self.depth[w.priority] -= 1

    def _alive(self, token: int, ticket_id: str) -> bool:
        w = self.live.get(ticket_id)
        return w is not None and w.token == token

    def top(self, klass: ClassKey) -> tuple[QueueKey, str] | None:
        heap = self.classes.get(klass)
        while heap:
            key, token, tid = heap[0]
            if self._alive(token, tid):
                return key, tid
            heapq.heappop(heap)
            self._entries -= 1
        return None

    def best(self, accepts: Callable[[ClassKey, QueueKey], bool]) -> str | None:
        """The best waiting ticket among classes whose top `accepts` takes."""
        found: tuple[QueueKey, str] | None = None
        for klass in list(self.classes):
            top = self.top(klass)
            if top is None:
                continue
            if (found is None or top[0] < found[0]) and accepts(klass, top[0]):
                found = top
        return found[1] if found else None

    def oldest_since(self, priority: Priority) -> float | None:
        """When the longest-waiting ticket of `priority` started waiting (epoch seconds)."""
        heap = self.by_age[priority]
        while heap:
            ts, token, tid = heap[0]
            if self._alive(token, tid):
                return ts
            heapq.heappop(heap)
        return None

    def ordered(self) -> Iterator[str]:
        """Every waiting ticket id, best first (for listings and tests; O(n log n))."""
        return (w.ticket_id for w in sorted(self.live.values(), key=lambda w: w.key))

    def _compact(self) -> None:
        self.classes = {}
        for p in PRIORITIES:
            self.by_age[p] = []
        for w in self.live.values():
            self.classes.setdefault(w.klass, []).append((w.key, w.token, w.ticket_id))
            self.by_age[w.priority].append((w.waiting_since_ts, w.token, w.ticket_id))
        for heap in self.classes.values():
            heapq.heapify(heap)
        for age_heap in self.by_age.values():
            heapq.heapify(age_heap)
        self._entries = len(self.live)
