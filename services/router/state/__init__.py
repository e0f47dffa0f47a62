"""The router's state: tickets and agents in memory, every decision a function of
(state, input, now) that returns the ticket events it caused. No I/O here.

Ticket states: queued -> offered -> assigned -> (waiting_on_customer <-> assigned) -> resolved;
an offer that expires or is declined, and accepted work of an agent gone for longer than
the grace period, go back to `queued` with their original age.

Structures (sized for 100,000 open and 10,000+ waiting tickets):
- `queue`: waiting tickets per need class, heaps ordered best first (services.router.queue);
- `timers`: one heap of (due_at, kind, id) for offer expiry and away-agent requeueing,
  fired by `tick(now)` on the lease holder like any other input;
- `counts`: tickets by (state, priority), kept as tickets change, for the metrics;
- `position`: the router-wide event number, so the ticket log replays in decision order.

One job per module, each layer built on the one below:
- model.py       Ticket, Changes (what one input changed), the state's constants;
- indexes.py     the data and its indexes, loading, the bookkeeping of every change;
- assignment.py  giving a ticket to an agent and taking it back;
- matching.py    ticket -> best agent, freed agent -> best waiting tickets;
- tickets.py     messages: open, add, merge a case, reopen, raise the priority;
- agents.py      profiles, presence and actions;
- escalation.py  SLA warnings and breaches;
- timers.py      the clock: offer expiry, requeueing an away agent's work.
"""

from __future__ import annotations

from services.router.state.agents import AgentInputs
from services.router.state.escalation import SlaInputs
from services.router.state.tickets import TicketLifecycle
from services.router.state.timers import Timers


class RouterState(TicketLifecycle, AgentInputs, SlaInputs, Timers):
    """The whole state: built with `RouterState(policy)`, filled by `add_ticket` /
    `add_agent`, then driven by `on_message`, `on_profile`, `on_presence`, `on_action`,
    `on_sla` and `tick`, each returning the `Changes` it made."""
