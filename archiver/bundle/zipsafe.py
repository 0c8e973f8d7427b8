"""Zip files of bundles: written deterministically, read only after every entry was found safe.

Writing: entries in sorted order, a fixed time stamp (1980-01-01, the earliest a zip can hold) and mode, so
that an unchanged bag zips to identical bytes; already compressed files (``.gz``, video, images) are STORED,
the rest DEFLATED. Every entry is under one top-level folder named after the bag, as ``bagit`` tools expect.

Reading: a zip from elsewhere is hostile until checked. :func:`zip_problems` inspects the central directory
*before anything is written*: an entry whose name is absolute, has a drive letter or a backslash, climbs out
with ``..``, is a symbolic link or a device, appears twice, or lies outside the single top-level folder is a
problem, and :func:`extract` refuses a zip with any problem. Sizes are capped by the free space the caller
checks, and each entry is written through a fresh ``open(..., "xb")`` so nothing existing is ever replaced.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from archiver.errors import BundleError
from archiver.integrity import Problem

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
STORED_SUFFIXES = (".gz", ".zip", ".mp4", ".webm", ".mkv", ".mov", ".ts", ".mp3", ".m4a", ".jpg", ".png", ".webp",
                   ".gif", ".tsr", ".wacz")  # fmt: skip
BUFFER = 1 << 20


def write_zip(src: Path, dest: Path, top: str) -> None:
    """Zip the directory ``src`` into the new file ``dest`` with every entry under ``top/``."""
    files = sorted(p for p in src.rglob("*") if p.is_file())
    try:
        with zipfile.ZipFile(dest, "x", allowZip64=True) as zf:
            for path in files:
                rel = path.relative_to(src).as_posix()
                add_file(zf, path, f"{top}/{rel}")
    except OSError as exc:
        raise BundleError(f"cannot write {dest}: {exc.strerror or exc}") from exc


def add_file(zf: zipfile.ZipFile, path: Path, arcname: str) -> None:
    info = zipfile.ZipInfo(arcname, FIXED_TIME)
    info.create_system = 3  # Unix, so that the mode below is read as one
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    info.compress_type = zipfile.ZIP_STORED if arcname.endswith(STORED_SUFFIXES) else zipfile.ZIP_DEFLATED
    with path.open("rb") as f, zf.open(info, "w", force_zip64=True) as out:
        shutil.copyfileobj(f, out, BUFFER)


def _entry_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    mode = info.external_attr >> 16
    if "\\" in name:
        return "backslash in the name"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if any(part == ".." for part in PurePosixPath(name).parts):
        return "climbs out of the bag with .."
    if info.create_system == 3 and mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "symbolic link or special file" if stat.S_ISLNK(mode) else "special file"
    if "\x00" in name:
        return "NUL in the name"
    return None


def zip_problems(path: Path) -> tuple[list[Problem], str | None]:
    """The problems of a bundle zip, and its top-level folder name when it has exactly one."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        return [Problem("zip-unreadable", str(path), "a zip file", str(exc))], None
    problems: list[Problem] = []
    seen: set[str] = set()
    tops: set[str] = set()
    for info in infos:
        reason = _entry_problem(info)
        if reason is not None:
            problems.append(Problem("zip-unsafe-entry", info.filename, "a relative path inside the bag", reason))
            continue
        norm = PurePosixPath(info.filename).as_posix().rstrip("/")
        if norm in seen:
            problems.append(Problem("zip-duplicate-entry", info.filename, "each name once", "twice"))
        seen.add(norm)
        parts = PurePosixPath(norm).parts
        if parts and parts[0] not in (".", ""):
            tops.add(parts[0])
            if len(parts) == 1 and not info.is_dir():
                problems.append(Problem("zip-unsafe-entry", info.filename, "an entry inside the bag folder", "none"))
    if len(tops) != 1:
        found = ", ".join(sorted(tops)[:5]) or "none"
        problems.append(Problem("zip-layout", str(path), "one top-level bag folder", found))
        return problems, None
    return problems, next(iter(tops))


def extract(path: Path, dest: Path) -> Path:
    """Extract a zip that :func:`zip_problems` found safe into the empty directory ``dest``; the bag folder."""
    problems, top = zip_problems(path)
    if problems or top is None:
        raise BundleError(f"{path}: refused: {problems[0] if problems else 'no bag folder'}")
    root = dest.resolve()
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            target = (root / info.filename).resolve()
            if root not in target.parents:
                raise BundleError(f"{path}: refused: {info.filename} resolves outside the extraction folder")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "xb") as out:
                shutil.copyfileobj(src, out, BUFFER)
    return root / top
