"""Block computations on a Dask cluster: the executor seam's distributed implementation.

:class:`DaskExecutor` implements :class:`~kdistill.Executor`'s ``map`` (map-reduce over row blocks) and
``map_take`` (a reduction over the rows of a persisted array picked by index, what an iterative step
needs) on a ``distributed.Client``. The arrays it maps over are split into one contiguous shard per
worker and sent once; later maps over the same array reuse the shards. Broadcast arguments (the support
set, a kernel) are sent once per call and shared by that call's tasks.

Shards enter the cluster as tasks that return their own argument (the data is part of the task), not as
``scatter``-ed data: when a worker dies, the scheduler recomputes the lost shards on another worker from
the task itself. Every task is a pure function of its inputs, so a run that loses a worker gives the
same result. Kernels travel as their spec strings (:class:`~kdistill.kernels.Kernel` pickles that way)
and are rebuilt once per worker process; tasks run in the coordinator's JAX precision.

:func:`connect` is what ``--workers N`` / ``--scheduler ADDRESS`` (and ``kdistill.distill(client=...)``)
use: it starts a ``LocalCluster`` of N single-threaded worker processes, or connects to a running
scheduler, and checks that every worker runs this kdistill version. Dask is an optional extra:
``pip install 'kdistill[distributed]'``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import uuid
import weakref
from typing import Any, Iterator, Sequence

import jax
import numpy as np

from ._local import LOCAL
from .._machine import format_bytes, memory_bytes, usable_cores
from .._progress import track
from ..errors import DistributedError

__all__ = ["DaskExecutor", "Sharded", "connect", "executor_scope", "require_dask"]

_CACHED = 8  # arrays whose shards stay on the cluster for later maps (training pool, validation, test set...)
_INLINE = 4 * 2**20  # row arrays smaller than this travel with their tasks instead of being kept on the cluster
_WORKER_WAIT = 60.0  # seconds a call waits for a worker to (re)join when none is registered
_BROADCAST = 64 * 1024  # broadcast arguments above this go to the cluster once per call
_SINGLE_THREAD = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
                  "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def require_dask():
    """Import ``distributed``, or raise a one-line error saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise DistributedError("distributed runs need Dask: pip install 'kdistill[distributed]'") from None
    return distributed


def _x64() -> bool:
    """Whether JAX computes in 64 bits here (inside ``jax.enable_x64`` scopes too)."""
    return jax.dtypes.canonicalize_dtype(np.float64) == np.float64


def _nbytes(obj: Any) -> int:
    """Bytes of the arrays in ``obj`` (what crosses the network for it, give or take pickle's framing)."""
    if isinstance(obj, (np.ndarray, jax.Array)):
        return int(obj.nbytes)
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(_nbytes(o) for o in obj.values())
    if dataclass_fields := getattr(obj, "__dataclass_fields__", None):
        return sum(_nbytes(getattr(obj, f)) for f in dataclass_fields)
    return 0


