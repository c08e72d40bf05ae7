"""Block computations through one seam: kernel blocks, Gram sums, normal equations, predictions.

Every computation over many samples in kdistill is a map over row blocks of some arrays,
optionally followed by a reduction (neural-tangents' ``batch`` wrapper is the idea):

    out = executor.map(fn, rows_a, rows_b, broadcast=(support, alpha), block_size=2048)
        = concatenate([fn(a[s:e], b[s:e], support, alpha) for each block s:e])
    total = executor.map(fn, rows, reduce=operator.add)
        = fn(block_0) + fn(block_1) + ...
    total = executor.map_take(fn, pool, index, rows_b, broadcast=(support,), reduce=operator.add)
        = sum over groups j of fn(pool[index_j], rows_b[j], support)

``map_take`` is what an iterative step needs: ``pool`` (the target pool, the same array every step)
stays where the executor keeps it, and only the step's indices and per-row values travel; the groups
``index_j`` are the executor's (one per worker shard for Dask, a single group here).

``fn`` must be pure. ``broadcast`` arguments are the same for every block, so a distributed
executor ships them to each worker once. :class:`LocalExecutor` runs the blocks in order
in this process; a Dask executor implements the same ``map``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from .._progress import track

__all__ = ["Executor", "LocalExecutor", "LOCAL", "get_executor"]


@runtime_checkable
class Executor(Protocol):
    """What every caller may use of an executor (``LocalExecutor`` here, ``DaskExecutor`` on a cluster).

    ``distributed``: whether blocks run in other processes (an iterative method then hands its split step to
    ``map_take``); ``workers()``: the worker addresses (empty for this process alone); ``describe()``: one
    line for summaries."""

    distributed: bool

    def workers(self) -> list[str]: ...

    def describe(self) -> str: ...

    def map(self, fn: Callable[..., Any], *rows: Any, broadcast: Sequence[Any] = (), block_size: int = 2048,
            reduce: Callable[[Any, Any], Any] | None = None, progress: bool = False,
            description: str = "") -> Any: ...

    def map_take(self, fn: Callable[..., Any], pool: Any, index: Any, *rows: Any, broadcast: Sequence[Any] = (),
                 reduce: Callable[[Any, Any], Any] | None = None) -> Any: ...


def _blocks(n: int, block_size: int) -> list[tuple[int, int]]:
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    return [(s, min(s + block_size, n)) for s in range(0, n, block_size)]


class LocalExecutor:
    """Run the blocks one after another in this process (with a progress bar when asked)."""

    distributed = False

    def workers(self) -> list[str]:
        """No worker processes: everything runs here."""
        return []

    def map(self, fn, *rows, broadcast=(), block_size=2048, reduce=None, progress=False, description=""):
        if not rows:
            raise ValueError("map needs at least one row-blocked array")
        if reduce is not None and len(rows[0]) == 0:
            raise ValueError("map with reduce needs at least one row (there is nothing to reduce)")
        n = len(rows[0])
        if any(len(r) != n for r in rows):
            raise ValueError(f"row-blocked arrays differ in length: {[len(r) for r in rows]}")
        spans = _blocks(n, block_size)
        results = (fn(*(r[s:e] for r in rows), *broadcast)
                   for s, e in track(spans, total=len(spans), description=description, enabled=progress))
        if reduce is not None:
            return functools.reduce(reduce, results)
        parts = list(results)
        if not parts:
            return None
        return np.concatenate([np.asarray(p) for p in parts], axis=0)

    def map_take(self, fn, pool, index, *rows, broadcast=(), reduce=None):
        """``fn(pool[index], *rows, *broadcast)``: one group (``reduce`` has nothing to combine)."""
        out = fn(pool[np.asarray(index)], *rows, *broadcast)
        return out if reduce is not None else [out]

    def describe(self) -> str:
        return "local (this process)"

    def __repr__(self) -> str:
        return "LocalExecutor()"


LOCAL = LocalExecutor()
"""The default executor (stateless)."""


def get_executor(executor: Executor | None) -> Executor:
    if executor is None:
        return LOCAL
    missing = [name for name in ("map", "map_take", "workers", "describe") if not callable(getattr(executor, name, None))]
    if not isinstance(getattr(executor, "distributed", None), bool):
        missing.append("distributed")
    if missing:
        from ..errors import InvalidInputError

        raise InvalidInputError(f"executor must implement kdistill.parallel.Executor (map, map_take, workers, "
                                f"describe, distributed) like LocalExecutor; {type(executor).__name__} lacks "
                                f"{', '.join(missing)}")
    return executor
