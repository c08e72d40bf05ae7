"""Shared fixtures and tolerances.

The suite runs in two precisions: ``make test`` runs it once with JAX's 64-bit types on
(``KDISTILL_TEST_X64=1``, the default) and the fast tests again with them off
(``KDISTILL_TEST_X64=0``), so float32 code paths are exercised. The library never flips
the switch itself (every entry point takes a ``precision``); only this file does, once,
for the test process. Tests that need float64 inputs create them under
``kdistill.precision_scope("float64")`` or via ``x64`` below.
"""

import atexit
import os
import shutil
import tempfile
import threading

# scikit-learn's estimator checks (tests/test_estimators.py) include array-API input checks that skip unless SciPy's
# array-API mode is on; it must be set before SciPy is first imported. The estimators pass them with it on.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import jax  # noqa: E402
import numpy as np
import pytest

X64 = os.environ.get("KDISTILL_TEST_X64", "1") != "0"
jax.config.update("jax_enable_x64", X64)

# Tests write nowhere but temporary folders: loads of the default data directory (and the decoded-array
# cache they write there) go to one folder per test session, inherited by the CLI processes tests start,
# whatever KDISTILL_DATA the developer has set (MNIST and Fashion-MNIST come from packages, not from it).
_DATA = tempfile.mkdtemp(prefix="kdistill-test-data-")
os.environ["KDISTILL_DATA"] = _DATA
atexit.register(shutil.rmtree, _DATA, ignore_errors=True)

# XLA's compiled programs are kept on disk and shared by every test process: the pytest-xdist workers, and the CLI
# processes and Dask workers they start. Many tests build the same kernels and steps afresh (new closures, new
# processes, another worker) and would otherwise compile them again. The folder is one for all: JAX's cache key
# includes a path derived from the cache folder, so workers with folders of their own could never use each
# other's programs. JAX writes an entry in place (with no size limit it takes no lock), so a worker could read a
# file another is still writing: entries are written to a temporary name and renamed (`_atomic_cache_writes`).
# `make test` sets KDISTILL_TEST_JAX_CACHE for both passes, so the float32 pass starts from what the float64 pass
# compiled, and removes the folder after. Without the variable the folder is temporary, one per test process.
_BASE = os.environ.get("KDISTILL_TEST_JAX_CACHE")
if _BASE:
    _JAX_CACHE = os.path.join(_BASE, "shared")
    os.makedirs(_JAX_CACHE, exist_ok=True)
else:
    _JAX_CACHE = tempfile.mkdtemp(prefix="kdistill-test-jax-cache-")
    atexit.register(shutil.rmtree, _JAX_CACHE, ignore_errors=True)


def _atomic_cache_writes() -> bool:
    """Make JAX's file cache write each entry under a temporary name and rename it into place (atomic on one
    file system), so that a concurrent reader sees a whole entry or none. False if JAX's cache is not what
    this expects (then each test process keeps a folder of its own)."""
    try:
        from jax._src import lru_cache
    except ImportError:
        return False
    cls = getattr(lru_cache, "LRUCache", None)
    if cls is None or not hasattr(cls, "put") or getattr(lru_cache, "_CACHE_SUFFIX", None) is None:
        return False
    original = cls.put

    def put(self, key, value):
        if getattr(self, "eviction_enabled", True):  # a size limit: JAX locks, leave it as it is
            return original(self, key, value)
        path = os.path.join(str(self.path), f"{key}{lru_cache._CACHE_SUFFIX}")
        if os.path.exists(path):
            return None
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"  # unique per process and thread
        with open(tmp, "wb") as f:
            f.write(value)
        os.replace(tmp, path)
        return None

    cls.put = put
    return True


if _BASE and not _atomic_cache_writes():
    _JAX_CACHE = os.path.join(_BASE, os.environ.get("PYTEST_XDIST_WORKER", "main"))
    os.makedirs(_JAX_CACHE, exist_ok=True)
os.environ["JAX_COMPILATION_CACHE_DIR"] = _JAX_CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
jax.config.update("jax_compilation_cache_dir", _JAX_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

# One place for tolerances, per dtype (STYLE.md habit 10).
TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-9, atol=1e-10)}


