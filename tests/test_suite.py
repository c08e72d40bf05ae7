"""The test suite's own machinery: what ``make test`` relies on to finish in its time budget."""

import subprocess
import sys


def test_xdist_groups_reach_the_scheduler(tmp_path):
    """``make test`` runs pytest-xdist with ``--dist loadgroup``: tests marked with one ``xdist_group`` (those sharing
    an expensive fixture) must run in one worker. pytest 9.2 silently broke that (pytest-dev/pytest-xdist#1386):
    the group never reaches the scheduler, each worker builds the fixture again and the suite runs tens of seconds
    longer. A tiny suite run the same way shows whether the installed pytest and pytest-xdist still group: the
    group is in a test's id exactly when the scheduler can see it."""
    (tmp_path / "test_grouped.py").write_text(
        "import pytest\n\n\n@pytest.mark.xdist_group('g')\n@pytest.mark.parametrize('i', range(3))\n"
        "def test_one(i):\n    pass\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not this project's settings or conftest
    r = subprocess.run([sys.executable, "-m", "pytest", "-v", "-n", "1", "--dist", "loadgroup",
                        "-p", "no:cacheprovider", "-c", str(tmp_path / "pytest.ini"), str(tmp_path)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    ids = [line.split()[-1] for line in r.stdout.splitlines() if "PASSED" in line]
    assert len(ids) == 3, r.stdout
    assert all(i.endswith("@g") for i in ids), (
        f"{ids}: xdist_group marks are ignored with this pytest; install the versions in constraints.txt")


def test_the_summarys_compile_seconds_follow_jaxs_compile_events():
    """The per-file summary's compile column sums JAX's duration events for tracing, lowering and XLA's compile
    (tests/conftest.py). If JAX renamed them the column would read 0 everywhere: compiling a new function must
    add to the count, and only by about the time it took."""
    import time

    import jax
    import jax.numpy as jnp

    import conftest

    before = conftest._compile_seconds[0]
    t = time.perf_counter()
    jax.jit(lambda a: jnp.cumsum(jnp.sin(a) * 3.0))(jnp.arange(7.0)).block_until_ready()  # a new program
    took = time.perf_counter() - t
    added = conftest._compile_seconds[0] - before
    assert 0 < added <= took, (added, took)
