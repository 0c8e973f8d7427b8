"""Group commit: the catalogue writes of many captures in one transaction.

A capture run ends every capture with a transaction (Artifact rows, the capture's end, custody events) and
begins one with another (the Capture row, ``running``). One transaction per step serialises the workers on
the catalogue's single writer (SQLite's write lock, the custody chain's lock) and pays a durable commit (an
fsync) each time. So the steps are gathered, as databases gather their log writes: a worker hands its unit of
work to :meth:`GroupCommitter.submit` and waits; a waiting worker that finds no commit under way becomes the
leader, runs every unit queued so far in one transaction, commits, and wakes the others. Each caller returns
only once its own rows are committed, so the durability order of :mod:`archiver.capture.job` holds unchanged.

A unit is a function of a :class:`Batch`: the session, a custody :class:`~archiver.custody.ChainCursor` (the
chain head is read once per transaction) and bulk inserts deferred to the end of the transaction. A unit must
change nothing outside the catalogue and return plain values: when a batch fails, its units are run again,
one transaction each, so that one bad unit fails alone and the others still commit. A crash at any moment
loses the open transaction whole (SQLite's journal, PostgreSQL's WAL): nothing is ever half-committed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Executable, insert
from sqlalchemy.orm import Session

from archiver.catalogue.models import Base, table_of
from archiver.clock import Clock
from archiver.custody import ChainCursor
from archiver.errors import CatalogueError

T = TypeVar("T")
Work = Callable[["Batch"], T]

# Units per transaction. A bound on what one failure makes run again, and on how long a follower waits.
MAX_BATCH = 64
# How long a leader waits for more units before a batch, when the last batch showed company: each transaction
# costs a begin, a chain-head read and a durable commit, so a few ms of a capture's latency (tens of ms on the
# network) buy fewer, larger transactions. A caller alone never waits.
GATHER_SECONDS = 0.003


class Pending(Generic[T]):
    """A value that a deferred statement produces when the batch is flushed (a generated id). A unit may return
    it; its caller reads it once :meth:`GroupCommitter.submit` has returned."""

    def __init__(self) -> None:
        self._set = False
        self._value: T | None = None

    def set(self, value: T) -> None:
        self._value, self._set = value, True

    def get(self) -> T:
        if not self._set:
            raise RuntimeError("read before its batch was flushed")
        return self._value  # type: ignore[return-value]  # T once set


@dataclass
class _Deferred:
    statement: Executable
    params: list[Mapping[str, Any]] = field(default_factory=list)
    results: list[Pending[Any]] | None = None


class Batch:
    """What a unit of work gets: the transaction's session, its custody cursor and deferred statements.

    Deferred statements run at :meth:`flush`, each once for all the rows the batch's units gave it (an
    executemany, or one multi-row INSERT), in the order they were first used: a unit gives values, not
    statements, so that SQLAlchemy builds, caches and sends one statement per batch instead of one per page.
    """

    def __init__(self, session: Session, clock: Clock) -> None:
        self.session = session
        self.custody = ChainCursor(session, clock)
        self._deferred: dict[tuple[object, tuple[str, ...]], _Deferred] = {}

    def insert(self, model: type[Base], rows: Iterable[Mapping[str, Any]]) -> None:
        """Insert ``rows`` (column values) when the batch is flushed.

        A row may refer to rows given earlier (of any table); no unit may read them back before :meth:`flush`.
        """
        table = table_of(model)
        for row in rows:
            self._group(table, tuple(row), lambda: insert(table)).params.append(row)

    def insert_returning_id(self, model: type[Base], values: Mapping[str, Any]) -> Pending[int]:
        """Insert one row when the batch is flushed; its generated ``id`` is the returned value's."""
        table = table_of(model)
        group = self._group(
            (table, "id"), tuple(values), lambda: insert(table).returning(table.c.id, sort_by_parameter_order=True)
        )
        pending: Pending[int] = Pending()
        group.params.append(values)
        if group.results is None:
            group.results = []
        group.results.append(pending)
        return pending

    def insert_now(self, model: type[Base], values: Mapping[str, Any]) -> int:
        """Insert one row now and return its generated ``id``."""
        table = table_of(model)
        return int(self.session.execute(insert(table).returning(table.c.id), values).scalar_one())

    def execute(self, statement: Executable, params: Mapping[str, Any]) -> None:
        """Run ``statement`` (built once, with bind parameters) with ``params`` when the batch is flushed."""
        self._group(statement, tuple(params), lambda: statement).params.append(params)

    def flush(self) -> None:
        """Run the deferred statements, then insert the custody cursor's events."""
        deferred, self._deferred = self._deferred, {}
        for group in deferred.values():
            result = self.session.execute(group.statement, group.params)
            if group.results is not None:
                for pending, row_id in zip(group.results, result.scalars().all(), strict=True):
                    pending.set(row_id)
        self.custody.flush()

    @contextmanager
    def foreign(self) -> Iterator[Session]:
        """For code that writes through the ORM or :func:`archiver.custody.append` in this transaction: it
        sees every row given so far, and the cursor re-reads the chain head after it."""
        self.flush()
        try:
            yield self.session
        finally:
            self.custody.invalidate()

    def _group(self, key: object, columns: tuple[str, ...], statement: Callable[[], Executable]) -> _Deferred:
        group = self._deferred.get((key, columns))
        if group is None:
            group = self._deferred[(key, columns)] = _Deferred(statement())
        return group


