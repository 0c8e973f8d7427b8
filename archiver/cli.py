"""The ``archiver`` command: parses options, calls one library function, formats the result.

Errors the library raises on purpose (:class:`ArchiverError`) are printed as one line on stderr with a hint and
a non-zero exit code. Anything else is a bug: its traceback goes to a log file, never to the user's terminal.
"""

from __future__ import annotations

import json
import sys
import tempfile
import traceback
from datetime import UTC, datetime
from typing import Any, NoReturn

import click

from archiver import SOFTWARE, __version__, custody
from archiver.archive import Archive
from archiver.catalogue.models import Incident, Source
from archiver.catalogue.store import SourceRequest
from archiver.clock import utc_iso
from archiver.config import load_settings
from archiver.errors import ArchiverError, ManifestErrors

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def _emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str))


def _internal_error(exc: BaseException) -> NoReturn:
    fd, path = tempfile.mkstemp(prefix="archiver-crash-", suffix=".txt")
    with open(fd, "w", encoding="utf-8") as f:
        f.write(f"{SOFTWARE}\n")
        traceback.print_exception(exc, file=f)
    click.echo(f"error: internal error ({type(exc).__name__}: {exc}); details in {path}; please report it", err=True)
    sys.exit(70)  # EX_SOFTWARE


class ArchiverGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ManifestErrors as exc:
            for err in exc.errors:
                click.echo(f"error: {err.message}", err=True)
            ctx.exit(exc.exit_code)
        except ArchiverError as exc:
            click.echo(f"error: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""), err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:  # noqa: BLE001 - last line of defence: no traceback on the user's terminal
            _internal_error(exc)


class AppContext:
    def __init__(self, root: str | None, db: str | None, collector: str | None, proxy: str | None) -> None:
        self.options = (root, db, collector, proxy)
        self._archive: Archive | None = None

    def archive(self, *, ready: bool = True) -> Archive:
        if self._archive is None:
            root, db, collector, proxy = self.options
            self._archive = Archive(load_settings(root, db, collector=collector, proxy=proxy))
        if ready:
            self._archive.ensure_ready()
        return self._archive


pass_app = click.make_pass_decorator(AppContext)


@click.group(cls=ArchiverGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="archiver")
@click.option("--root", envvar="ARCHIVER_ROOT", help="Storage root (default ./storage).", metavar="DIR")
@click.option(
    "--db",
    envvar="ARCHIVER_DB_URL",
    help="Catalogue database URL (default SQLite in the root).",
    metavar="URL",
)
@click.option("--collector", envvar="ARCHIVER_COLLECTOR", help="Who collects, as recorded in custody events.")
@click.option("--proxy", envvar="ARCHIVER_PROXY", help="Proxy for all traffic (http://, socks5h://).", metavar="URL")
@click.pass_context
def cli(ctx: click.Context, root: str | None, db: str | None, collector: str | None, proxy: str | None) -> None:
    """Preserve cited online evidence with a verifiable chain of custody.

    \b
    Example:
        archiver init
        archiver manifest load manifests/
        archiver run
    """
    ctx.obj = AppContext(root, db, collector, proxy)


# -- init / status -------------------------------------------------------------------------------------------


@cli.command()
@JSON_OPTION
@pass_app
def init(app: AppContext, as_json: bool) -> None:
    """Create the storage layout, catalogue and signing key. Running it again is harmless.

    \b
    Example:
        archiver --root /srv/evidence init
    """
    report = app.archive(ready=False).init()
    if as_json:
        _emit_json(report.__dict__)
        return
    click.echo(f"archive root: {report.root}")
    click.echo(f"catalogue:    {report.db_url}")
    click.echo(f"signing key:  {report.key_id}")
    click.echo("created: " + ", ".join(report.created) if report.created else "already initialised; nothing to do")


@cli.command()
@JSON_OPTION
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """Counts of incidents, sources per state and captures per outcome.

    \b
    Example:
        archiver status --json
    """
    from archiver.integrity.batches import pending_count

    archive = app.archive()
    with archive.store() as store:
        counts = store.status_counts()
        counts["receipts_waiting_for_timestamp"] = pending_count(store.s)
    if as_json:
        _emit_json(counts)
        return
    click.echo(f"incidents: {counts['incidents']}")
    click.echo("sources:   " + ", ".join(f"{k} {v}" for k, v in counts["sources"].items()))
    caps = counts["captures"]
    click.echo("captures:  " + (", ".join(f"{k} {v}" for k, v in sorted(caps.items())) if caps else "none yet"))
    waiting = counts["receipts_waiting_for_timestamp"]
    click.echo(f"receipts:  {waiting} waiting for a trusted timestamp" if waiting else "receipts:  all timestamped")


# -- manifests -----------------------------------------------------------------------------------------------


@cli.group()
def manifest() -> None:
    """Validate and load incident manifests (YAML)."""


def _today() -> Any:
    return datetime.now(UTC).date()


def _report_manifest_errors(errors: list[Any]) -> None:
    for err in errors:
        click.echo(f"error: {err.message}", err=True)


@manifest.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@JSON_OPTION
def manifest_validate(paths: tuple[str, ...], as_json: bool) -> None:
    """Check manifests without touching the catalogue. Exit 2 when any file has a problem.

    \b
    Example:
        archiver manifest validate manifests/
    """
    from archiver.manifest import read_files  # PyYAML: only for the commands that read manifests

    incidents, errors = read_files(paths, _today())
    if as_json:
        _emit_json(
            {
                "incidents": [i.id for i in incidents],
                "errors": [{"file": e.path, "line": e.line, "field": e.field, "problem": e.problem} for e in errors],
            }
        )
    else:
        _report_manifest_errors(errors)
        click.echo(f"{len(incidents)} incident(s) valid" + (f", {len(errors)} problem(s)" if errors else ""))
    if errors:
        sys.exit(2)


@manifest.command("load")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@JSON_OPTION
@pass_app
def manifest_load(app: AppContext, paths: tuple[str, ...], as_json: bool) -> None:
    """Load manifests into the catalogue. Idempotent; changes are custody events with old and new values.

    Files with problems load nothing (and make the exit code 2); the other files load.

    \b
    Example:
        archiver manifest load manifests/*.yaml
    """
    archive = app.archive()
    from archiver.manifest import read_files

    incidents, errors = read_files(paths, archive.clock.now().date())
    with archive.store() as store:
        report = store.load(incidents, files=sorted({i.path for i in incidents}))
    if as_json:
        _emit_json({**report.as_dict(), "errors": [e.message for e in errors]})
    else:
        _report_manifest_errors(errors)
        click.echo(
            f"incidents: {len(report.incidents_created)} created, {len(report.incidents_updated)} updated, "
            f"{len(report.incidents_unchanged)} unchanged; sources: {report.sources_added} added, "
            f"{report.sources_linked} linked"
        )
    if errors:
        sys.exit(2)


# -- incidents and sources -----------------------------------------------------------------------------------


@cli.group()
def incident() -> None:
    """List and show incidents."""


def _incident_dict(inc: Incident, *, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": inc.id,
        "title": inc.title,
        "when": {
            "start": inc.when_start,
            "end": inc.when_end,
            "timezone": inc.when_timezone,
            "precision": inc.when_precision,
            "approximate": inc.when_approximate,
            "start_utc": utc_iso(inc.when_start_utc) if inc.when_start_utc else None,
        },
        "place": {
            "name": inc.place_name,
            "admin": inc.place_admin,
            "country": inc.country,
            "lat": inc.lat,
            "lon": inc.lon,
        },
        "facility": inc.facility,
        "categories": inc.categories,
        "sources": len(inc.sources),
    }
    if full:
        out["summary"] = inc.summary
        out["manifest"] = inc.manifest_path
    return out


def _source_dict(src: Source, link: Any = None) -> dict[str, Any]:
    return {
        "id": src.id,
        "url": src.url,
        "lead": src.lead,
        "kind": src.kind,
        "platform": src.platform,
        "item_id": src.item_id,
        "status": src.status,
        "title": src.title,
        "discovered_from": src.discovered_from_id,
        "cited_by": link["cited_by_id"] if link else None,
        "cited_as": link["cited_as"] if link else None,
        "note": link["note"] if link else None,
        "last_captured_at": utc_iso(src.last_captured_at) if src.last_captured_at else None,
        "gone_at": utc_iso(src.gone_at) if src.gone_at else None,
    }


@incident.command("list")
@JSON_OPTION
@pass_app
def incident_list(app: AppContext, as_json: bool) -> None:
    """List incidents, oldest first.

    \b
    Example:
        archiver incident list
    """
    with app.archive().store() as store:
        rows = [_incident_dict(i) for i in store.incidents()]
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        click.echo("no incidents yet: load some with 'archiver manifest load manifests/'")
    for r in rows:
        click.echo(f"{r['when']['start']:<17} {r['id']:<52} {r['sources']:>3} sources  {r['place']['name']}")


@incident.command("show")
@click.argument("incident_id")
@JSON_OPTION
@pass_app
def incident_show(app: AppContext, incident_id: str, as_json: bool) -> None:
    """Show one incident and its sources.

    \b
    Example:
        archiver incident show khan-shaykhoun-chemical-attack-2017-04-04
    """
    with app.archive().store() as store:
        inc = store.get_incident(incident_id)
        data = _incident_dict(inc, full=True)
        links = {link["source_id"]: link for link in store.links(incident_id)}
        data["sources"] = [_source_dict(s, links.get(s.id)) for s in inc.sources]
    if as_json:
        _emit_json(data)
        return
    when = data["when"]
    click.echo(f"{data['title']}  [{data['id']}]")
    span = when["start"] + (f" to {when['end']}" if when["end"] else "")
    click.echo(
        f"when:     {span}"
        + (f" ({when['timezone']})" if when["timezone"] else "")
        + (" approx." if when["approximate"] else "")
    )
    place = data["place"]
    click.echo("where:    " + ", ".join([place["name"], *place["admin"], place["country"]]))
    if data["facility"]:
        click.echo(f"facility: {data['facility']}")
    if data["categories"]:
        click.echo("category: " + ", ".join(data["categories"]))
    click.echo("")
    click.echo(data["summary"])
    click.echo("")
    click.echo(f"sources ({len(data['sources'])}):")
    for s in data["sources"]:
        what = s["url"] or f"lead: {s['lead']}"
        click.echo(f"  #{s['id']:<5} {s['status']:<9} {s['kind']:<12} {what}")


@cli.group()
def source() -> None:
    """Add sources to incidents."""


@source.command("add")
@click.argument("url")
@click.option("--incident", "incident_id", required=True, help="Incident the source belongs to.")
@click.option("--kind", type=click.Choice(["report", "article", "social_post", "video", "image", "document"]))
@click.option("--cited-as", help="How the report cites it.")
@click.option("--note")
@click.option("--follow-citations", is_flag=True, help="Capture the links this page cites (depth 1).")
@JSON_OPTION
@pass_app
def source_add(
    app: AppContext,
    url: str,
    incident_id: str,
    kind: str | None,
    cited_as: str | None,
    note: str | None,
    follow_citations: bool,
    as_json: bool,
) -> None:
    """Add a URL as a source of an incident (normalised: one video under two URL forms is one source).

    \b
    Example:
        archiver source add 'https://youtu.be/VIDEOID' --incident khan-shaykhoun-chemical-attack-2017-04-04
    """
    from archiver.urls import normalise

    req = SourceRequest(url=normalise(url), kind=kind, cited_as=cited_as, note=note, follow_citations=follow_citations)
    with app.archive().store() as store:
        src, added = store.add_source(incident_id, req)
        data = {**_source_dict(src), "added": added}
    if as_json:
        _emit_json(data)
    else:
        click.echo(f"{'added' if added else 'already known'}: source #{src.id} {src.url} ({src.status})")


# -- custody -------------------------------------------------------------------------------------------------


@cli.group("custody")
def custody_group() -> None:
    """Read and check the chain-of-custody log."""


@custody_group.command("log")
@click.option("--incident", "incident_id", help="Only events about this incident and its sources.")
@click.option("--limit", type=int, default=0, help="Show only the last N events.")
@JSON_OPTION
@pass_app
def custody_log(app: AppContext, incident_id: str | None, limit: int, as_json: bool) -> None:
    """Show custody events in order.

    \b
    Example:
        archiver custody log --incident latamneh-surgical-hospital-2017-03-25
    """
    with app.archive().session() as s:
        if incident_id:
            from archiver.catalogue.store import Store

            Store(s, app.archive().clock, "").get_incident(incident_id)
            events = custody.events_for_incident(s, incident_id)
        else:
            events = list(custody.iter_events(s))
        rows = [{**custody.document_of(e), "prev_hash": e.prev_hash, "hash": e.hash} for e in events]
    if limit:
        rows = rows[-limit:]
    if as_json:
        _emit_json(rows)
        return
    for r in rows:
        details = json.dumps(r["details"], ensure_ascii=False, sort_keys=True)
        if len(details) > 120:
            details = details[:117] + "..."
        click.echo(f"{r['seq']:>6} {r['at']} {r['action']:<18} {r['subject']:<24} {r['actor']}  {details}")


@custody_group.command("check")
@JSON_OPTION
@pass_app
def custody_check(app: AppContext, as_json: bool) -> None:
    """Walk the custody chain: gapless sequence, each link, each hash. Exit 1 on any problem.

    \b
    Example:
        archiver custody check
    """
    with app.archive().session() as s:
        report = custody.check_chain(s)
    if as_json:
        _emit_json(
            {
                "ok": report.ok,
                "events": report.events,
                "head_seq": report.head_seq,
                "head_hash": report.head_hash,
                "first_bad_seq": report.first_bad_seq,
                "problems": [p.__dict__ for p in report.problems],
            }
        )
    elif report.ok:
        click.echo(f"custody chain intact: {report.events} events, head {report.head_seq} {report.head_hash}")
    else:
        click.echo(f"custody chain BROKEN at event {report.first_bad_seq}", err=True)
        for p in report.problems:
            click.echo(f"  {p}", err=True)
    if not report.ok:
        sys.exit(1)


# -- capture ------------------------------------------------------------------------------------------------------


def _progress(as_json: bool) -> tuple[Any, Any]:
    """A rich progress bar on a terminal; nothing when piped, under cron or with --json."""
    if as_json or not sys.stderr.isatty():
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task("capturing", total=0)

    def on(kind: str, data: Any) -> None:
        if kind == "start":
            bar.update(task, total=data)
        elif kind == "discovered":
            bar.update(task, total=(bar.tasks[0].total or 0) + 1)
        elif kind == "captured":
            bar.update(task, advance=1, description=f"{data.outcome:<6} {data.url[:60]}")
        elif kind == "error":
            bar.console.print(f"[red]error[/red] {data}")

    return bar, on


def _print_run(summary: Any, as_json: bool) -> None:
    data = summary.as_dict()
    if as_json:
        _emit_json(data)
        return
    for warning in data.get("warnings", []):
        click.echo(f"warning: {warning}", err=True)
    for c in data["captures"]:
        if c["outcome"] != "ok":
            click.echo(f"{c['outcome']:<7} {c['url']}  {c['http_status'] or ''} {c['error'] or ''}".rstrip())
    click.echo(
        f"captured {data['captured']}, gone {data['gone']}, failed {data['failed']}, discovered {data['discovered']}; "
        f"{data['records']} records, {data['bytes']} bytes in {data['seconds']} s"
    )
    if data["repaired_warcs"]:
        click.echo("repaired after a crash: " + ", ".join(data["repaired_warcs"]))
    if data["interrupted_captures"]:
        click.echo(f"{data['interrupted_captures']} interrupted capture(s) from an earlier run were retried")
    if data["stopped_early"]:
        click.echo("stopped early (--max-time); the rest is still pending")
    r = data.get("rechecks") or {}
    if r.get("checked") or r.get("skipped"):  # archiver run's re-checks (docs/rechecks.md)
        click.echo(
            f"re-checked {r['checked']}: still online {r['still_online']}, changed {r['changed']}, gone {r['gone']}, "
            f"still gone {r['still_gone']}, returned {r['returned']}, errors {r['errors']}"
            + (f"; {r['skipped']} still due" if r["skipped"] else "")
        )
    for f in r.get("failing", []):
        click.echo(f"failing: source {f['source_id']} {f['url']}: {f['errors_in_a_row']} failed re-checks in a row")


WORKERS_OPTION = click.option(
    "--workers", type=click.IntRange(1, 256), help="Concurrent captures (settings: network.workers)."
)
BROWSER_OPTION = click.option(
    "--browser/--no-browser",
    default=None,
    help="Render every source in Chromium / none (default: [browser] settings; docs/browser.md).",
)


@cli.command("run")
@WORKERS_OPTION
@click.option("--max-time", type=click.FloatRange(min=1), help="Stop starting new captures after this many seconds.")
@click.option("--follow-citations/--no-follow-citations", default=None, help="Override per-source citation following.")
@click.option(
    "--executor",
    type=click.Choice(["local", "celery"]),
    default="local",
    show_default=True,
    help="local: capture in this process; celery: enqueue for 'archiver worker' processes (docs/scale.md).",
)
@click.option("--wait/--no-wait", default=True, help="celery: wait for the workers to finish the run (default).")
@click.option(
    "--processes",
    type=click.IntRange(0, 64),
    help="local: capture processes, 0 for one per core (settings: network.processes; docs/scale.md).",
)
@BROWSER_OPTION
@JSON_OPTION
@pass_app
def run_command(
    app: AppContext,
    workers: int | None,
    max_time: float | None,
    follow_citations: bool | None,
    executor: str,
    wait: bool,
    processes: int | None,
    browser: bool | None,
    as_json: bool,
) -> None:
    """Capture every pending source (what cron calls). Exits at once if another run holds the lock.

    \b
    Example:
        archiver run --max-time 3000 --json
        archiver run --executor celery --no-wait
    """
    archive = app.archive()
    if executor == "local":
        # Asked while the capture code is imported and the catalogue read (archiver.capture.probes).
        from archiver.capture import probes

        probes.ask_ahead_for_run(archive.settings, browser)
    from archiver import jobs

    bar, on = _progress(as_json)
    options = jobs.RunOptions(
        workers=workers,
        max_time=max_time,
        follow_citations=follow_citations,
        executor=executor,
        wait=wait,
        browser=browser,
        processes=processes,
    )
    if bar is not None:
        with bar:
            summary = jobs.run(archive, options, on)
    else:
        summary = jobs.run(archive, options, on)
    _print_run(summary, as_json)
    if executor == "celery" and not as_json:
        from archiver.distributed.coordinator import describe

        click.echo(describe(summary))


@cli.command("capture")
@click.argument("url")
@click.option("--incident", "incident_id", help="Incident the URL is a source of.")
@click.option("--follow-citations", is_flag=True, help="Also capture the links the page cites (depth 1).")
@WORKERS_OPTION
@BROWSER_OPTION
@JSON_OPTION
@pass_app
def capture_command(
    app: AppContext,
    url: str,
    incident_id: str | None,
    follow_citations: bool,
    workers: int | None,
    browser: bool | None,
    as_json: bool,
) -> None:
    """Capture one URL now (added as a source first).

    \b
    Example:
        archiver capture 'https://example.org/report' --incident khan-shaykhoun-chemical-attack-2017-04-04
        archiver capture 'https://x.com/someone/status/1' --no-browser
    """
    from archiver import jobs

    bar, on = _progress(as_json)
    options = jobs.RunOptions(workers=workers, follow_citations=follow_citations, browser=browser)
    if bar is not None:
        with bar:
            summary = jobs.capture(app.archive(), url, incident_id, options, on)
    else:
        summary = jobs.capture(app.archive(), url, incident_id, options, on)
    _print_run(summary, as_json)


# -- integrity ----------------------------------------------------------------------------------------------------


@cli.command("verify")
@click.option("--incident", "incident_id", help="Only this incident's files, records and receipts.")
@click.option("--deep", is_flag=True, help="Read every record and check its digests, not only whole files.")
@JSON_OPTION
@pass_app
def verify_command(app: AppContext, incident_id: str | None, deep: bool, as_json: bool) -> None:
    """Re-hash WARC files, check records, receipts, signatures, timestamps and the custody chain.

    The check is itself a custody event. Exit 1 on any problem; each problem names file, record, expected, found.

    \b
    Example:
        archiver verify --deep --incident khan-shaykhoun-chemical-attack-2017-04-04
    """
    from archiver.verify import verify_archive

    report = verify_archive(app.archive(), incident=incident_id, deep=deep)
    if as_json:
        _emit_json(report.as_dict())
    else:
        click.echo(f"checks run: {', '.join(report.checks)}")
        click.echo("counts:     " + ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items())))
        for p in report.problems:
            stream_err = p.severity != "warning"
            click.echo(f"{p.severity}: {p.kind}: {p.subject}: expected {p.expected}, found {p.found}", err=stream_err)
        click.echo(("OK" if report.ok else f"FAILED: {len(report.errors)} problem(s)") + f" in {report.seconds:.2f} s")
    if not report.ok:
        sys.exit(1)


