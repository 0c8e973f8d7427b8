"""One place that resolves settings.

Order of precedence, highest first: command-line option, environment variable, ``settings.toml`` in the storage
root, built-in default. The storage root itself comes from ``--root`` / ``ARCHIVER_ROOT`` / ``./storage``.
"""

from __future__ import annotations

import getpass
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archiver.capture.browser_settings import SETTINGS_TOML as BROWSER_TOML
from archiver.capture.browser_settings import BrowserSettings, browser_settings
from archiver.distributed.settings import SETTINGS_TOML as CELERY_TOML
from archiver.distributed.settings import CelerySettings, celery_settings
from archiver.errors import ConfigError
from archiver.recheck_schedule import RecheckSettings, recheck_settings

SETTINGS_FILE = "settings.toml"
DEFAULT_ROOT = "storage"

DEFAULT_SETTINGS_TOML = """\
# Evidence Archiver settings. Command-line options and ARCHIVER_* environment variables override these.

[archive]
# Who collects: recorded in every capture, receipt and custody event.
# collector = "org-name/operator"
# WARC files rotate when they reach this many bytes.
warc_max_size = 1073741824
warc_prefix = "archiver"

[catalogue]
# Leave unset for the embedded SQLite catalogue under the storage root.
# url = "postgresql+psycopg://archiver@db.example.org/archiver"

[network]
# proxy = "socks5h://127.0.0.1:9050"   # used for all traffic; the egress identity is recorded
connect_timeout = 10.0
read_timeout = 30.0
total_timeout = 300.0
max_body = 2147483648
max_redirects = 10
retries = 3
workers = 8
per_host = 2
per_host_delay = 0.1
# Capture processes for archiver run: 0 is one per core (at most 4, and at least 25 pending sources each).
# With per_host_delay, a host's sources stay in one process; with none, each process takes a share of every
# host and its part of per_host. The workers are shared out among the processes.
processes = 0

# Credentials for one domain and its subdomains: sent only there (checked on every redirect hop), used by web and
# media capture alike, and stored as [redacted] in the WARC.
# [[credentials]]
# domain = "facebook.com"
# headers = { Cookie = "c_user=...; xs=..." }

# [media]
# cookies_file = "cookies.txt"   # Netscape cookies file for yt-dlp, relative to the storage root
# max_filesize = 4294967296

[recheck]
# When captured sources are fetched again (still online, changed, gone), counted from their last capture. A slot
# missed while the archiver was not running is not made up. Phases: "every N hours|days|weeks for ..."; hourly,
# daily, weekly, monthly (30 days); "never" turns re-checks off. See docs/rechecks.md.
schedule = "daily for 7 days, then weekly"
# Gone sources: how often to look whether they came back, counted from when they went ("never" to stop).
gone = "monthly"
# A source whose re-checks failed this many times in a row (timeouts, 5xx) is listed as failing.
report_errors_after = 3
# Re-checks one run starts at most; the rest stay due for the next run.
max_per_run = 500

# [[tsa]]
# name = "example-tsa"
# url = "http://timestamp.example.org/tsr"
# ca = "tsa-ca.pem"          # relative to the storage root
"""
DEFAULT_SETTINGS_TOML += "\n" + CELERY_TOML  # the scale path's section (archiver/distributed/settings.py)
DEFAULT_SETTINGS_TOML += "\n" + BROWSER_TOML  # browser capture (archiver/capture/browser_settings.py)


@dataclass(frozen=True)
class NetworkSettings:
    proxy: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    total_timeout: float = 300.0
    max_body: int = 2 << 30
    max_redirects: int = 10
    retries: int = 3
    workers: int = 8
    per_host: int = 2
    per_host_delay: float = 0.1
    processes: int = 0  # archiver run's capture processes; 0: automatic (archiver.capture.shards)


@dataclass(frozen=True)
class TsaSettings:
    name: str
    url: str
    ca: Path


@dataclass(frozen=True)
class Settings:
    root: Path
    db_url: str
    collector: str
    warc_prefix: str = "archiver"
    warc_max_size: int = 1 << 30
    network: NetworkSettings = field(default_factory=NetworkSettings)
    tsas: tuple[TsaSettings, ...] = ()
    credentials: Mapping[str, Mapping[str, str]] = field(default_factory=dict, repr=False)  # domain -> headers
    cookies_file: Path | None = None
    media_max_filesize: int = 4 << 30
    recheck: RecheckSettings = field(default_factory=RecheckSettings)
    celery: CelerySettings = field(default_factory=CelerySettings)
    browser: BrowserSettings = field(default_factory=BrowserSettings)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def warc_dir(self) -> Path:
        return self.root / "warcs"

    @property
    def key_dir(self) -> Path:
        return self.root / "keys"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def settings_path(self) -> Path:
        return self.root / SETTINGS_FILE

    def public_dict(self) -> dict[str, Any]:
        """Settings that shape captures, for warcinfo records (never secrets)."""
        n = self.network
        return {
            "collector": self.collector,
            "connect_timeout": str(n.connect_timeout),
            "read_timeout": str(n.read_timeout),
            "total_timeout": str(n.total_timeout),
            "max_body": str(n.max_body),
            "max_redirects": str(n.max_redirects),
            "proxy": "yes" if n.proxy else "no",
        }


