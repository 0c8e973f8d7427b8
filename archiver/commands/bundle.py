"""``archiver export`` and ``archiver verify-bundle``: evidence bundles for legal submission."""

from __future__ import annotations

from pathlib import Path

import click

from archiver.cli import JSON_OPTION, AppContext, _emit_json, cli, pass_app
from archiver.errors import BundleError


@cli.command("export")
@click.option("--incident", "incident_id", required=True, help="The incident to export.", metavar="ID")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Bundle path to create.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["bagit", "wacz"]),
    default="bagit",
    show_default=True,
    help="bagit: the evidence bundle (RFC 8493); wacz: the captures for replay (WACZ 1.1.1).",
)
@click.option("--zip", "as_zip", is_flag=True, help="Write the bag as one zip file.")
@click.option("--force", is_flag=True, help="Replace an existing bundle at --out.")
@JSON_OPTION
@pass_app
def export_command(
    app: AppContext, incident_id: str, out: Path, fmt: str, as_zip: bool, force: bool, as_json: bool
) -> None:
    """Export one incident as an evidence bundle a court can verify offline.

    The bag holds byte-identical copies of the incident's WARC records, the media in native format, receipts
    with signatures, Merkle paths and RFC 3161 tokens, TSA certificates, the archive's public key, the custody
    segment, report.html and VERIFY.md. The export is recorded as the custody event "exported".

    \b
    Example:
        archiver export --incident khan-shaykhoun-chemical-attack-2017-04-04 --out /media/usb/ks-2017 --zip
        archiver export --incident khan-shaykhoun-chemical-attack-2017-04-04 --format wacz --out ks.wacz
    """
    archive = app.archive()
    if fmt == "wacz":
        if as_zip:
            raise BundleError("--zip applies to bagit bundles; a WACZ is a zip already")
        from archiver.bundle.wacz import export_wacz

        report = export_wacz(archive, incident_id, out, force=force)
    else:
        from archiver.bundle.export import export_bundle

        report = export_bundle(archive, incident_id, out, as_zip=as_zip, force=force)
    if as_json:
        _emit_json(report.as_dict())
        return
    click.echo(
        f"exported {report.incident} to {report.path} ({report.format}): {report.records} records, "
        f"{report.media} media files, {report.receipts} receipts, {report.files} files, {report.bytes} bytes"
    )
    click.echo(f"sha256 of {report.digest_of}: {report.digest}; custody event {report.event_seq}")


@cli.command("verify-bundle")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--tsa-ca",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Check timestamp tokens against this CA certificate (PEM) instead of the certificates in the bundle.",
)
@JSON_OPTION
def verify_bundle_command(path: Path, tsa_ca: Path | None, as_json: bool) -> None:
    """Verify an evidence bundle (bag directory or zip) offline, with no catalogue.

    Exits 0 when every check passed, 1 when any problem was found.

    \b
    Example:
        archiver verify-bundle /media/usb/ks-2017.zip
        archiver verify-bundle --json --tsa-ca tsa-root.pem ks-2017/
    """
    from archiver.bundle.verify_bundle import verify_bundle

    try:
        ca = tsa_ca.read_bytes() if tsa_ca is not None else None
    except OSError as exc:
        raise BundleError(f"cannot read {tsa_ca}: {exc.strerror or exc}") from exc
    report = verify_bundle(path, tsa_ca=ca)
    if as_json:
        _emit_json(report.as_dict())
    else:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items()))
        click.echo(f"checks: {', '.join(report.checks)}")
        click.echo(f"counted: {counts}")
        for p in report.problems:
            click.echo(f"  {p}")
        verdict = "bundle verified" if report.ok else f"bundle FAILED verification: {len(report.problems)} problem(s)"
        click.echo(f"{verdict} ({report.path})")
    if not report.ok:
        raise SystemExit(1)