def column_values(row: Base) -> dict[str, Any]:
    """The column values set on a new ORM object, for :meth:`Batch.insert` (an unset key, such as an
    autoincrement id, is left to the database)."""
    return {k: v for k, v in vars(row).items() if not k.startswith("_")}


@dataclass
class _Unit(Generic[T]):
    work: Work[T]
    done: bool = False
    value: T | None = None
    error: BaseException | None = field(default=None)
    # Set once the unit is settled, or when its caller is made the leader: each caller is woken once, never
    # by another batch's commit.
    wake: threading.Event = field(default_factory=threading.Event)

    def settle(self, value: T | None = None, error: BaseException | None = None) -> None:
        self.value, self.error, self.done = value, error, True

    def settled(self) -> bool:
        return self.done


class GroupCommitter:
    """Runs units of work (see the module docstring) in shared transactions; thread-safe.

    ``session`` opens a transaction that commits when its block ends (:meth:`archiver.archive.Archive.session`);
    ``turn`` is held around each batch's transactions (:attr:`archiver.catalogue.db.Catalogue.writer_turn`), and the
    batch is taken only once it is held.
    """

    def __init__(
        self,
        session: Callable[[], AbstractContextManager[Session]],
        clock: Clock,
        *,
        max_batch: int = MAX_BATCH,
        gather: float = GATHER_SECONDS,
        turn: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._session = session
        self._turn = turn
        self._clock = clock
        self._max = max_batch
        self._gather = gather
        self._last_batch = 0
        self._lock = threading.Lock()
        self._queue: list[_Unit[Any]] = []
        self._leading = False
        self.transactions = 0  # committed or not; with ``units`` it tells how well units were gathered
        self.units = 0

    @property
    def queued(self) -> int:
        """Units waiting for a transaction (not counting a batch being committed)."""
        with self._lock:
            return len(self._queue)

    def submit(self, work: Work[T]) -> T:
        """Run ``work`` in a transaction shared with other callers'; return its result once committed.

        Raises what ``work`` raised (its transaction rolled back, other units unaffected), or
        :class:`CatalogueError` when the catalogue could not commit.
        """
        unit: _Unit[T] = _Unit(work)
        with self._lock:
            self._queue.append(unit)
            follow, self._leading = self._leading, True
        if follow:
            unit.wake.wait()  # settled by a leader, or made leader by one stepping down
        while not unit.settled():
            # Leader: every unit not done is still queued, ours among them, though perhaps past this batch.
            if self._gather > 0 and self._last_batch > 1 and self.queued < self._max:
                time.sleep(self._gather)
            batch: list[_Unit[Any]] = []
            try:
                # The batch is taken once the turn is ours: while another process commits, units keep queuing
                # here and go into this transaction instead of waiting for the next.
                with self._turn():
                    batch = self._take()
                    self._commit(batch)
            except CatalogueError as exc:  # no turn (its lock file could not be opened): nothing can commit
                if batch:
                    raise
                batch = self._take()
                for u in batch:
                    u.settle(error=exc)
            finally:
                for u in batch:
                    if u is not unit:
                        u.wake.set()
                if unit.settled():
                    with self._lock:  # step down: the longest-waiting caller leads the next batch
                        if self._queue:
                            self._queue[0].wake.set()
                        else:
                            self._leading = False
        if unit.error is not None:
            raise unit.error
        return unit.value  # type: ignore[return-value]  # T, set by settle() when error is None

    def _take(self) -> list[_Unit[Any]]:
        with self._lock:
            batch, self._queue = self._queue[: self._max], self._queue[self._max :]
            self._last_batch = len(batch)
        return batch

    def _commit(self, units: list[_Unit[Any]]) -> None:
        try:
            try:
                values = self._transaction([u.work for u in units])
            except CatalogueError as exc:
                # The catalogue itself failed (unreachable, locked past the busy timeout): so would each unit.
                for u in units:
                    u.settle(error=exc)
            except Exception as exc:  # noqa: BLE001 - whatever a unit raised is that unit's caller's to see
                if len(units) == 1:
                    units[0].settle(error=exc)
                else:
                    self._one_by_one(units)
            else:
                for u, v in zip(units, values, strict=True):
                    u.settle(v)
        finally:
            for u in units:
                if not u.done:  # an interrupt in the leader: the batch is rolled back, its callers told so
                    u.settle(error=CatalogueError("the catalogue transaction was interrupted; nothing was committed"))

    def _one_by_one(self, units: list[_Unit[Any]]) -> None:
        for u in units:
            try:
                (value,) = self._transaction([u.work])
            except Exception as exc:  # noqa: BLE001 - handed to the unit's caller, who re-raises it
                u.settle(error=exc)
            else:
                u.settle(value)

    def _transaction(self, works: list[Work[Any]]) -> list[Any]:
        self.transactions += 1
        self.units += len(works)
        with self._session() as session:
            batch = Batch(session, self._clock)
            values = [work(batch) for work in works]
            batch.flush()
        return values
