"""Full garbage collections kept off the firing path of a process holding many timers."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass


@dataclass
class GcPause:
    """Keeps Python's full garbage collections off the firing path.

    With tens of thousands of timers in memory a full (generation 2) collection takes
    ~100 ms here: long enough to make thresholds late. After a load, and at idle moments
    at most once a minute, everything alive is collected once and then frozen (moved out
    of the collector's view: it still frees by reference counting), so the automatic
    collections only ever scan what was created since."""

    every_s: float = 60.0
    last: float = 0.0

    def freeze(self) -> None:
        gc.collect()
        gc.freeze()
        self.last = time.monotonic()

    def maintain(self) -> None:
        if time.monotonic() - self.last >= self.every_s:
            gc.unfreeze()
            self.freeze()
