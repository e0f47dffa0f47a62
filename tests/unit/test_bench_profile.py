"""The benchmark's profile summary: py-spy's raw collapsed stacks, read as where the time went."""

from __future__ import annotations

from omniroute.bench.profile import summarise

LOOP = 'process 12 ("omniroute");<module> (omniroute/cli.py:90);run (asyncio/runners.py:118)'
INGEST = "Ingestor.process (services/ingest/handlers.py:60)"
RAW = (
    f"{LOOP};{INGEST};classify_batch (services/ingest/intake.py:99);"
    "transform (sklearn/feature_extraction/text.py:2100) 30\n"
    f"{LOOP};{INGEST};parse_all (services/ingest/intake.py:70);"
    "message_from_bytes (email/parser.py:50) 10\n"
    f"{LOOP};_run_once (asyncio/base_events.py:1898) 20\n"
    f"{LOOP};select (selectors.py:468) 40\n"
    "not a stack line\n"
)


def test_time_goes_to_the_deepest_frame_of_our_code_and_to_the_leaf() -> None:
    s = summarise(RAW)
    assert s["samples"] == 100
    assert s["idle"] == 0.4  # waiting in select: left out of the shares below
    own = {h["function"]: h["share"] for h in s["own_code"]}
    # The classifier's library time counts for classify_batch, not for the frames above it.
    assert own["classify_batch (services/ingest/intake.py)"] == 0.5
    assert own["parse_all (services/ingest/intake.py)"] == round(10 / 60, 3)
    assert own["<module> (omniroute/cli.py)"] == round(20 / 60, 3)  # the loop's own work
    assert "Ingestor.process (services/ingest/handlers.py)" not in own
    leaf = {h["function"]: h["share"] for h in s["self"]}
    assert "select (selectors.py)" not in leaf
    assert leaf["transform (sklearn/feature_extraction/text.py)"] == 0.5


def test_lines_of_one_function_are_one_entry_and_the_list_is_bounded() -> None:
    raw = "".join(f"main (app.py:1);f{i % 12} (services/x.py:{i}) 1\n" for i in range(120))
    s = summarise(raw, top=5)
    assert len(s["own_code"]) == 5
    assert all(h["share"] == 0.083 for h in s["own_code"])  # 10 lines of each function


def test_empty_output_is_no_samples() -> None:
    assert summarise("") == {"samples": 0, "idle": 0.0, "self": [], "own_code": []}
