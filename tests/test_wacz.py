"""``archiver export --format wacz``: structure checked by our own checks (fast), by ``wacz validate`` and by replay
in pywb using our CDXJ index (slow)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import surt  # AGPL: a test-only comparison, never imported by the package

from archiver.archive import Archive
from archiver.bundle.cdxj import surt_key
from archiver.bundle.wacz import export_wacz
from archiver.bundle.wacz_check import check_wacz
from archiver.errors import BundleError
from tests.support.bundle_wacz import validate
from tests.support.bundle_wacz import wacz_tool as wacz_tool  # pytest fixture
from tests.support.integrity import FILES, Site, build, site_fixture  # noqa: F401 - pytest fixture "site"
from tests.support.pywb_env import Wayback, http_session
from tests.support.pywb_env import pywb as pywb
from tests.support.pywb_env import wayback as wayback
from tests.support.tsa import OpensslTsa, openssl_tsa_fixture  # noqa: F401 - pytest fixture "openssl_tsa"

URLS = [
    "http://example.com/",
    "https://www.Example.com/Path/To/Page.html?b=2&a=1#frag",
    "http://www3.example.co.uk:8080/a/b/",
    "https://example.org:443/x?Z=1&y",
    "http://127.0.0.1:41443/report.html",
    "http://sub.domain.example.net/index.php?id=5&lang=ar",
    "https://example.com/watch?v=dQw4w9WgXcQ",
]


@pytest.mark.parametrize("url", URLS)
def test_surt_key_matches_the_surt_package(url: str) -> None:
    assert surt_key(url) == surt.surt(url)


def _wacz(archive: Archive, site: Site, tsa: OpensslTsa, out: Path) -> Path:
    build(archive, site, tsa)
    return Path(export_wacz(archive, "strike-a", out).path)


def test_wacz_structure(sqlite_archive: Archive, site: Site, openssl_tsa: OpensslTsa, tmp_path: Path) -> None:
    path = _wacz(sqlite_archive, site, openssl_tsa, tmp_path / "strike-a.wacz")
    assert check_wacz(path) == []
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        package = json.loads(zf.read("datapackage.json"))
        index = zf.read("indexes/index.cdxj").decode().splitlines()
        pages = zf.read("pages/pages.jsonl").decode().splitlines()
    assert {"datapackage.json", "datapackage-digest.json", "indexes/index.cdxj", "pages/pages.jsonl"} <= names
    assert package["wacz_version"] == "1.1.1" and all(r["hash"].startswith("sha256:") for r in package["resources"])
    assert any(line.startswith("1,0,0,127:") and '"status": "200"' in line for line in index)
    assert json.loads(pages[0])["format"] == "json-pages-1.0"
    assert {json.loads(p)["url"] for p in pages[1:]} == {site.url("report.html"), site.url("video.mp4")}
    with pytest.raises(BundleError, match="already exists"):
        export_wacz(sqlite_archive, "strike-a", path)


def test_wacz_tampering_is_found(sqlite_archive: Archive, site: Site, openssl_tsa: OpensslTsa, tmp_path: Path) -> None:
    path = _wacz(sqlite_archive, site, openssl_tsa, tmp_path / "a.wacz")
    forged = tmp_path / "forged.wacz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(forged, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "pages/pages.jsonl":
                data = data.replace(b"report.html", b"forged.html")
            dst.writestr(info, data)
    assert "wacz-hash" in {p.kind for p in check_wacz(forged)}


@pytest.mark.slow
def test_wacz_validates_and_replays_in_pywb(
    sqlite_archive: Archive, site: Site, openssl_tsa: OpensslTsa, tmp_path: Path, wacz_tool: Path, wayback: Wayback
) -> None:
    path = _wacz(sqlite_archive, site, openssl_tsa, tmp_path / "strike-a.wacz")
    done = validate(wacz_tool, path)
    assert done.returncode == 0 and "validation succeeded" in done.stdout.lower(), done.stdout + done.stderr
    # Replay from our own index: the WARC files and index.cdxj go into a pywb collection as they are.
    wayback.manage("init", wayback.collection)
    coll = wayback.root / "collections" / wayback.collection
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if name.startswith("archive/"):
                (coll / "archive" / Path(name).name).write_bytes(zf.read(name))
        (coll / "indexes" / "index.cdxj").write_bytes(zf.read("indexes/index.cdxj"))
        first = zf.read("indexes/index.cdxj").decode().split()[1]
    wayback.start()
    with http_session() as http:
        for name in ("report.html", "video.mp4", "style.css"):
            got = http.get(wayback.url(first, site.url(name), "id_"), timeout=30)
            assert got.status_code == 200, f"{name}: {got.status_code}\n{wayback.logs()}"
            assert got.content == FILES[name]