def _host(obj: Any) -> Any:
    """JAX arrays as NumPy (what tasks send back and forth)."""
    if isinstance(obj, jax.Array):
        return np.asarray(obj)
    if isinstance(obj, tuple):
        return tuple(_host(o) for o in obj)
    if isinstance(obj, list):
        return [_host(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _host(v) for k, v in obj.items()}
    return obj


# ---- tasks (run on the workers; pure functions of their arguments) -------------------------------------

@functools.lru_cache(maxsize=1)
def _tune_malloc() -> None:
    """Undo what Dask's nanny does to glibc's allocator in its workers, once per worker process.

    The nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``; setting it switches off glibc's
    adaptive mmap threshold, so every large buffer XLA allocates is mapped and unmapped afresh (page
    faults on every call): RFAD's features for 1280 MNIST images ran about 2x slower in a worker than in a
    plain process (0.55 s against 0.27 s, a one-off probe while writing benchmarks/distributed.py, whose
    results are with this fix). Fixed thresholds at the adaptive scheme's ceiling restore the plain
    process's speed.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD: glibc's adaptive maximum on 64-bit
        libc.mallopt(-1, 256 * 2**20)  # M_TRIM_THRESHOLD: keep freed memory for reuse
    except (OSError, AttributeError):  # not glibc: nothing to undo
        pass


def _hold(x):
    """A shard's task: its value is its argument, so a lost shard is recomputed from the task itself."""
    return x


def _map_task(fn, x64, block_size, reduce, rows, broadcast):
    _tune_malloc()
    with jax.enable_x64(x64):
        return _host(LOCAL.map(fn, *rows, broadcast=broadcast, block_size=block_size, reduce=reduce))


def _take_task(fn, x64, shard, local, rows, broadcast):
    _tune_malloc()
    with jax.enable_x64(x64):
        return _host(fn(shard[local], *rows, *broadcast))


def _worker_info() -> dict:
    import kdistill

    return {"kdistill": kdistill.__version__, "pid": os.getpid()}


class Sharded:
    """Rows of an array held on the workers: ``bounds[i]:bounds[i+1]`` of the array is ``futures[i]``."""

    def __init__(self, futures: list, bounds: list[int], shape: tuple[int, ...], dtype):
        self.futures, self.bounds, self.shape, self.dtype = futures, bounds, tuple(shape), np.dtype(dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"Sharded(shape={self.shape}, dtype={self.dtype}, shards={len(self.futures)})"


class DaskExecutor:
    """An :class:`~kdistill.Executor` on a ``distributed.Client`` (see the module docstring).

    ``bytes_sent`` / ``bytes_received`` count the arrays that crossed between this process and the cluster
    (shards, per-task rows, results, and a broadcast argument once per task that uses it), so a benchmark
    can report bytes per step (:func:`kdistill.methods.iterative._split.step_bytes` is the model they follow).
    """

    distributed = True

    def __init__(self, client, *, cluster=None, owns_client: bool = False, check_versions: bool = True):
        require_dask()
        self.client = client
        self._cluster = cluster
        self._owns_client = owns_client or cluster is not None
        self._persisted: dict[int, tuple[Any, Sharded]] = {}
        self._seen: dict[int, weakref.ref] = {}
        self._pool: tuple[Any, Sharded] | None = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self.inline_bytes = _INLINE
        self.worker_wait = _WORKER_WAIT
        if check_versions:
            check_workers(client)

    # -- cluster facts --
    def workers(self) -> list[str]:
        return sorted(self.client.scheduler_info(n_workers=-1)["workers"])

    def _live_workers(self) -> list[str]:
        """The workers to place tasks on. A worker that just died (its nanny restarts it; on a busy machine
        both may be between heartbeats) leaves the list short or empty for a moment: wait up to
        ``worker_wait`` seconds for one to (re)join, then fail in one line."""
        deadline = time.monotonic() + self.worker_wait
        workers = self.workers()
        while not workers and time.monotonic() < deadline:
            time.sleep(0.2)
            workers = self.workers()
        if not workers:
            raise DistributedError(f"the Dask cluster at {self.client.scheduler.address} has no workers left "
                                   f"(waited {self.worker_wait:g} s for one); start some with `dask worker "
                                   "ADDRESS`, then continue with --resume")
        return workers

    def describe(self) -> str:
        kind = "local cluster" if self._cluster is not None else "cluster"
        return f"dask {kind} at {self.client.scheduler.address}, {len(self.workers())} workers"

    def __repr__(self) -> str:
        return f"DaskExecutor({self.client.scheduler.address}, workers={len(self.workers())})"

    # -- data --
    def persist(self, x, *, shards: int | None = None, cache: bool | None = None) -> Sharded:
        """Send the rows of ``x`` to the workers (one contiguous shard per worker).

        ``cache=None`` keeps the shards for later calls with the same array object once it is seen a
        second time (validation and test sets: sent once; a one-off array is released after its call);
        ``True`` keeps them from the first call. At most ``_CACHED`` arrays are kept; an evicted array's
        shards are released on the cluster.
        """
        if isinstance(x, Sharded):
            return x
        held = self._persisted.get(id(x))
        if held is not None and held[0] is x:
            self._persisted[id(x)] = self._persisted.pop(id(x))  # most recently used last
            return held[1]
        if cache is None:
            seen = self._seen.get(id(x))
            cache = seen is not None and seen() is x
            if not cache:
                try:
                    self._seen[id(x)] = weakref.ref(x)
                except TypeError:  # not weak-referenceable: never cached
                    pass
                self._seen = {k: r for k, r in self._seen.items() if r() is not None}
        arr = np.asarray(x)
        workers = self._live_workers()
        k = max(1, min(shards or len(workers), len(arr)))
        bounds = [round(i * len(arr) / k) for i in range(k + 1)]
        token = uuid.uuid4().hex[:12]
        import dask

        # shards are part of their tasks by design (recomputable): no warning about a large graph for them
        with dask.config.set({"distributed.admin.large-graph-warning-threshold": "64GB"}):
            futures = [self.client.submit(_hold, arr[s:e], key=f"kdistill-shard-{token}-{i}", pure=False,
                                          workers=[workers[i % len(workers)]], allow_other_workers=True)
                       for i, (s, e) in enumerate(zip(bounds, bounds[1:]))]
        self.bytes_sent += arr.nbytes
        sharded = Sharded(futures, bounds, arr.shape, arr.dtype)
        if cache:
            self._persisted[id(x)] = (x, sharded)  # keeps x alive, so its id is not reused while cached
            while len(self._persisted) > _CACHED:
                self._persisted.pop(next(iter(self._persisted)))
        return sharded

    def _pool_shards(self, pool) -> Sharded:
        """The target pool of an iterative run: kept for every step, one pool at a time."""
        if pool is None:
            raise DistributedError("a distributed step needs the batch's target pool (Batch.pool); run it through "
                                   "kdistill.methods.iterative.run_iterative")
        if self._pool is None or self._pool[0] is not pool:
            self._pool = None  # release the previous run's pool first
            self._pool = (pool, self.persist(pool, cache=False))
        return self._pool[1]

    def _broadcast(self, args: Sequence[Any]) -> tuple[list, int]:
        """Arguments shared by every task of a call: those above 64 KiB go to the cluster once and travel
        worker to worker, the rest ride with each task. Returns them and their bytes (each task gets a copy:
        what the byte counts charge per task)."""
        out = []
        for a in args:
            if _nbytes(a) > _BROADCAST:  # an array, or a tuple or dict of them (KIP's readout)
                out.append(self.client.submit(_hold, _host(a), pure=False))
            else:
                out.append(_host(a))
        return out, _nbytes(args)

    def _gather(self, futures: list, progress: bool, description: str) -> list:
        if progress and len(futures) > 1:
            from distributed import as_completed

            for _ in track(as_completed(futures, loop=self.client.loop), total=len(futures), description=description):
                pass
        from distributed import KilledWorker

        try:
            results = self.client.gather(futures)
        except KilledWorker as e:
            raise DistributedError(f"Dask gave up on a task after its workers died repeatedly ({_first_line(e)}); "
                                   "check the workers' memory and logs, then continue with --resume") from None
        self.bytes_received += _nbytes(results)
        return results

    # -- the Executor protocol --
    def map(self, fn, *rows, broadcast=(), block_size=2048, reduce=None, progress=False, description=""):
        if not rows:
            raise ValueError("map needs at least one row-blocked array")
        n = len(rows[0])
        if any(len(r) != n for r in rows):
            raise ValueError(f"row-blocked arrays differ in length: {[len(r) for r in rows]}")
        if n == 0:
            if reduce is not None:
                raise ValueError("map with reduce needs at least one row (there is nothing to reduce)")
            return None
        shared, shared_bytes = self._broadcast(broadcast)
        x64 = _x64()
        if all(not isinstance(r, Sharded) and _nbytes(r) < self.inline_bytes for r in rows):
            # small (a support set, a step's rows): split here and sent with the tasks, nothing kept
            k = max(1, min(len(self._live_workers()), n))
            bounds = [round(i * n / k) for i in range(k + 1)]
            parts = [[_host(r)[s:e] for r in rows] for s, e in zip(bounds, bounds[1:])]
            self.bytes_sent += _nbytes(parts)
        else:
            sharded = [self.persist(r) for r in rows]
            first = sharded[0]
            if any(s.bounds != first.bounds for s in sharded[1:]):  # persisted apart: align on the first's
                sharded = [first] + [self.persist(np.asarray(r), shards=len(first.futures), cache=False)
                                     for r in rows[1:]]
            parts = [[s.futures[i] for s in sharded] for i in range(len(first.futures))]
        # one task per worker, pinned round-robin (each worker compiles the same block shapes every call)
        workers = self._live_workers()
        futures = [self.client.submit(_map_task, fn, x64, block_size, reduce, part, shared, pure=False,
                                      workers=[workers[i % len(workers)]], allow_other_workers=True)
                   for i, part in enumerate(parts)]
        self.bytes_sent += shared_bytes * len(futures)
        parts = self._gather(futures, progress, description)
        if reduce is not None:
            return functools.reduce(reduce, parts)
        return np.concatenate([np.asarray(p) for p in parts], axis=0)

    def map_take(self, fn, pool, index, *rows, broadcast=(), reduce=None):
        """``reduce`` over the pool's shards of ``fn(pool[index_j], *(r[sel_j] for r in rows), *broadcast)``,
        where ``index_j`` are the entries of ``index`` in shard j. Only ``index``, the per-row ``rows``,
        the broadcast arguments and the results cross the network: the pool's rows stay on the workers."""
        sharded = pool if isinstance(pool, Sharded) else self._pool_shards(pool)
        index = np.asarray(index)
        if index.size and (index.min() < 0 or index.max() >= len(sharded)):
            raise IndexError(f"indices outside the pool's {len(sharded)} rows")
        shared, shared_bytes = self._broadcast(broadcast)
        x64 = _x64()
        futures = []
        for i, (s, e) in enumerate(zip(sharded.bounds, sharded.bounds[1:])):
            sel = np.flatnonzero((index >= s) & (index < e))
            if sel.size == 0:
                continue
            picked = [_host(r)[sel] for r in rows]
            self.bytes_sent += index[sel].nbytes + _nbytes(picked) + shared_bytes
            futures.append(self.client.submit(_take_task, fn, x64, sharded.futures[i], index[sel] - s, picked,
                                              shared, pure=False))
        parts = self._gather(futures, False, "")
        if reduce is None:
            return parts
        if not parts:
            raise ValueError("map_take with reduce needs at least one index (there is nothing to reduce)")
        return functools.reduce(reduce, parts)

    def close(self) -> None:
        """Release the shards; close the client (and the cluster) when this executor started them."""
        self._persisted.clear()
        self._seen.clear()
        self._pool = None
        if self._owns_client:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:160]}" if lines else type(e).__name__


