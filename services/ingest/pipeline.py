"""From raw provider bytes to `MessageReceived`: parse, redact, then (after identity) classify.

Pure functions: no I/O. The handler does the one MongoDB round trip per batch (identity)
between `prepare` and `finish`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

from services.ingest.classify import Classification, ToClassify
from services.ingest.customers import CustomerRef
from services.ingest.language import detect_language
from services.ingest.model import ParsedMessage, ParseError, ParserConfig, Skipped
from services.ingest.parsers.sniff import PARSERS, sniff
from services.ingest.redact import redact
from shared.contracts.common import PROVIDERS_BY_CHANNEL, Channel, Provider
from shared.contracts.messages import EmailThread, MessageReceived, Redaction
from shared.ids import conversation_id, message_id


class IngestPolicy(BaseModel):
    """policy/ingest.yaml: facts about the exchange's own accounts and IVR menu."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    parser: ParserConfig = ParserConfig()
    languages: tuple[str, ...] = ("en", "zh")


def load_policy(path: Path) -> IngestPolicy:
    if not path.exists():
        return IngestPolicy()
    return IngestPolicy.model_validate(yaml.safe_load(path.read_text("utf-8")) or {})


@dataclass(frozen=True)
class Prepared:
    """A parsed message with its secrets already removed."""

    parsed: ParsedMessage
    text: str
    subject: str | None
    redactions: tuple[Redaction, ...]

    @property
    def message_id(self) -> str:
        return message_id(self.parsed.provider, self.parsed.provider_message_id)

    def to_classify(self) -> ToClassify:
        return ToClassify(self.text, self.subject, self.parsed.category_hint, self.redactions)

    @property
    def conversation_id(self) -> str:
        p = self.parsed
        return conversation_id(p.channel, p.provider, p.conversation_key)


def resolve_provider(channel: Channel, provider: str | None, raw: bytes) -> Provider:
    if provider:
        for known in PROVIDERS_BY_CHANNEL[channel]:
            if known == provider:
                return known
        raise ParseError(f"unknown provider for {channel}")
    sniffed = sniff(channel, raw)
    if sniffed is None:
        raise ParseError("unrecognised format")
    return sniffed


def merge_redactions(*groups: tuple[Redaction, ...]) -> tuple[Redaction, ...]:
    counts: dict[str, int] = {}
    for group in groups:
        for r in group:
            counts[r.kind] = counts.get(r.kind, 0) + r.count
    return tuple(Redaction(kind=k, count=n) for k, n in sorted(counts.items()))  # type: ignore[arg-type]


def prepare(
    channel: Channel, provider: str | None, raw: bytes, config: ParserConfig
) -> list[Prepared | Skipped]:
    """Parse and redact. Raises ParseError for a payload that cannot be understood."""
    chosen = resolve_provider(channel, provider, raw)
    parser = PARSERS.get((channel, chosen))
    if parser is None:
        raise ParseError(f"no parser for {channel}/{chosen}")
    out: list[Prepared | Skipped] = []
    for item in parser(raw, config):
        if isinstance(item, Skipped):
            out.append(item)
            continue
        text, in_text = redact(item.text)
        subject, in_subject = redact(item.subject) if item.subject else (item.subject, ())
        out.append(Prepared(item, text, subject, merge_redactions(in_text, in_subject)))
    return out


def language_of(prepared: Prepared, customer: CustomerRef, languages: tuple[str, ...]) -> str:
    """The caller's menu choice, else the text's language (short texts: what we know)."""
    p = prepared.parsed
    if p.language_choice in languages:
        return p.language_choice
    return detect_language(
        prepared.text or (prepared.subject or ""),
        p.locale_hint,
        languages,
        known=customer.language,
    )


def finish(
    prepared: Prepared,
    customer: CustomerRef,
    result: Classification,
    language: str,
    now: datetime,
) -> MessageReceived:
    p = prepared.parsed
    thread = p.email_thread
    if thread is not None and prepared.subject != thread.subject:
        thread = EmailThread(
            message_id=thread.message_id,
            references=thread.references,
            subject=prepared.subject,
            reply_to=thread.reply_to,
        )
    return MessageReceived(
        message_id=prepared.message_id,
        conversation_id=prepared.conversation_id,
        channel=p.channel,
        provider=p.provider,
        provider_message_id=p.provider_message_id,
        kind=p.kind,
        sent_at=p.sent_at or now,
        received_at=now,
        customer_id=customer.customer_id,
        customer_tier=customer.tier,
        anti_phishing_code=customer.anti_phishing_code,
        customer_language=customer.language,
        identities=p.identities,
        sender_name=p.sender_name,
        subject=prepared.subject,
        text=prepared.text,
        language=language,
        category=result.category,
        possible_urgent=result.possible_urgent,
        signals=result.signals,
        reasons=result.reasons,
        redactions=prepared.redactions,
        attachments=p.attachments,
        callback_number=p.callback_number,
        email_thread=thread,
    )
