"""``archiver worker`` (a Celery worker doing captures) and ``archiver run-status`` (where a distributed run is)."""

from __future__ import annotations

import os

import click

from archiver.cli import JSON_OPTION, AppContext, _emit_json, cli, pass_app


@cli.command("worker")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 512),
    default=lambda: os.cpu_count() or 1,
    show_default="number of CPUs",
    help="Worker processes (prefork) or threads.",
)
@click.option(
    "--pool",
    type=click.Choice(["prefork", "threads", "solo"]),
    default="prefork",
    show_default=True,
    help="prefork: one capture per process; threads: captures share one process; solo: one capture, no children.",
)
@click.option("--queue", help="Queue to consume (settings: [celery] queue).")
@click.option("--loglevel", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True)
@pass_app
def worker_command(app: AppContext, concurrency: int, pool: str, queue: str | None, loglevel: str) -> None:
    """Start a Celery worker that captures what 'archiver run --executor celery' enqueues.

    Needs a PostgreSQL catalogue, the broker of [celery] broker_url, and the storage root on a path every worker
    shares. Stop it with SIGTERM (Ctrl-C): it finishes the capture in hand and closes its WARC file.

    \b
    Example:
        archiver --root /mnt/evidence --db postgresql://archiver@db/archiver worker --concurrency 4
    """
    from archiver.distributed.app import run_worker
    from archiver.distributed.process import require_postgresql

    archive = app.archive()
    require_postgresql(archive)
    run_worker(archive.settings, concurrency=concurrency, pool=pool, loglevel=loglevel, queue=queue)


@cli.command("run-status")
@click.argument("run_id")
@JSON_OPTION
@pass_app
def run_status_command(app: AppContext, run_id: str, as_json: bool) -> None:
    """Where a distributed run stands: its claims per state, captures made, errors. Exit 3 for an unknown run.

    \b
    Example:
        archiver run-status 20261101T120000Z-1a2b3c4d --json
    """
    from archiver.distributed.coordinator import run_status

    status = run_status(app.archive(), run_id)
    if as_json:
        _emit_json(status.as_dict())
        return
    p = status.progress
    click.echo(f"run {status.run_id}: started {status.created_at}, " + (
        f"finished {status.finished_at}" if status.finished_at else f"{p['open']} of {p['claims']} claim(s) open"
    ))  # fmt: skip
    click.echo("claims: " + ", ".join(f"{k} {v}" for k, v in sorted(p["states"].items())))
    outcomes: dict[str, int] = {}
    for c in status.captures:
        outcomes[c["outcome"]] = outcomes.get(c["outcome"], 0) + 1
    click.echo("captures: " + (", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) or "none yet"))
    for e in status.errors:
        click.echo(f"  source #{e['source_id']} {e['state']}: {e['error']}", err=True)
