"""Distributed runs on Dask: a real ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1
give the single-process results (float64, 1e-6), survive a worker killed with SIGKILL mid-run, and
refuse an unreachable scheduler or a worker with another kdistill version in one line (exit 2).

The split step itself (coordinator head + worker shards, ``methods/iterative/_split.py`` with KIP's and RFAD's pieces) is also checked in this
process against the fused step, without Dask, in both precisions.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

import kdistill
import jax

from kdistill import krr
from kdistill.parallel._local import LOCAL
from kdistill.kernels import from_spec
from kdistill.methods.iterative._driver import DriverSettings, run_iterative
from kdistill.methods._kip import kip_method
from kdistill.methods._label_solve import label_solve
from kdistill.methods._rfad import rfad_method

from _helpers import error_line, run_cli
from conftest import TOL, X64

import distributed  # noqa: E402  (the [test] extra installs it: its absence is a failure, not a skip)

BIN = Path(sys.executable).parent
ONE_THREAD = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
              "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
RF = "rf-convnet:models=2,width=8,depth=1,stem=0"
# the tests on the module's Dask cluster run in one pytest-xdist worker: one cluster to start, and its workers
# keep what they compiled for the next test
ON_CLUSTER = pytest.mark.xdist_group("dask_cluster")


def _digits(n=400, seed=0):
    d = load_digits()
    idx = np.random.default_rng(seed).permutation(len(d.target))
    return d.images[idx[:n]].astype(np.float32) / 16.0, d.target[idx[:n]], d.images[idx[-300:]] / 16.0, \
        d.target[idx[-300:]]


def _small(n=240, shape=(8, 8, 1), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    dtype = np.float64 if X64 else np.float32
    return rng.normal(size=(n, *shape)).astype(dtype), rng.integers(0, classes, n)


# ---- without Dask: the split step equals the fused one -------------------------------------------------

_SLOW = pytest.mark.slow  # float32 (the x64-off pass) runs the first two cases only


@pytest.mark.parametrize("case,support_on_workers", [
    ("kip-mse-labels", True), ("rfad-labels", False), pytest.param("kip-mse-labels", False, marks=_SLOW),
    pytest.param("kip-platt", False, marks=_SLOW), pytest.param("kip-redraw", True, marks=_SLOW),
    pytest.param("rfad-labels", True, marks=_SLOW), pytest.param("rfad-mse", False, marks=_SLOW)])
def test_split_step_equals_the_fused_step(case, support_on_workers):
    """The split step (shards of the batch; the support side in row blocks when ``support_on_workers``) through
    the local executor equals the fused single-process step."""
    x, lab = _small()
    rbf, rf = from_spec("rbf:gamma=0.02"), from_spec(RF)
    kw = dict(support_on_workers=support_on_workers)
    make = {
        "kip-mse-labels": lambda s: kip_method(rbf, lr=0.01, reg=1e-6, learn_labels=True, split=s, **kw),
        "kip-platt": lambda s: kip_method(rbf, lr=0.01, reg=1e-6, loss="platt", split=s, **kw),
        "kip-redraw": lambda s: kip_method(rf, lr=0.01, reg=1e-4, redraw_every=2, split=s, **kw),
        "rfad-labels": lambda s: rfad_method(rf, lr=0.01, reg=5e-3, learn_labels=True, split=s, **kw),
        "rfad-mse": lambda s: rfad_method(rf, lr=0.01, reg=5e-3, loss="mse", redraw_every=2, split=s, **kw),
    }[case]
    settings = DriverSettings(steps=4, target_batch=50, val_every=0, val_size=0, checkpoint_every=0,
                              hold_batch=2 if case == "rfad-mse" else 1)
    fused, split = (run_iterative(make(s), x, lab, num_classes=3, ipc=2, seed=0, settings=settings) for s in (False, True))
    tol = TOL[x.dtype.type]
    np.testing.assert_allclose(split.images, fused.images, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10)
    np.testing.assert_allclose(split.labels, fused.labels, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10)
    np.testing.assert_allclose(split.history["loss"], fused.history["loss"], rtol=tol["rtol"] * 10)
    assert not np.allclose(split.images, x[:6]), "the steps moved nothing: the comparison would be empty"


def test_registry_kernels_pickle_by_spec():
    k = from_spec(RF)
    again = pickle.loads(pickle.dumps(k))
    assert again is pickle.loads(pickle.dumps(k)) and again.spec == k.spec  # one instance per process
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(pickle.loads(pickle.dumps(k.features))(x)), np.asarray(k.features(x)))
    assert len(pickle.dumps(k)) < 300  # a spec string, not compiled functions


# ---- a real cluster: `dask scheduler` + two `dask worker` processes on 127.0.0.1 -----------------------

def _start(args, log):
    env = dict(os.environ, **ONE_THREAD)
    return subprocess.Popen([str(BIN / "dask"), *args], stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


@pytest.fixture(scope="module")
def cluster():
    tmp = Path(tempfile.mkdtemp(prefix="kdistill-dask-"))
    sched_file = tmp / "scheduler.json"
    log = open(tmp / "log.txt", "w")
    procs = [_start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(sched_file)], log)]
    try:
        for _ in range(600):
            if sched_file.exists() and json.loads(sched_file.read_text() or "{}").get("address"):
                break
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        for i in range(2):
            procs.append(_start(["worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                                 "--host", "127.0.0.1", "--name", f"w{i}", "--memory-limit", "4GiB"], log))
        client = distributed.Client(address, timeout="30s", set_as_default=False)
        client.wait_for_workers(2, timeout=120)
        yield address, client
        client.close()
    finally:
        for p in procs[::-1]:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)  # the scheduler file and the processes' log


@pytest.fixture(scope="module")
def executor(cluster):
    from kdistill.parallel._dask import DaskExecutor

    ex = DaskExecutor(cluster[1])
    yield ex
    ex.close()


def _assert_same(a: kdistill.io.DistilledSet, b, tol=1e-6):
    np.testing.assert_allclose(a.images, b.images, rtol=tol, atol=tol)
    np.testing.assert_allclose(a.labels, b.labels, rtol=tol, atol=tol)
    assert a.summary["test_accuracy"] == pytest.approx(b.summary["test_accuracy"], abs=1e-12)


@ON_CLUSTER
@pytest.mark.slow
def test_block_maps_equal_the_local_ones(executor, rng):
    x = rng.normal(size=(700, 6, 6, 1))
    y = np.eye(4)[rng.integers(0, 4, 700)] - 0.25
    s = x[:12]
    k = from_spec("fc-ntk:depth=2")
    np.testing.assert_allclose(krr.kernel_matrix(k, x, s, executor=executor, block_size=128),
                               krr.kernel_matrix(k, x, s, block_size=128), rtol=1e-12, atol=1e-12)
    model = krr.fit(k, s, y[:12])
    np.testing.assert_allclose(krr.predict(k, model, x, executor=executor), krr.predict(k, model, x), rtol=1e-10,
                               atol=1e-12)
    f = from_spec("fcnn:width=64")
    mine, ref = (krr.accumulate(f.features, x, y, chunk_size=100, executor=e) for e in (executor, LOCAL))
    np.testing.assert_allclose(mine.gram, ref.gram, rtol=1e-10)
    np.testing.assert_allclose(mine.cross, ref.cross, rtol=1e-10, atol=1e-12)
    assert mine.n == ref.n == 700

    def itemsize(rows):  # nested: pickled by value for the workers
        import jax.numpy as jnp

        return np.full(len(rows), jnp.zeros(1).dtype.itemsize)

    with jax.enable_x64(False):  # tasks run in the coordinator's precision, whatever the workers' default
        assert set(executor.map(itemsize, x)) == {4}
    with jax.enable_x64(True):
        assert set(executor.map(itemsize, x)) == {8}
    np.testing.assert_allclose(label_solve(k, s, x, y, executor=executor), label_solve(k, s, x, y), rtol=1e-7,
                               atol=1e-9)
    # arrays above inline_bytes met a second time keep their shards: a third map over the same array sends
    # only its broadcast arguments (a one-off array's shards are released)
    executor.inline_bytes = 0
    try:
        krr.kernel_matrix(k, x, s, executor=executor, block_size=128)
        krr.kernel_matrix(k, x, s, executor=executor, block_size=128)
        before = executor.bytes_sent
        again = krr.kernel_matrix(k, x, s, executor=executor, block_size=128)
        assert executor.bytes_sent - before < x.nbytes / 10
    finally:
        executor.inline_bytes = 4 * 2**20
    np.testing.assert_allclose(again, krr.kernel_matrix(k, x, s, block_size=128), rtol=1e-12, atol=1e-12)


# label-solve's distributed run is compared with the single-process one by
# test_cli_workers_runs_a_local_cluster_with_the_same_result (through the CLI, on a local cluster), RFAD's by
# test_a_worker_killed_mid_run_leaves_the_result_unchanged (its steps and validations, a worker lost mid-run)
@ON_CLUSTER
@pytest.mark.slow
@pytest.mark.parametrize("method,kernel,options", [
    ("analytic", "fcnn:width=256", {}),
    ("kip", "fc-ntk", {"steps": 10, "target_batch": 100, "val_every": 5, "learn_labels": True, "lr": 0.01}),
])
def test_distributed_run_equals_the_single_process_run(cluster, method, kernel, options):
    x, y, xt, yt = _digits()
    kw = dict(method=method, ipc=2, kernel=kernel, x_test=xt, y_test=yt, val_size=80, precision="float64",
              **options)
    local = kdistill.distill(x, y, **kw)
    remote = kdistill.distill(x, y, client=cluster[1], **kw)
    # analytic with fcnn:width=256 on 64-pixel digits cannot reach its target features (it warns so) and
    # solves an ill-conditioned least-squares problem for the images: the Gram's summation order (one block
    # per worker against one pass) moves them by up to 8e-5 relative on an AVX-512 CPU (1e-6 on AVX2)
    _assert_same(remote, local, tol=1e-6 if method != "analytic" else 5e-4)
    assert remote.summary["executor"].startswith("dask cluster at tcp://127.0.0.1")
    assert local.summary["executor"] == "local (this process)"


@ON_CLUSTER
@pytest.mark.slow
@pytest.mark.parametrize("method", ["rfad", "kip"])
def test_bytes_per_step_follow_the_model_and_not_the_target_images(executor, method):
    """Per step: the readout out to each shard and its gradient back, the batch's indices, labels and
    weights, and (two or more workers) the support side's rows; never a target image. The executor's byte
    counts match ``step_bytes`` (docs/distributed.md) within the scalars each task adds."""
    from kdistill.methods.iterative._split import step_bytes

    x, lab = _small(n=400)
    x = x.astype(np.float32)  # images stay float32 while kernels run in the test's precision
    rf, rbf = from_spec(RF), from_spec("rbf:gamma=0.02")
    m, d, k, x_item = 6, 64, 3, 4
    value = np.asarray(rf.features(x[:1]) if method == "rfad" else rbf(x[:2], x[:2]))  # a kernel value's dtype
    item = value.dtype.itemsize
    p = value.shape[1] if method == "rfad" else None
    # a worker killed by an earlier test may still be restarting (on a busy machine the scheduler can list
    # none for a moment): count them once both are back, the model's bytes depend on it
    executor.client.wait_for_workers(2, timeout=120)
    workers = len(executor.workers())
    assert workers == 2, executor.workers()
    measured = {}
    for batch in (50, 200):
        marks = []
        make = (lambda: rfad_method(rf, lr=0.01, reg=5e-3, executor=executor)) if method == "rfad" else \
            (lambda: kip_method(rbf, lr=0.01, reg=1e-6, executor=executor))
        inner = make()

        def step(state, b, inner=inner, marks=marks):
            marks.append((executor.bytes_sent, executor.bytes_received))
            return inner.step(state, b)

        settings = DriverSettings(steps=3, target_batch=batch, val_every=0, val_size=0, checkpoint_every=0)
        run_iterative(dataclasses.replace(inner, step=step), x, lab, num_classes=3, ipc=2, seed=0, settings=settings)
        # step 1 (step 0 also sends the pool, once; the last step has no later mark)
        sent, received = (np.diff([mk[i] for mk in marks])[1:].mean() for i in (0, 1))
        readout, z_cols = (p * k * item, p) if method == "rfad" else (m * d * x_item + m * k * item, m)
        model = step_bytes(m=m, d=d, k=k, b=batch, workers=workers, itemsize=item, x_itemsize=x_item,
                           readout_bytes=readout, z_cols=z_cols, support_on_workers=workers > 1,
                           extra=int(method == "rfad"))
        slack = 64 * 3 * workers  # a task's scalars: loss value, correct count, key
        assert model[0] <= sent <= model[0] + slack and model[1] <= received <= model[1] + slack, \
            (batch, sent, received, model)
        measured[batch] = sent + received  # the model has no b x d term: no target image crosses
    assert measured[200] - measured[50] <= 150 * (8 + (k + 1) * x_item) + 1


@pytest.fixture
def busy_machine():
    """A loaded CI machine: spinning processes, one fewer than the cores (at least one), beside the test's own
    processes (the driver and two Dask workers) and the other test worker's: more runnable processes than cores
    for the test's duration."""
    # each spinner stops by itself after 5 minutes or once this process is gone (a killed test run)
    code = ("import os, time\nparent, end = os.getppid(), time.time() + 300\n"
            "while os.getppid() == parent and time.time() < end:\n    pass")
    spin = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(max(1, (os.cpu_count() or 1) - 1))]
    yield
    for p in spin:
        p.kill()
        p.wait()


