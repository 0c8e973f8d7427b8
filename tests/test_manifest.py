"""Manifests: every problem names file, line and field; nothing else than ManifestErrors ever comes out."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archiver.errors import ManifestErrors
from archiver.manifest import load_files, parse_text, read_files
from tests.conftest import MANIFESTS, TEST_TODAY

DATA = Path(__file__).parent / "data" / "manifests"
VALID = (DATA / "valid.yaml").read_text(encoding="utf-8")


def _errors(text: str) -> list[str]:
    with pytest.raises(ManifestErrors) as info:
        parse_text(text, "m.yaml", TEST_TODAY)
    return [e.message for e in info.value.errors]


def test_valid_manifest_parses_to_values() -> None:
    (inc,) = parse_text(VALID, "valid.yaml", TEST_TODAY)
    assert inc.id == "test-hospital-strike-2017-04-04"
    assert inc.when.precision == "minute"
    # 06:30 in Damascus on 4 April 2017 was 03:30 UTC (UTC+3, summer time).
    assert inc.when.start_utc == datetime(2017, 4, 4, 3, 30, tzinfo=UTC)
    assert inc.place.lat == "35.44" and inc.place.admin == ("Idlib Governorate",)
    assert inc.reports[0].url == "https://example.org/report"
    assert inc.sources[0].url is not None and inc.sources[1].lead is not None
    assert inc.sources[0].cited_by == "r1"


def _edit(old: str, new: str) -> str:
    assert old in VALID, old
    return VALID.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "url: https://youtu.be/AAAAAAAAAAA",
            "url: ftp://example.org/x",
            "m.yaml:25: incidents[0].sources[0].url: scheme 'ftp' is not supported",
        ),
        (
            "    facility: Test Hospital\n",
            "    facility: Test Hospital\n    colour: red\n",
            "m.yaml:15: incidents[0].colour: unknown key",
        ),
        (
            "      start: 2017-04-04T06:30",
            "      start: 2017-02-30",
            "m.yaml:6: incidents[0].when.start: '2017-02-30' is not a valid date",
        ),
        (
            "      start: 2017-04-04T06:30",
            "      start: 2099-01-01",
            "m.yaml:6: incidents[0].when.start: 2099-01-01 is in the future",
        ),
        (
            "      start: 2017-04-04T06:30",
            "      start: yesterday",
            "m.yaml:6: incidents[0].when.start: 'yesterday' is not a date",
        ),
        (
            "      timezone: Asia/Damascus\n",
            "",
            "m.yaml:6: incidents[0].when.start: a time of day needs a UTC offset or when.timezone",
        ),
        (
            "timezone: Asia/Damascus",
            "timezone: Mars/Olympus",
            "m.yaml:7: incidents[0].when.timezone: unknown time zone 'Mars/Olympus'",
        ),
        ("lat: 35.44", "lat: 135.44", "m.yaml:12: incidents[0].place.lat: 135.44 is out of range -90..90"),
        ("      lon: 36.65\n", "", "m.yaml:9: incidents[0].place: lat and lon go together"),
        (
            "country: SY",
            "country: Syria",
            "m.yaml:11: incidents[0].place.country: 'Syria' is not an ISO 3166-1 alpha-2 code",
        ),
        ("    title: Test strike on a hospital\n", "", "m.yaml:3: incidents[0].title: required field is missing"),
        ("id: test-hospital-strike-2017-04-04", "id: Test Hospital", "m.yaml:3: incidents[0].id: must be a slug"),
        (
            "published: 2017-04-05",
            "published: 2030-01-01",
            "m.yaml:23: incidents[0].reports[0].published: 2030-01-01 is in the future",
        ),
        (
            "        cited_by: r1\n        cited_as",
            "        cited_by: r9\n        cited_as",
            "m.yaml:27: incidents[0].sources[0].cited_by: no report with id 'r9'",
        ),
        ("        kind: video", "        kind: film", "m.yaml:26: incidents[0].sources[0].kind: 'film' is not one of"),
        (
            "      - lead: Example",
            "      - url: https://example.org/a\n        lead: Example",
            "m.yaml:29: incidents[0].sources[1]: give either url",
        ),
        ("version: 1", "version: 2", "m.yaml:1: version: only manifest version 1 is supported"),
        (
            "    facility: Test Hospital\n",
            "    facility: Test Hospital\n    facility: Other\n",
            "m.yaml:15: incidents[0].facility: duplicate key",
        ),
        (
            "url: https://youtu.be/AAAAAAAAAAA",
            "url: https://user:pw@example.org/",
            "m.yaml:25: incidents[0].sources[0].url:",
        ),
        (
            "    categories: [attack-on-medical-facility, airstrike]",
            "    categories: attack",
            "m.yaml:15: incidents[0].categories: expected a list",
        ),
        (
            "      start: 2017-04-04T06:30\n",
            "      start: 2017-04-04T06:30\n      end: 2017-04-01\n",
            "m.yaml:7: incidents[0].when.end: 2017-04-01 is before the start",
        ),
    ],
)
def test_each_problem_names_file_line_and_field(old: str, new: str, expected: str) -> None:
    errors = _errors(_edit(old, new))
    assert errors[0].startswith(expected), errors
    assert len(errors) == 1, "one mistake, one error: no cascades"


def test_invalid_yaml_names_the_line() -> None:
    (err,) = _errors("version: 1\nincidents:\n  - id: [unclosed\n")
    assert err.startswith("m.yaml:") and "invalid YAML" in err


def test_all_problems_reported_together() -> None:
    text = _edit("country: SY", "country: Syria").replace("kind: video", "kind: film")
    assert len(_errors(text)) == 2


def test_duplicate_ids_across_files_reject_the_later_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(VALID, encoding="utf-8")
    (tmp_path / "b.yaml").write_text(VALID, encoding="utf-8")
    incidents, errors = read_files([tmp_path], TEST_TODAY)
    assert [i.path for i in incidents] == [str(tmp_path / "a.yaml")]
    assert len(errors) == 1
    assert errors[0].message.startswith(
        f"{tmp_path / 'b.yaml'}:3: id: incident 'test-hospital-strike-2017-04-04' is already defined at "
    )


def test_bad_file_loads_nothing_good_file_loads(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(VALID, encoding="utf-8")
    bad = VALID.replace("test-hospital-strike-2017-04-04", "other-2017").replace("country: SY", "country: x")
    (tmp_path / "b.yaml").write_text(bad, encoding="utf-8")
    (tmp_path / "c.yaml").write_bytes(b"\xff\xfe not utf-8")
    incidents, errors = read_files([tmp_path, tmp_path / "missing.yaml"], TEST_TODAY)
    assert [i.id for i in incidents] == ["test-hospital-strike-2017-04-04"]
    messages = [e.message for e in errors]
    assert any("b.yaml:11: incidents[0].place.country" in m for m in messages)
    assert any("c.yaml: not UTF-8" in m for m in messages)
    assert any("missing.yaml: no such file" in m for m in messages)


def test_shipped_manifests_are_valid() -> None:
    incidents = load_files([MANIFESTS], TEST_TODAY)
    assert len(incidents) >= 9
    ids = {i.id for i in incidents}
    assert len(ids) == len(incidents)
    for inc in incidents:
        assert inc.place.country == "SY"
        for src in inc.sources:
            # The seeds' hyperlinks were lost: shipped sources are leads, never invented URLs.
            assert src.lead is not None and src.url is None


# -- property tests: only ManifestErrors ever comes out ------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=30), st.dates().map(str))
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "version",
                    "incidents",
                    "id",
                    "title",
                    "when",
                    "start",
                    "place",
                    "name",
                    "country",
                    "summary",
                    "sources",
                    "url",
                    "lead",
                    "reports",
                    "lat",
                    "lon",
                    "timezone",
                    "x",
                ]
            ),
            inner,
            max_size=6,
        ),
    ),
    max_leaves=25,
)


def _check_only_manifest_errors(text: str) -> None:
    try:
        parse_text(text, "fuzz.yaml", TEST_TODAY)
    except ManifestErrors as exc:
        assert exc.errors and all(e.message.startswith("fuzz.yaml") for e in exc.errors)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(documents)
def test_arbitrary_documents_give_only_manifest_errors(doc: object) -> None:
    _check_only_manifest_errors(yaml.safe_dump({"version": 1, "incidents": [doc]}))
    _check_only_manifest_errors(yaml.safe_dump(doc))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_gives_only_manifest_errors(text: str) -> None:
    _check_only_manifest_errors(text)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(VALID) - 1), st.text(max_size=5))
def test_mutated_valid_manifest_gives_only_manifest_errors(pos: int, junk: str) -> None:
    _check_only_manifest_errors(VALID[:pos] + junk + VALID[pos + 1 :])
