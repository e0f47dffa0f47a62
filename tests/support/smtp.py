"""A local SMTP server (aiosmtpd) that keeps every message it is given, parsed."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller

from shared.embedded import free_port


@dataclass
class Mailbox:
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        msg = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(msg, EmailMessage)
        with self.lock:
            self.messages.append(msg)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"

    def snapshot(self) -> list[EmailMessage]:
        with self.lock:
            return list(self.messages)

    def counts(self) -> Counter[str]:
        """Messages per notification id (from the Message-ID the sender derived from it)."""
        return Counter(str(m["X-Omniroute-Notification-Id"]) for m in self.snapshot())


@contextmanager
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, decode_data=False)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()
