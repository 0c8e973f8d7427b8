"""Loading manifests into the catalogue: idempotent, changes recorded with old and new values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from archiver import custody
from archiver.archive import Archive
from archiver.catalogue.models import CustodyEvent, Incident, Source, incident_sources
from archiver.catalogue.store import LEAD, PENDING, SourceRequest
from archiver.manifest import load_files, parse_text
from tests.conftest import MANIFESTS, TEST_TODAY

VALID = (Path(__file__).parent / "data" / "manifests" / "valid.yaml").read_text(encoding="utf-8")


def _snapshot(archive: Archive) -> dict[str, Any]:
    with archive.session() as s:
        return {
            "incidents": [
                (i.id, i.title, i.when_start, i.summary, i.place_admin, i.categories)
                for i in s.scalars(select(Incident).order_by(Incident.id))
            ],
            "sources": [
                (x.id, x.identity_key, x.url, x.lead, x.kind, x.status)
                for x in s.scalars(select(Source).order_by(Source.id))
            ],
            "links": sorted(
                tuple(r)
                for r in s.execute(
                    select(incident_sources.c.incident_id, incident_sources.c.source_id, incident_sources.c.cited_as)
                )
            ),
            "events": s.scalar(select(func.count()).select_from(CustodyEvent)),
        }


def test_loading_shipped_manifests_twice_changes_nothing(archive: Archive) -> None:
    specs = load_files([MANIFESTS], TEST_TODAY)
    with archive.store() as store:
        first = store.load(specs, files=["manifests/"])
    assert len(first.incidents_created) == len(specs)
    before = _snapshot(archive)
    with archive.store() as store:
        second = store.load(specs, files=["manifests/"])
    assert not second.changed
    assert sorted(second.incidents_unchanged) == sorted(s.id for s in specs)
    assert _snapshot(archive) == before
    with archive.session() as s:
        assert custody.check_chain(s).ok
        statuses = set(s.scalars(select(Source.status)))
    assert statuses == {LEAD}  # the shipped sources are all leads: their URLs are unknown


def test_changed_field_is_updated_and_recorded_with_old_and_new(archive: Archive) -> None:
    with archive.store() as store:
        store.load(parse_text(VALID, "v.yaml", TEST_TODAY))
    changed = VALID.replace("Test strike on a hospital", "Test strike on a field hospital")
    with archive.store() as store:
        report = store.load(parse_text(changed, "v.yaml", TEST_TODAY))
    assert report.incidents_updated == ["test-hospital-strike-2017-04-04"]
    with archive.session() as s:
        event = s.scalars(select(CustodyEvent).where(CustodyEvent.action == "incident.updated")).one()
        doc = custody.document_of(event)
        assert doc["details"]["changes"] == {
            "title": {"old": "Test strike on a hospital", "new": "Test strike on a field hospital"}
        }
        assert event.incident_id == "test-hospital-strike-2017-04-04"
        assert s.get(Incident, "test-hospital-strike-2017-04-04").title == "Test strike on a field hospital"  # type: ignore[union-attr]


def test_sources_links_and_reports(archive: Archive) -> None:
    with archive.store() as store:
        store.load(parse_text(VALID, "v.yaml", TEST_TODAY))
    with archive.session() as s:
        sources = {x.kind: x for x in s.scalars(select(Source))}
        report, video, lead = sources["report"], sources["video"], sources["social_post"]
        assert report.url == "https://example.org/report" and report.follow_citations and report.status == PENDING
        assert video.platform == "youtube" and video.item_id == "AAAAAAAAAAA" and video.status == PENDING
        assert lead.lead and lead.status == LEAD and lead.platform == "facebook"
        link = s.execute(select(incident_sources).where(incident_sources.c.source_id == video.id)).mappings().one()
        assert link["cited_by_id"] == report.id and link["cited_as"] == "Footage is linked here"


def test_one_video_under_two_url_forms_is_one_source(archive: Archive) -> None:
    with archive.store() as store:
        store.load(parse_text(VALID, "v.yaml", TEST_TODAY))
        src, added = store.add_source(
            "test-hospital-strike-2017-04-04",
            SourceRequest(url="https://www.youtube.com/watch?v=AAAAAAAAAAA&feature=share&t=10"),
        )
    assert not added and src.item_id == "AAAAAAAAAAA"


def test_source_shared_by_two_incidents(archive: Archive) -> None:
    other = VALID.replace("test-hospital-strike-2017-04-04", "other-incident-2017-04-05")
    with archive.store() as store:
        store.load(parse_text(VALID, "a.yaml", TEST_TODAY) + parse_text(other, "b.yaml", TEST_TODAY))
    with archive.session() as s:
        video = s.scalars(select(Source).where(Source.kind == "video")).one()
        assert [i.id for i in video.incidents] == ["other-incident-2017-04-05", "test-hospital-strike-2017-04-04"]
        events = custody.events_for_incident(s, "other-incident-2017-04-05")
        assert {e.action for e in events} >= {"incident.created", "source.linked"}
