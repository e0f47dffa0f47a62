"""`support.deadletter`: anything that could not be processed, with the reason."""

from __future__ import annotations

from pydantic import Field

from shared.contracts.common import Contract, UtcDatetime

DEAD_LETTERED = "omniroute.deadletter.recorded.v1"
MAX_PAYLOAD_CHARS = 65_536


class DeadLettered(Contract):
    """A record or a task a service gave up on, and why."""

    reason: str = Field(description="Short, stable reason (also a metric label)")
    detail: str | None = Field(default=None, description="Longer explanation, no personal data")
    service: str = Field(description="Which service gave up on it")
    source_topic: str | None = Field(default=None, description="Topic it was read from")
    source_partition: int | None = None
    source_offset: int | None = None
    provider: str | None = None
    key: str | None = None
    payload: str = Field(
        description="The original payload as text (invalid UTF-8 replaced), secrets redacted,"
        " truncated to 64 KiB"
    )
    payload_truncated: bool = False
    at: UtcDatetime
