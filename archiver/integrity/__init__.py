"""The integrity layer: capture receipts, their signatures and Merkle-batched RFC 3161 timestamps, custody
checkpoints, verification and lookup.

- :mod:`archiver.integrity.receipts`: the signed canonical receipt of each capture, in the catalogue and in the WARC;
- :mod:`archiver.integrity.batches`: one Merkle tree per run of receipts, its statement timestamped by every TSA;
  checkpoints of the custody chain head;
- :mod:`archiver.verify` and :mod:`archiver.lookup` read all of it back.

Verification results are data: every check returns :class:`Problem` values, never raises for bad evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

ERROR = "error"
WARNING = "warning"  # worth knowing, not a failure: a receipt still waiting for a timestamp, an unindexed record


@dataclass(frozen=True)
class Problem:
    """One thing found wrong. ``subject`` names what: ``file:<name>``, ``record:<id>``, ``artifact:<id>``,
    ``receipt:<capture id>``, ``batch:<id>``, ``token:<id>``, ``event:<seq>``, ``checkpoint:<id>``."""

    kind: str
    subject: str
    expected: str | None = None
    found: str | None = None
    severity: str = ERROR

    def __str__(self) -> str:
        text = f"{self.subject}: {self.kind}"
        if self.expected is not None or self.found is not None:
            text += f": expected {self.expected}, found {self.found}"
        return text if self.severity == ERROR else f"{text} ({self.severity})"


__all__ = ["ERROR", "WARNING", "Problem"]