@ON_CLUSTER
@pytest.mark.slow  # a Dask cluster to start: once, in the float64 pass (nothing here depends on the precision)
def test_a_call_waits_for_a_worker_when_none_is_registered(executor, monkeypatch):
    """Between a worker's death and its nanny's restart (long on a busy machine) the scheduler may list no
    worker: the executor waits for one instead of failing (a ZeroDivisionError before)."""
    real, calls = executor.workers, []

    def flaky():  # the scheduler lists no worker the first two times it is asked
        calls.append(1)
        return [] if len(calls) <= 2 else real()

    monkeypatch.setattr(executor, "workers", flaky)
    x = np.arange(24.0).reshape(12, 2)
    got = executor.map(lambda rows: rows.sum(0), x, reduce=np.add)
    np.testing.assert_allclose(got, x.sum(0))
    assert len(calls) >= 3


@ON_CLUSTER
@pytest.mark.slow  # a Dask cluster to start: once, in the float64 pass (nothing here depends on the precision)
def test_no_worker_left_is_one_line(executor, monkeypatch):
    from kdistill.errors import DistributedError

    monkeypatch.setattr(executor, "workers", lambda: [])
    monkeypatch.setattr(executor, "worker_wait", 0.2)
    with pytest.raises(DistributedError) as info:
        executor.map(lambda rows: rows, np.zeros((4, 2)))
    assert "no workers left" in str(info.value) and "\n" not in str(info.value)


