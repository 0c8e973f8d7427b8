"""Hostile bundle zips are refused before anything is written; the safe zip writer is deterministic."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from archiver.bundle.verify_bundle import verify_bundle
from archiver.bundle.zipsafe import extract, write_zip, zip_problems
from archiver.errors import BundleError


def _zip(path: Path, entries: list[tuple[str, bytes, int | None]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.create_system = 3
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


GOOD = ("bag/bagit.txt", b"BagIt-Version: 1.0\n", None)


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize(
    ("entry", "kind"),
    [
        (("bag/../../evil.txt", b"x", None), "zip-unsafe-entry"),
        (("/tmp/evil-absolute.txt", b"x", None), "zip-unsafe-entry"),
        (("bag/link", b"/etc/passwd", stat.S_IFLNK | 0o777), "zip-unsafe-entry"),
        (("bag\\..\\evil.txt", b"x", None), "zip-unsafe-entry"),
        (("bag/bagit.txt", b"again", None), "zip-duplicate-entry"),
        (("other/file.txt", b"x", None), "zip-layout"),
    ],
)
def test_unsafe_zip_is_refused_before_extraction(
    tmp_path: Path, entry: tuple[str, bytes, int | None], kind: str
) -> None:
    path = _zip(tmp_path / "hostile.zip", [GOOD, entry])
    problems, _top = zip_problems(path)
    assert kind in {p.kind for p in problems}
    report = verify_bundle(path)
    assert not report.ok and report.checks == ("zip",) and kind in {p.kind for p in report.problems}
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(BundleError, match="refused"):
        extract(path, dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path.parent / "evil.txt").exists() and not Path("/tmp/evil-absolute.txt").exists()


def test_not_a_zip_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "bundle.zip"
    path.write_bytes(b"not a zip at all")
    report = verify_bundle(path)
    assert not report.ok and {p.kind for p in report.problems} == {"zip-unreadable"}


def test_written_zip_is_deterministic_and_safe(tmp_path: Path) -> None:
    src = tmp_path / "bag"
    (src / "data").mkdir(parents=True)
    (src / "bagit.txt").write_text("BagIt-Version: 1.0\n")
    (src / "data" / "a.warc.gz").write_bytes(b"\x1f\x8b\x08" + bytes(100))
    write_zip(src, tmp_path / "one.zip", "bag")
    write_zip(src, tmp_path / "two.zip", "bag")
    assert (tmp_path / "one.zip").read_bytes() == (tmp_path / "two.zip").read_bytes()
    assert zip_problems(tmp_path / "one.zip") == ([], "bag")
    with zipfile.ZipFile(tmp_path / "one.zip") as zf:
        assert zf.getinfo("bag/data/a.warc.gz").compress_type == zipfile.ZIP_STORED
    with pytest.raises(BundleError):
        write_zip(src, tmp_path / "one.zip", "bag")  # never overwrites
