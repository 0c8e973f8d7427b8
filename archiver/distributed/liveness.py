"""Is the worker that holds a claim or a running capture alive? PostgreSQL advisory locks answer.

Each worker process keeps one dedicated connection for its whole life and holds on it a session-level advisory
lock on its own identity, plus one on every claim it is working on. PostgreSQL releases a session's advisory
locks when the session ends, and a session ends when its process dies: kill -9 closes the socket, and the
server notices at once; a machine that vanishes from the network is noticed by the server's TCP keepalives,
which this connection sets short (``tcp_keepalives_*`` are per-session settings). So "can I take this lock?" is
"is its holder dead?", with no heartbeat rows to write and no lease to guess (PostgreSQL manual §13.3.5).

The catch: a worker whose connection to PostgreSQL drops while it keeps capturing looks dead, and its claim may
be taken over; the claim's final update names its owner, so the slower of the two finds it lost the claim.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from archiver.clock import IdGenerator
from archiver.errors import CatalogueError

# The two-key form (int4, int4) keeps claim locks apart from the one-key (int8) locks of workers and custody.
CLAIM_LOCK_CLASS = 0x4152_4331  # "ARC1"
_KEEPALIVES = ("SET tcp_keepalives_idle = 30", "SET tcp_keepalives_interval = 10", "SET tcp_keepalives_count = 3")


@dataclass(frozen=True)
class WorkerIdentity:
    """One worker process: ``host:pid:nonce`` (the nonce tells apart pid 1 of two containers on one host)."""

    host: str
    pid: int
    nonce: str

    @property
    def name(self) -> str:
        return f"{self.host}:{self.pid}:{self.nonce}"

    @classmethod
    def current(cls, ids: IdGenerator) -> WorkerIdentity:
        return cls(socket.gethostname(), os.getpid(), ids.uuid().hex[:8])


def worker_key(name: str) -> int:
    """The int8 advisory-lock key of a worker name (first 8 bytes of its SHA-256, signed)."""
    return int.from_bytes(hashlib.sha256(b"archiver-worker:" + name.encode()).digest()[:8], "big", signed=True)


def is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def worker_alive(session: Session, name: str | None) -> bool:
    """Whether the worker process ``name`` still holds its lock. A capture without a worker belongs to the local
    executor, which runs under the run lock: whoever asks (holding that lock) outlived it. Without PostgreSQL
    there are no workers."""
    if name is None or not is_postgresql(session):
        return False
    # Transaction-scoped: taken only to test, released with the caller's transaction.
    got = session.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": worker_key(name)})
    return not got


def claim_owner_alive(session: Session, claim_id: int) -> bool:
    """Whether a live worker is working on the claim (holds its lock). Must run on PostgreSQL."""
    got = session.scalar(text("SELECT pg_try_advisory_xact_lock(:c, :o)"), {"c": CLAIM_LOCK_CLASS, "o": claim_id})
    return not got


class Liveness:
    """The worker's dedicated connection and the advisory locks it holds (thread-safe: a thread pool may share it)."""

    def __init__(self, engine: Engine, identity: WorkerIdentity) -> None:
        if engine.dialect.name != "postgresql":
            raise CatalogueError("distributed workers need a PostgreSQL catalogue")
        self.identity = identity
        # Its own engine without a pool: this one connection must never be handed to anybody else.
        self._engine = create_engine(engine.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        self._lock = threading.Lock()
        self._held: set[int] = set()  # advisory locks are re-entrant within a session: threads must not share one
        self._conn: Connection | None = self._engine.connect()
        for statement in _KEEPALIVES:
            self._conn.execute(text(statement))
        self._conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": worker_key(identity.name)})

    def _connection(self) -> Connection:
        if self._conn is None:
            raise CatalogueError("the worker's liveness connection is closed")
        return self._conn

    def try_claim(self, claim_id: int) -> bool:
        with self._lock:
            if claim_id in self._held:
                return False
            got = self._connection().scalar(
                text("SELECT pg_try_advisory_lock(:c, :o)"), {"c": CLAIM_LOCK_CLASS, "o": claim_id}
            )
            if got:
                self._held.add(claim_id)
            return bool(got)

    def release_claim(self, claim_id: int) -> None:
        with self._lock:
            if claim_id in self._held:
                self._held.discard(claim_id)
                self._connection().execute(
                    text("SELECT pg_advisory_unlock(:c, :o)"), {"c": CLAIM_LOCK_CLASS, "o": claim_id}
                )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()  # the session ends: every lock it held goes with it
                self._conn = None
            self._engine.dispose()
