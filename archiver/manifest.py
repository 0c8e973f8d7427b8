"""Incident manifests: YAML in, validated frozen values out.

The YAML is composed into nodes (not constructed into Python objects) so that every problem can name the file,
the line and the field: ``manifests/x.yaml:14: incidents[0].sources[2].url: scheme 'ftp' is not supported``.
Scalars are read as text and converted by the field that expects them, so ``2017`` or ``2017-04-04`` is never
silently turned into an int or a date by YAML's implicit typing. Duplicate keys are errors (YAML 1.2 §3.2.1.1).

A file with any problem loads nothing; all problems of all files are reported together.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from archiver.errors import ManifestError, ManifestErrors, UrlError
from archiver.urls import normalise

SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
KINDS = ("report", "article", "social_post", "video", "image", "document")
PRECISIONS = ("year", "month", "day", "hour", "minute", "second")
MAX_TEXT = 20_000


@dataclass(frozen=True)
class When:
    start: str
    end: str | None
    timezone: str | None
    precision: str
    approximate: bool
    start_utc: datetime | None  # earliest instant, when it can be known


@dataclass(frozen=True)
class Place:
    name: str
    admin: tuple[str, ...]
    country: str
    lat: str | None
    lon: str | None


@dataclass(frozen=True)
class ReportSpec:
    key: str | None
    url: str | None
    title: str
    publisher: str | None
    published: str | None
    line: int


@dataclass(frozen=True)
class SourceSpec:
    url: str | None
    lead: str | None
    kind: str | None
    platform: str | None
    cited_by: str | None
    cited_as: str | None
    note: str | None
    line: int


@dataclass(frozen=True)
class IncidentSpec:
    id: str
    title: str
    when: When
    place: Place
    facility: str | None
    categories: tuple[str, ...]
    summary: str
    reports: tuple[ReportSpec, ...]
    sources: tuple[SourceSpec, ...]
    path: str
    line: int


class _Ctx:
    """Collects problems for one file."""

    def __init__(self, path: str, today: date) -> None:
        self.path = path
        self.today = today
        self.errors: list[ManifestError] = []

    def error(self, node: yaml.Node | None, field: str, problem: str) -> None:
        line = node.start_mark.line + 1 if node is not None else None
        self.errors.append(ManifestError(self.path, line, field, problem))


class _Invalid(Exception):
    """Raised inside the walker to abandon one field; the problem is already recorded."""


def _mapping(
    ctx: _Ctx, node: yaml.Node, field: str, allowed: Sequence[str], required: Sequence[str]
) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        ctx.error(node, field, "expected a mapping")
        raise _Invalid
    out: dict[str, yaml.Node] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            ctx.error(key_node, field, "keys must be plain text")
            continue
        key = str(key_node.value)
        if key in out:
            ctx.error(key_node, f"{field}.{key}" if field else key, "duplicate key")
        elif key not in allowed:
            hint = f"; expected one of: {', '.join(allowed)}"
            ctx.error(key_node, f"{field}.{key}" if field else key, f"unknown key{hint}")
        else:
            out[key] = value_node
    for key in required:
        if key not in out:
            ctx.error(node, f"{field}.{key}" if field else key, "required field is missing")
    return out


def _text(ctx: _Ctx, node: yaml.Node, field: str, *, one_line: bool = False) -> str:
    if not isinstance(node, yaml.ScalarNode) or node.tag == "tag:yaml.org,2002:null":
        ctx.error(node, field, "expected text")
        raise _Invalid
    value = str(node.value).strip()
    if not value:
        ctx.error(node, field, "must not be empty")
        raise _Invalid
    if len(value) > MAX_TEXT:
        ctx.error(node, field, f"longer than {MAX_TEXT} characters")
        raise _Invalid
    if one_line and "\n" in value:
        ctx.error(node, field, "must be one line")
        raise _Invalid
    if any(ord(c) < 32 and c not in "\n\t" for c in value):
        ctx.error(node, field, "contains control characters")
        raise _Invalid
    return value


def _opt_text(ctx: _Ctx, m: dict[str, yaml.Node], key: str, field: str) -> str | None:
    node = m.get(key)
    if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"):
        return None
    return _text(ctx, node, f"{field}.{key}")


def _list(ctx: _Ctx, node: yaml.Node, field: str) -> list[yaml.Node]:
    if not isinstance(node, yaml.SequenceNode):
        ctx.error(node, field, "expected a list")
        raise _Invalid
    return list(node.value)


def _bool(ctx: _Ctx, node: yaml.Node, field: str) -> bool:
    if isinstance(node, yaml.ScalarNode) and str(node.value).lower() in ("true", "false"):
        return str(node.value).lower() == "true"
    ctx.error(node, field, "expected true or false")
    raise _Invalid


_DATE_FORMS = (
    (re.compile(r"^\d{4}$"), "year"),
    (re.compile(r"^\d{4}-\d{2}$"), "month"),
    (re.compile(r"^\d{4}-\d{2}-\d{2}$"), "day"),
    (re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}$"), "hour"),
    (re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?:Z|[+-]\d{2}:?\d{2})?$"), "minute"),
    (re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?$"), "second"),
)


@dataclass(frozen=True)
class _Instant:
    text: str
    precision: str
    earliest: datetime  # naive local when no zone is known, else aware
    latest: datetime  # exclusive end of the period the text names
    aware: bool


def _parse_instant(ctx: _Ctx, node: yaml.Node, field: str) -> _Instant:
    raw = _text(ctx, node, field, one_line=True)
    for pattern, form in _DATE_FORMS:
        if pattern.match(raw):
            precision = form
            break
    else:
        ctx.error(node, field, f"{raw!r} is not a date (YYYY, YYYY-MM, YYYY-MM-DD) or an ISO 8601 datetime")
        raise _Invalid
    try:
        if precision == "year":
            start = datetime(int(raw), 1, 1)
            end = datetime(int(raw) + 1, 1, 1)
        elif precision == "month":
            y, mth = (int(p) for p in raw.split("-"))
            start = datetime(y, mth, 1)
            end = datetime(y + (mth == 12), mth % 12 + 1, 1)
        elif precision == "day":
            start = datetime.combine(date.fromisoformat(raw), datetime.min.time())
            end = start + timedelta(days=1)
        elif precision == "hour":
            start = datetime.fromisoformat(raw + ":00")
            end = start + timedelta(hours=1)
        else:
            start = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            end = start + (timedelta(minutes=1) if precision == "minute" else timedelta(seconds=1))
    except ValueError as exc:
        ctx.error(node, field, f"{raw!r} is not a valid date: {exc}")
        raise _Invalid from exc
    return _Instant(raw, precision, start, end, start.tzinfo is not None)


def _when(ctx: _Ctx, node: yaml.Node, field: str) -> When:
    m = _mapping(ctx, node, field, ("start", "end", "timezone", "precision", "approximate"), ("start",))
    if "start" not in m:
        raise _Invalid
    start = _parse_instant(ctx, m["start"], f"{field}.start")
    end = _parse_instant(ctx, m["end"], f"{field}.end") if "end" in m else None
    tz_name = _opt_text(ctx, m, "timezone", field)
    zone = None
    if tz_name is not None:
        try:
            zone = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            ctx.error(m["timezone"], f"{field}.timezone", f"unknown time zone {tz_name!r} (use an IANA name)")
            raise _Invalid from None
    precision = start.precision
    if "precision" in m:
        precision = _text(ctx, m["precision"], f"{field}.precision")
        if precision not in PRECISIONS:
            ctx.error(m["precision"], f"{field}.precision", f"must be one of {', '.join(PRECISIONS)}")
            raise _Invalid
        if PRECISIONS.index(precision) > PRECISIONS.index(start.precision):
            ctx.error(m["precision"], f"{field}.precision", f"finer than the value given ({start.text!r})")
            raise _Invalid
    approximate = _bool(ctx, m["approximate"], f"{field}.approximate") if "approximate" in m else False

    def to_utc(moment: datetime, inst: _Instant, key: str) -> datetime | None:
        if moment.tzinfo is not None:
            return moment.astimezone(UTC)
        if zone is not None:
            return moment.replace(tzinfo=zone).astimezone(UTC)
        if inst.precision in ("hour", "minute", "second"):
            ctx.error(m[key], f"{field}.{key}", "a time of day needs a UTC offset or when.timezone")
            raise _Invalid
        return None

    start_utc = to_utc(start.earliest, start, "start")
    if end is not None:
        to_utc(end.earliest, end, "end")  # the same rule: a time of day needs an offset or a zone

    # An incident cannot start after today (in the most generous zone): a typo in the year, usually.
    starts = start_utc.date() if start_utc is not None else start.earliest.date()
    if starts > ctx.today + timedelta(days=1):
        ctx.error(m["start"], f"{field}.start", f"{start.text} is in the future")
        raise _Invalid

    def wall(moment: datetime) -> datetime:
        """Local wall time, so that a date-only end compares with a datetime start."""
        if moment.tzinfo is None:
            return moment
        return (moment.astimezone(zone) if zone else moment).replace(tzinfo=None)

    if end is not None and wall(end.latest) <= wall(start.earliest):
        ctx.error(m["end"], f"{field}.end", f"{end.text} is before the start {start.text}")
        raise _Invalid
    return When(start.text, end.text if end else None, tz_name, precision, approximate, start_utc)


def _coordinate(ctx: _Ctx, node: yaml.Node, field: str, limit: int) -> str:
    raw = _text(ctx, node, field, one_line=True)
    if not re.fullmatch(r"[+-]?\d{1,3}(?:\.\d{1,10})?", raw):
        ctx.error(node, field, f"{raw!r} is not a decimal coordinate")
        raise _Invalid
    if abs(float(raw)) > limit:
        ctx.error(node, field, f"{raw} is out of range -{limit}..{limit}")
        raise _Invalid
    return raw


def _place(ctx: _Ctx, node: yaml.Node, field: str) -> Place:
    m = _mapping(ctx, node, field, ("name", "admin", "country", "lat", "lon"), ("name", "country"))
    if "name" not in m or "country" not in m:
        raise _Invalid
    name = _text(ctx, m["name"], f"{field}.name", one_line=True)
    admin = tuple(
        _text(ctx, n, f"{field}.admin[{i}]", one_line=True)
        for i, n in enumerate(_list(ctx, m["admin"], f"{field}.admin") if "admin" in m else [])
    )
    country = _text(ctx, m["country"], f"{field}.country")
    if not re.fullmatch(r"[A-Z]{2}", country):
        ctx.error(m["country"], f"{field}.country", f"{country!r} is not an ISO 3166-1 alpha-2 code such as SY")
        raise _Invalid
    lat = _coordinate(ctx, m["lat"], f"{field}.lat", 90) if "lat" in m else None
    lon = _coordinate(ctx, m["lon"], f"{field}.lon", 180) if "lon" in m else None
    if (lat is None) != (lon is None):
        ctx.error(node, field, "lat and lon go together: give both or neither")
        raise _Invalid
    return Place(name, admin, country, lat, lon)


def _url(ctx: _Ctx, node: yaml.Node, field: str) -> str:
    raw = _text(ctx, node, field, one_line=True)
    try:
        return normalise(raw)
    except UrlError as exc:
        ctx.error(node, field, exc.message)
        raise _Invalid from exc


def _date_only(ctx: _Ctx, node: yaml.Node, field: str) -> str:
    inst = _parse_instant(ctx, node, field)
    if inst.earliest is not None and inst.earliest.date() > ctx.today:
        ctx.error(node, field, f"{inst.text} is in the future")
        raise _Invalid
    return inst.text


def _report(ctx: _Ctx, node: yaml.Node, field: str) -> ReportSpec:
    m = _mapping(ctx, node, field, ("id", "url", "title", "publisher", "published"), ("title",))
    key = _opt_text(ctx, m, "id", field)
    if key is not None and not SLUG.match(key):
        ctx.error(m["id"], f"{field}.id", "must be a slug (lowercase letters, digits and hyphens)")
    return ReportSpec(
        key=key,
        url=_url(ctx, m["url"], f"{field}.url") if "url" in m else None,
        title=_text(ctx, m["title"], f"{field}.title") if "title" in m else "",
        publisher=_opt_text(ctx, m, "publisher", field),
        published=_date_only(ctx, m["published"], f"{field}.published") if "published" in m else None,
        line=node.start_mark.line + 1,
    )


def _source(ctx: _Ctx, node: yaml.Node, field: str, report_keys: set[str]) -> SourceSpec:
    allowed = ("url", "lead", "kind", "platform", "cited_by", "cited_as", "note")
    m = _mapping(ctx, node, field, allowed, ())
    if ("url" in m) == ("lead" in m):
        ctx.error(node, field, "give either url (a located source) or lead (a description of one not yet located)")
        raise _Invalid
    kind = _opt_text(ctx, m, "kind", field)
    if kind is not None and kind not in KINDS:
        ctx.error(m["kind"], f"{field}.kind", f"{kind!r} is not one of {', '.join(KINDS)}")
        raise _Invalid
    cited_by = _opt_text(ctx, m, "cited_by", field)
    if cited_by is not None and cited_by not in report_keys:
        ctx.error(m["cited_by"], f"{field}.cited_by", f"no report with id {cited_by!r} in this incident")
        raise _Invalid
    platform = _opt_text(ctx, m, "platform", field)
    if platform is not None and not SLUG.match(platform):
        ctx.error(m["platform"], f"{field}.platform", "must be a lowercase name such as youtube or facebook")
        raise _Invalid
    return SourceSpec(
        url=_url(ctx, m["url"], f"{field}.url") if "url" in m else None,
        lead=_text(ctx, m["lead"], f"{field}.lead") if "lead" in m else None,
        kind=kind,
        platform=platform,
        cited_by=cited_by,
        cited_as=_opt_text(ctx, m, "cited_as", field),
        note=_opt_text(ctx, m, "note", field),
        line=node.start_mark.line + 1,
    )


def _each(ctx: _Ctx, nodes: Iterable[yaml.Node], field: str, fn: object) -> list[object]:
    out = []
    for i, n in enumerate(nodes):
        try:
            out.append(fn(ctx, n, f"{field}[{i}]"))  # type: ignore[operator]
        except _Invalid:
            continue
    return out


INCIDENT_KEYS = ("id", "title", "when", "place", "facility", "categories", "summary", "reports", "sources")


def _incident(ctx: _Ctx, node: yaml.Node, field: str) -> IncidentSpec:
    m = _mapping(ctx, node, field, INCIDENT_KEYS, ("id", "title", "when", "place", "summary"))
    parts: dict[str, object] = {}

    def attempt(key: str, fn: object) -> None:
        if key in m:
            try:
                parts[key] = fn()  # type: ignore[operator]
            except _Invalid:
                pass

    attempt("id", lambda: _text(ctx, m["id"], f"{field}.id", one_line=True))
    if "id" in parts and not (SLUG.match(str(parts["id"])) and 3 <= len(str(parts["id"])) <= 100):
        ctx.error(m["id"], f"{field}.id", "must be a slug of 3-100 lowercase letters, digits and hyphens")
    attempt("title", lambda: _text(ctx, m["title"], f"{field}.title", one_line=True))
    attempt("when", lambda: _when(ctx, m["when"], f"{field}.when"))
    attempt("place", lambda: _place(ctx, m["place"], f"{field}.place"))
    attempt("facility", lambda: _opt_text(ctx, m, "facility", field))
    attempt("summary", lambda: _text(ctx, m["summary"], f"{field}.summary"))
    categories: list[str] = []
    if "categories" in m:
        try:
            for i, c in enumerate(_list(ctx, m["categories"], f"{field}.categories")):
                try:
                    value = _text(ctx, c, f"{field}.categories[{i}]", one_line=True)
                except _Invalid:
                    continue
                if not SLUG.match(value):
                    ctx.error(c, f"{field}.categories[{i}]", "must be a slug such as attack-on-medical-facility")
                categories.append(value)
        except _Invalid:
            pass
    reports: list[ReportSpec] = []
    if "reports" in m:
        try:
            reports = [
                r
                for r in _each(ctx, _list(ctx, m["reports"], f"{field}.reports"), f"{field}.reports", _report)
                if isinstance(r, ReportSpec)
            ]
        except _Invalid:
            pass
    keys = [r.key for r in reports if r.key]
    for dup in {k for k in keys if keys.count(k) > 1}:
        ctx.error(m["reports"], f"{field}.reports", f"report id {dup!r} is used twice")
    # An invalid report is already reported; its id still counts so its citations do not cascade into errors.
    if isinstance(m.get("reports"), yaml.SequenceNode):
        for rnode in m["reports"].value:
            if isinstance(rnode, yaml.MappingNode):
                for k, v in rnode.value:
                    if isinstance(k, yaml.ScalarNode) and k.value == "id" and isinstance(v, yaml.ScalarNode):
                        keys.append(str(v.value))
    sources: list[SourceSpec] = []
    if "sources" in m:
        try:
            seq = _list(ctx, m["sources"], f"{field}.sources")
            for i, n in enumerate(seq):
                try:
                    sources.append(_source(ctx, n, f"{field}.sources[{i}]", set(keys)))
                except _Invalid:
                    continue
        except _Invalid:
            pass
    if ctx.errors:
        raise _Invalid
    return IncidentSpec(
        id=str(parts["id"]),
        title=str(parts["title"]),
        when=parts["when"],  # type: ignore[arg-type]
        place=parts["place"],  # type: ignore[arg-type]
        facility=parts.get("facility"),  # type: ignore[arg-type]
        categories=tuple(categories),
        summary=str(parts["summary"]),
        reports=tuple(reports),
        sources=tuple(sources),
        path=ctx.path,
        line=node.start_mark.line + 1,
    )


def parse_text(text: str, path: str, today: date) -> list[IncidentSpec]:
    """Parse one manifest document. Raises :class:`ManifestErrors` listing every problem found."""
    ctx = _Ctx(path, today)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ManifestErrors([ManifestError(path, line, None, f"invalid YAML: {exc.problem or exc.context}")]) from exc
    except yaml.YAMLError as exc:  # e.g. ReaderError for control characters
        raise ManifestErrors([ManifestError(path, None, None, f"invalid YAML: {exc}")]) from exc
    except RecursionError as exc:
        raise ManifestErrors([ManifestError(path, None, None, "invalid YAML: nested too deeply")]) from exc
    if root is None:
        raise ManifestErrors([ManifestError(path, 1, None, "the file is empty")])
    incidents: list[IncidentSpec] = []
    try:
        top = _mapping(ctx, root, "", ("version", "incidents"), ("version", "incidents"))
        if "version" in top:
            v = top["version"]
            if not (isinstance(v, yaml.ScalarNode) and v.value == "1"):
                ctx.error(v, "version", "only manifest version 1 is supported")
        if "incidents" in top:
            for i, node in enumerate(_list(ctx, top["incidents"], "incidents")):
                sub = _Ctx(path, today)
                try:
                    incidents.append(_incident(sub, node, f"incidents[{i}]"))
                except _Invalid:
                    pass
                ctx.errors.extend(sub.errors)
    except _Invalid:
        pass
    ids = [inc.id for inc in incidents]
    for inc in incidents:
        if ids.count(inc.id) > 1 and inc is not next(x for x in incidents if x.id == inc.id):
            ctx.errors.append(ManifestError(path, inc.line, "id", f"incident {inc.id!r} appears twice in this file"))
    if ctx.errors:
        raise ManifestErrors(ctx.errors)
    if not incidents:
        raise ManifestErrors([ManifestError(path, root.start_mark.line + 1, "incidents", "lists no incident")])
    return incidents


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix in (".yaml", ".yml") and q.is_file()))
        else:
            out.append(p)
    return out


def read_files(paths: Iterable[str | Path], today: date) -> tuple[list[IncidentSpec], list[ManifestError]]:
    """Parse every file (directories: their *.yaml).

    Returns the incidents of the files that are wholly valid, and every problem found. A file with any problem
    contributes no incident; an incident id already defined by an earlier file rejects the later file.
    """
    errors: list[ManifestError] = []
    by_file: list[tuple[str, list[IncidentSpec]]] = []
    for path in expand_paths(paths):
        name = str(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            errors.append(ManifestError(name, None, None, "no such file"))
            continue
        except UnicodeDecodeError as exc:
            errors.append(ManifestError(name, None, None, f"not UTF-8 text (byte {exc.start})"))
            continue
        except OSError as exc:
            errors.append(ManifestError(name, None, None, f"cannot read: {exc.strerror}"))
            continue
        try:
            by_file.append((name, parse_text(text, name, today)))
        except ManifestErrors as exc:
            errors.extend(exc.errors)
    seen: dict[str, IncidentSpec] = {}
    incidents: list[IncidentSpec] = []
    for name, specs in by_file:
        clashes = [s for s in specs if s.id in seen]
        for inc in clashes:
            first = seen[inc.id]
            errors.append(
                ManifestError(
                    name,
                    inc.line,
                    "id",
                    f"incident {inc.id!r} is already defined at {first.path}:{first.line}",
                )
            )
        if not clashes:
            for inc in specs:
                seen[inc.id] = inc
            incidents.extend(specs)
    return incidents, errors


def load_files(paths: Iterable[str | Path], today: date) -> list[IncidentSpec]:
    """Like :func:`read_files`, but any problem anywhere raises :class:`ManifestErrors`."""
    incidents, errors = read_files(paths, today)
    if errors:
        raise ManifestErrors(errors)
    return incidents
