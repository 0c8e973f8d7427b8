"""Opening the catalogue: engine, SQLite pragmas, migrations, sessions.

SQLite runs in WAL mode with foreign keys on and a busy timeout, and every transaction begins IMMEDIATE so that
two writers queue on the busy timeout instead of failing when a read lock is upgraded to a write lock. Nothing
outside this module knows which backend it talks to.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from archiver.errors import CatalogueError

if TYPE_CHECKING:  # Alembic loads only to migrate (0.14 s at every start otherwise)
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY = "archiver_read_only"  # execution option marking a reading session
# The newest migration in migrations/versions: what check_schema expects without loading Alembic to find out.
# tests/test_catalogue_sessions.py holds it equal to the migration scripts' head.
HEAD_REVISION = "0005"


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, emit BEGIN (pysqlite's implicit transactions are unreliable).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=FULL")  # a committed row survives power loss, like the WARC bytes
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the write lock up front, so two writers never deadlock upgrading a read lock. Readers
        # (``Catalogue.reading``) begin deferred and never wait on a writer: WAL serves them a snapshot.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")


def create_catalogue_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise CatalogueError(f"invalid database URL {url!r}: {exc}") from exc
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        if parsed.get_backend_name() == "sqlite":
            db = parsed.database
            if db and db != ":memory:":
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
            _sqlite_setup(engine)
        else:
            engine = create_engine(parsed, pool_pre_ping=True)
    except (NoSuchModuleError, ImportError) as exc:
        raise CatalogueError(
            f"no driver for {parsed.drivername}", hint="install the extra: pip install 'evidence-archiver[postgres]'"
        ) from exc
    return engine


def _alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration. Safe to call on every start."""
    from alembic import command

    try:
        command.upgrade(_alembic_config(engine), "head")
    except OperationalError as exc:
        raise CatalogueError(f"cannot reach the catalogue: {exc.orig}") from exc
    except SQLAlchemyError as exc:
        raise CatalogueError(f"catalogue migration failed: {exc}") from exc


def current_revision(engine: Engine) -> str | None:
    """The revision Alembic recorded in ``alembic_version`` (None before the first migration)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        revs = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(revs) > 1:
        raise CatalogueError(f"the catalogue records several schema revisions: {', '.join(sorted(revs))}")
    return revs[0] if revs else None


def head_revision() -> str | None:
    """The newest revision among the migration scripts (loads Alembic)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def check_schema(engine: Engine) -> None:
    try:
        rev = current_revision(engine)
    except OperationalError as exc:
        raise CatalogueError(f"cannot reach the catalogue: {exc.orig}") from exc
    if rev is None:
        raise CatalogueError("the catalogue has no schema", hint="run 'archiver init'")
    if rev != HEAD_REVISION:
        raise CatalogueError(
            f"the catalogue schema is at {rev}, this version needs {HEAD_REVISION}",
            hint="run 'archiver init' to migrate",
        )


class WriterTurn:
    """Takes turns among this catalogue's writers, across processes: a capture run over several processes
    commits from each of them at once, and SQLite's busy handler makes a writer that finds the lock taken sleep
    (1, 2, 5, 10 ms and longer) before it tries again. An ``flock`` on a file beside the database blocks instead
    and wakes the next writer as soon as the lock is released. SQLite's own locking still decides what is
    correct; the turn only orders the writers that take it (the group commit of capture runs).

    Within a process the turn is a thread lock; the file is opened once per process (a forked child must not
    share its parent's open file, whose lock the two would then hold together).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fd: int | None = None
        _TURNS.add(self)

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _open(self) -> int:
        if self._fd is None:  # reset in a forked child (_forget_turns_after_fork)
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise CatalogueError(f"cannot open the catalogue's writer lock {self.path}: {exc}") from exc
        return self._fd

    def _forget(self) -> None:
        self._lock = threading.Lock()  # a fork copies a lock another thread may have held
        self._fd = None  # the parent's descriptor stays the parent's: closing it here would not release its lock

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None


_TURNS: weakref.WeakSet[WriterTurn] = weakref.WeakSet()


def _forget_turns_after_fork() -> None:
    for turn in list(_TURNS):
        turn._forget()


os.register_at_fork(after_in_child=_forget_turns_after_fork)


class Catalogue:
    """An engine and a session factory. ``with cat.session() as s:`` commits on success, rolls back on error."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_catalogue_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        database = self.engine.url.database
        self._turn = (
            WriterTurn(Path(f"{database}.writer-lock"))
            if self.dialect == "sqlite" and database and database != ":memory:"
            else None
        )

    @property
    def writer_turn(self) -> Callable[[], AbstractContextManager[None]]:
        """A turn to write (see :class:`WriterTurn`), taken before a transaction begins; PostgreSQL's writers
        block on its locks without polling and need none."""
        return self._turn if self._turn is not None else contextlib.nullcontext

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def migrate(self) -> None:
        upgrade(self.engine)

    def check(self) -> None:
        check_schema(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        s = self._sessions()
        try:
            yield s
            s.commit()
        except OperationalError as exc:
            s.rollback()
            raise CatalogueError(f"catalogue error: {exc.orig}") from exc
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads only: one consistent snapshot, no write lock, always rolled back."""
        s = self._sessions()
        try:
            s.connection(execution_options={READ_ONLY: True})
            if self.dialect == "postgresql":
                s.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
            yield s
        except DBAPIError as exc:  # includes PostgreSQL's refusal to write in a read-only transaction
            raise CatalogueError(f"catalogue error: {exc.orig}") from exc
        finally:
            # close() ends the transaction with a rollback but, unlike rollback(), leaves loaded objects usable.
            s.close()

    def dispose(self) -> None:
        self.engine.dispose()
        if self._turn is not None:
            self._turn.close()
