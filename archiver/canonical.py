"""Canonical JSON: the byte form that gets hashed, signed and timestamped.

Sorted keys, UTF-8 (not ASCII escapes), no insignificant white space, no NaN or infinity. This is the subset
of RFC 8785 (JCS) that our documents need: they hold only strings, integers, booleans, null, lists and
objects; floats are refused so that number formatting can never make two implementations disagree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def _plain(value: Any) -> bool:
    """True when ``value`` is made only of the exact JSON types (the common case, checked without paths)."""
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return True
    if t is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if t is list or t is tuple:
        return all(_plain(v) for v in value)
    return False


def _check(value: Any, path: str = "$") -> None:
    """Raise TypeError naming the first value that JSON cannot hold exactly (slow: builds every path)."""
    if isinstance(value, float):
        raise TypeError(f"{path}: floats are not allowed in canonical documents; use a string or integer")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{path}: object keys must be strings")
            _check(v, f"{path}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check(v, f"{path}[{i}]")
    elif not (value is None or isinstance(value, str | int | bool)):
        raise TypeError(f"{path}: {type(value).__name__} is not a JSON value")


# What json.dumps builds anew on each call with these options; encode() keeps no state between calls.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_json(value: Any) -> bytes:
    t = type(value)
    if t is int:
        return str(value).encode("ascii")  # what json gives an int (not a bool: its type is not int)
    if t is not str and not _plain(value):
        _check(value)  # raises, or accepts subclasses of str and int (enums)
    return _ENCODER.encode(value).encode("utf-8")


def canonical_members(members: Mapping[str, bytes]) -> bytes:
    """The canonical JSON of an object whose member values are given already in canonical JSON.

    Equal to ``canonical_json({k: v ...})`` for the decoded values: lets a caller that also needs one member's
    bytes on their own (a custody event's details, stored beside its hash) serialise that member once.
    """
    return b"{" + b",".join(canonical_json(k) + b":" + members[k] for k in sorted(members)) + b"}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
