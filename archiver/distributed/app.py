"""The Celery application, configured from the archive's settings, and its one task.

Delivery is at least once: a task is acknowledged only after it ran (``acks_late``), a task whose worker process
died is given back to the broker (``reject_on_worker_lost``; on Redis, a whole worker that vanished gets its task
back after ``visibility_timeout``), and each worker process takes one task at a time (prefetch multiplier 1), so
a kill loses no more than the capture in flight. The claim (:mod:`.claims`) makes a second delivery harmless.

``celery -A archiver.distributed.app worker`` works as well as ``archiver worker``: the module builds ``app`` on
first use from the ``ARCHIVER_*`` environment (``ARCHIVER_ROOT``, ``ARCHIVER_DB_URL``, ``ARCHIVER_BROKER_URL``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init, worker_process_shutdown, worker_ready, worker_shutdown
from kombu.exceptions import OperationalError as KombuOperationalError
from kombu.utils.url import maybe_sanitize_url

from archiver.config import Settings, load_settings
from archiver.distributed import claims
from archiver.distributed.process import WorkerProcess
from archiver.errors import ArchiverError

TASK_NAME = "archiver.capture_claim"
log = logging.getLogger("archiver.worker")

_settings: dict[int, Settings] = {}  # id(app) -> settings, read by the task in every worker process
_process: dict[str, Any] = {"pid": None, "worker": None, "settings": None}


def make_app(settings: Settings) -> Celery:
    c = settings.celery
    app = Celery("archiver", set_as_current=False)
    app.conf.update(
        broker_url=c.broker_url,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": c.visibility_timeout},
        task_default_queue=c.queue,
        task_create_missing_queues=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
    )
    _settings[id(app)] = settings
    _register(app)
    return app


def settings_of(app: Celery) -> Settings:
    return _settings[id(app)]


def _register(app: Celery) -> None:
    # Celery ships no type hints: the decorator is untyped.
    @app.task(  # type: ignore[untyped-decorator]
        name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None
    )
    def capture_claim(self: Task, run_id: str, claim_id: int) -> dict[str, Any]:
        settings = settings_of(app)
        result = worker_process(settings).execute(claim_id)
        if result.status == "busy":
            # Not acknowledged as done: if the live owner dies later, this retry takes the claim over.
            raise self.retry(countdown=settings.celery.busy_retry)
        if result.discovered:
            proc = worker_process(settings)
            with proc.archive.session() as s:
                pairs = claims.add_claims(s, proc.archive.clock, run_id, list(result.discovered))
            publish(app, run_id, pairs)
        log.info("claim %s of run %s: %s", claim_id, run_id, result.status)
        return result.as_dict()


def worker_process(settings: Settings) -> WorkerProcess:
    """This process's worker state, made on first use (after the prefork fork, never inherited across it)."""
    if _process["pid"] == os.getpid() and _process["settings"] is not settings:
        close_worker_process()  # another app in this process (tests run several archives in one process)
    if _process["pid"] != os.getpid() or _process["worker"] is None:
        _process["worker"] = WorkerProcess(settings)
        _process["pid"], _process["settings"] = os.getpid(), settings
    worker: WorkerProcess = _process["worker"]
    return worker


def close_worker_process(**_kwargs: Any) -> None:
    """Close this process's WARC file and liveness lock (Celery's shutdown signals; idempotent)."""
    worker = _process["worker"]
    if worker is not None and _process["pid"] == os.getpid():
        _process["worker"] = None
        worker.close()


def _forget_inherited(**_kwargs: Any) -> None:
    _process["worker"], _process["pid"] = None, None


worker_process_init.connect(_forget_inherited, weak=False)
worker_process_shutdown.connect(close_worker_process, weak=False)  # prefork children
worker_shutdown.connect(close_worker_process, weak=False)  # solo and threads pools: the worker is the process


def check_broker(app: Celery) -> None:
    url = maybe_sanitize_url(app.conf.broker_url)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0.2)
    except (KombuOperationalError, OSError) as exc:
        raise ArchiverError(
            f"cannot reach the broker at {url}: {exc}", hint="start Redis/RabbitMQ or fix [celery] broker_url"
        ) from exc


def publish(app: Celery, run_id: str, pairs: Iterable[tuple[int, int]]) -> int:
    """Enqueue one task per claim; returns how many."""
    n = 0
    try:
        with app.producer_or_acquire() as producer:
            for claim_id, _source_id in pairs:
                app.send_task(TASK_NAME, args=[run_id, claim_id], producer=producer)
                n += 1
    except (KombuOperationalError, OSError) as exc:
        raise ArchiverError(
            f"cannot enqueue on the broker at {maybe_sanitize_url(app.conf.broker_url)}: {exc}",
            hint="the claims not enqueued expire after [celery] claim_expiry and their sources are pending again",
        ) from exc
    return n


_default: dict[str, Celery] = {}


def __getattr__(name: str) -> Celery:
    """``archiver.distributed.app:app`` for ``celery -A``: built from the environment on first use."""
    if name != "app":
        raise AttributeError(name)
    if "app" not in _default:
        _default["app"] = make_app(load_settings())
    return _default["app"]


def run_worker(settings: Settings, *, concurrency: int, pool: str, loglevel: str, queue: str | None = None) -> None:
    """Start a Celery worker consuming the capture queue (blocks until the worker shuts down)."""
    app = make_app(settings)
    check_broker(app)
    WorkerProcess(settings).close()  # refuse to start, with a clear error, where a capture could not run

    def warm(**_kwargs: Any) -> None:
        # Open the archive, the liveness lock and the capture job before the first task, so that a missing
        # ffmpeg or an unreachable catalogue shows at start and the first capture is not slower than the rest.
        worker_process(settings)

    # prefork: in each child once forked; solo and threads: in the worker itself once it is ready.
    (worker_process_init if pool == "prefork" else worker_ready).connect(warm, weak=False)
    argv = [
        "worker",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        f"--loglevel={loglevel}",
        f"--queues={queue or settings.celery.queue}",
        # One node name per process: two workers on one host must not look like one to the broker.
        f"--hostname=archiver-{os.getpid()}@%h",
        "--without-mingle",
        "--without-gossip",
    ]
    app.worker_main(argv)
