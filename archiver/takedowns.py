"""Takedowns: which cited sources went offline, when, and whether the archive holds a copy.

This is the figure human-rights groups publish ("12 of 40 videos removed, all preserved"). Every number comes
from the catalogue: a source counts as removed while its status is ``gone`` (an HTTP 404/410 or a platform's
removal message, captured into the WARC as evidence), and as preserved when it has at least one successful
capture, whose records and media digests are listed. The report is data; the CLI prints it as a table or JSON.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from archiver.catalogue import store as st
from archiver.catalogue.models import Artifact, Capture, Incident, MediaItem, Source, SourceCheck, incident_sources
from archiver.clock import utc_iso
from archiver.errors import NotFoundError


@dataclass(frozen=True)
class GoneSource:
    source_id: int
    url: str | None
    kind: str
    platform: str | None
    title: str | None
    gone_at: str | None  # when the archive recorded the source gone
    first_seen_gone: str | None  # the first look that found it gone: a re-check, or the capture that did
    last_seen_online: str | None  # the last re-check or capture that found it online
    evidence: str | None  # the HTTP status or the platform's words
    evidence_capture_id: int | None  # the capture whose WARC records hold the removal response
    preserved: bool
    preserved_since: str | None  # end of the first successful capture
    captures: int  # successful captures
    records: int  # WARC records of those captures
    media: tuple[dict[str, Any], ...]  # platform, item id, SHA-256 and size of each video held


@dataclass(frozen=True)
class Tally:
    sources: int  # sources with a URL (leads have nothing to take down)
    gone: int
    preserved: int  # of the gone ones
    videos_gone: int
    videos_preserved: int
    returned: int  # found gone by a re-check once, online again since

    @property
    def headline(self) -> str:
        text = f"{self.gone} of {self.sources} sources removed, " + _held(self.preserved, self.gone)
        if self.videos_gone:
            text += f"; {self.videos_gone} videos removed, " + _held(self.videos_preserved, self.videos_gone)
        return text


def _held(preserved: int, gone: int) -> str:
    if gone and preserved == gone:
        return "all preserved"
    return f"{preserved} preserved"


@dataclass(frozen=True)
class IncidentTakedowns:
    incident: str
    title: str
    tally: Tally
    gone: tuple[GoneSource, ...]


@dataclass(frozen=True)
class TakedownReport:
    incidents: tuple[IncidentTakedowns, ...]
    totals: Tally  # distinct sources: one cited by two incidents counts once

    def as_dict(self) -> dict[str, Any]:
        return {
            "incidents": [
                {
                    "incident": i.incident,
                    "title": i.title,
                    **asdict(i.tally),
                    "headline": i.tally.headline,
                    "gone_sources": [asdict(g) for g in i.gone],
                }
                for i in self.incidents
            ],
            "totals": {**asdict(self.totals), "headline": self.totals.headline},
        }


def takedown_report(s: Session, incident_id: str | None = None) -> TakedownReport:
    if incident_id is not None and s.get(Incident, incident_id) is None:
        raise NotFoundError(f"no incident {incident_id!r}", hint="'archiver incident list' shows the known ids")
    query = select(Incident).order_by(Incident.when_start, Incident.id)
    if incident_id is not None:
        query = query.where(Incident.id == incident_id)
    incidents = list(s.scalars(query))
    cache: dict[int, GoneSource] = {}
    out: list[IncidentTakedowns] = []
    everyone: dict[int, Source] = {}
    for inc in incidents:
        sources = list(
            s.scalars(
                select(Source)
                .join(incident_sources, incident_sources.c.source_id == Source.id)
                .where(incident_sources.c.incident_id == inc.id, Source.url.is_not(None))
                .order_by(Source.id)
            )
        )
        everyone.update((src.id, src) for src in sources)
        out.append(IncidentTakedowns(inc.id, inc.title, _tally(s, sources, cache), _gone(s, sources, cache)))
    if incident_id is None:
        # Sources added by URL alone (archiver capture URL) belong to no incident but count in the totals.
        everyone.update((src.id, src) for src in s.scalars(select(Source).where(Source.url.is_not(None))))
    return TakedownReport(tuple(out), _tally(s, list(everyone.values()), cache))


def _gone(s: Session, sources: Iterable[Source], cache: dict[int, GoneSource]) -> tuple[GoneSource, ...]:
    rows = [_gone_source(s, src, cache) for src in sources if src.status == st.GONE]
    return tuple(sorted(rows, key=lambda g: (g.gone_at or "", g.source_id)))


def _tally(s: Session, sources: list[Source], cache: dict[int, GoneSource]) -> Tally:
    gone = [_gone_source(s, src, cache) for src in sources if src.status == st.GONE]
    videos = [g for g in gone if g.kind == "video" or g.media]
    ids = [src.id for src in sources if src.status != st.GONE]
    returned = 0
    if ids:
        returned = (
            s.scalar(
                select(func.count(func.distinct(SourceCheck.source_id))).where(
                    SourceCheck.source_id.in_(ids), SourceCheck.result == "gone"
                )
            )
            or 0
        )
    return Tally(
        sources=len(sources),
        gone=len(gone),
        preserved=sum(1 for g in gone if g.preserved),
        videos_gone=len(videos),
        videos_preserved=sum(1 for g in videos if g.media),
        returned=returned,
    )


def _gone_source(s: Session, src: Source, cache: dict[int, GoneSource]) -> GoneSource:
    if src.id in cache:
        return cache[src.id]
    captures = list(s.scalars(select(Capture).where(Capture.source_id == src.id).order_by(Capture.id)))
    ok = [c for c in captures if c.outcome == "ok"]
    gone_caps = [c for c in captures if c.outcome == "gone"]
    evidence_cap = gone_caps[-1] if gone_caps else None
    evidence = None
    if evidence_cap is not None:
        said = (evidence_cap.details or {}).get("evidence")
        evidence = said or (f"HTTP {evidence_cap.http_status}" if evidence_cap.http_status else evidence_cap.error)
    # The current spell offline begins after the last look that found the source online.
    looks: list[tuple[Any, bool]] = [(c.ended_at or c.started_at, c.outcome == "ok") for c in ok + gone_caps]
    for check in s.scalars(select(SourceCheck).where(SourceCheck.source_id == src.id)):
        if check.result in ("still-online", "changed", "gone"):
            looks.append((check.checked_at, check.result != "gone"))
    last_online = max((at for at, online in looks if online), default=None)
    first_gone = min(
        (at for at, online in looks if not online and (last_online is None or at > last_online)), default=None
    )
    records = 0
    if ok:
        records = s.scalar(select(func.count(Artifact.id)).where(Artifact.capture_id.in_([c.id for c in ok]))) or 0
    media = tuple(
        {"platform": m.platform, "item_id": m.item_id, "sha256": m.sha256, "size": m.size, "capture_id": m.capture_id}
        for m in s.scalars(select(MediaItem).where(MediaItem.source_id == src.id).order_by(MediaItem.id))
        if m.sha256
    )
    first_ok = ok[0].ended_at if ok else None
    row = GoneSource(
        source_id=src.id,
        url=src.url,
        kind=src.kind,
        platform=src.platform,
        title=src.title,
        gone_at=_iso(src.gone_at),
        first_seen_gone=_iso(first_gone),
        last_seen_online=_iso(last_online),
        evidence=evidence,
        evidence_capture_id=evidence_cap.id if evidence_cap is not None else None,
        preserved=bool(ok),
        preserved_since=_iso(first_ok),
        captures=len(ok),
        records=records,
        media=media,
    )
    cache[src.id] = row
    return row


def _iso(value: Any) -> str | None:
    return utc_iso(value) if value is not None else None
