"""``archiver recheck`` and ``archiver takedowns``: sources looked at again, and the ones that went offline."""

from __future__ import annotations

from typing import Any

import click

from archiver.cli import JSON_OPTION, AppContext, _emit_json, cli, pass_app


@cli.command("recheck")
@click.option("--source", "source_ids", type=int, multiple=True, metavar="ID", help="Re-check this source now.")
@click.option("--incident", "incident_id", help="Re-check the incident's captured and gone sources now.")
@click.option("--all-due", "all_due", is_flag=True, help="Only sources whose slot has come (the default).")
@click.option("--reschedule", is_flag=True, help="First recompute every slot from the schedule in settings.toml.")
@click.option("--workers", type=click.IntRange(1, 256), help="Concurrent re-checks (settings: network.workers).")
@click.option("--max-time", type=click.FloatRange(min=1), help="Stop starting new re-checks after this many seconds.")
@JSON_OPTION
@pass_app
def recheck_command(
    app: AppContext,
    source_ids: tuple[int, ...],
    incident_id: str | None,
    all_due: bool,
    reschedule: bool,
    workers: int | None,
    max_time: float | None,
    as_json: bool,
) -> None:
    """Fetch captured sources again now: still online, changed (captured again) or gone.

    Without options, re-checks what is due (as 'archiver run' does after its captures). Exits at once if
    another run holds the lock.

    \b
    Example:
        archiver recheck --incident khan-shaykhoun-chemical-attack-2017-04-04
        archiver recheck --source 12 --json
    """
    from archiver.recheck_due import RecheckOptions, recheck_now

    options = RecheckOptions(
        source_ids=source_ids,
        incident_id=incident_id,
        due_only=all_due,
        reschedule=reschedule,
        workers=workers,
        max_time=max_time,
    )
    summary, integrity = recheck_now(app.archive(), options)
    data = summary.as_dict()
    if as_json:
        _emit_json({**data, "integrity": integrity})
        return
    for c in data["checks"]:
        if c["result"] != "still-online":
            click.echo(f"{_label(c):<13} {c['source_id']:>6} {c['url']}  {'; '.join(c['reasons'])}".rstrip())
    click.echo(
        f"checked {data['checked']} of {data['due']}: still online {data['still_online']}, changed {data['changed']}, "
        f"gone {data['gone']}, still gone {data['still_gone']}, returned {data['returned']}, errors {data['errors']}"
    )
    if data["skipped"]:
        click.echo(f"{data['skipped']} not checked (--max-time); they stay due")
    for f in data["failing"]:
        click.echo(f"failing: source {f['source_id']} {f['url']}: {f['errors_in_a_row']} failed re-checks in a row")


def _label(check: dict[str, Any]) -> str:
    if check["was_gone"]:
        return {"changed": "returned", "gone": "still gone"}.get(str(check["result"]), str(check["result"]))
    return str(check["result"])


@cli.command("takedowns")
@click.option("--incident", "incident_id", help="Only this incident's sources.")
@JSON_OPTION
@pass_app
def takedowns_command(app: AppContext, incident_id: str | None, as_json: bool) -> None:
    """Sources that went offline, when, and whether (and since when) the archive holds a copy.

    The figure human-rights groups publish: "N of M sources removed, K preserved".

    \b
    Example:
        archiver takedowns --incident khan-shaykhoun-chemical-attack-2017-04-04 --json
    """
    from archiver.takedowns import takedown_report

    archive = app.archive()
    with archive.reading() as s:
        report = takedown_report(s, incident_id)
    data = report.as_dict()
    if as_json:
        _emit_json(data)
        return
    for inc in data["incidents"]:
        click.echo(f"{inc['incident']}: {inc['headline']}")
        for src in inc["gone_sources"]:
            held = f"preserved since {src['preserved_since']}" if src["preserved"] else "NOT preserved"
            click.echo(f"  gone {src['gone_at'] or '?':<27} {held:<45} {src['source_id']:>6} {src['url']}")
    click.echo(f"total: {data['totals']['headline']}")
