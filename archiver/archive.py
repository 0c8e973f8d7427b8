"""The archive: settings, catalogue, clock and key wired together. What the CLI and the jobs hold on to."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver import SOFTWARE, custody, keys
from archiver.catalogue.db import Catalogue
from archiver.catalogue.models import CustodyEvent
from archiver.catalogue.store import Store
from archiver.clock import Clock, IdGenerator, RandomIds, SystemClock
from archiver.config import DEFAULT_SETTINGS_TOML, Settings
from archiver.errors import ConfigError, NotInitialisedError

LAYOUT = ("warcs", "keys", "tmp", "logs", "exports", "receipts")


@dataclass(frozen=True)
class InitReport:
    root: str
    db_url: str
    key_id: str
    created: tuple[str, ...]  # what this call created (empty when everything was there)


class Archive:
    def __init__(self, settings: Settings, *, clock: Clock | None = None, ids: IdGenerator | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.ids: IdGenerator = ids or RandomIds()
        self._catalogue: Catalogue | None = None

    @property
    def catalogue(self) -> Catalogue:
        if self._catalogue is None:
            self._catalogue = Catalogue(self.settings.db_url)
        return self._catalogue

    @property
    def actor(self) -> str:
        return self.settings.collector

    def init(self) -> InitReport:
        """Create the storage layout, settings file, catalogue schema and signing key. Harmless to repeat."""
        root = self.settings.root
        created: list[str] = []
        try:
            for name in ("", *LAYOUT):
                d = root / name
                if not d.is_dir():
                    d.mkdir(parents=True, exist_ok=True)
                    created.append(f"{d}/")
            (root / "keys").chmod(0o700)
            if not self.settings.settings_path.exists():
                self.settings.settings_path.write_text(DEFAULT_SETTINGS_TOML, encoding="utf-8")
                created.append(str(self.settings.settings_path))
        except OSError as exc:
            raise ConfigError(f"cannot create the storage root {root}: {exc.strerror}") from exc
        had_key = (self.settings.key_dir / "archive-key.pem").exists()
        info = keys.create_key(self.settings.key_dir)
        if not had_key:
            created.append(str(self.settings.key_dir / "archive-key.pem"))
        self.catalogue.migrate()
        with self.session() as s:
            if s.scalar(select(CustodyEvent.seq).limit(1)) is None:
                custody.append(
                    s,
                    self.clock,
                    actor=self.actor,
                    action="archive.initialised",
                    subject="archive",
                    details={
                        "software": SOFTWARE,
                        "key_id": info.key_id,
                        "catalogue": self.catalogue.dialect,
                    },
                )
                created.append("catalogue")
        return InitReport(str(root), _safe_url(self.settings.db_url), info.key_id, tuple(created))

    def ensure_ready(self) -> None:
        """Refuse to work on a storage root that was never initialised (rather than half-create one)."""
        if not self.settings.root.is_dir() or not (self.settings.key_dir / "archive-key.pem").exists():
            raise NotInitialisedError(
                f"{self.settings.root} is not an initialised archive", hint="run 'archiver init' first"
            )
        self.catalogue.check()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.catalogue.session() as s:
            yield s

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only snapshot that never waits on (or blocks) a running capture's writes."""
        with self.catalogue.reading() as s:
            yield s

    @contextmanager
    def store(self) -> Iterator[Store]:
        with self.session() as s:
            yield Store(s, self.clock, self.actor)

    def close(self) -> None:
        if self._catalogue is not None:
            self._catalogue.dispose()


def _safe_url(url: str) -> str:
    """A database URL without its password, for display."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