@cli.command("lookup")
@click.argument("file_or_sha256")
@JSON_OPTION
@pass_app
def lookup_command(app: AppContext, file_or_sha256: str, as_json: bool) -> None:
    """Is this file exactly what we captured? From where, when, and who has handled it since?

    Takes a file (hashed, streamed) or a SHA-256. Exit 1 when the archive holds no such bytes.

    \b
    Example:
        archiver lookup ~/Downloads/video.mp4
    """
    from archiver.lookup import lookup_archive

    report = lookup_archive(app.archive(), file_or_sha256)
    if as_json:
        _emit_json(
            {"query": report.query, "sha256": report.sha256, "found": report.found,
             "matches": [_jsonable(m) for m in report.matches]}
        )  # fmt: skip
    elif not report.found:
        click.echo(f"not in this archive: no captured record has SHA-256 {report.sha256}")
    else:
        click.echo(f"SHA-256 {report.sha256}: {len(report.matches)} captured record(s)")
        for m in report.matches:
            click.echo("")
            click.echo(f"  source #{m.source_id}: {m.source_url}")
            click.echo(f"  incidents: {', '.join(m.incidents) or '(none)'}")
            click.echo(
                f"  captured:  {utc_iso(m.capture_started)} (capture #{m.capture_id}, {m.outcome}), role {m.role}"
            )
            click.echo(f"  record:    {m.record_id} in {m.warc_file} at offset {m.offset} ({m.length} bytes)")
            click.echo(f"  receipt:   {_receipt_line(m.receipt)}")
            click.echo(f"  custody:   {len(m.custody)} event(s)")
            for e in m.custody:
                click.echo(f"    {e.seq:>6} {utc_iso(e.at)} {e.action:<16} {e.actor}")
    if not report.found:
        sys.exit(1)


def _receipt_line(receipt: Any) -> str:
    if receipt is None:
        return "none (captured before receipts existed)"
    line = f"sha256 {receipt.sha256}, signature {receipt.signature}"
    if receipt.pending:
        return line + ", waiting for a trusted timestamp"
    stamps = "; ".join(
        f"{t.tsa} {t.status} {utc_iso(t.gen_time) if t.gen_time else ''}".strip() for t in receipt.timestamps
    )
    return line + f", Merkle path {receipt.merkle}, timestamps: {stamps or 'none'}"


def _jsonable(value: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return utc_iso(value)
    return value


# Commands in their own modules register themselves on ``cli`` when imported (see archiver/commands/).
from archiver.commands import bundle, schedule, worker  # noqa: E402, F401


def main() -> None:
    cli(prog_name="archiver")