@ON_CLUSTER
@pytest.mark.slow
def test_a_worker_killed_mid_run_leaves_the_result_unchanged(cluster, busy_machine):
    """SIGKILL one of the two workers during a step while every core is busy: the run equals the
    single-process run (the scheduler recomputes the lost shard elsewhere, the nanny restarts the worker)."""
    from kdistill.parallel._dask import DaskExecutor

    address, client = cluster
    x, lab = _small(n=300)
    rf = from_spec(RF)
    settings = DriverSettings(steps=8, target_batch=80, val_every=4, val_size=40, checkpoint_every=0)
    ref = run_iterative(rfad_method(rf, lr=0.01, reg=5e-3), x, lab, num_classes=3, ipc=2, seed=0,
                        settings=settings, kernel=rf)
    ex = DaskExecutor(client)
    method = rfad_method(rf, lr=0.01, reg=5e-3, executor=ex)
    pids = client.run(os.getpid)
    killed = []

    def step(state, batch):
        if batch.step == 5:  # the pool is on the workers by now: lose one of them (and its shard) mid-step
            victim = sorted(pids.items())[0][1]
            threading.Timer(0.02, os.kill, (victim, signal.SIGKILL)).start()
            killed.append(victim)
        return method.step(state, batch)

    got = run_iterative(dataclasses.replace(method, step=step), x, lab, num_classes=3, ipc=2, seed=0,
                        settings=settings, kernel=rf)
    ex.close()
    assert killed
    np.testing.assert_allclose(got.images, ref.images, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got.history["val_accuracy"], ref.history["val_accuracy"])
    client.wait_for_workers(2, timeout=120)  # the nanny restarts the worker for the tests after this one
    assert victim_gone(killed[0], client)


