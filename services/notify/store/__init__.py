"""Notify's MongoDB stores: one small port per collection (or pair) and job.

    conversations.py  notify_conversations   routes and facts per conversation
    tickets.py        notify_tickets         ticket views, the queue
    outbox.py         notifications          the outbox and its claim protocol
    incidents.py      incidents, incident_links
    customers.py      notify_customers       notify's copy of customer facts
    acks.py           notify_acks            acknowledgements waiting for their deadline
    queue.py          notify_queue_stats     assignments measured per priority queue

Each module declares the collections it owns in `COLLECTIONS`; notify touches no other.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.notify.store import acks, conversations, customers, incidents, outbox, queue, tickets
from services.notify.store.acks import AckStore, MongoAckStore
from services.notify.store.conversations import ConversationStore, MongoConversationStore
from services.notify.store.customers import CustomerStore, MongoCustomerStore
from services.notify.store.incidents import IncidentStore, MongoIncidentStore
from services.notify.store.outbox import MongoOutboxStore, OutboxStore
from services.notify.store.queue import MongoQueueStatsStore, QueueStatsStore
from services.notify.store.tickets import MongoTicketStore, TicketStore
from shared.mongo import Database

COLLECTIONS: tuple[str, ...] = (
    *conversations.COLLECTIONS,
    *tickets.COLLECTIONS,
    *outbox.COLLECTIONS,
    *incidents.COLLECTIONS,
    *customers.COLLECTIONS,
    *acks.COLLECTIONS,
    *queue.COLLECTIONS,
)


@dataclass(frozen=True)
class NotifyStores:
    conversations: ConversationStore
    tickets: TicketStore
    outbox: OutboxStore
    incidents: IncidentStore
    customers: CustomerStore
    acks: AckStore
    queue: QueueStatsStore

    async def ensure_indexes(self) -> None:
        for store in (
            self.conversations,
            self.tickets,
            self.outbox,
            self.incidents,
            self.customers,
            self.acks,
            self.queue,
        ):
            await store.ensure_indexes()


def mongo_stores(db: Database, retention_s: float = 90 * 86400, keep: int = 64) -> NotifyStores:
    return NotifyStores(
        conversations=MongoConversationStore(db),
        tickets=MongoTicketStore(db, retention_s),
        outbox=MongoOutboxStore(db),
        incidents=MongoIncidentStore(db),
        customers=MongoCustomerStore(db),
        acks=MongoAckStore(db, retention_s),
        queue=MongoQueueStatsStore(db, keep),
    )
