"""What to tell whom, and when: pure functions of (view, event, now). No I/O here.

Causes and their ids (one notification per cause, ever — the id is derived from it):

    acknowledgement            ticket opened
    agent_assigned:<cycle>     first offered / assigned / accepted of a cycle (a reopen
                               starts a new cycle)
    waiting_for_you:<seq>      each waiting_on_customer event
    resolved:<seq>             each resolved event
    sla_breached:<timer_id>    a first/next response or resolution timer breached
    incident:<id>:open         an incident matched the ticket (once, whatever its updates)
    incident:<id>:resolved     the incident was resolved (to every linked ticket)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from services.notify.estimate import Ack, Estimate, Queued, Sample, tier_rank
from services.notify.render import acknowledgement_template
from shared.contracts.common import Category, Channel, Priority
from shared.contracts.incidents import Incident
from shared.contracts.sla import SlaEvent
from shared.contracts.tickets import TicketEvent
from shared.ids import stable_id

PRIORITIES: tuple[Priority, ...] = ("P1", "P2", "P3", "P4")
AGENT_EVENTS = frozenset({"offered", "assigned", "accepted"})
ASSIGNED = frozenset({"assigned", "accepted"})
WAITING = frozenset({"queued", "offered"})  # still without an agent
URGENT_TEMPLATES = frozenset(
    {
        "acknowledgement_secret_exposed",
        "acknowledgement_stolen_funds",
        "acknowledgement_possible_secret",
        "acknowledgement_possible_theft",
    }
)


def notification_id(ticket_id: str, cause: str) -> str:
    return stable_id("ntf", ticket_id, cause)


@dataclass(frozen=True)
class TicketView:
    """Notify's own view of a ticket, folded from `support.tickets`."""

    ticket_id: str
    customer_id: str
    conversation_id: str | None
    channel: Channel
    category: Category
    priority: Priority
    language: str
    state: str
    seq: int
    opened_at: datetime
    updated_at: datetime
    cycle: int = 1
    agent_told: int = 0  # the last cycle told "an agent is on it"
    customer_tier: str = "standard"
    queued_since: datetime | None = None  # waiting for an agent since
    position: int | None = None  # its place in the queue when it started waiting
    possible_urgent: Category | None = None  # raised to P1 as possibly this (router's word)

    @property
    def open(self) -> bool:
        return self.state != "resolved"

    @property
    def queued(self) -> Queued | None:
        """Its place in the router's queue, while it waits for an agent."""
        if self.queued_since is None:
            return None
        return Queued(self.priority, self.queued_since, tier_rank(self.customer_tier))


@dataclass(frozen=True)
class Facts:
    """What a ticket's messages said that incidents are matched on."""

    assets: frozenset[str] = frozenset()
    networks: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Spec:
    """One notification to record: everything rendering and delivery need but the route."""

    cause: str
    template: str
    ticket_id: str
    customer_id: str
    conversation_id: str | None
    channel: Channel
    language: str
    priority: Priority
    cause_event_id: str
    expected_s: float | None = None
    wait: Estimate | None = None  # acknowledgements and corrections: place and estimate
    incident_id: str | None = None
    notices: tuple[str, ...] = ()  # incident ids mentioned in an acknowledgement

    @property
    def notification_id(self) -> str:
        return notification_id(self.ticket_id, self.cause)

    @property
    def urgent(self) -> bool:
        return self.template in URGENT_TEMPLATES


def view_of(ev: TicketEvent) -> TicketView:
    return TicketView(
        ticket_id=ev.ticket_id,
        customer_id=ev.customer_id,
        conversation_id=ev.conversation_id,
        channel=ev.channel,
        category=ev.category,
        priority=ev.priority,
        language=ev.language,
        state=ev.state,
        seq=0,
        opened_at=ev.opened_at,
        updated_at=ev.at,
        customer_tier=ev.customer_tier,
        possible_urgent=ev.possible_urgent,
    )


def queued_since(before: TicketView, state: str, at: datetime) -> datetime | None:
    """Since when the ticket waits for an agent after moving to `state`."""
    if state not in WAITING:
        return None
    return before.queued_since or at


def assignment_sample(before: TicketView, after: TicketView, ev: TicketEvent) -> Sample | None:
    """The wait of a ticket an agent just got, from where in the queue it started."""
    if ev.event not in ASSIGNED or before.queued_since is None:
        return None
    wait_s = max(0.0, (ev.at - before.queued_since).total_seconds())
    return Sample(ev.priority, ev.ticket_id, after.cycle, wait_s, before.position or 1, ev.at)


def spec_for(
    view: TicketView,
    cause: str,
    template: str,
    cause_event_id: str,
    *,
    incident_id: str | None = None,
) -> Spec:
    return Spec(
        cause=cause,
        template=template,
        ticket_id=view.ticket_id,
        customer_id=view.customer_id,
        conversation_id=view.conversation_id,
        channel=view.channel,
        language=view.language,
        priority=view.priority,
        cause_event_id=cause_event_id,
        incident_id=incident_id,
    )