def victim_gone(pid, client) -> bool:
    return pid not in client.run(os.getpid).values()


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "kdistill.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_an_unreachable_scheduler_exits_2_with_one_line(tmp_path):
    r = _cli("distill", "--dataset", "digits", "--scheduler", "tcp://127.0.0.1:9", "--out", str(tmp_path / "run"))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach a Dask scheduler at 'tcp://127.0.0.1:9'" in lines[0], r.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_service_that_is_not_a_dask_scheduler_is_refused_in_seconds(tmp_path):
    """An HTTP server accepts the connection and never speaks Dask's protocol: Dask's client waited on it
    for minutes; the handshake's timeout refuses it in one line."""
    import http.server

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        t = time.perf_counter()
        r = _cli("distill", "--dataset", "digits", "--scheduler", f"tcp://127.0.0.1:{server.server_port}", "--out",
                 str(tmp_path / "run"), timeout=110)
        seconds = time.perf_counter() - t
    finally:
        server.shutdown()
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "did not answer as a Dask scheduler" in lines[0], r.stderr
    assert seconds < 100 and not (tmp_path / "run").exists()


@ON_CLUSTER
@pytest.mark.slow  # a Dask cluster to start: once, in the float64 pass (nothing here depends on the precision)
def test_the_scheduler_handshake_works_inside_a_running_event_loop(cluster):
    """A Jupyter cell runs inside an event loop, where asyncio.run fails: the handshake runs in a thread of
    its own, and a scheduler address given in capitals is Dask's lower-case form."""
    import asyncio

    from kdistill.parallel._dask import _handshake, _scheduler_address

    address = cluster[0]

    async def cell():
        _handshake(_scheduler_address(address.replace("tcp://", "TCP://")), 10.0)
        return _scheduler_address(address.replace("tcp://", "TCP://"))

    assert asyncio.run(cell()) == address


