"""Canonical JSON: the bytes that custody hashes, receipts and signatures are computed over."""

from __future__ import annotations

import enum
import json

import pytest

from archiver.canonical import canonical_json, canonical_members


class Role(enum.StrEnum):
    PAGE = "page"


class Level(enum.IntEnum):
    HIGH = 3


def test_sorted_keys_utf8_and_no_white_space() -> None:
    doc = {"z": 1, "a": ["مستشفى", None, True], "m": {"b": "x", "a": -2}}
    assert canonical_json(doc) == '{"a":["مستشفى",null,true],"m":{"a":-2,"b":"x"},"z":1}'.encode()


@pytest.mark.parametrize("value", [0, -7, 2**70, True, False, None, "", 'a"b\\c\n\u0001', "ص", Level.HIGH, Role.PAGE])
def test_scalars_are_what_json_makes_of_them(value: object) -> None:
    expected = json.dumps(value, ensure_ascii=False, allow_nan=False).encode()
    assert canonical_json(value) == expected


def test_tuples_are_lists_and_string_subclasses_are_strings() -> None:
    assert canonical_json({"roles": (Role.PAGE, "x")}) == b'{"roles":["page","x"]}'


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"a": [1, {"b": 1.5}]}, "$.a[1].b"),
        ({"a": float("nan")}, "$.a"),
        ({"when": object()}, "$.when"),
        ({"a": {1: "x"}}, "$.a"),
        ([b"bytes"], "$[0]"),
    ],
)
def test_values_json_cannot_hold_exactly_are_refused_with_their_path(value: object, path: str) -> None:
    with pytest.raises(TypeError) as caught:
        canonical_json(value)
    assert str(caught.value).startswith(f"{path}:")


def test_members_given_as_canonical_bytes_give_the_same_document() -> None:
    details = {"records": [{"id": "<urn:uuid:1>", "length": 10}], "capture": 7, "url": "https://example.org/ص"}
    doc = {"seq": 3, "at": "2017-04-04T03:30:00.000000Z", "incident": None, "details": details}
    members = {k: canonical_json(v) for k, v in doc.items()}
    assert canonical_members(members) == canonical_json(doc)
    assert json.loads(canonical_members(members)) == doc