def check_workers(client) -> None:
    """Raise a one-line error unless every worker imports the kdistill version this process runs."""
    import kdistill

    try:
        info = client.run(_worker_info)
    except Exception as e:  # a worker without kdistill fails to unpickle the function
        raise DistributedError(f"a Dask worker cannot run kdistill ({_first_line(e)}); install kdistill "
                               f"{kdistill.__version__} on every worker") from None
    if not info:
        raise DistributedError(f"the Dask cluster at {client.scheduler.address} has no workers; start some with "
                               "`dask worker ADDRESS`")
    other = {w: i["kdistill"] for w, i in info.items() if i["kdistill"] != kdistill.__version__}
    if other:
        w, v = sorted(other.items())[0]
        raise DistributedError(f"Dask worker {w} runs kdistill {v} but this process runs {kdistill.__version__}; "
                               f"install the same version on every worker ({len(other)} of {len(info)} differ)")


_SCHEMES = ("tcp", "tls", "ws", "wss")


def _scheduler_address(address: str) -> str:
    """``address`` as Dask's ``SCHEME://HOST:PORT`` (``HOST:PORT`` means tcp), or a one-line error."""
    from urllib.parse import urlsplit

    if not isinstance(address, str) or not address.strip():
        raise DistributedError(f"--scheduler needs an address like tcp://HOST:8786, got {address!r}")
    full = address.strip() if "://" in address else f"tcp://{address.strip()}"
    parts = urlsplit(full)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in _SCHEMES or not parts.hostname or port is None or parts.path not in ("", "/") \
            or parts.query or parts.fragment or " " in full:
        raise DistributedError(f"--scheduler {address!r} is not a Dask scheduler address; give tcp://HOST:PORT "
                               "(what `dask scheduler` prints, port 8786 by default)")
    return f"{parts.scheme}://{parts.netloc}"


