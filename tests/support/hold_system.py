"""A process that starts the stack and the four services, prints their pids, then waits.

Used to check that nothing outlives it: `python -m tests.support.hold_system [fail]`.
With `fail` it raises after start-up, like a test that errors with the system running.
"""

from __future__ import annotations

import json
import os
import sys
import time

from omniroute.dev import running_system


def main() -> None:
    with running_system(None) as system:
        print(json.dumps({"pids": system.stack.pids + system.pids}), flush=True)
        if sys.argv[1:] == ["fail"]:
            raise RuntimeError("failing on purpose")
        # Held until stopped, or until the test that started it is gone (a killed pytest
        # must not leave a whole system running: seen, four of them for an hour and a half).
        parent = os.getppid()
        while os.getppid() == parent:
            time.sleep(1)


if __name__ == "__main__":
    main()
