"""Notify's sender with its stores in memory: what the recording process holds it sends
once, even when Kafka or MongoDB fail after the send, and an incident update it still
holds is merged into the acknowledgement that mentions it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pymongo.errors import AutoReconnect

from services.notify.decide import on_ticket_event
from services.notify.delivery import Delivery, DeliveryConfig, Held
from services.notify.metrics import NotifyMetrics
from services.notify.outbox import RateRule
from services.notify.record import announce, notification_of_spec
from services.notify.render import load_templates, render
from services.notify.route import Route, route_updates
from services.notify.senders import Outgoing, Transports
from services.notify.store.outbox import Notification
from shared.events import OutboundEvent
from shared.settings import REPO_POLICY_DIR
from tests.support.factories import message, ticket_event
from tests.support.fakes import FakeNotify

TEMPLATES = load_templates(REPO_POLICY_DIR / "templates.yaml")


class Sent(list[str]):
    """A transport that records what it sends."""

    async def send(self, out: Outgoing, route: Route) -> None:
        self.append(out.notification_id)


class Flaky:
    """Fails the first `n` calls with a MongoDB or Kafka error, then does `then`."""

    def __init__(self, n: int, then: object) -> None:
        self.n, self.then = n, then

    async def __call__(self, *args: object) -> object:
        if self.n:
            self.n -= 1
            raise AutoReconnect("store gone")
        return await self.then(*args)  # type: ignore[operator]


async def held_acks(fake: FakeNotify, held: Held, n: int) -> list[Notification]:
    """n acknowledgements as the consumer records them: held by its process, routes known."""
    now = datetime.now(UTC)
    made = []
    for i in range(n):
        ev = ticket_event("opened", 1, ticket_id=f"t{i}", conversation_id=f"cnv_{i}")
        _, [spec] = on_ticket_event(None, ev, f"evt_{i}")
        rendered = render(TEMPLATES, spec.template, "en", ticket_ref=spec.ticket_id)
        made.append(held.claim(notification_of_spec(spec, rendered, now), now))
    await fake.outbox.add(made)
    held.take(made)
    msgs = [message(i, conversation_id=f"cnv_{i}") for i in range(n)]
    await fake.conversations.save(route_updates(msgs, now, 3600))
    return made


def sender(fake: FakeNotify, held: Held, sent: Sent, published: list[OutboundEvent]) -> Delivery:
    transports = Transports(smtp=None, urls={}, secrets={}, client=httpx.AsyncClient())
    object.__setattr__(transports, "for_route", lambda route: sent)  # every route: `sent`

    async def publish(events: Sequence[OutboundEvent]) -> int:
        published.extend(events)
        return len(events)

    return Delivery(
        stores=fake.stores,
        transports=transports,
        publish=publish,
        announce=announce,
        metrics=NotifyMetrics.create(CollectorRegistry()),
        config=DeliveryConfig(concurrency=2, rate=RateRule(100, 60)),
        held=held,
    )


@pytest.mark.parametrize("failing", ["write", "publish"])
async def test_a_failure_after_the_send_never_sends_again(failing: str) -> None:
    fake, held, sent, published = FakeNotify(), Held(owner="me"), Sent(), []
    acks = await held_acks(fake, held, 3)
    d = sender(fake, held, sent, published)
    if failing == "write":
        fake.outbox.write = Flaky(1, fake.outbox.write)  # type: ignore[method-assign]
    else:
        d.publish = Flaky(1, d.publish)  # type: ignore[assignment]
    # The first round (2 sends) is sent, then MongoDB (or Kafka) fails.
    with pytest.raises(AutoReconnect):
        await d.run_once()
    assert len(sent) == 2
    # The next pass announces and writes what the failed one did before anything else,
    # and sends only the third.
    assert await d.run_once() == 1
    assert sorted(sent) == sorted(n.notification_id for n in acks)
    assert {n.status for n in fake.outbox.notifications.values()} == {"sent"}
    assert [e.type for e in published].count("omniroute.notification.sent.v1") == 3
    assert not held.items and not held.unwritten and not held.unpublished


async def test_a_held_incident_update_is_merged_and_never_sent() -> None:
    fake, held, sent, published = FakeNotify(), Held(owner="me"), Sent(), []
    [ack] = await held_acks(fake, held, 1)
    update = replace(ack, notification_id="ntf_update", cause="incident:i1:open")
    await fake.outbox.add([update])
    held.take([update])
    # The acknowledgement that mentions the incident is recorded: the update joins it.
    assert held.withdraw({"ntf_update", "ntf_unknown"}) == {"ntf_update"}
    await fake.outbox.merge({"ntf_update": ack.notification_id}, {"ntf_update"}, held.claim_id)
    await sender(fake, held, sent, published).run_once()
    assert sent == [ack.notification_id]
    merged = fake.outbox.notifications["ntf_update"]
    assert (merged.status, merged.merged_into) == ("merged", ack.notification_id)


async def test_another_replicas_notification_is_not_merged() -> None:
    fake, theirs = FakeNotify(), Held(owner="them")
    [ack] = await held_acks(fake, theirs, 1)
    # This process does not hold it: the merge leaves it to the replica that sends it.
    await fake.outbox.merge({ack.notification_id: "other"}, set(), Held().claim_id)
    assert fake.outbox.notifications[ack.notification_id].status == "sending"


async def test_what_waits_in_memory_keeps_its_lease_and_no_replica_takes_it() -> None:
    fake, held, sent, published = FakeNotify(), Held(owner="me", lease_s=2), Sent(), []
    acks = await held_acks(fake, held, 2)
    t0 = acks[0].created_at
    # Both wait (a retry later): held in memory, their leases end at t0 + 2 s.
    later = [replace(n, next_at=t0 + timedelta(seconds=60)) for n in acks]
    held.take(later)
    d = sender(fake, held, sent, published)
    d.clock = lambda: t0 + timedelta(seconds=1.5)
    assert await d.run_once() == 0  # nothing due: only the leases are renewed
    other = await fake.outbox.take_over(t0 + timedelta(seconds=3), "them", "c2", t0, 10)
    assert other == [] and sent == []
    assert {n.due_at for n in fake.outbox.notifications.values()} == {t0 + timedelta(seconds=3.5)}
    # A replica that dies stops renewing: after its lease another takes them over.
    taken = await fake.outbox.take_over(t0 + timedelta(seconds=4), "them", "c2", t0, 10)
    assert {n.owner for n in taken} == {"them"} and len(taken) == 2
