"""CPU-bound work of a publish spread over worker processes: parsing articles, rendering pages.

``map_forked(function, shared, count)`` returns ``[function(shared, i) for i in range(count)]``
computed by one forked worker per core when ``count`` is large. The workers inherit
``shared`` (the inputs, a template environment) from the fork instead of receiving it
pickled: only the index goes to a worker and only the result comes back. Results come
back in order, and an exception in a worker re-raises in the caller with its traceback.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import Any, TypeVar

__all__ = ["PARALLEL_FROM", "map_forked", "worker_count"]

S = TypeVar("S")
R = TypeVar("R")

# Below this many items, starting worker processes costs more than it saves.
PARALLEL_FROM = 500
_MAX_WORKERS = 8
_CHUNK = 128

# What the workers of the current pool inherited; set in the parent just before forking.
_inherited: Any = None


def worker_count(count: int) -> int:
    """How many processes ``map_forked`` would use for ``count`` items (1: no workers)."""
    workers = min(os.cpu_count() or 1, _MAX_WORKERS)
    # Forking a process that runs other threads can deadlock, and "spawn" would re-run the
    # caller's main module in every worker: so workers only for a single-threaded caller.
    if count < PARALLEL_FROM or workers < 2 or threading.active_count() > 1:
        return 1
    return workers


def map_forked(function: Callable[[S, int], R], shared: S, count: int) -> list[R]:
    """``function(shared, i)`` for each ``i`` in ``range(count)``, in order.

    ``function`` must be a module-level function (it is sent to the workers by name).
    """
    workers = worker_count(count)
    if workers == 1:
        return [function(shared, index) for index in range(count)]
    global _inherited
    _inherited = shared
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            chunk = max(1, min(_CHUNK, count // (workers * 4)))
            return list(pool.map(partial(_call, function), range(count), chunksize=chunk))
    finally:
        _inherited = None


def _call(function: Callable[[Any, int], R], index: int) -> R:
    return function(_inherited, index)