@pytest.mark.parametrize("address", ["not a url", "http://127.0.0.1:8786", "tcp://127.0.0.1", "tcp://:8786",
                                     "tcp://127.0.0.1:notaport", ""])
def test_a_malformed_scheduler_address_is_refused_before_any_client_exists(address, monkeypatch):
    from kdistill.parallel._dask import connect
    from kdistill.errors import DistributedError

    monkeypatch.setattr(distributed, "Client", None)  # constructing one would fail with a TypeError
    with pytest.raises(DistributedError, match="not a Dask scheduler address|needs an address"):
        connect(scheduler=address)


@pytest.mark.slow
def test_a_malformed_scheduler_address_prints_one_line_and_nothing_else(tmp_path):
    """No half-built Dask client is left to print ``Client.__del__``'s TimeoutError at exit (after a 10 s
    stall) below the one-line error."""
    r = _cli("distill", "--dataset", "digits", "--scheduler", "not a url", "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: --scheduler 'not a url' is not a Dask scheduler address; give tcp://HOST:PORT (what `dask "
        "scheduler` prints, port 8786 by default)"], r.stderr


@ON_CLUSTER
@pytest.mark.slow
def test_a_worker_with_another_kdistill_version_is_refused(cluster, tmp_path):
    from kdistill.parallel._dask import DaskExecutor
    from kdistill.errors import DistributedError

    address, client = cluster
    worker = sorted(client.scheduler_info()["workers"])[0]

    def set_version(v):
        import kdistill

        kdistill.__version__ = v

    client.run(set_version, "9.9.9", workers=[worker])
    try:
        with pytest.raises(DistributedError, match=r"runs kdistill 9\.9\.9 but this process runs"):
            DaskExecutor(client)
        r = _cli("distill", "--dataset", "digits", "--scheduler", address, "--out", str(tmp_path / "run"))
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "install the same version on every worker" in r.stderr
    finally:
        client.run(set_version, kdistill.__version__, workers=[worker])


