"""Where each process spends its CPU during a benchmark phase: py-spy, sampling every
Python process of the pipeline (the four services and their SecantusDB stores) without
pausing them, summarised per process as the functions that take the most samples.

`omniroute bench --profile DIR` keeps each process's raw collapsed stacks in DIR (load them
into speedscope or flamegraph.pl for the whole picture) and puts the summary in the
results. py-spy comes with `make test`'s dev dependencies; without it (or without the
right to trace other processes) the benchmark runs unprofiled and says why.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# A frame in py-spy's raw output: "function (path/to/file.py:123)".
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
# Whose code a frame is: ours, or the store's (SecantusDB is a Python process too).
OWN_CODE = ("services/", "shared/", "omniroute/", "secantus/", "wiredtiger/")
# Waiting for I/O — an event loop's select, a SecantusDB client thread's socket read — is
# sampled (py-spy cannot always tell), but is not work.
IDLE_LEAVES = (
    "Selector.select (selectors.py)",
    "select (selectors.py)",
    "_recv_exactly (secantus/wire.py)",
)
TOP = 8


def _frame(raw: str) -> tuple[str, str]:
    m = FRAME.match(raw.strip())
    if not m:
        return raw.strip(), ""
    return m["func"], m["file"]


def _short(func: str, file: str) -> str:
    for root in (*OWN_CODE, "site-packages/", "lib/python3"):
        if root in file:
            file = file[file.index(root) :].removeprefix("site-packages/")
            break
    return f"{func} ({file})" if file else func


def summarise(collapsed: str, top: int = TOP) -> dict[str, Any]:
    """py-spy raw output (one `frame;frame;… count` line per distinct stack) as: total
    samples, the share spent waiting (an event loop's select, a store thread's socket
    read), and of the rest: the leaf functions with the most samples (self time), and the
    functions of our own code (or the store's) whose calls take the most: what to change."""
    own: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = idle = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame(f) for f in stack.split(";")]
        frames = [(fn, fl) for fn, fl in frames if fl]  # process/thread labels have no file
        if not frames:
            continue
        top_frame = _short(*frames[-1])
        if top_frame.endswith(IDLE_LEAVES):
            idle += count
            continue
        leaf[top_frame] += count
        # The deepest frame of our own code: where in it this sample's time went (the
        # library calls below it included), so the shares add up to what our code costs.
        mine = [f for f in frames if any(r in f[1] for r in OWN_CODE)]
        if mine:
            own[_short(*mine[-1])] += count

    busy = total - idle

    def shares(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "share": round(n / busy, 3)} for name, n in counter.most_common(top)
        ]

    # Shares are of the busy samples (the event loop's waits left out; their share: idle).
    return {
        "samples": total,
        "idle": round(idle / total, 3) if total else 0.0,
        "self": shares(leaf),
        "own_code": shares(own),
    }


@dataclass
class Profiler:
    """py-spy recording each of `processes` (name → pid) until `stop()`."""

    out_dir: Path
    processes: dict[str, int]
    rate_hz: int = 100
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    problem: str | None = None

    def start(self) -> None:
        beside = Path(sys.executable).with_name("py-spy")  # the virtualenv's, off PATH
        exe = str(beside) if beside.exists() else shutil.which("py-spy")
        if exe is None:
            self.problem = "py-spy is not installed"
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in self.processes.items():
            self.running[name] = subprocess.Popen(
                [
                    exe,
                    "record",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--rate",
                    str(self.rate_hz),
                    "--pid",
                    str(pid),
                    "--output",
                    str(self.out_dir / f"{name}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )

    def stop(self) -> dict[str, Any]:
        """Stop recording; the summary per process (or why there is none)."""
        if self.problem:
            return {"error": self.problem}
        result: dict[str, Any] = {}
        for name, proc in self.running.items():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            path = self.out_dir / f"{name}.txt"
            if path.exists() and path.stat().st_size:
                result[name] = {**summarise(path.read_text()), "raw": str(path)}
            else:  # e.g. not a Python process (Tansu), or no right to trace it
                lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
                errors = [ln for ln in lines if ln.startswith("Error")] or lines
                result[name] = {"error": errors[0].strip() if errors else "no samples"}
        self.running.clear()
        return result
