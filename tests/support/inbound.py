"""Customer messages into a running system the way adapters send them: a provider's own
payload POSTed to ingest's webhook, signed with the development secret."""

from __future__ import annotations

import httpx

from omniroute.system import DEV_SECRET, LocalSystem
from services.ingest.http import SIGNATURE_HEADER, sign


def post_inbound(system: LocalSystem, channel: str, provider: str, body: bytes) -> list[str]:
    """The message ids ingest accepted (202) for one payload."""
    reply = httpx.post(
        f"{system.url('ingest')}/v1/inbound/{channel}/{provider}",
        content=body,
        headers={SIGNATURE_HEADER: sign(DEV_SECRET, body)},
        timeout=10,
    )
    assert reply.status_code == 202, reply.text
    return [str(m) for m in reply.json()["message_ids"]]
