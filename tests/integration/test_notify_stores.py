"""Notify's small stores on real MongoDB (SecantusDB): the customers copy keeps the newest
facts, acknowledgements keep each half and the newest deadline, queue statistics keep the
latest assignments, and the queue a replica reads shows its own changes at once."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from services.notify.decide import view_of
from services.notify.estimate import Ack, Deadline, Queued, Sample
from services.notify.store import COLLECTIONS, mongo_stores
from services.notify.store.customers import Customer
from tests.support.factories import T0, ticket_event

pytestmark = pytest.mark.integration


def at(s: float) -> Any:
    return T0 + timedelta(seconds=s)


async def test_the_customers_copy_keeps_the_newest_facts(notify_db: Any) -> None:
    stores = mongo_stores(notify_db)
    await stores.ensure_indexes()
    customers = stores.customers
    # A message's facts, then a record on support.customers (version 2).
    await customers.save([Customer("cus_1", at(0), anti_phishing_code="OLD")])
    await customers.save([Customer("cus_1", at(5), anti_phishing_code="NEW", version=2)])
    # A message (even a newer one) and an older version change nothing.
    await customers.save([Customer("cus_1", at(7), anti_phishing_code="STALE-MSG")])
    await customers.save([Customer("cus_1", at(9), anti_phishing_code="STALE-V", version=1)])
    [c] = (await customers.get(["cus_1"])).values()
    assert (c.anti_phishing_code, c.version) == ("NEW", 2)
    # Once a record came, messages change nothing (changes come as records).
    await customers.save([Customer("cus_1", at(20), anti_phishing_code="MSG", language="zh")])
    [c] = (await customers.get(["cus_1"])).values()
    assert (c.anti_phishing_code, c.language, c.version) == ("NEW", None, 2)
    # A tombstone deletes the copy; then a newer message fills in again.
    await customers.delete(["cus_1"])
    assert await customers.get(["cus_1"]) == {}
    await customers.save([Customer("cus_1", at(30), anti_phishing_code="AGAIN")])
    await customers.save([Customer("cus_1", at(40), anti_phishing_code="LATER", tier="vip5")])
    [c] = (await customers.get(["cus_1"])).values()
    assert (c.anti_phishing_code, c.tier, c.version) == ("LATER", "vip5", None)
    assert set(await notify_db.list_collection_names()) <= set(COLLECTIONS)


async def test_acknowledgements_keep_both_halves_in_either_order(notify_db: Any) -> None:
    acks = mongo_stores(notify_db).acks
    await acks.ensure_indexes()
    first, later = Deadline(300, at(300), at(1)), Deadline(600, at(600), at(2))
    # sla first, then the ticket; a redelivered older deadline does not win.
    await acks.deadlines([("t1", later)], T0)
    await acks.deadlines([("t1", first)], T0)
    await acks.deadlines([("t3", first)], T0)  # its ticket event has not come yet
    await acks.opened([("t1", "evt-1", at(30)), ("t2", "evt-2", at(30))], T0)
    got = await acks.get(["t1", "t2"])
    assert (got["t1"].cause_event_id, got["t1"].deadline) == ("evt-1", later)
    assert got["t2"].deadline is None
    # With its deadline, t1 is due for the sweep at once (had the batch missed it);
    # t2 waits for sla until 30 s; t3 waits for its ticket.
    assert [a.ticket_id for a in await acks.overdue(at(2), 10)] == ["t1"]
    assert [a.ticket_id for a in await acks.overdue(at(31), 10)] == ["t1", "t2"]
    told = replace(got["t2"], position=4, expected_s=240.0, told_at=at(31), recheck_at=at(400))
    await acks.told([told, replace(got["t1"], told_at=at(31))], T0)
    # Told in the batch that brought its second half: stored once, whole.
    whole = Ack("t4", "evt-4", None, first, position=1, expected_s=300.0, told_at=at(1))
    await acks.told([whole], T0)
    assert (await acks.get(["t4"]))["t4"] == replace(whole, decided=True)
    assert [a.ticket_id for a in await acks.overdue(at(31), 10)] == []
    assert await acks.rechecks_due(at(399), 10) == []
    [due] = await acks.rechecks_due(at(401), 10)
    assert (due.ticket_id, due.position, due.expected_s, due.decided) == ("t2", 4, 240.0, True)
    await acks.rechecked(["t2"])
    assert await acks.rechecks_due(at(10_000), 10) == []
    assert isinstance(due, Ack)


async def test_queue_statistics_keep_the_latest_assignments(notify_db: Any) -> None:
    queue = mongo_stores(notify_db, keep=3).queue
    await queue.record([Sample("P4", f"t{n}", 1, 10.0 * n, 1, at(n)) for n in range(5)])
    await queue.record([Sample("P1", "x", 1, 5.0, 2, at(9))])
    recent = await queue.recent()
    assert [s.ticket_id for s in recent["P4"]] == ["t2", "t3", "t4"]
    assert recent["P1"][0].per_place_s == 2.5


async def test_the_queue_shows_this_replicas_changes_at_once(notify_db: Any) -> None:
    tickets = mongo_stores(notify_db).tickets
    await tickets.ensure_indexes()
    a = replace(view_of(ticket_event("opened", 1, ticket_id="a")), seq=1, queued_since=at(0))
    await tickets.save([a], T0)
    assert await tickets.queued() == {"a": Queued("P2", at(0))}
    b = replace(a, ticket_id="b", queued_since=at(1))
    await tickets.save([b, replace(a, state="assigned", seq=2, queued_since=None)], T0)
    assert await tickets.queued() == {"b": Queued("P2", at(1))}  # within the cache's second
    assert (await tickets.get(["a"]))["a"].state == "assigned"


async def test_a_ticket_view_comes_back_as_it_was_saved(notify_db: Any) -> None:
    # Every field, the possible urgent category too: an acknowledgement decided after a
    # restart (sla's deadline arriving later) must still give the safety advice.
    tickets = mongo_stores(notify_db).tickets
    await tickets.ensure_indexes()
    opened = ticket_event(
        "opened", 1, category="withdrawal", priority="P1", possible_urgent="stolen_funds"
    )
    view = replace(view_of(opened), seq=1, queued_since=at(0), position=3, customer_tier="vip")
    await tickets.save([view], T0)
    assert (await tickets.get([view.ticket_id]))[view.ticket_id] == view
