"""Catalogue operations on incidents and sources.

Every change appends its custody event in the same transaction as the change."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from archiver import custody
from archiver.catalogue.models import Capture, Incident, Source, incident_sources
from archiver.clock import Clock, utc_iso
from archiver.errors import NotFoundError
from archiver.urls import identify, identity_key

if TYPE_CHECKING:  # manifest parsing (PyYAML) is loaded by the commands that read manifests
    from archiver.manifest import IncidentSpec, ReportSpec, SourceSpec

# Source.status values.
LEAD = "lead"  # cited, but no URL known: nothing to capture yet
PENDING = "pending"
CAPTURED = "captured"
FAILED = "failed"
GONE = "gone"
STATUSES = (LEAD, PENDING, CAPTURED, FAILED, GONE)


def lead_key(description: str) -> str:
    folded = " ".join(description.casefold().split())
    return "lead:" + hashlib.sha256(folded.encode("utf-8")).hexdigest()[:32]


def _incident_fields(spec: IncidentSpec) -> dict[str, Any]:
    return {
        "title": spec.title,
        "when_start": spec.when.start,
        "when_end": spec.when.end,
        "when_timezone": spec.when.timezone,
        "when_precision": spec.when.precision,
        "when_approximate": spec.when.approximate,
        "when_start_utc": spec.when.start_utc,
        "place_name": spec.place.name,
        "place_admin": list(spec.place.admin),
        "country": spec.place.country,
        "lat": spec.place.lat,
        "lon": spec.place.lon,
        "facility": spec.facility,
        "categories": list(spec.categories),
        "summary": spec.summary,
    }


def _jsonable(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return utc_iso(value)
    return value


@dataclass
class LoadReport:
    incidents_created: list[str] = field(default_factory=list)
    incidents_updated: list[str] = field(default_factory=list)
    incidents_unchanged: list[str] = field(default_factory=list)
    sources_added: int = 0
    sources_linked: int = 0
    links_updated: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "incidents_created": self.incidents_created,
            "incidents_updated": self.incidents_updated,
            "incidents_unchanged": self.incidents_unchanged,
            "sources_added": self.sources_added,
            "sources_linked": self.sources_linked,
            "links_updated": self.links_updated,
        }

    @property
    def changed(self) -> bool:
        return bool(
            self.incidents_created
            or self.incidents_updated
            or self.sources_added
            or self.sources_linked
            or self.links_updated
        )


@dataclass(frozen=True)
class SourceRequest:
    """What is known of a source when it is added: a URL or a lead, and how it was cited."""

    url: str | None = None
    lead: str | None = None
    kind: str | None = None
    platform: str | None = None
    title: str | None = None
    publisher: str | None = None
    published: str | None = None
    cited_by_id: int | None = None
    cited_as: str | None = None
    note: str | None = None
    discovered_from_id: int | None = None
    depth: int = 0
    follow_citations: bool = False


class Store:
    """Incident and source operations over one session, with the clock and actor that stamp custody events."""

    def __init__(self, session: Session, clock: Clock, actor: str) -> None:
        self.s = session
        self.clock = clock
        self.actor = actor

    def _event(self, action: str, subject: str, incident: str | None = None, **details: Any) -> None:
        custody.append(
            self.s,
            self.clock,
            actor=self.actor,
            action=action,
            subject=subject,
            incident=incident,
            details=details,
        )

    # -- incidents -------------------------------------------------------------------------------------------

    def load(self, specs: Sequence[IncidentSpec], *, files: Iterable[str] = ()) -> LoadReport:
        report = LoadReport()
        for spec in specs:
            self._load_incident(spec, report)
        if report.changed:
            self._event("manifest.loaded", "archive", files=sorted(set(files)), **report.as_dict())
        return report

    def _load_incident(self, spec: IncidentSpec, report: LoadReport) -> None:
        now = self.clock.now()
        fields = _incident_fields(spec)
        row = self.s.get(Incident, spec.id)
        if row is None:
            row = Incident(id=spec.id, manifest_path=spec.path, created_at=now, updated_at=now, **fields)
            self.s.add(row)
            self.s.flush()
            self._event(
                "incident.created",
                f"incident:{spec.id}",
                spec.id,
                manifest=spec.path,
                fields={k: _jsonable(v) for k, v in fields.items()},
            )
            report.incidents_created.append(spec.id)
        else:
            changes = {
                k: {"old": _jsonable(getattr(row, k)), "new": _jsonable(v)}
                for k, v in fields.items()
                if _jsonable(getattr(row, k)) != _jsonable(v)
            }
            if changes:
                for k in changes:
                    setattr(row, k, fields[k])
                row.updated_at = now
                row.manifest_path = spec.path
                self._event("incident.updated", f"incident:{spec.id}", spec.id, manifest=spec.path, changes=changes)
                report.incidents_updated.append(spec.id)
        report_ids: dict[str, int] = {}
        touched = False
        for rep in spec.reports:
            sid, added, linked, updated = self._attach(spec.id, _report_request(rep))
            if rep.key:
                report_ids[rep.key] = sid
            touched |= added or linked or updated
            report.sources_added += added
            report.sources_linked += linked and not added
            report.links_updated += updated
        for src in spec.sources:
            req = _source_request(src, report_ids.get(src.cited_by) if src.cited_by else None)
            sid, added, linked, updated = self._attach(spec.id, req)
            touched |= added or linked or updated
            report.sources_added += added
            report.sources_linked += linked and not added
            report.links_updated += updated
        if spec.id not in report.incidents_created and spec.id not in report.incidents_updated and not touched:
            report.incidents_unchanged.append(spec.id)

    def get_incident(self, incident_id: str) -> Incident:
        row = self.s.get(Incident, incident_id)
        if row is None:
            raise NotFoundError(f"no incident {incident_id!r}", hint="'archiver incident list' shows the known ids")
        return row

    def incidents(self) -> list[Incident]:
        return list(self.s.scalars(select(Incident).order_by(Incident.when_start, Incident.id)))

    def links(self, incident_id: str) -> list[Any]:
        rows = self.s.execute(
            select(incident_sources)
            .where(incident_sources.c.incident_id == incident_id)
            .order_by(incident_sources.c.source_id)
        ).mappings()
        return list(rows)

    # -- sources ---------------------------------------------------------------------------------------------

    def add_source(self, incident_id: str, req: SourceRequest) -> tuple[Source, bool]:
        """Add (or find) a source and link it to the incident. Returns the source and whether it was new."""
        self.get_incident(incident_id)
        sid, added, _linked, _updated = self._attach(incident_id, req)
        source = self.s.get(Source, sid)
        assert source is not None
        return source, added

    def ensure_source(self, req: SourceRequest) -> tuple[Source, bool]:
        """A source that belongs to no incident yet (``archiver capture URL`` without ``--incident``)."""
        src, added = self._find_or_create(req)
        if added:
            self._event("source.added", f"source:{src.id}", None, source=src.id, url=src.url, kind=src.kind)
        return src, added

    def _find_or_create(self, req: SourceRequest) -> tuple[Source, bool]:
        now = self.clock.now()
        if req.url is not None:
            ref = identify(req.url)
            key = identity_key(req.url)
            existing = self.s.scalar(select(Source).where(Source.identity_key == key))
            if existing is not None:
                return existing, False
            src = Source(
                identity_key=key,
                url=ref.canonical_url,
                kind=req.kind or _kind_from_ref(ref.kind),
                platform=req.platform or ref.platform,
                item_id=ref.item_id,
                status=PENDING,
                follow_citations=req.follow_citations or req.kind == "report",
            )
        else:
            assert req.lead is not None
            key = lead_key(req.lead)
            existing = self.s.scalar(select(Source).where(Source.identity_key == key))
            if existing is not None:
                return existing, False
            src = Source(
                identity_key=key,
                lead=req.lead,
                kind=req.kind or "article",
                platform=req.platform,
                status=LEAD,
            )
        src.title, src.publisher, src.published = req.title, req.publisher, req.published
        src.discovered_from_id = req.discovered_from_id
        src.depth = req.depth
        src.created_at = now
        src.follow_citations = src.follow_citations or req.follow_citations
        self.s.add(src)
        self.s.flush()
        return src, True

    def _attach(self, incident_id: str, req: SourceRequest) -> tuple[int, bool, bool, bool]:
        src, added = self._find_or_create(req)
        link = (
            self.s.execute(
                select(incident_sources).where(
                    incident_sources.c.incident_id == incident_id, incident_sources.c.source_id == src.id
                )
            )
            .mappings()
            .first()
        )
        wanted = {"cited_by_id": req.cited_by_id, "cited_as": req.cited_as, "note": req.note}
        details = {
            "source": src.id,
            "url": src.url,
            "lead": src.lead,
            "kind": src.kind,
            "platform": src.platform,
            "identity": src.identity_key,
            "cited_by": req.cited_by_id,
            "cited_as": req.cited_as,
            "discovered_from": req.discovered_from_id,
        }
        if link is None:
            self.s.execute(
                insert(incident_sources).values(
                    incident_id=incident_id, source_id=src.id, added_at=self.clock.now(), **wanted
                )
            )
            action = "source.added" if added else "source.linked"
            if req.discovered_from_id is not None and added:
                action = "source.discovered"
            self._event(action, f"source:{src.id}", incident_id, **details)
            return src.id, added, True, False
        changes = {k: {"old": link[k], "new": v} for k, v in wanted.items() if link[k] != v and v is not None}
        if changes:
            self.s.execute(
                update(incident_sources)
                .where(incident_sources.c.incident_id == incident_id, incident_sources.c.source_id == src.id)
                .values(**{k: c["new"] for k, c in changes.items()})
            )
            self._event("source.linked", f"source:{src.id}", incident_id, source=src.id, changes=changes)
            return src.id, False, False, True
        return src.id, False, False, False

    def get_source(self, source_id: int) -> Source:
        row = self.s.get(Source, source_id)
        if row is None:
            raise NotFoundError(f"no source {source_id}")
        return row

    def status_counts(self) -> dict[str, Any]:
        by_status = dict.fromkeys(STATUSES, 0)
        for status, n in self.s.execute(select(Source.status, func.count()).group_by(Source.status)):
            by_status[status] = n
        captures = {o: n for o, n in self.s.execute(select(Capture.outcome, func.count()).group_by(Capture.outcome))}
        return {
            "incidents": self.s.scalar(select(func.count()).select_from(Incident)) or 0,
            "sources": by_status,
            "captures": captures,
        }


def _kind_from_ref(kind: str) -> str:
    return {"channel": "social_post", "unknown": "article"}.get(kind, kind)


def _report_request(rep: ReportSpec) -> SourceRequest:
    if rep.url is not None:
        return SourceRequest(
            url=rep.url,
            kind="report",
            title=rep.title,
            publisher=rep.publisher,
            published=rep.published,
            follow_citations=True,
        )
    parts = [f"Report: {rep.title}"]
    if rep.publisher:
        parts.append(rep.publisher)
    if rep.published:
        parts.append(rep.published)
    return SourceRequest(
        lead=" — ".join(parts),
        kind="report",
        title=rep.title,
        publisher=rep.publisher,
        published=rep.published,
    )


def _source_request(src: SourceSpec, cited_by_id: int | None) -> SourceRequest:
    return SourceRequest(
        url=src.url,
        lead=src.lead,
        kind=src.kind,
        platform=src.platform,
        cited_by_id=cited_by_id,
        cited_as=src.cited_as,
        note=src.note,
        discovered_from_id=None,
    )