def on_ticket_event(
    view: TicketView | None, ev: TicketEvent, cause_event_id: str
) -> tuple[TicketView, list[Spec]]:
    """The view after `ev` and what the customer is to be told (nothing on redelivery)."""
    before = view or view_of(ev)
    if ev.sequence <= before.seq:
        return before, []
    after = replace(
        before,
        conversation_id=before.conversation_id or ev.conversation_id,
        category=ev.category,
        priority=ev.priority,
        language=ev.language,
        state=ev.state,
        seq=ev.sequence,
        updated_at=ev.at,
        cycle=before.cycle + (1 if ev.event == "reopened" else 0),
        customer_tier=ev.customer_tier,
        queued_since=queued_since(before, ev.state, ev.at),
        possible_urgent=ev.possible_urgent,
    )
    specs: list[Spec] = []
    if ev.event == "opened":
        specs.append(
            spec_for(
                after,
                "acknowledgement",
                acknowledgement_template(ev.category, ev.possible_urgent),
                cause_event_id,
            )
        )
    elif ev.event in AGENT_EVENTS and after.agent_told < after.cycle:
        after = replace(after, agent_told=after.cycle)
        specs.append(
            spec_for(after, f"agent_assigned:{after.cycle}", "agent_assigned", cause_event_id)
        )
    elif ev.event == "waiting_on_customer":
        specs.append(
            spec_for(after, f"waiting_for_you:{ev.sequence}", "waiting_for_you", cause_event_id)
        )
    elif ev.event == "resolved":
        specs.append(spec_for(after, f"resolved:{ev.sequence}", "resolved", cause_event_id))
    return after, specs


# -- SLA -------------------------------------------------------------------------------


def on_sla_event(view: TicketView | None, ev: SlaEvent, cause_event_id: str) -> Spec | None:
    """An apology when a response or resolution deadline passes on a ticket still ours."""
    if ev.event != "breached":
        return None
    if view is not None and view.state in ("resolved", "waiting_on_customer"):
        return None
    base = view or TicketView(
        ticket_id=ev.ticket_id,
        customer_id=ev.customer_id,
        conversation_id=None,
        channel=ev.channel,
        category="general",
        priority=ev.priority,
        language="en",
        state="unknown",
        seq=0,
        opened_at=ev.at,
        updated_at=ev.at,
    )
    return spec_for(base, f"sla_breached:{ev.timer_id}", "sla_breached", cause_event_id)


# -- incidents ------------------------------------------------------------------------


def matches(incident: Incident, category: str, facts: Facts) -> bool:
    """Does the incident concern a ticket of this category whose messages said `facts`?

    Each dimension (categories, assets, networks) left empty does not restrict. A ticket
    that named no asset (or network) is not excluded by that filter when the incident
    also names categories — the category already ties it to the incident; when the
    incident names only assets/networks, the ticket must have named one of them.
    Regions are shown on banners only: tickets carry no region.
    """
    if not incident.open:
        return False
    a = incident.affected
    if a.categories and category not in a.categories:
        return False
    lenient = bool(a.categories)
    for wanted, seen in ((a.assets, facts.assets), (a.networks, facts.networks)):
        if not wanted:
            continue
        if seen & set(wanted):
            continue
        if lenient and not seen:
            continue
        return False
    return True


def incident_specs(
    incident: Incident,
    open_tickets: Iterable[tuple[TicketView, Facts]],
    linked: Iterable[TicketView],
    cause_event_id: str,
) -> tuple[list[Spec], list[str]]:
    """(notifications, ticket ids to link) for one incident event.

    While open: every open ticket that matches gets one update (`incident:<id>:open`,
    the same id on every later change of the incident). Once resolved: every ticket
    linked to it gets one more.
    """
    iid = incident.incident_id
    if incident.open:
        matched = [v for v, f in open_tickets if v.open and matches(incident, v.category, f)]
        specs = [
            spec_for(v, f"incident:{iid}:open", "incident_update", cause_event_id, incident_id=iid)
            for v in matched
        ]
        return specs, [v.ticket_id for v in matched]
    specs = [
        spec_for(
            v, f"incident:{iid}:resolved", "incident_resolved", cause_event_id, incident_id=iid
        )
        for v in linked
    ]
    return specs, []


def notices_for(incidents: Iterable[Incident], category: str, facts: Facts) -> tuple[str, ...]:
    """Open incidents a new ticket's acknowledgement mentions."""
    return tuple(i.incident_id for i in incidents if matches(i, category, facts))


def facts_of(doc: Mapping[str, object] | None) -> Facts:
    if not doc:
        return Facts()
    assets = doc.get("assets") or []
    networks = doc.get("networks") or []
    assert isinstance(assets, list)
    assert isinstance(networks, list)
    return Facts(frozenset(str(a) for a in assets), frozenset(str(n) for n in networks))


@dataclass
class Batch:
    """What one batch of inputs decided, for the handler to store and announce."""

    specs: list[Spec] = field(default_factory=list)
    views: dict[str, TicketView] = field(default_factory=dict)
    links: list[tuple[str, str]] = field(default_factory=list)  # (incident id, ticket id)
    samples: list[Sample] = field(default_factory=list)  # assignments measured
    told: list[Ack] = field(default_factory=list)  # acknowledgements decided
