"""The WARC sink: writes record groups into rotating, crash-safe ``.warc.gz`` files.

Every record is one gzip member (WARC 1.1 Annex D.2), so a record can be located by offset and length, copied
byte for byte into a bundle, and a crash damages at most the tail of one file. A group (a request/response
pair, a media file and its metadata) is written contiguously into one file and fsynced before
:meth:`WarcSink.write_group` returns, so a record the caller was told about is on disk.

A record's gzip member is built (compressed, its block re-hashed) before the sink's lock is taken, unless its
block is larger than ``ENCODE_AHEAD`` (then it is streamed under the lock, never held whole in memory): the
lock covers only appending bytes, so capture threads do not queue behind each other's compression.

Members are deflated by ISA-L (python-isal) when it is installed, at the level nearest to zlib's ``compress_level``
(:func:`deflater`): for a page of the crawl benchmark with its requisites (7 records: HTML and incompressible images
of a few KB) a group took 0.9-1.1 ms of CPU against 1.2-1.3 ms with zlib at level 6, and the members were within
2% of zlib's size. Any gzip reader reads either.

Files are written as ``<name>.open`` (created with ``O_EXCL`` and held under ``flock`` so that
:func:`archiver.warc.repair.repair_open_files` never touches a live file), and on close fsynced, made
read-only and renamed to their final name without ever replacing an existing file.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import re
import socket
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from archiver import SOFTWARE
from archiver.clock import Clock, IdGenerator, warc_date
from archiver.errors import WarcError
from archiver.warc.block import (
    PAYLOAD_RECORD_TYPES,
    Block,
    Digest,
    DigestPass,
    block_from_bytes,
    is_http_block,
)
from archiver.warc.records import REVISIT, WARCINFO, ClosedWarc, RecordRef, RecordSpec

isal_zlib: ModuleType | None
try:
    from isal import isal_zlib
except ImportError:  # pragma: no cover - a dependency; a platform without its wheels falls back to zlib
    isal_zlib = None

WARC_VERSION = "WARC/1.1"
FORMAT = "WARC File Format 1.1"
CONFORMS_TO = "http://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.1/"
OPEN_SUFFIX = ".open"
WRITE_BUFFER = 1 << 20
# Blocks up to this size are encoded into memory before the lock is taken (see the module docstring).
ENCODE_AHEAD = 1 << 20

# WARC 1.1 §4: field names are RFC 2616 tokens; values must not break the header (no CR, LF or NUL).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE = re.compile(r"[\r\n\x00]")
_RECORD_ID = re.compile(r"<[^<>\s]+>")  # WARC 1.1 §5.2: "<" uri ">"
_PREFIX = re.compile(r"[A-Za-z0-9._-]+")
# Fields the sink computes itself; a spec that sets them would produce a record that lies about itself.
_OWNED = frozenset(
    name.lower()
    for name in (
        "WARC-Type",
        "WARC-Record-ID",
        "WARC-Date",
        "WARC-Target-URI",
        "WARC-Warcinfo-ID",
        "WARC-Filename",
        "Content-Type",
        "Content-Length",
        "WARC-Block-Digest",
        "WARC-Payload-Digest",
    )
)


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new entry in ``directory`` durable (POSIX: the entry lives in the directory)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rename_no_replace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, refusing to replace an existing ``dst`` (``os.rename`` silently would).

    A hard link fails with EEXIST atomically; file systems without hard links fall back to check-then-rename.
    """
    try:
        os.link(src, dst)
    except FileExistsError as exc:
        raise WarcError(f"{dst} already exists; not replacing it with {src.name}") from exc
    except OSError:
        if dst.exists():
            raise WarcError(f"{dst} already exists; not replacing it with {src.name}") from None
        src.rename(dst)
        return
    src.unlink()


def sanitise_host(host: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9.-]", "-", host).strip(".-")
    return cleaned or "localhost"