@pytest.mark.slow
def test_cli_workers_runs_a_local_cluster_with_the_same_result(tmp_path):
    base = ["distill", "--dataset", "digits", "--method", "label-solve", "--kernel", "fc-ntk", "--ipc", "2",
            "--no-full", "--no-baseline", "--val-size", "100"]
    one = run_cli(*base, "--out", str(tmp_path / "one"))  # the single-process reference
    assert one.exit_code == 0, one.output
    two = _cli(*base, "--workers", "2", "--out", str(tmp_path / "two"), timeout=300)  # a cluster: its own process
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert b["executor"].startswith("dask local cluster") and b["executor"].endswith("2 workers")
    assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=1e-12)
    ia, ib = (np.load(tmp_path / d / "distilled.npz")["images"] for d in ("one", "two"))
    np.testing.assert_allclose(ib, ia, rtol=1e-6, atol=1e-6)


def test_more_local_workers_than_the_machine_holds_are_refused_before_any_starts(monkeypatch):
    """``--workers 1000`` on a 2-core machine was accepted and grew to 6 GB without progress: the bound is
    the machine's (cores and free memory), said in one line before any process starts."""
    from kdistill.parallel import _dask as _distributed
    from kdistill.parallel._dask import check_local_workers, connect
    from kdistill.errors import DistributedError

    started = []
    monkeypatch.setattr(distributed, "LocalCluster", lambda **kw: started.append(kw) or 1 / 0)
    monkeypatch.setattr(_distributed, "usable_cores", lambda: 2)  # the machine, whatever this one is
    monkeypatch.setattr(_distributed, "memory_bytes", lambda: 24 * 2**30)
    with pytest.raises(DistributedError, match=r"--workers 1000 does not fit this machine") as info:
        connect(workers=1000)
    assert not started and "\n" not in str(info.value) and "MiB" in str(info.value)
    check_local_workers(8, cpus=2, memory=None)  # 4 per core
    with pytest.raises(DistributedError, match="at most 8 worker"):
        check_local_workers(9, cpus=2, memory=None)
    with pytest.raises(DistributedError, match=r"2 cores and 1 GiB free hold at most 2 worker"):
        check_local_workers(3, cpus=2, memory=2**30)
    check_local_workers(2, cpus=2, memory=2**30)
    assert _distributed._WORKER_BYTES >= 300 * 2**20  # a worker with JAX loaded measured 330 MiB


@pytest.mark.slow
def test_cli_workers_beyond_the_machine_exit_2(tmp_path):
    line = error_line(run_cli("distill", "--dataset", "digits", "--workers", "1000", "--out",
                                              str(tmp_path / "run")))
    assert "does not fit" in line and not (tmp_path / "run").exists()
