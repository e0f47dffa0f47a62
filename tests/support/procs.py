"""Process liveness as the kernel sees it (a zombie counts as gone)."""

from __future__ import annotations

from pathlib import Path


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # Field 3, after the parenthesised command name, is the state.
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