def _handshake(address: str, timeout: float) -> None:
    """Refuse, within about ``timeout`` seconds, an address where nothing listens (at once) or where the
    service does not answer Dask's ``identity`` request as a scheduler: Dask's own client retries a refused
    address until its timeout and waits without limit on a service that accepts the connection and never
    answers in Dask's protocol (an HTTP server, say)."""
    import asyncio
    import socket
    from urllib.parse import urlsplit

    from distributed.comm import connect as dask_connect

    parts = urlsplit(address)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=timeout).close()
    except OSError as e:
        raise DistributedError(f"cannot reach a Dask scheduler at {address!r} ({_first_line(e)}); start one with "
                               "`dask scheduler` and give its tcp://HOST:PORT address") from None

    from distributed.security import Security

    connection_args = Security().get_connection_args("client")  # TLS settings from Dask's configuration

    async def identity() -> Any:
        comm = await dask_connect(address, timeout=timeout, **connection_args)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    async def bounded() -> Any:
        return await asyncio.wait_for(identity(), timeout)

    # in a thread of its own: the caller may already run an event loop (a Jupyter cell), where asyncio.run fails
    from concurrent.futures import ThreadPoolExecutor

    why = ""
    with ThreadPoolExecutor(1) as pool:
        try:
            reply = pool.submit(asyncio.run, bounded()).result()
        except Exception as e:  # no answer in time, or not in Dask's protocol
            reply, why = None, f" ({_first_line(e)})" if str(e) else ""
    if not isinstance(reply, dict) or reply.get("type") != "Scheduler":
        raise DistributedError(f"the service at {address!r} accepted the connection but did not answer as a Dask "
                               f"scheduler within {timeout:g} s{why}; check the address and port (`dask scheduler` "
                               "prints them)")