def _check_field(name: str, value: str) -> None:
    if not _TOKEN.fullmatch(name):
        raise WarcError(f"invalid WARC field name {name!r}")
    if _BAD_VALUE.search(value):
        raise WarcError(f"WARC field {name} contains CR, LF or NUL: {value!r}")


def _check_spec(spec: RecordSpec) -> None:
    """Reject, before any byte is written, a spec that would make a malformed or self-contradicting record."""
    if not _TOKEN.fullmatch(spec.type) or spec.type == WARCINFO:
        raise WarcError(f"cannot write a record of type {spec.type!r}")
    _check_field("Content-Type", spec.content_type)
    if not spec.content_type:
        raise WarcError("record without a Content-Type")
    if spec.target_uri is not None:
        _check_field("WARC-Target-URI", spec.target_uri)
    if spec.record_id is not None and not _RECORD_ID.fullmatch(spec.record_id):
        raise WarcError(f"WARC-Record-ID must be <uri> (WARC 1.1 §5.2), got {spec.record_id!r}")
    if spec.date is not None and spec.date.tzinfo is None:
        raise WarcError("record date is a naive datetime; every time in the archiver is UTC-aware")
    for name, value in spec.headers:
        _check_field(name, value)
        # A revisit names the digest of the payload it revisits (WARC 1.1 §6.7.2); only the caller knows it.
        if name.lower() in _OWNED and not (spec.type == REVISIT and name.lower() == "warc-payload-digest"):
            raise WarcError(f"{name} is set by the sink and cannot be given in RecordSpec.headers")


class _DigestMismatchError(Exception):
    """The bytes copied into the WARC do not hash to the digest in the record header."""


@dataclass
class _OpenWarc:
    name: str
    open_path: Path
    final_path: Path
    fd: int
    opened_at: datetime
    warcinfo_id: str = ""
    size: int = 0
    records: int = 0
    hash: hashlib._Hash = field(default_factory=hashlib.sha256)  # every compressed byte, for ClosedWarc
    pending: bytearray = field(default_factory=bytearray)
    # Durability, shared by the groups waiting on one fsync (WarcSink._sync). ``written`` only grows, except
    # when a failed group is cut back (under ``sync_lock``); ``synced`` never exceeds what an fsync covered.
    written: int = 0  # bytes os.write has taken
    synced: int = 0  # bytes an fsync has made durable
    sync_lock: threading.Lock = field(default_factory=threading.Lock)  # held for each fsync and the fd's close
    broken: str | None = None  # an fsync failed: nothing more goes into this file, nothing unsynced is claimed

    def emit(self, data: bytes) -> None:
        if data:
            self.pending += data
            self.hash.update(data)
            self.size += len(data)
            if len(self.pending) >= WRITE_BUFFER:
                self.flush()

    def flush(self) -> None:
        view = memoryview(self.pending)
        while view:
            view = view[os.write(self.fd, view) :]
        # A new buffer rather than clear(): a view left alive by a failed write would forbid resizing.
        self.pending = bytearray()
        self.written = self.size


@dataclass
class _Ready:
    """A record of a group, with its gzip member when it was built before the lock (``member``)."""

    spec: RecordSpec
    record_id: str
    date: datetime
    warcinfo_id: str
    member: bytes | None = None
    fields: list[tuple[str, str]] = field(default_factory=list)

    @property
    def payload(self) -> Digest | None:
        return self.spec.block.payload_digest if self.spec.type in PAYLOAD_RECORD_TYPES else None


