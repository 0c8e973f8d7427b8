"""End to end through the CLI: ``archiver run`` captures, later re-checks what is due; ``archiver takedowns``
reports what went offline and what the archive holds. Real server, real catalogue (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from archiver.archive import Archive
from archiver.catalogue.models import Source
from archiver.config import load_settings
from archiver.takedowns import takedown_report
from tests.support.site import Site
from tests.support.site import site as site

__all__ = ["site"]

MANIFEST = """version: 1
incidents:
  - id: test-a-2017-03-25
    title: Strike on a test hospital
    when: {{start: 2017-03-25}}
    place: {{name: Testtown, country: SY}}
    summary: A test incident.
    reports:
      - {{id: r1, title: Report A}}
    sources:
      - {{url: "{a}", kind: article, cited_by: r1}}
      - {{url: "{b}", kind: article, cited_by: r1}}
      - {{url: "{c}", kind: article, cited_by: r1}}
  - id: test-b-2017-04-04
    title: Strike on a second test hospital
    when: {{start: 2017-04-04}}
    place: {{name: Testtown, country: SY}}
    summary: Another test incident.
    reports:
      - {{id: r1, title: Report B}}
    sources:
      - {{url: "{c}", kind: article, cited_by: r1}}
      - {{url: "{d}", kind: article, cited_by: r1}}
"""


def _page(text: str) -> str:
    return (
        f"<!doctype html><html><head><title>{text}</title></head><body><article><p>{text}</p></article></body></html>"
    )


def _cli(root: Path, db: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        __import__("archiver.cli", fromlist=["cli"]).cli,
        ["--root", str(root), "--db", db, "--collector", "takedown-test", *args],
        catch_exceptions=False,
    )
    return result.exit_code, result.stdout, result.stderr


def _make_due(root: Path, db: str) -> None:
    """Time passes: every scheduled slot has come (the CLI runs on the real clock)."""
    arch = Archive(load_settings(root, db, env={}))
    try:
        with arch.session() as s:
            for src in s.scalars(select(Source).where(Source.next_check_at.is_not(None))):
                src.next_check_at = datetime.now(UTC) - timedelta(minutes=1)
    finally:
        arch.close()


def test_run_rechecks_due_sources_and_takedowns_count_them(tmp_path: Path, db_url: str, site: Site) -> None:
    root = tmp_path / "storage"
    urls = {k: site.add(f"/{k}.html", _page(f"Report {k}: the hospital was struck at night.")) for k in "abcd"}
    manifest = tmp_path / "incidents.yaml"
    manifest.write_text(MANIFEST.format(**urls))
    assert _cli(root, db_url, "init")[0] == 0
    toml = (root / "settings.toml").read_text()
    (root / "settings.toml").write_text(toml.replace("per_host_delay = 0.1", "per_host_delay = 0.0"))
    assert _cli(root, db_url, "manifest", "load", str(manifest))[0] == 0

    code, out, err = _cli(root, db_url, "run", "--json")
    assert code == 0, err
    first = json.loads(out)
    assert first["captured"] == 4
    # Just captured: scheduled (daily for a week), nothing due yet.
    assert first["rechecks"]["newly_scheduled"] == 4 and first["rechecks"]["checked"] == 0

    site.add("/a.html", _page("Report a: the hospital was struck at night. Updated: two doctors were killed."))
    del site.pages["/c.html"]  # taken down: 404
    _make_due(root, db_url)
    code, out, err = _cli(root, db_url, "run", "--json")
    assert code == 0, err
    rechecks = json.loads(out)["rechecks"]
    assert (rechecks["checked"], rechecks["still_online"], rechecks["changed"], rechecks["gone"]) == (4, 2, 1, 1)
    by_url = {c["url"]: c for c in rechecks["checks"]}
    assert by_url[urls["c"]]["result"] == "gone" and by_url[urls["c"]]["http_status"] == 404
    assert by_url[urls["a"]]["result"] == "changed" and len(by_url[urls["a"]]["captures"]) == 1
    # The run sealed what it captured again: no receipt left without a signature (no TSA configured here).
    assert json.loads(out)["integrity"]["checkpoint"]["seq"] > 0

    code, out, _ = _cli(root, db_url, "run", "--json")
    assert json.loads(out)["rechecks"]["checked"] == 0, "checked sources wait for their next slot"

    code, out, _ = _cli(root, db_url, "takedowns", "--json")
    assert code == 0
    report = json.loads(out)
    a, b = report["incidents"]
    assert (a["incident"], a["sources"], a["gone"], a["preserved"]) == ("test-a-2017-03-25", 3, 1, 1)
    assert a["headline"] == "1 of 3 sources removed, all preserved"
    assert (b["sources"], b["gone"]) == (2, 1)
    assert report["totals"]["sources"] == 4 and report["totals"]["gone"] == 1, "a shared source counts once"
    (gone,) = a["gone_sources"]
    assert gone["url"] == urls["c"] and gone["preserved"] and gone["evidence"] == "HTTP 404"
    assert gone["preserved_since"] < gone["first_seen_gone"] <= gone["gone_at"]
    assert gone["last_seen_online"] < gone["first_seen_gone"]
    assert gone["captures"] == 1 and gone["records"] >= 2 and gone["evidence_capture_id"]

    code, out, _ = _cli(root, db_url, "takedowns", "--incident", "test-a-2017-03-25")
    assert code == 0 and "1 of 3 sources removed, all preserved" in out and urls["c"] in out
    assert "preserved since" in out
    code, _, err = _cli(root, db_url, "takedowns", "--incident", "no-such-incident")
    assert code == 3 and "no incident 'no-such-incident'" in err

    # archiver recheck: one named source, now, whatever its schedule.
    code, out, err = _cli(root, db_url, "recheck", "--source", str(gone["source_id"]), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["checked"] == 1 and data["still_gone"] == 1 and data["gone"] == 0
    code, out, err = _cli(root, db_url, "recheck", "--incident", "test-b-2017-04-04")
    assert code == 0, err
    assert "checked 2 of 2" in out and "still gone 1" in out and "still gone" in out.splitlines()[0]

    _make_due(root, db_url)
    code, out, err = _cli(root, db_url, "run")
    assert code == 0, err
    assert "re-checked 4: still online 3, changed 0, gone 0, still gone 1, returned 0, errors 0" in out


def test_a_source_never_captured_is_removed_but_not_preserved(archive: Archive, site: Site) -> None:
    from archiver.capture.fetch import FetchSettings
    from archiver.capture.gate import HostGate
    from archiver.capture.job import CaptureJob
    from archiver.manifest import parse_text
    from tests.conftest import TEST_TODAY

    url = site.url("/deleted-before-we-came.html")  # never served: 404 on the first capture
    other = site.add("/b.html", _page("b"))
    specs = parse_text(MANIFEST.format(a=url, b=other, c=url, d=url), "m.yaml", TEST_TODAY)
    with archive.store() as store:
        store.load(specs)
    job = CaptureJob(archive, fetch_settings=FetchSettings(retries=0), gate=HostGate(4, 0.0), media=False)
    job.run()
    with archive.reading() as s:
        report = takedown_report(s)
    a, _ = report.incidents
    assert a.tally.headline == "1 of 2 sources removed, 0 preserved"
    (gone,) = a.gone
    assert not gone.preserved and gone.preserved_since is None and gone.records == 0
    assert gone.first_seen_gone is not None and gone.last_seen_online is None
    assert report.totals.sources == 2 and report.totals.gone == 1
