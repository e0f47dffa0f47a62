"""Each service owns its data: its store modules declare the collections it keeps (in its
own database), no two services declare one collection, and a service's code names no
collection but its own and the shared kit's. The e2e run checks the databases themselves
(tests/e2e/test_walking_skeleton.py)."""

from __future__ import annotations

import fnmatch
import re
from itertools import combinations
from pathlib import Path

import pytest

from omniroute.system import SERVICES, ServiceDatabases, owned_collections, owner_of
from shared.audit import COLLECTION as AUDIT
from shared.mongo import KIT_COLLECTIONS

ROOT = Path(__file__).resolve().parents[2]
# A collection named in code: db["tickets"], self.db["leases"], drop_collection("x"), ...
NAMED = re.compile(
    r"""\b\w*db\w*\[\s*["']([^"']+)["']\s*\]"""
    r"""|\b(?:get_collection|create_collection|drop_collection)\(\s*["']([^"']+)["']"""
)
# Known until the notify branch is merged: notify still reads ingest's `customers`.
EXCEPTIONS: set[tuple[str, str]] = set()  # (service, collection) read across: none


# A collection named through a module constant: `TICKETS = "tickets"` ... `db[TICKETS]`.
CONSTANT = re.compile(r"""^([A-Z][A-Z0-9_]*)(?:: [\w\[\]]+)? = ["']([^"']+)["']""", re.M)
NAMED_BY_CONSTANT = re.compile(r"""\b\w*db\w*\[\s*([A-Z][A-Z0-9_]*)\s*\]""")
# The engines' journal opens `<name>_journal` and `<name>_journal_published` itself
# (shared/journal.py, MongoJournal(db, name)): what each engine passes as `name`.
JOURNAL_NAME = re.compile(r"""^JOURNAL = ["']([^"']+)["']""", re.M)


def named_collections(package: Path) -> dict[str, set[str]]:
    """collection -> the files under `package` that name it."""
    found: dict[str, set[str]] = {}
    sources = {path: path.read_text("utf-8") for path in sorted(package.rglob("*.py"))}
    constants = {k: v for text in sources.values() for k, v in CONSTANT.findall(text)}
    for path, text in sources.items():
        names = [m.group(1) or m.group(2) for m in NAMED.finditer(text)]
        names += [constants[c] for c in NAMED_BY_CONSTANT.findall(text) if c in constants]
        for journal in JOURNAL_NAME.findall(text):
            names += [f"{journal}_journal", f"{journal}_journal_published"]
        for name in names:
            found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def declares(service: str, collection: str) -> bool:
    return any(fnmatch.fnmatchcase(collection, p) for p in owned_collections()[service])


def test_every_service_declares_what_it_owns() -> None:
    owned = owned_collections()
    assert set(owned) == set(SERVICES)
    assert all(owned[s] for s in SERVICES)
    assert owned["router"] >= ("tickets", "agents") and "sla_timers" in owned["sla"]


def test_no_two_services_declare_one_collection() -> None:
    owned = owned_collections()
    for a, b in combinations(SERVICES, 2):
        shared = {
            (x, y)
            for x in owned[a]
            for y in owned[b]
            if fnmatch.fnmatchcase(x, y) or fnmatch.fnmatchcase(y, x)
        }
        assert not shared, f"{a} and {b} both declare {shared}"
    # The kit's collections live in each user's own database: nobody declares them.
    assert AUDIT in KIT_COLLECTIONS
    assert not [k for k in KIT_COLLECTIONS for s in SERVICES if declares(s, k)]


def test_each_service_names_only_its_own_collections() -> None:
    foreign: dict[str, dict[str, set[str]]] = {}
    for service in SERVICES:
        for name, files in named_collections(ROOT / "services" / service).items():
            if name in KIT_COLLECTIONS or declares(service, name):
                continue
            if (service, name) in EXCEPTIONS:
                continue
            foreign.setdefault(service, {})[name] = files
    assert not foreign, f"collections a service names but does not own: {foreign}"


def test_the_scan_sees_what_the_stores_open() -> None:
    # The scan is what guards the rule: it finds each service's own collections, ...
    for service in SERVICES:
        named = set(named_collections(ROOT / "services" / service))
        plain = {c for c in owned_collections()[service] if "*" not in c}
        assert plain <= named, (service, plain - named)
    # ... the shared kit names only kit collections, ...
    assert set(named_collections(ROOT / "shared")) <= set(KIT_COLLECTIONS)
    # ... every form of naming one, ...
    sample = 'self.db["tickets"]; notify_db[\'agents\'].find(); db.drop_collection("sla_timers")'
    assert {m.group(1) or m.group(2) for m in NAMED.finditer(sample)} == {
        "tickets",
        "agents",
        "sla_timers",
    }
    # ... and each exception is still needed (once the notify branch is merged, this
    # fails: delete the exception then).
    for service, name in EXCEPTIONS:
        assert name in named_collections(ROOT / "services" / service), (service, name)
        assert owner_of(name) != service
    assert owner_of("customers") == "ingest"
    assert owner_of("classified_texts_20261207") == "ingest"


def test_direct_reads_open_the_owners_database() -> None:
    # The tests' and `omniroute dev`'s reader: a collection is read where its owner keeps it.
    nowhere = "mongodb://127.0.0.1:1/?directConnection=true"  # never connected (lazy)
    dbs = ServiceDatabases({s: (nowhere, f"x_{s}") for s in SERVICES})
    try:
        assert dbs.tickets.full_name == "x_router.tickets"
        assert dbs["sla_timers"].full_name == "x_sla.sla_timers"
        assert dbs.notify.notifications.full_name == "x_notify.notifications"
        with pytest.raises(AttributeError, match="name the service"):
            _ = dbs.leases  # kept by router and sla each: ambiguous
    finally:
        dbs.close()
