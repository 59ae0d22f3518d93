"""Process parallelism (the simulator is Python-bound, so threads would not help).

Work is handed to forked processes: they inherit the loaded profile and traffic without pickling.
Children ask the kernel to kill them when their parent dies, so a kill -9 of `specsim tune`
leaves no orphan writing to the study.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import signal
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_PR_SET_PDEATHSIG = 1
_jobs: tuple[Callable[[Any], Any], Sequence[Any]] | None = None


def die_with_parent() -> None:
    """Linux: deliver SIGKILL to this process when its parent exits (best effort elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - non-Linux
        pass


def fork_context() -> mp.context.BaseContext:
    """The fork start method (children inherit memory), falling back to the platform default."""
    try:
        return mp.get_context("fork")
    except ValueError:  # pragma: no cover - platforms without fork
        return mp.get_context()


def _init() -> None:
    die_with_parent()


def _call(i: int) -> Any:
    assert _jobs is not None
    fn, items = _jobs
    return fn(items[i])


def pmap(fn: Callable[[T], R], items: Sequence[T], jobs: int) -> list[R]:
    """[fn(x) for x in items] over `jobs` forked processes (in order); serial when jobs <= 1."""
    global _jobs
    if jobs <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    _jobs = (fn, items)  # inherited by the forked children: nothing is pickled but indices and results
    try:
        with fork_context().Pool(min(jobs, len(items)), initializer=_init) as pool:
            return pool.map(_call, range(len(items)), chunksize=1)
    finally:
        _jobs = None
