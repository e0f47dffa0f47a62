"""Messages into tickets: open, add to the open ticket, merge a customer's reports of the
same emergency into one case, reopen a recently resolved one, raise the priority when a
later message shows a worse problem. No I/O here.
"""

from __future__ import annotations

from datetime import datetime

from services.router.priority import PRIORITY_RANK, prioritize, raised_by
from services.router.state.matching import Matching
from services.router.state.model import Changes, Ticket, ticket_id_for
from shared.contracts.messages import MessageReceived


class TicketLifecycle(Matching):
    """`on_message`: a customer's message opens, joins, merges into or reopens a ticket."""

    def on_message(self, msg: MessageReceived, now: datetime, *, defer: bool = False) -> Changes:
        """Apply one message. With `defer`, routing waits for `route_deferred`."""
        ch = Changes()
        if msg.message_id in self.ticket_by_message:
            return ch  # redelivered: already applied
        open_id = self.open_by_conversation.get(msg.conversation_id)
        if open_id is not None:
            self._add_message(ch, self.tickets[open_id], msg, now, (), defer)
            return ch
        case = self._case_of(msg, now)
        if case is not None:
            self.last_by_conversation[msg.conversation_id] = case.ticket_id
            channels = sorted({case.channel, msg.channel})
            why = (
                f"same customer reported {msg.category} in another conversation "
                f"({' and '.join(channels)}) within {self.policy.case_merge.window_s:.0f}s: "
                "one case, conversations linked"
            )
            if case.state == "resolved":
                self._reopen(ch, case, msg, now, defer, why)
                return ch
            self.open_by_conversation[msg.conversation_id] = case.ticket_id
            case.reasons.append(why)
            self._add_message(ch, case, msg, now, (why,), defer)
            return ch
        last = self.tickets.get(self.last_by_conversation.get(msg.conversation_id, ""))
        if (
            last is not None
            and last.state == "resolved"
            and last.resolved_at is not None
            and (now - last.resolved_at).total_seconds() <= self.policy.reopen_window_s
        ):
            self._reopen(ch, last, msg, now, defer)
            return ch
        priority, reasons = prioritize(
            msg.category, msg.customer_tier, self.policy, msg.possible_urgent
        )
        t = Ticket(
            ticket_id=ticket_id_for(msg.message_id),
            customer_id=msg.customer_id,
            customer_tier=msg.customer_tier,
            channel=msg.channel,
            category=msg.category,
            priority=priority,
            language=msg.language,
            state="queued",
            opened_at=now,
            updated_at=now,
            waiting_since=now,
            reasons=[*reasons, *msg.reasons[:5]],
            message_at=msg.received_at,
            routed=False,
            possible_urgent=raised_by(msg.category, msg.possible_urgent, self.policy),
        )
        self._join(t, msg, now)
        self.tickets[t.ticket_id] = t
        self.counts[(t.state, t.priority)] += 1
        self._enqueue(t)
        self.open_by_conversation[msg.conversation_id] = t.ticket_id
        self.last_by_conversation[msg.conversation_id] = t.ticket_id
        self._emit(ch, t, "opened", now, message_id=msg.message_id)
        self._route_or_defer(ch, t, now, msg.message_id, defer)
        return ch

    def _add_message(
        self,
        ch: Changes,
        t: Ticket,
        msg: MessageReceived,
        now: datetime,
        reasons: tuple[str, ...],
        defer: bool,
    ) -> None:
        self._join(t, msg, now)
        if t.state == "waiting_on_customer":
            self._set_state(t, "assigned")
            self._emit(ch, t, "customer_replied", now, message_id=msg.message_id)
        else:
            self._emit(
                ch, t, "message_added", now, message_id=msg.message_id, reasons=reasons or None
            )
        self._raise_priority(ch, t, msg, now, defer)

    def _case_of(self, msg: MessageReceived, now: datetime) -> Ticket | None:
        """The customer's ticket about the same emergency reported within the window
        (open, or resolved since: the case is reopened)."""
        merge = self.policy.case_merge
        if msg.category not in merge.categories:
            return None
        t = self.tickets.get(self.cases.get(msg.customer_id, ""))
        if (
            t is None
            or t.category not in merge.categories  # recategorized since: no longer that case
            or t.case_reported_at is None
            or (now - t.case_reported_at).total_seconds() > merge.window_s
        ):
            return None
        return t

    def _reopen(
        self,
        ch: Changes,
        t: Ticket,
        msg: MessageReceived,
        now: datetime,
        defer: bool,
        why: str | None = None,
    ) -> None:
        self._join(t, msg, now)
        priority, reasons = prioritize(t.category, t.customer_tier, self.policy)
        self._set_priority(t, priority)
        t.possible_urgent = None  # the new message may raise it again (_raise_priority)
        t.reasons = [*reasons, why] if why else list(reasons)
        t.agent_id = None
        t.resolved_at = None
        t.waiting_since = now
        t.message_at = msg.received_at
        t.offered_at = t.accepted_at = t.offer_expires_at = None
        t.passed_by, t.pool = [], "general"
        t.sla_risk = t.emergency = t.escalated = False
        t.routed = False
        self._set_state(t, "queued")
        for c in t.conversation_ids:
            if self.last_by_conversation.get(c) == t.ticket_id:
                self.open_by_conversation[c] = t.ticket_id
        self._emit(ch, t, "reopened", now, message_id=msg.message_id)
        self._raise_priority(ch, t, msg, now, defer)
        self._route_or_defer(ch, t, now, msg.message_id, defer)

    def _join(self, t: Ticket, msg: MessageReceived, now: datetime) -> None:
        t.message_ids.append(msg.message_id)
        self.ticket_by_message[msg.message_id] = t.ticket_id
        if msg.conversation_id not in t.conversation_ids:
            t.conversation_ids.append(msg.conversation_id)
        if msg.category in self.policy.case_merge.categories:
            t.case_reported_at = now
            self._index_case(t)

    def _raise_priority(
        self, ch: Changes, t: Ticket, msg: MessageReceived, now: datetime, defer: bool
    ) -> None:
        """A later message revealed a worse problem: the ticket's priority rises (to the
        message's category's, or a possible one's); its category changes when the message's
        own is the worse one. A message whose own category confirms a priority the ticket
        only had from a possible category or an escalation (a withdrawal raised to P1 as a
        possible theft, then "yes, it was stolen") gives the ticket that category too: its
        agents, case merging and acknowledgement follow the category."""
        priority, reasons = prioritize(
            msg.category, msg.customer_tier, self.policy, msg.possible_urgent
        )
        own = PRIORITY_RANK[self.policy.priority_of(msg.category)]
        worse = own < PRIORITY_RANK[self.policy.priority_of(t.category)]
        if PRIORITY_RANK[priority] < PRIORITY_RANK[t.priority]:
            if own < PRIORITY_RANK[t.priority]:
                t.category = msg.category
            t.possible_urgent = raised_by(t.category, msg.possible_urgent, self.policy)
            self._set_priority(t, priority)  # re-ranks: priority and class both changed
            t.reasons = [*reasons, f"raised by message {msg.message_id}"]
        elif worse and own <= PRIORITY_RANK[t.priority]:
            before = t.category
            t.category = msg.category
            t.possible_urgent = raised_by(t.category, t.possible_urgent, self.policy)
            self._rerank(t)  # the class (category) changed, the priority did not
            t.reasons = [*reasons, f"{before} → {msg.category} by message {msg.message_id}"]
        else:
            return
        self._emit(ch, t, "escalated", now, message_id=msg.message_id)
        self._index_case(t)
        if t.state == "queued" and t.routed:
            # Other agents may fit the new category, or a P1 an emergency slot.
            self._route_or_defer(ch, t, now, msg.message_id, defer)
