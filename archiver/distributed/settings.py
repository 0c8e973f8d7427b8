"""The ``[celery]`` section of ``settings.toml``: broker, queue and the timing of redelivery and leases."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archiver.errors import ConfigError

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"

SETTINGS_TOML = """\
[celery]
# Broker of the capture queue (Redis or RabbitMQ): 'archiver worker' consumes it, 'archiver run --executor celery'
# fills it. The catalogue must be PostgreSQL and the storage root a path every worker shares (see docs/scale.md).
broker_url = "redis://127.0.0.1:6379/0"
queue = "archiver"
# Redis only: a task a dead worker had taken is delivered again after this many seconds.
visibility_timeout = 3600
# A task whose source another live worker is capturing is tried again after this many seconds.
busy_retry = 10
# A worker closes its WARC file after this many seconds without a task (and always on shutdown).
idle_close = 60
# A claim still queued (or held by a dead worker) after this many seconds is expired; its source is pending again.
claim_expiry = 21600
"""


@dataclass(frozen=True)
class CelerySettings:
    broker_url: str = DEFAULT_BROKER
    queue: str = "archiver"
    visibility_timeout: int = 3600
    busy_retry: float = 10.0
    idle_close: float = 60.0
    claim_expiry: int = 6 * 3600


_TYPES: dict[str, type] = {
    "broker_url": str,
    "queue": str,
    "visibility_timeout": int,
    "busy_retry": float,
    "idle_close": float,
    "claim_expiry": int,
}


def celery_settings(section: Mapping[str, Any], path: Path, env: Mapping[str, str]) -> CelerySettings:
    """Parse ``[celery]``; ``ARCHIVER_BROKER_URL`` overrides the broker, as every ``ARCHIVER_*`` variable does."""
    values: dict[str, Any] = {}
    for key, value in section.items():
        expected = _TYPES.get(key)
        if expected is None:
            raise ConfigError(f"{path}: [celery] {key}: unknown setting")
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ConfigError(f"{path}: [celery] {key}: expected {expected.__name__}, got {value!r}")
        if isinstance(value, int | float) and value <= 0:
            raise ConfigError(f"{path}: [celery] {key}: must be positive")
        values[key] = value
    if env.get("ARCHIVER_BROKER_URL"):
        values["broker_url"] = env["ARCHIVER_BROKER_URL"]
    if env.get("ARCHIVER_QUEUE"):
        values["queue"] = env["ARCHIVER_QUEUE"]
    broker = values.get("broker_url", DEFAULT_BROKER)
    if not broker.startswith(("redis://", "rediss://", "amqp://", "amqps://", "pyamqp://")):
        raise ConfigError(f"{path}: [celery] broker_url: expected a redis:// or amqp:// URL, got {broker!r}")
    return CelerySettings(**values)