_WORKER_BYTES = 384 * 2**20  # one worker process with JAX loaded after its first tasks (measured: 330 MiB)
_WORKERS_PER_CORE = 4  # beyond this, more single-threaded processes only add overhead


def check_local_workers(workers: int, *, cpus: int, memory: int | None) -> None:
    """Refuse a local cluster this machine cannot hold: more than ``_WORKERS_PER_CORE`` processes per core,
    or more processes of about ``_WORKER_BYTES`` each than the free ``memory`` (bytes; ``None``: unknown)."""
    by_cores = _WORKERS_PER_CORE * cpus
    by_memory = None if memory is None else max(1, memory // _WORKER_BYTES)
    fit = by_cores if by_memory is None else min(by_cores, by_memory)
    if workers > fit:
        mem = "" if memory is None else f" and {format_bytes(memory)} free"
        raise DistributedError(f"--workers {workers} does not fit this machine: {cpus} cores{mem} hold at most "
                               f"{fit} worker processes (each takes about {format_bytes(_WORKER_BYTES)} with JAX "
                               f"loaded; more than {_WORKERS_PER_CORE} per core only slows a run); use --workers "
                               f"{fit} or fewer, or --scheduler ADDRESS for a cluster of machines")


def connect(*, workers: int | None = None, scheduler: str | None = None, timeout: float = 5.0) -> DaskExecutor:
    """A :class:`DaskExecutor` on a new ``LocalCluster`` of ``workers`` processes, or on the running scheduler
    at ``scheduler`` (``tcp://HOST:PORT``). Close it with ``.close()`` (or use :func:`executor_scope`)."""
    if workers is not None and scheduler is not None:
        raise DistributedError("give a number of workers (a local cluster) or a scheduler address, not both")
    if workers is None and scheduler is None:
        raise DistributedError("give a number of workers (a local cluster) or a scheduler address")
    distributed = require_dask()
    import logging

    if scheduler is not None:
        scheduler = _scheduler_address(scheduler)
        _handshake(scheduler, timeout)
        try:
            client = distributed.Client(scheduler, timeout=f"{timeout}s", set_as_default=False)
        except (OSError, TimeoutError, ValueError, TypeError) as e:
            raise DistributedError(f"cannot reach a Dask scheduler at {scheduler!r} ({_first_line(e)}); start one "
                                   "with `dask scheduler` and give its tcp://HOST:PORT address") from None
        try:
            return DaskExecutor(client, owns_client=True)
        except BaseException:
            client.close()
            raise
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise DistributedError(f"--workers must be a whole number of at least 1, got {workers!r}")
    cpus = usable_cores()
    check_local_workers(workers, cpus=cpus, memory=memory_bytes())
    # one thread per worker when the workers fill the machine (XLA would otherwise start a pool per process)
    env = dict(_SINGLE_THREAD) if workers >= cpus else {}
    import dask

    # no MALLOC_TRIM_THRESHOLD_ for the workers (see _tune_malloc), nor leaked into this process's environment
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.ERROR, env=env)
    client = distributed.Client(cluster, set_as_default=False)
    try:
        return DaskExecutor(client, cluster=cluster)
    except BaseException:
        client.close()
        cluster.close()
        raise


@contextlib.contextmanager
def executor_scope(*, workers: int | None = None, scheduler: str | None = None, client=None) -> Iterator[Any]:
    """The executor of a run: a :class:`DaskExecutor` for ``workers``, ``scheduler`` or a ``client``,
    else the local one; closed on exit when started here."""
    if client is not None:
        if workers is not None or scheduler is not None:
            raise DistributedError("give a Dask client, a number of workers or a scheduler address: one of them")
        ex = DaskExecutor(client)
        try:
            yield ex
        finally:
            ex.close()  # releases the shards; the caller's client stays open
        return
    if workers is None and scheduler is None:
        yield LOCAL
        return
    ex = connect(workers=workers, scheduler=scheduler)
    try:
        yield ex
    finally:
        ex.close()
