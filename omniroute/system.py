"""The whole system on one machine: the embedded stack plus each service as its own process,
as in production. Used by `omniroute dev`, `omniroute demo`, the e2e tests and the benchmark.
"""

from __future__ import annotations

import fnmatch
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient
from pymongo.synchronous.database import Database

from shared.embedded import EmbeddedStack, free_port, spawn, stop_process

SERVICES = ("ingest", "router", "sla", "notify")
DEFAULT_PORTS = {"ingest": 8081, "router": 8082, "sla": 8083, "notify": 8084}
# The development defaults of shared.settings; production refuses them.
DEV_TOKEN = "dev-token"  # noqa: S105
DEV_SECRET = "dev-secret"  # noqa: S105


def preferred_port(port: int) -> int:
    """`port` if nothing listens there, else any free one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


def owned_collections() -> dict[str, tuple[str, ...]]:
    """Service -> the collections its store modules declare (`COLLECTIONS`; a trailing `*`
    names a family, e.g. ingest's `classified_texts_*` per day). Besides these, a service's
    database may hold the shared kit's collections (`shared.mongo.KIT_COLLECTIONS`)."""
    from services.ingest import store as ingest
    from services.notify import store as notify
    from services.router import store as router
    from services.sla import store as sla

    return {
        "ingest": ingest.COLLECTIONS,
        "router": router.COLLECTIONS,
        "sla": sla.COLLECTIONS,
        "notify": notify.COLLECTIONS,
    }


def owner_of(collection: str) -> str:
    """The one service whose store declares `collection`."""
    owners = [
        service
        for service, names in owned_collections().items()
        if any(fnmatch.fnmatchcase(collection, n) for n in names)
    ]
    if len(owners) != 1:
        raise LookupError(
            f"collection {collection!r} is declared by {owners or 'no service'}:"
            " name the service, e.g. databases.router.leases"
        )
    return owners[0]


class ServiceDatabases:
    """Each service's own database on its own server, read directly (tests, `omniroute dev`).

    `dbs.router` (or `dbs["router"]`) is the router's database; `dbs.tickets` (or
    `dbs["tickets"]`) the `tickets` collection in the database of the service that declares
    it (kit collections such as `leases` need the service named: `dbs.sla.leases`).
    """

    def __init__(self, where: dict[str, tuple[str, str]]) -> None:
        self._clients: dict[str, MongoClient[dict[str, Any]]] = {}
        self._dbs: dict[str, Database[dict[str, Any]]] = {}
        for service, (uri, name) in where.items():
            client: MongoClient[dict[str, Any]] = MongoClient(uri, tz_aware=True)
            self._clients[service] = client
            self._dbs[service] = client[name]

    def __getitem__(self, name: str) -> Any:
        """A service's database, or a collection in the database of its owner."""
        if name in self._dbs:
            return self._dbs[name]
        return self._dbs[owner_of(name)][name]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except LookupError as exc:
            raise AttributeError(str(exc)) from exc

    def items(self) -> list[tuple[str, Database[dict[str, Any]]]]:
        return list(self._dbs.items())

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


@dataclass
class ServiceProcess:
    name: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    service: str = ""  # which service it runs; `name` may be a replica like "router#2"

    def __post_init__(self) -> None:
        self.service = self.service or self.name.split("#", 1)[0]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class LocalSystem:
    stack: EmbeddedStack
    log_dir: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    fast_rebalance: bool = True
    default_ports: bool = False
    # Each service's database is `<mongo_db>_<service>` on that service's own SecantusDB
    # (the default gives the settings' defaults, `omniroute_router` and so on).
    mongo_db: str = "omniroute"
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    def database(self, service: str) -> str:
        """The name of `service`'s own database."""
        return f"{self.mongo_db}_{service}"

    def mongo_uri(self, service: str) -> str:
        """The connection string of `service`'s own SecantusDB."""
        return self.stack.mongo_uri(service)

    def databases(self) -> ServiceDatabases:
        """A synchronous client on each service's own database (close it after use)."""
        return ServiceDatabases({s: (self.mongo_uri(s), self.database(s)) for s in SERVICES})

    def env_for(self, svc: ServiceProcess) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIROUTE_")}
        env.update(self.stack.env(svc.service))
        env.update(
            {
                "OMNIROUTE_HTTP_PORT": str(svc.port),
                "OMNIROUTE_API_TOKEN": DEV_TOKEN,
                "OMNIROUTE_KAFKA_CREATE_TOPICS": "false",
                "OMNIROUTE_MONGO_DB": self.database(svc.service),
            }
        )
        if self.fast_rebalance:
            # Group joins take about session_timeout/2 on Tansu: keep restarts quick.
            env["OMNIROUTE_KAFKA_SESSION_TIMEOUT_MS"] = "3000"
            env["OMNIROUTE_KAFKA_HEARTBEAT_INTERVAL_MS"] = "1000"
        env.update(self.env_overrides)
        return env

    def start(self, names: tuple[str, ...] = SERVICES) -> LocalSystem:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            port = preferred_port(DEFAULT_PORTS[name]) if self.default_ports else self._free_port()
            svc = self.services.get(name) or ServiceProcess(
                name, port, self.log_dir / f"{name}.log"
            )
            self.services[name] = svc
            self.start_service(name)
        return self

    def _free_port(self) -> int:
        """A free port no process of this system was given yet. The services bind theirs
        only once started, so the kernel may offer one port twice meanwhile (seen: router
        and sla on one port, the router exiting on the bind and sla answering for both)."""
        taken = {svc.port for svc in self.services.values()}
        while (port := free_port()) in taken:
            pass
        return port

    def start_service(self, name: str) -> None:
        svc = self.services[name]
        svc.proc = spawn(
            [sys.executable, "-m", "omniroute.cli", svc.service],
            log_path=svc.log_path,
            env=self.env_for(svc),
        )

    def add_replica(self, service: str) -> str:
        """Start one more process of `service` (e.g. a standby engine); returns its name."""
        n = 2
        while f"{service}#{n}" in self.services:
            n += 1
        name = f"{service}#{n}"
        self.services[name] = ServiceProcess(name, self._free_port(), self.log_dir / f"{name}.log")
        self.start_service(name)
        return name

    def wait_ready(self, timeout_s: float = 60.0, names: tuple[str, ...] | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        pending = set(names or self.services)
        with httpx.Client(timeout=2.0) as client:
            while pending and time.monotonic() < deadline:
                for name in sorted(pending):
                    svc = self.services[name]
                    if svc.proc is not None and svc.proc.poll() is not None:
                        raise RuntimeError(
                            f"{name} exited with {svc.proc.returncode}; see {svc.log_path}"
                        )
                    try:
                        if client.get(f"{svc.url}/readyz").status_code == 200:
                            pending.discard(name)
                    except httpx.HTTPError:
                        pass
                if pending:
                    time.sleep(0.1)
        if pending:
            raise TimeoutError(f"not ready after {timeout_s:.0f}s: {sorted(pending)}")
        for name in names or self.services:  # ready, and still the process we started
            svc = self.services[name]
            if svc.proc is not None and svc.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {svc.proc.returncode}; see {svc.log_path}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.services[name].proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=15)

    def stop_service(self, name: str) -> None:
        proc = self.services[name].proc
        if proc is not None:
            stop_process(proc, timeout_s=15)

    @property
    def pids(self) -> list[int]:
        return [s.proc.pid for s in self.services.values() if s.proc is not None]

    def stop(self) -> None:
        for name in reversed(list(self.services)):
            self.stop_service(name)

    def url(self, name: str) -> str:
        return self.services[name].url