def default_collector() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}", hint="fix the settings file or move it away") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read settings: {exc.strerror}") from exc


def _section(data: Mapping[str, Any], name: str, path: Path) -> Mapping[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: [{name}] must be a table")
    return value


_NETWORK_TYPES: dict[str, type] = {
    "proxy": str,
    "connect_timeout": float,
    "read_timeout": float,
    "total_timeout": float,
    "max_body": int,
    "max_redirects": int,
    "retries": int,
    "workers": int,
    "per_host": int,
    "per_host_delay": float,
    "processes": int,
}


def _network(section: Mapping[str, Any], path: Path, proxy_override: str | None) -> NetworkSettings:
    values: dict[str, Any] = {}
    for key, value in section.items():
        expected = _NETWORK_TYPES.get(key)
        if expected is None:
            raise ConfigError(f"{path}: [network] {key}: unknown setting")
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ConfigError(f"{path}: [network] {key}: expected {expected.__name__}, got {value!r}")
        if isinstance(value, int | float) and value < 0:
            raise ConfigError(f"{path}: [network] {key}: must not be negative")
        values[key] = value
    if proxy_override is not None:
        values["proxy"] = proxy_override or None
    return NetworkSettings(**values)


def load_settings(
    root: str | os.PathLike[str] | None = None,
    db_url: str | None = None,
    *,
    collector: str | None = None,
    proxy: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve settings from options, environment, settings file and defaults."""
    env = os.environ if env is None else env
    root_path = Path(root or env.get("ARCHIVER_ROOT") or DEFAULT_ROOT).expanduser().absolute()
    path = root_path / SETTINGS_FILE
    data = _read_toml(path)
    archive = _section(data, "archive", path)
    catalogue = _section(data, "catalogue", path)
    network = _section(data, "network", path)

    url = db_url or env.get("ARCHIVER_DB_URL") or catalogue.get("url")
    if url is None:
        url = f"sqlite:///{root_path / 'catalogue.sqlite'}"
    if not isinstance(url, str):
        raise ConfigError(f"{path}: [catalogue] url must be a string")

    who = collector or env.get("ARCHIVER_COLLECTOR") or archive.get("collector") or default_collector()
    tsas = []
    for i, entry in enumerate(data.get("tsa", [])):
        if not isinstance(entry, Mapping) or not {"name", "url", "ca"} <= set(entry):
            raise ConfigError(f"{path}: [[tsa]] #{i + 1} needs name, url and ca")
        ca = Path(str(entry["ca"]))
        tsas.append(TsaSettings(str(entry["name"]), str(entry["url"]), ca if ca.is_absolute() else root_path / ca))

    credentials: dict[str, dict[str, str]] = {}
    for i, entry in enumerate(data.get("credentials", [])):
        headers = entry.get("headers") if isinstance(entry, Mapping) else None
        domain = entry.get("domain") if isinstance(entry, Mapping) else None
        if not isinstance(domain, str) or not isinstance(headers, Mapping) or not domain.strip(".").strip():
            raise ConfigError(f'{path}: [[credentials]] #{i + 1} needs domain = "..." and headers = {{ ... }}')
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise ConfigError(f"{path}: [[credentials]] #{i + 1}: header names and values must be strings")
        credentials[domain.strip(".").lower()] = dict(headers)
    media = _section(data, "media", path)
    cookies = media.get("cookies_file")
    cookies_path = None
    if cookies is not None:
        cookies_path = Path(str(cookies))
        cookies_path = cookies_path if cookies_path.is_absolute() else root_path / cookies_path
    media_max = media.get("max_filesize", 4 << 30)
    if not isinstance(media_max, int) or media_max <= 0:
        raise ConfigError(f"{path}: [media] max_filesize must be a positive integer")

    max_size = archive.get("warc_max_size", 1 << 30)
    if not isinstance(max_size, int) or max_size < 1 << 16:
        raise ConfigError(f"{path}: [archive] warc_max_size must be an integer of at least 65536")
    return Settings(
        root=root_path,
        db_url=url,
        collector=str(who),
        warc_prefix=str(archive.get("warc_prefix", "archiver")),
        warc_max_size=max_size,
        network=_network(network, path, proxy if proxy is not None else env.get("ARCHIVER_PROXY")),
        tsas=tuple(tsas),
        credentials=credentials,
        cookies_file=cookies_path,
        media_max_filesize=media_max,
        recheck=recheck_settings(_section(data, "recheck", path), path),
        celery=celery_settings(_section(data, "celery", path), path, env),
        browser=browser_settings(_section(data, "browser", path), path),
        raw=data,
    )
