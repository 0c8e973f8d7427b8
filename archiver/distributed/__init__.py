"""The scale path: captures run by Celery workers on many machines, PostgreSQL as catalogue, shared storage.

``archiver run --executor celery`` (:mod:`.coordinator`) records one claim per source of a run and enqueues one
task per claim; ``archiver worker`` (:mod:`.app`, :mod:`.tasks`) runs them. A claim (:mod:`.claims`) is what makes
at-least-once delivery capture each source exactly once per run; a PostgreSQL advisory lock held by the worker
for as long as it works on a claim (:mod:`.liveness`) tells a live owner from a dead one.

Importing this package does not import Celery: the catalogue and the local executor use :mod:`.liveness` and
:mod:`.models` without it.
"""
