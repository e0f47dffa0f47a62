"""Folds published journal entries into `sla_timers`, in order, off the engine's hot path.

Entries are offered in the order they were journaled and marked published once Kafka has
acknowledged all their events. The compactor takes the published prefix, writes the latest
snapshot of each timer in small chunks (so a firing never waits long behind it on MongoDB),
then deletes those entries. It never skips an unpublished entry: after a failure it stops
until the engine reloads, and the reload replays everything still in the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from services.sla.store import JournalEntry, SlaJournal, SlaStore, merge_timers

log = logging.getLogger(__name__)


@dataclass
class Compactor:
    store: SlaStore
    journal: SlaJournal
    may_write: Callable[[], bool] = lambda: True  # the lease is still ours
    on_stored: Callable[[list[str]], None] = lambda ids: None
    # False while a threshold is about to fall due: firing goes first on MongoDB.
    quiet: Callable[[], bool] = lambda: True
    chunk: int = 16
    interval_s: float = 0.25
    # Past this many entries waiting, compaction no longer waits for a quiet moment.
    max_backlog: int = 20_000
    queue: deque[JournalEntry] = field(default_factory=deque)
    published: set[int] = field(default_factory=set)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def offer(self, entry: JournalEntry) -> None:
        self.queue.append(entry)

    def mark_published(self, entry_id: int) -> None:
        self.published.add(entry_id)
        self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self.queue)

    def _ready(self) -> list[JournalEntry]:
        ready: list[JournalEntry] = []
        for entry in self.queue:
            if entry.entry_id not in self.published:
                break
            ready.append(entry)
        return ready

    async def _wait_quiet(self) -> None:
        while True:
            if self.quiet() or len(self.queue) >= self.max_backlog:
                return
            await asyncio.sleep(0.01)

    async def compact(self) -> int:
        """Fold the published prefix of the queue into the store, a few timers at a time
        (each round: write, then delete the entries it covered); returns entries folded."""
        ready = self._ready()
        folded = 0
        while ready:
            group: list[JournalEntry] = []
            size = 0
            while ready and (not group or size + len(ready[0].timers) <= self.chunk):
                size += len(ready[0].timers)
                group.append(ready.pop(0))
            timers, progress = merge_timers(group)
            for i in range(0, max(1, len(timers)), self.chunk):
                await self._wait_quiet()
                if not self.may_write():
                    return folded
                chunk = timers[i : i + self.chunk]
                if chunk:
                    await self.store.save(chunk, progress)
                    self.on_stored([t.timer_id for t in chunk])
            await self._wait_quiet()
            if not self.may_write():
                return folded
            await self.journal.discard([e.entry_id for e in group])
            for entry in group:
                self.queue.popleft()
                self.published.discard(entry.entry_id)
            folded += len(group)
        return folded

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.interval_s)  # let entries gather: fewer, larger writes
            try:
                await self.compact()
            except Exception:
                log.exception("journal compaction failed; retrying")
                self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run())
            if self.queue:
                self._wake.set()

    async def stop(self) -> None:
        """Stop and forget: what was not compacted stays in the journal for the next load."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.queue.clear()
        self.published.clear()
