"""Nothing outlives its parent: not on SIGKILL, not on Ctrl-C, not when a run fails."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import alive
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
# Tansu, one SecantusDB per service, the four services.
PROCESSES = 1 + 4 + 4


def interruptible() -> None:
    """preexec_fn: Ctrl-C acts as on a terminal. A job started in the background by a
    non-interactive shell (`make test &`, nohup) inherits SIGINT ignored, and Python then
    installs no KeyboardInterrupt handler: the interrupt tests would wait forever."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_holder(*args: str) -> tuple[subprocess.Popen[str], list[int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.hold_system", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        preexec_fn=interruptible,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    pids: list[int] = json.loads(line)["pids"] if line else []
    return proc, pids


def test_sigkill_of_the_parent_leaves_no_process() -> None:
    proc, pids = start_holder()
    assert len(pids) == PROCESSES and all(alive(p) for p in pids)
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to clean up
    proc.wait(timeout=10)
    wait_until(lambda: not any(alive(p) for p in pids), 30, "children gone after SIGKILL")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_everything_cleanly(sig: signal.Signals) -> None:
    proc, pids = start_holder()
    assert len(pids) == PROCESSES
    os.kill(proc.pid, sig)
    proc.wait(timeout=60)
    assert not any(alive(p) for p in pids)


def test_failing_run_leaves_no_process() -> None:
    proc, pids = start_holder("fail")
    assert len(pids) == PROCESSES
    assert proc.wait(timeout=60) != 0
    assert not any(alive(p) for p in pids)


INNER_TEST = """
import json, os, time

pytest_plugins = ["tests.conftest", "tests.e2e.conftest"]


def test_inner(system):
    with open(os.environ["OMNIROUTE_TEST_PIDS"], "w") as out:
        json.dump(system.stack.pids + system.pids, out)
    if os.environ["OMNIROUTE_TEST_MODE"] == "fail":
        raise AssertionError("failing on purpose")
    while True:
        time.sleep(0.2)
"""


@pytest.mark.parametrize("mode", ["fail", "interrupt"])
def test_a_pytest_run_that_fails_or_is_interrupted_leaves_nothing(
    tmp_path: Path, mode: str
) -> None:
    # A real pytest run of the suite's own fixtures, failing or interrupted with Ctrl-C.
    test_file = tmp_path / "test_inner_run.py"
    test_file.write_text(INNER_TEST)
    pids_file = tmp_path / "pids.json"
    env = {
        **os.environ,
        "OMNIROUTE_TEST_PIDS": str(pids_file),
        "OMNIROUTE_TEST_MODE": mode,
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(ROOT),
            "--basetemp",
            str(tmp_path / "inner"),
            str(test_file),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=interruptible,
    )
    pids = wait_until(
        lambda: pids_file.exists() and pids_file.read_text() and json.loads(pids_file.read_text()),
        60,
        "inner run started the system",
    )
    assert len(pids) == PROCESSES and all(alive(p) for p in pids)
    if mode == "interrupt":
        proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode != 0, out
    assert not any(alive(p) for p in pids), out
