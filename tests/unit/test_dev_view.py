"""`omniroute dev`'s live view shows what customers were told about their wait."""

from __future__ import annotations

import time

from rich.console import Console

from omniroute.dev import render_view


def test_the_view_lists_estimates_and_corrections() -> None:
    snap = {
        "states": {"queued": 31},
        "agents": [],
        "recent": [],
        "customers": 3,
        "timers": 2,
        "notifications": 2,
        "waits": [
            {
                "ticket_id": "tkt_b",
                "cause": "estimate_corrected",
                "priority": "P4",
                "position": 12,
                "expected_s": 900.0,
            },
            {
                "ticket_id": "tkt_a",
                "cause": "acknowledgement",
                "priority": "P4",
                "position": 31,
                "expected_s": None,
            },
        ],
        "corrections": 1,
    }
    console = Console(record=True, width=160)
    console.print(render_view(snap, sent=5, started=time.monotonic()))
    text = console.export_text()
    assert "corrected estimates: 1" in text
    assert "tkt_b" in text and "corrected" in text and "in ~15 min" in text
    assert "tkt_a" in text and "acknowledged" in text and "no estimate" in text