def pytest_report_header(config):
    return f"kdistill: jax_enable_x64={X64} (KDISTILL_TEST_X64)"


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def x64():
    """Run the test body with 64-bit JAX types, whatever the session's setting (tests that compare
    with float64 references at float64 tolerances)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def x64_module():
    """``x64`` for a whole module (``pytestmark = pytest.mark.usefixtures("x64_module")``; works with hypothesis)."""
    with jax.enable_x64(True):
        yield


# Files whose tests do not touch JAX's precision (file formats, downloads, docs, reports) or pin
# float64 for the whole module (float64 references), or set the precision in each test (test_kernels_neural:
# float64 references, float32 cases under jax.enable_x64(False); test_iterative_contract: each run's RunConfig
# names its precision): running them twice would test nothing new.
_PRECISION_FREE = {"test_iterative_contract.py", "test_architecture.py", "test_data_formats.py", "test_data_registry.py", "test_download.py", "test_docs.py",
                   "test_io.py", "test_preprocess.py", "test_report.py", "test_analytic.py", "test_krr.py",
                   "test_misuse.py", "test_fuzz.py", "test_input_validation.py", "test_kernel_validation.py",
                   "test_distil_boost.py", "test_data_cache.py", "test_suite.py", "test_feature_maps.py", "test_cli.py",
                   "test_kernels_neural.py", "test_dc.py", "test_augment.py", "test_finite.py", "test_nets.py",
                   "test_budget.py", "test_compare.py", "test_export.py",
                   "test_finite_protocols.py", "test_rcig.py"}  # the CLI scopes
# float64 itself; its tests start from both. DC, finite networks and the augmentations are float32 whatever
# the switch says. test_budget, test_compare and test_export test run settings, folders and files: their runs
# name their precision or go through the CLI.


def pytest_collection_modifyitems(config, items):
    """With x64 off, run the fast tests that exercise JAX (deselect slow ones and precision-free files)."""
    if X64:
        return
    keep, drop = [], []
    for item in items:
        slow = item.get_closest_marker("slow") is not None
        (drop if slow or item.path.name in _PRECISION_FREE else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


# JAX's compile pipeline (tracing, lowering to MLIR, XLA's backend compile), in this process: most of the suite's
# time on a CPU. Summed from JAX's own duration events over all threads (a test whose local executor compiles in
# several threads can show more compile seconds than it ran); each test report carries what its phase added.
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_compile_seconds = [0.0, 0.0]  # total so far, total at the last report


def _count_compile(event, duration, **_):
    if event in _COMPILE_EVENTS:
        _compile_seconds[0] += duration


try:
    from jax import monitoring as _monitoring

    _monitoring.register_event_duration_secs_listener(_count_compile)
except (ImportError, AttributeError):  # a JAX without duration events: the summary shows no compile column
    pass


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    _compile_seconds[1] = _compile_seconds[0]  # collection's compiles (module-level arrays) belong to no test


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    # a property, not an attribute: pytest-xdist sends user_properties from the workers to the controller
    outcome.get_result().user_properties.append(("jax_compile_s", _compile_seconds[0] - _compile_seconds[1]))
    _compile_seconds[1] = _compile_seconds[0]


def pytest_terminal_summary(terminalreporter):
    """After the run, the test files that took the most time (setup, call and teardown summed over their tests,
    in worker-seconds: with pytest-xdist the workers' times add up to about the workers times the wall time),
    and how much of it was JAX compiling in the test processes (CLI and Dask processes that tests start compile
    too, uncounted), so that where the suite's minutes go is visible in every ``make test`` log without a
    profiler."""
    by_file: dict[str, list[float]] = {}
    for reports in terminalreporter.stats.values():
        for r in reports:
            if getattr(r, "when", None) in ("setup", "call", "teardown") and hasattr(r, "duration"):
                t = by_file.setdefault(r.nodeid.split("::", 1)[0], [0.0, 0, 0.0])
                t[0] += r.duration
                t[1] += r.when == "call"
                t[2] += sum(v for k, v in getattr(r, "user_properties", ()) if k == "jax_compile_s")
    if not by_file:
        return
    total = sum(t[0] for t in by_file.values())
    compiling = sum(t[2] for t in by_file.values())
    terminalreporter.write_sep("=", f"time by test file ({total:.0f} worker-seconds in all, {compiling:.0f} of them "
                                    f"JAX compiling in the test processes; the 12 largest)")
    for name, (seconds, tests, comp) in sorted(by_file.items(), key=lambda kv: -kv[1][0])[:12]:
        terminalreporter.write_line(f"{seconds:8.1f} s {100 * seconds / total:5.1f}%  compiling {comp:6.1f} s  "
                                    f"{tests:4d} tests  {name}")
