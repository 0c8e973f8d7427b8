"""The one exception tree of the archiver.

Every error the library raises on purpose is an :class:`ArchiverError`. Third-party errors are translated at
the boundary (``raise ... from exc``) so that the CLI can catch this one type and print a one-line message.
Verification problems are *not* exceptions: they are returned as data (see :mod:`archiver.verify`).
"""

from __future__ import annotations


class ArchiverError(Exception):
    """Base of every error the archiver raises on purpose.

    ``hint`` says what the user can do about it; the CLI prints it after the message.
    ``exit_code`` is what the CLI exits with.
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(ArchiverError):
    """Settings are missing, malformed or contradictory."""

    exit_code = 2


class NotInitialisedError(ConfigError):
    """The storage root has not been initialised with ``archiver init``."""


class ManifestError(ArchiverError):
    """An incident manifest is malformed. Carries the file, line and field at fault."""

    exit_code = 2

    def __init__(self, path: str, line: int | None, field: str | None, problem: str) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.problem = problem
        where = path if line is None else f"{path}:{line}"
        message = f"{where}: {field}: {problem}" if field else f"{where}: {problem}"
        super().__init__(message)


class ManifestErrors(ArchiverError):
    """Several manifest problems, reported together so the user can fix them in one pass."""

    exit_code = 2

    def __init__(self, errors: list[ManifestError]) -> None:
        self.errors = errors
        super().__init__("\n".join(e.message for e in errors))


class CatalogueError(ArchiverError):
    """The catalogue cannot be opened, migrated or queried."""


class NotFoundError(ArchiverError):
    """A named incident, source, capture or file does not exist."""

    exit_code = 3


class UrlError(ArchiverError):
    """A URL cannot be archived (unsupported scheme, no host, malformed)."""

    exit_code = 2


class CustodyError(ArchiverError):
    """The custody log refused an append (for example a concurrent writer won the race)."""


class WarcError(ArchiverError):
    """A WARC file cannot be written, read or repaired."""


class CaptureError(ArchiverError):
    """A capture could not be performed (not: a capture that failed, which is recorded as data)."""


class ToolMissingError(ArchiverError):
    """An external tool the archiver needs (ffmpeg, chromium) is not installed."""

    exit_code = 4


class SigningKeyError(ArchiverError):
    """The archive signing key is missing, unreadable or does not match."""


class TimestampError(ArchiverError):
    """A timestamp authority could not be reached or answered with something unusable."""


class LockedError(ArchiverError):
    """Another run holds the storage lock."""

    exit_code = 75  # EX_TEMPFAIL: cron may try again later


class BundleError(ArchiverError):
    """An evidence bundle cannot be written or read."""
