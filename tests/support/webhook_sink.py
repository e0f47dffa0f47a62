"""A local HTTP receiver standing in for the exchange's chat/social/phone adapters.

Runs in a thread of the test process on a free loopback port and records every
delivery (headers, body, whether the HMAC signature checks out). Behaviour is set per
test: fail a notification's first N deliveries, answer slowly, or always fail.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool
    status: int

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data

    @property
    def notification_id(self) -> str:
        return str(self.json["notification_id"])


@dataclass
class WebhookSink:
    secrets: dict[str, str]
    # notification id -> how many deliveries to refuse (503) before accepting
    fail_first: dict[str, int] = field(default_factory=dict)
    # any delivery for which this returns a status gets it instead of 200
    respond: Callable[[dict[str, Any]], int | None] | None = None
    delay_s: float = 0.0
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _status_for(self, data: dict[str, Any]) -> int:
        nid = str(data.get("notification_id"))
        with self.lock:
            left = self.fail_first.get(nid, 0)
            if left > 0:
                self.fail_first[nid] = left - 1
                return 503
        if self.respond is not None:
            status = self.respond(data)
            if status is not None:
                return status
        return 200

    def record(self, path: str, headers: dict[str, str], body: bytes) -> int:
        if self.delay_s:
            time.sleep(self.delay_s)  # a slow adapter, not synchronisation
        try:
            data = json.loads(body)
        except ValueError:
            data = {}
        secret = self.secrets.get(str(data.get("provider")), "")
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        supplied = headers.get("x-omniroute-signature", "")
        ok = bool(secret) and hmac.compare_digest(expected, supplied)
        status = self._status_for(data) if ok else 401
        with self.lock:
            self.deliveries.append(Delivery(path, headers, body, ok, status))
        return status

    def accepted(self) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.status == 200]

    def counts(self) -> Counter[str]:
        """Accepted deliveries per notification id."""
        return Counter(d.notification_id for d in self.accepted())


@contextmanager
def running_sink(sink: WebhookSink) -> Iterator[WebhookSink]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = sink.record(self.path, headers, body)
            reply = b'{"ok": true}' if status == 200 else b'{"ok": false}'
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    sink.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