def deflater(level: int) -> Callable[[], Any]:
    """Makes gzip compressors (RFC 1952 wrapper, zero mtime: equal input, equal bytes) for zlib's ``level`` 0-9.

    ISA-L has levels 1 to 3: zlib's 1-3 become 1, 4-6 become 2, 7-9 become 3. Level 0 stores, through zlib.
    """
    if not 0 <= level <= 9:
        raise WarcError(f"gzip level must be 0-9, got {level}")
    if isal_zlib is not None and level > 0:
        return functools.partial(isal_zlib.compressobj, (level + 2) // 3, isal_zlib.DEFLATED, 31)
    return functools.partial(zlib.compressobj, level, zlib.DEFLATED, 31)


class WarcSink:
    """Thread-safe writer of WARC/1.1 files into one directory (see the module docstring).

    A new file is opened lazily by the first group after a close; rotation closes the current file before a
    group once it has reached ``max_size`` (a larger group still goes whole into one file). ``on_close`` gets
    every :class:`ClosedWarc` (its ``records`` count includes the warcinfo record); it runs under the sink's
    re-entrant lock, during the :meth:`write_group` that rotates or the :meth:`close`, and what it raises
    propagates (a rotation's group is then not written).
    """

    def __init__(
        self,
        directory: Path,
        *,
        prefix: str,
        clock: Clock,
        ids: IdGenerator,
        max_size: int = 1 << 30,
        warcinfo: Mapping[str, str] = {},
        host: str | None = None,
        compress_level: int = 6,
        on_close: Callable[[ClosedWarc], None] | None = None,
        process: str | None = None,
    ) -> None:
        if not _PREFIX.fullmatch(prefix):
            raise WarcError(f"WARC file prefix must match [A-Za-z0-9._-]+, got {prefix!r}")
        if process is not None and not _PREFIX.fullmatch(process):
            raise WarcError(f"WARC file process tag must match [A-Za-z0-9._-]+, got {process!r}")
        # Several processes writing into one (shared) directory: a name per process, so that no two ever
        # contend for one name (O_EXCL would keep them apart, but not on every network file system).
        self._process = process
        for name, value in warcinfo.items():
            _check_field(name, value)
        self._dir = Path(directory)
        self._prefix = prefix
        self._clock = clock
        self._ids = ids
        self._max_size = max_size
        self._host = sanitise_host(host if host is not None else socket.gethostname())
        self._deflater = deflater(compress_level)
        self._on_close = on_close
        self._fields = {
            "software": SOFTWARE,
            "format": FORMAT,
            "conformsTo": CONFORMS_TO,
            "hostname": self._host,
            **warcinfo,
        }
        # Re-entrant so that an on_close callback (run during rotation, under the lock) may use the sink.
        self._lock = threading.RLock()
        self._current: _OpenWarc | None = None
        self._serial = 0
        self._next_warcinfo_id: str | None = None  # chosen before its file is opened (see write_group)

    def new_record_id(self) -> str:
        return f"<urn:uuid:{self._ids.uuid()}>"

    @property
    def current_name(self) -> str | None:
        """The final name of the file being written, if one is open."""
        return None if self._current is None else self._current.name

    def write_group(
        self,
        records: Sequence[RecordSpec],
        *,
        then: Callable[[list[RecordRef]], Sequence[RecordSpec]] | None = None,
    ) -> list[RecordRef]:
        """Write ``records`` contiguously into one file, fsync, and return where each landed.

        ``then(refs)``, given where ``records`` landed, returns more records for the end of the group (a receipt
        that lists the others' offsets): it runs under the sink's lock, so it must be quick and must not use
        the sink. On any failure nothing of the group stays in the file (it is cut back to where the group
        started) and :class:`WarcError` is raised.
        """
        for spec in records:
            _check_spec(spec)
        if not records:
            return []
        with self._lock:
            warcinfo_id = self._upcoming_warcinfo_id()
        try:
            # Outside the lock: records name the warcinfo of the file they are expected to land in; the few
            # built for a file that rotated away meanwhile are built again under the lock.
            ready = [self._encode_ahead(spec, warcinfo_id) for spec in records]
        except _DigestMismatchError as exc:
            raise WarcError(f"could not write a record group: {exc}") from exc
        with self._lock:
            if self._current is not None and self._current.broken:
                self._abandon_locked(self._current)
            if self._current is not None and self._current.size >= self._max_size:
                self._close_locked()
            warc = self._current if self._current is not None else self._open_locked()
            start, start_hash, start_records = warc.size, warc.hash.copy(), warc.records
            try:
                refs = [self._append(warc, item) for item in ready]
                if then is not None:
                    for spec in then(list(refs)):
                        _check_spec(spec)
                        refs.append(self._append(warc, self._encode_ahead(spec, warc.warcinfo_id)))
                warc.flush()
            except BaseException as exc:
                # Whatever stopped the group (a full disk, a bad block, an interrupt), none of it stays.
                self._cut_back(warc, start, start_hash, start_records)
                if not isinstance(exc, OSError | _DigestMismatchError):
                    raise
                raise WarcError(
                    f"could not write a record group to {warc.name}: {exc}",
                    hint="check free disk space and the storage directory's permissions",
                ) from exc
            end = warc.written
        # The fsync runs outside the lock, so the next groups are appended meanwhile, and one fsync makes
        # every group written before it durable (as a database's group commit does with its log).
        self._sync(warc, end)
        return refs

    def _sync(self, warc: _OpenWarc, end: int) -> None:
        """Return once ``warc``'s first ``end`` bytes are durable (one fsync may serve many groups)."""
        if warc.synced >= end and warc.broken is None:
            return
        with warc.sync_lock:
            if warc.broken is not None:
                raise WarcError(
                    f"could not make a record group durable in {warc.name}: {warc.broken}",
                    hint="the file is left as .open for the next run to repair; check the storage device",
                )
            if warc.synced >= end:
                return
            upto = warc.written  # every byte os.write took before this fsync starts
            try:
                os.fsync(warc.fd)
            except OSError as exc:
                # Linux reports a failed writeback once: an fsync after this one could succeed without the
                # lost pages. So nothing unsynced in this file is ever claimed durable (fsyncgate).
                warc.broken = f"fsync failed: {exc}"
                raise WarcError(
                    f"could not make a record group durable in {warc.name}: {exc}",
                    hint="the file is left as .open for the next run to repair; check the storage device",
                ) from exc
            warc.synced = max(warc.synced, upto)

    def _abandon_locked(self, warc: _OpenWarc) -> None:
        """Stop writing ``warc`` and leave it as ``.open``: the next run's repair cuts it to its last complete
        record (what was acknowledged is durable; what was not was reported as failed)."""
        if self._current is warc:
            self._current = None
        self._release_fd(warc, durable=False, reason=warc.broken or "abandoned after a failed write")

    @staticmethod
    def _release_fd(warc: _OpenWarc, *, durable: bool, reason: str = "") -> None:
        """Close ``warc``'s descriptor once no fsync is using it; ``durable`` when an fsync covered every byte
        written, otherwise the groups still waiting on it fail."""
        with warc.sync_lock:
            if durable:
                warc.synced = max(warc.synced, warc.written)
            elif warc.broken is None and warc.synced < warc.written:
                warc.broken = reason
            if warc.fd >= 0:
                os.close(warc.fd)
                warc.fd = -1

    def close(self) -> ClosedWarc | None:
        """Close the current file (if any): fsync, make read-only, rename to its final name, call on_close."""
        with self._lock:
            return None if self._current is None else self._close_locked()

    def __enter__(self) -> WarcSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- files -----------------------------------------------------------------------------------------------

    def _open_locked(self) -> _OpenWarc:
        opened_at = self._clock.now()
        stamp = opened_at.astimezone(UTC).strftime("%Y%m%d%H%M%S")
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            while True:
                if self._serial > 99999:
                    raise WarcError(f"no free WARC file name for {self._prefix}-{stamp} in {self._dir}")
                who = self._host if self._process is None else f"{self._host}-{self._process}"
                name = f"{self._prefix}-{stamp}-{self._serial:05d}-{who}.warc.gz"
                final = self._dir / name
                self._serial += 1
                if final.exists() or final.with_name(name + ".damaged").exists():
                    continue
                try:
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                    fd = os.open(final.with_name(name + OPEN_SUFFIX), flags, 0o644)
                except FileExistsError:
                    continue
                break
        except OSError as exc:
            raise WarcError(f"cannot create a WARC file in {self._dir}: {exc}") from exc
        warc = _OpenWarc(name, final.with_name(name + OPEN_SUFFIX), final, fd, opened_at)
        warc.warcinfo_id = self._upcoming_warcinfo_id()
        self._next_warcinfo_id = None
        try:
            # Held until the file is renamed: repair skips a file another live sink holds.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._write_warcinfo(warc)
            warc.flush()
            os.fsync(fd)
            warc.synced = warc.written
            fsync_dir(self._dir)  # the new entry must survive a crash, or fsynced records could vanish
        except (OSError, _DigestMismatchError) as exc:
            os.close(fd)
            # Holds at most a partial warcinfo record and nothing a caller was told about.
            with contextlib.suppress(OSError):
                warc.open_path.unlink()
            raise WarcError(f"cannot start WARC file {name}: {exc}") from exc
        self._current = warc
        return warc

    def _close_locked(self) -> ClosedWarc:
        warc = self._current
        assert warc is not None
        self._current = None
        durable = False
        try:
            if warc.broken is not None:
                raise OSError(warc.broken)
            warc.flush()
            # Read-only before the final name appears, so there is never a writable closed file.
            os.fchmod(warc.fd, 0o444)
            os.fsync(warc.fd)
            durable = True
            # Renamed while still holding the flock, so a concurrent repair cannot grab the file midway.
            rename_no_replace(warc.open_path, warc.final_path)
            fsync_dir(self._dir)
        except OSError as exc:
            self._release_fd(warc, durable=durable, reason=f"closing failed: {exc}")
            raise WarcError(
                f"cannot close WARC file {warc.name}: {exc}",
                hint="the .open file is kept; the next run repairs it",
            ) from exc
        closed = ClosedWarc(
            name=warc.name,
            path=str(warc.final_path),
            sha256=warc.hash.hexdigest(),
            size=warc.size,
            opened_at=warc.opened_at,
            closed_at=self._clock.now(),
            records=warc.records,
        )
        try:
            if self._on_close is not None:
                self._on_close(closed)
        finally:
            # The flock is held until the close is recorded: recovery in another process, seeing a closed file
            # whose catalogue row is still "open", leaves it to its live writer (repair.held_by_writer).
            self._release_fd(warc, durable=True)
        return closed

    def _cut_back(self, warc: _OpenWarc, size: int, digest: hashlib._Hash, records: int) -> None:
        """Undo a failed group: the file, its running hash and counters return to where the group started."""
        warc.pending = bytearray()  # all of it is past the group start (the previous group was flushed)
        with warc.sync_lock:  # no fsync may count the bytes being cut as durable
            try:
                os.ftruncate(warc.fd, size)
                os.lseek(warc.fd, size, os.SEEK_SET)
                os.fsync(warc.fd)
            except OSError as exc:
                warc.broken = f"cutting back a failed group failed: {exc}"
            else:
                warc.size, warc.hash, warc.records = size, digest, records
                warc.written = warc.synced = size
                return
        # The file's tail is unknown now: abandon it as .open; the next run's repair cuts it back.
        self._abandon_locked(warc)

    # -- records ---------------------------------------------------------------------------------------------

    def _write_warcinfo(self, warc: _OpenWarc) -> None:
        body = "".join(f"{k}: {v}\r\n" for k, v in self._fields.items()).encode("utf-8")
        fields = [
            ("WARC-Type", WARCINFO),
            ("WARC-Record-ID", warc.warcinfo_id),
            ("WARC-Date", warc_date(warc.opened_at)),
            ("WARC-Filename", warc.name),  # WARC 1.1 §5.15: the final name, not the .open one
        ]
        with block_from_bytes(body, has_payload=False) as block:
            self._encode_record(fields, "application/warc-fields", block, None, warc.emit)
        warc.records += 1

    def _upcoming_warcinfo_id(self) -> str:
        """The warcinfo record id of the file the next group goes into (called under the lock)."""
        warc = self._current
        if warc is not None and warc.size < self._max_size:
            return warc.warcinfo_id
        if self._next_warcinfo_id is None:
            self._next_warcinfo_id = self.new_record_id()
        return self._next_warcinfo_id

    def _encode_ahead(self, spec: RecordSpec, warcinfo_id: str) -> _Ready:
        record_id = spec.record_id or self.new_record_id()
        date = spec.date or self._clock.now()
        ready = _Ready(spec, record_id, date, warcinfo_id)
        if spec.block.length <= ENCODE_AHEAD:
            member = bytearray()
            ready.fields = self._encode_record(
                self._record_fields(ready, warcinfo_id), spec.content_type, spec.block, ready.payload, member.extend
            )
            ready.member = bytes(member)
        return ready

    def _append(self, warc: _OpenWarc, ready: _Ready) -> RecordRef:
        """Append one record to ``warc`` (under the lock): its prepared member, or the block streamed now."""
        spec = ready.spec
        offset = warc.size
        if ready.member is not None and ready.warcinfo_id == warc.warcinfo_id:
            warc.emit(ready.member)
            fields = ready.fields
        else:
            fields = self._encode_record(
                self._record_fields(ready, warc.warcinfo_id), spec.content_type, spec.block, ready.payload, warc.emit
            )
        warc.records += 1
        block = spec.block
        return RecordRef(
            record_id=ready.record_id,
            record_type=spec.type,
            target_uri=spec.target_uri,
            warc_file=warc.name,
            offset=offset,
            length=warc.size - offset,
            date=ready.date,
            content_type=spec.content_type,
            content_length=block.length,
            block_digest=block.block_digest,
            payload_digest=ready.payload,
            payload_length=block.payload_length,
            headers=tuple(fields),
        )

    @staticmethod
    def _record_fields(ready: _Ready, warcinfo_id: str) -> list[tuple[str, str]]:
        spec = ready.spec
        fields = [("WARC-Type", spec.type), ("WARC-Record-ID", ready.record_id), ("WARC-Date", warc_date(ready.date))]
        if spec.target_uri is not None:
            fields.append(("WARC-Target-URI", spec.target_uri))
        fields.append(("WARC-Warcinfo-ID", warcinfo_id))
        fields.extend(spec.headers)
        return fields

    def _encode_record(
        self,
        fields: list[tuple[str, str]],
        content_type: str,
        block: Block,
        payload: Digest | None,
        out: Callable[[bytes], object],
    ) -> list[tuple[str, str]]:
        """One record as one gzip member, given to ``out`` piece by piece, re-hashing the block as it is copied;
        returns all its fields."""
        fields = [
            *fields,
            ("Content-Type", content_type),
            ("Content-Length", str(block.length)),
            ("WARC-Block-Digest", str(block.block_digest)),
        ]
        if payload is not None:
            fields.append(("WARC-Payload-Digest", str(payload)))
        head = "".join([f"{WARC_VERSION}\r\n", *(f"{n}: {v}\r\n" for n, v in fields), "\r\n"])
        check = DigestPass(payload=payload is not None, http=is_http_block(content_type))
        # wbits=31: a gzip wrapper with a zero mtime, so equal input gives equal bytes (golden files).
        comp = self._deflater()
        out(comp.compress(head.encode("utf-8")))
        for chunk in block.chunks():
            check.update(chunk)
            out(comp.compress(chunk))
        # WARC 1.1 §4: a record ends with two CRLFs after its block.
        out(comp.compress(b"\r\n\r\n"))
        out(comp.flush())
        if check.length != block.length or check.block_hex() != block.block_digest.hex:
            raise _DigestMismatchError(f"block bytes changed since they were hashed ({check.length} bytes read)")
        if payload is not None and check.payload_hex() != payload.hex:
            raise _DigestMismatchError(
                f"payload digest disagrees with the stored bytes (HTTP head ends at {check.payload_offset}, "
                f"block says {block.payload_offset})"
            )
        return fields
