"""Fuzzing the command line: kernel spec strings and numeric options.

Whatever the input, the outcome is a result (exit 0) or exit 2 with exactly one ``error:`` line: never
a traceback, never a hang (each call runs under an alarm), never a native crash (it would kill pytest).
Valid-looking numbers are drawn small so successful runs stay cheap; the extremes (NaN, inf, 1e308,
10**9, negatives, garbage) are the ones that must be refused, quickly.
"""

from __future__ import annotations

import itertools
import signal

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kdistill.cli import cli
from kdistill.kernels import families

SECONDS = 90  # per call: a bound on "never hangs" far above any cheap case here

EXTREMES = ["nan", "NaN", "inf", "-inf", "1e308", "-1e308", "1e-320", "-1", "-0.0", "0", "1000000000",
            "9223372036854775808", "1e30", "2.5", "0x10", "1_000", " 3 ", "", "abc", "1e", "--", "true", "None",
            "3,4", "=", ":"]
SMALL = st.one_of(st.integers(0, 4).map(str), st.floats(0.001, 3.0).map(lambda v: f"{v:.3g}"))
VALUES = st.one_of(SMALL, st.sampled_from(EXTREMES), st.text("0123456789.e-+naifx", max_size=6))


class _Alarm(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Alarm(f"no answer within {SECONDS} s")


def _invoke(args: list[str]):
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(SECONDS)
    try:
        return CliRunner().invoke(cli, args, catch_exceptions=True)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _check(result, args):
    event(f"exit {result.exit_code}")  # pytest --hypothesis-show-statistics: how many succeeded
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), (args, repr(exc))
    assert result.exit_code in (0, 2), (args, result.exit_code, result.output)
    assert "Traceback" not in result.output, (args, result.output)
    if result.exit_code == 2:
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)


_COUNTER = itertools.count()


@st.composite
def kernel_specs(draw):
    fams = families()
    name = draw(st.one_of(st.sampled_from(sorted(fams)), st.sampled_from(["", "rbf ", "RBF", "nope", "fc-ntk:"])))
    known = sorted(fams[name].params) if name in fams else []
    keys = st.one_of(st.sampled_from(known), st.just("bogus")) if known else st.just("bogus")
    pairs = draw(st.lists(st.tuples(keys, VALUES), max_size=3))
    body = ",".join(f"{k}={v}" for k, v in pairs)
    sep = draw(st.sampled_from([":", ":", "::", ""]))
    return name + (sep + body if body or sep == "::" else "")


@pytest.mark.slow
@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(spec=kernel_specs())
def test_any_kernel_spec_gives_a_result_or_one_line(tmp_path_factory, spec):
    out = tmp_path_factory.getbasetemp() / f"fuzz-kernel-{next(_COUNTER)}"
    args = ["distill", "--dataset", "digits", "--ipc", "1", "--method", "random", "--no-full", "--no-baseline",
            "--reg", "1e-3", "--kernel", spec, "--out", str(out)]
    _check(_invoke(args), args)


# (flag, method it belongs to): the common numeric options and those of the iterative driver and KIP.
NUMERIC = [("--ipc", None), ("--seed", None), ("--reg", None), ("--max-dual-n", None),
           ("--lr", "kip"), ("--steps", "kip"), ("--target-batch", "kip"), ("--val-every", "kip"),
           ("--val-size", "kip"), ("--patience", "kip"), ("--time-limit", "kip"), ("--checkpoint-every", "kip"),
           ("--label-solve-every", "kip"), ("--redraw-every", "kip")]


@pytest.mark.slow
@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(opts=st.lists(st.tuples(st.sampled_from(NUMERIC), VALUES), min_size=1, max_size=3,
                     unique_by=lambda t: t[0][0]))
def test_any_numeric_option_gives_a_result_or_one_line(tmp_path_factory, opts):
    out = tmp_path_factory.getbasetemp() / f"fuzz-opts-{next(_COUNTER)}"
    given_flags = {flag for (flag, _), _ in opts}
    args = ["distill", "--dataset", "digits", "--method", "kip", "--kernel", "rbf", "--no-full", "--no-baseline",
            "--out", str(out)]
    for flag, default in (("--steps", "3"), ("--target-batch", "100"), ("--val-size", "100"), ("--ipc", "1")):
        if flag not in given_flags:
            args += [flag, default]
    for (flag, _), value in opts:
        args += [flag, value]
    _check(_invoke(args), args)


@pytest.mark.slow
@settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(value=VALUES, flag=st.sampled_from(["--seeds", "--epochs", "--width", "--lr"]))
def test_any_evaluate_option_gives_a_result_or_one_line(tmp_path_factory, value, flag):
    """Finite-network settings of evaluate; the other ones fixed small (a successful call trains briefly)."""
    npz = tmp_path_factory.getbasetemp() / "fuzz-eval-set" / "distilled.npz"
    if not npz.exists():
        r = CliRunner().invoke(cli, ["distill", "--dataset", "digits", "--ipc", "1", "--no-full", "--no-baseline",
                                     "--out", str(npz.parent)])
        assert r.exit_code == 0, r.output
    base = {"--seeds": "1", "--epochs": "2", "--width": "8", "--lr": "0.01"}
    base[flag] = value
    args = ["evaluate", str(npz), "--model", "fc", *itertools.chain.from_iterable(base.items())]
    _check(_invoke(args), args)
