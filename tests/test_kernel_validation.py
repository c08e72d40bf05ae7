"""Every parameter of every kernel family is checked before anything is built or run.

Parametrised over ``kdistill.kernels.families()`` and each family's ``Param`` table, so a
new family or parameter is covered automatically: NaN, +-inf, values below the minimum
or above the maximum and wrongly typed Python values all raise a one-line
:class:`~kdistill.errors.SpecError` that names the kernel, the parameter and the allowed
range, with the same message from a spec string and from Python; the bounds themselves
build; settings that would allocate more than ``MAX_BYTES`` or overflow are refused with
the estimate; and the CLI turns such a spec into ``error: ...`` and exit status 2 at once,
before loading data or creating the output folder.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import kdistill.kernels as K
from kdistill.errors import InvalidInputError, SpecError
from kdistill.kernels import Param, families, from_spec
from kdistill.kernels._spec import MAX_BYTES, MAX_SEED

FAMILIES = sorted({fam.name for fam in families().values()})
PARAMS = [(name, key) for name in FAMILIES for key in families()[name].params]
NUMERIC = [(name, key) for name, key in PARAMS if families()[name].params[key].type in (int, float)]
INTS = [(name, key) for name, key in PARAMS if families()[name].params[key].type is int]
FLOATS = [(name, key) for name, key in PARAMS if families()[name].params[key].type is float]


def _param(name: str, key: str) -> Param:
    return families()[name].params[key]


def _spec_error(name: str, key: str, spec: str | None = None, **overrides) -> str:
    """from_spec must raise a one-line SpecError naming the kernel, the parameter and what is allowed."""
    with pytest.raises(SpecError) as err:
        from_spec(spec if spec is not None else name, **overrides)
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 300, msg
    assert msg.startswith(f"kernel {name!r}: {key}="), msg
    assert f"use {_param(name, key).allowed()}" in msg, msg
    return msg


def _small(name: str, **given):
    """The kernel with every integer parameter (depth, width, models, ...) but those ``given`` at its
    minimum, the cheapest setting, and the floats at their defaults."""
    ints = {k: int(p.min) for k, p in families()[name].params.items() if p.type is int}
    merged = {**ints, **given}
    if str(merged.get("stem")) == "0" and str(merged.get("depth")) == "0":  # no convolution at all: refused
        merged["depth" if "stem" in given else "stem"] = 1
    return from_spec(name, **merged)


def test_every_numeric_parameter_declares_bounds_and_a_valid_default():
    assert NUMERIC, "no numeric parameters found"
    for name, key in NUMERIC:
        p = _param(name, key)
        assert p.min is not None and p.max is not None and p.min <= p.max, (name, key)
        assert math.isfinite(p.min) and math.isfinite(p.max), (name, key)
        assert p.convert(name, key, p.default) == p.default and type(p.convert(name, key, p.default)) is p.type
        if key == "seed":
            assert (p.min, p.max) == (0, MAX_SEED) == (0, 2**32 - 1)
        if key == "depth":
            assert p.max <= 100, (name, p.max)  # the kernels unroll depth when tracing
    # a family registered without bounds is refused at import
    with pytest.raises(RuntimeError, match="min and max"):
        K.register("no-bounds-kernel", params={"depth": Param(int, 1)})(lambda *, depth: None)
    with pytest.raises(SpecError, match="out of range"):
        K.register("bad-default-kernel", params={"depth": Param(int, 0, min=1, max=2)})(lambda *, depth: None)
    assert "no-bounds-kernel" not in families() and "bad-default-kernel" not in families()


@pytest.mark.parametrize("name,key", NUMERIC)
@pytest.mark.parametrize("bad", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999"])
def test_non_finite_values_are_refused(name, key, bad):
    msg = _spec_error(name, key, f"{name}:{key}={bad}")
    expected = "is not an integer" if _param(name, key).type is int else "is not a finite number"
    assert expected in msg and f"{key}={bad} " in msg
    if _param(name, key).type is float:  # the same message from Python
        assert _spec_error(name, key, **{key: float(bad)}) == msg.replace(f"={bad} ", f"={float(bad)!r} ")


@pytest.mark.parametrize("name,key", NUMERIC)
def test_below_the_minimum_is_refused(name, key):
    p = _param(name, key)
    below = [p.min - 1, -1, -(10**9)] if p.type is int else [p.min - 1.0, -1.0, -1e300, p.min / 2 if p.min else -1e-300]
    if p.min_exclusive:
        below.append(p.min)
    if p.min > 0 or p.min_exclusive:
        below.append(0)  # zero where it is not allowed
    for v in below:
        v = p.type(v)
        msg = _spec_error(name, key, f"{name}:{key}={v!r}")
        assert "is out of range" in msg and f"{key}={v!r} " in msg
        assert _spec_error(name, key, **{key: v}) == msg  # the same message from Python


@pytest.mark.parametrize("name,key", NUMERIC)
def test_above_the_maximum_is_refused(name, key):
    p = _param(name, key)
    above = [p.max + 1, 10 * p.max + 7, 10**30] if p.type is int else [p.max * 1.000001, p.max + 1.0, 1e300]
    for v in above:
        v = p.type(v)
        msg = _spec_error(name, key, f"{name}:{key}={v!r}")
        assert "is out of range" in msg and f"{key}={v!r} " in msg
        assert _spec_error(name, key, **{key: v}) == msg


@pytest.mark.parametrize("name,key", INTS)
def test_integers_must_be_integers(name, key):
    for text in ["2.5", "1e3", "3.0", "abc", "0x10", "--1"]:
        assert "is not an integer; use an integer in" in _spec_error(name, key, f"{name}:{key}={text}")
    for value in [2.5, 3.0, True, False, None, "abc", "2.5", [1], np.float64(2.0), np.bool_(True), object()]:
        assert "is not an integer; use an integer in" in _spec_error(name, key, **{key: value})
    # a float far beyond the range is reported as not an integer, an int as out of range
    assert "is not an integer" in _spec_error(name, key, **{key: 1e300})
    assert "out of range" in _spec_error(name, key, **{key: 10**400})


@pytest.mark.parametrize("name,key", FLOATS)
def test_numbers_must_be_numbers(name, key):
    for text in ["abc", "0x10", "1e", "--1", "1..2"]:
        assert "is not a number; use a number in" in _spec_error(name, key, f"{name}:{key}={text}")
    for value in [True, False, None, "abc", "", [1.0], np.array([1.0]), object(), 1j]:
        assert "is not a number; use a number in" in _spec_error(name, key, **{key: value})
    assert "out of range" in _spec_error(name, key, **{key: 10**400})  # an int too large for a float


def test_messages_are_one_line_and_quote_odd_values():
    msg = _spec_error("rbf", "gamma", gamma="1\n2")
    assert "gamma='1\\n2'" in msg
    msg = _spec_error("fc-ntk", "depth", depth=list(range(1000)))
    assert "depth=<list>" in msg
    assert _spec_error("fc-ntk", "depth", "fc-ntk:depth=1000000000") == (
        "kernel 'fc-ntk': depth=1000000000 is out of range; use an integer in 0 .. 100")
    assert _spec_error("rbf", "gamma", "rbf:gamma=nan") == (
        "kernel 'rbf': gamma=nan is not a finite number; use a number in 0 .. 1e+06")


@pytest.mark.parametrize("name,key", NUMERIC)
def test_bounds_build_and_are_recorded_exactly(name, key):
    """Each bound builds with the other integers at their minimum and is what the kernel records;
    with the others at their defaults it either builds or is refused as a combination."""
    p = _param(name, key)
    for v in (p.type(p.min), p.type(p.max)):
        for given in (v, str(v), np.array(v)[()]):  # Python, spec-string text, numpy scalar
            k = _small(name, **{key: given})
            assert k.param(key) == v and type(k.param(key)) is p.type, (key, given)
            assert from_spec(k.spec).params == k.params
        try:
            k = from_spec(name, **{key: v})
        except SpecError as err:
            msg = str(err)
            assert "\n" not in msg and msg.startswith(f"kernel {name!r}: ") and key in msg, msg
            assert "needed (limit" in msg or "would scale the kernel" in msg, msg
        else:
            assert k.param(key) == v


# Evaluated at their extremes on small images, in float32: finite, symmetric values. "min": every
# parameter at its minimum; "max": every float at its maximum and the width too, the other integers
# at their minimum (the deepest settings and the most networks are only built above: they compile
# slowly).
def _extreme(name: str, which: str) -> dict:
    params = families()[name].params
    if which == "min":
        low = {k: p.type(p.min) for k, p in params.items() if p.type in (int, float)}
        if low.get("stem") == 0 and low.get("depth") == 0:  # no convolution at all (refused): the stem stays
            low["stem"] = 1
        return low
    return {k: p.type(p.max) for k, p in params.items() if p.type is float or k == "width"}


EXTREMES = [(name, which) for name in FAMILIES for which in ("min", "max")]


@pytest.mark.parametrize("name,which", EXTREMES)
def test_extreme_values_give_finite_kernels(name, which):
    k = _small(name, **_extreme(name, which))
    for key, v in _extreme(name, which).items():
        assert k.param(key) == v
    x = np.random.default_rng(0).standard_normal((3, 4, 4, 2)).astype(np.float32)
    with jax.enable_x64(False):
        v = np.asarray(k(x, x))
    assert v.shape == (3, 3) and np.isfinite(v).all(), (k.spec, v)
    np.testing.assert_allclose(v, v.T, rtol=1e-4, atol=1e-6 * np.abs(v).max())


def test_rf_fc_of_depth_zero_is_the_scaled_linear_kernel():
    """fc of depth 0 has no hidden layer: every network's features are the input, so the kernel is
    fc-nngp of depth 0, w_std^2 <x, y> / d + b_std^2, whatever models is (this failed inside lax.map)."""
    x = np.random.default_rng(1).standard_normal((3, 4, 4, 2))
    with jax.enable_x64(True):
        rf = np.asarray(from_spec("rf-fc:depth=0,models=3,w_std=1.5,b_std=0.2")(x, x))
        f = x.reshape(3, -1)
        np.testing.assert_allclose(rf, 1.5**2 * f @ f.T / f.shape[1] + 0.2**2, rtol=1e-12)
        np.testing.assert_allclose(rf, np.asarray(from_spec("fc-nngp:depth=0,w_std=1.5,b_std=0.2")(x, x)), rtol=1e-12)


def test_python_values_are_converted_to_the_recorded_type():
    k = from_spec("rbf", gamma=1)
    assert k.params == (("gamma", 1.0),) and type(k.param("gamma")) is float
    assert from_spec("rbf:gamma=-0.0").spec == "rbf:gamma=0.0"  # the sign of zero does not leak into the record
    assert from_spec("rbf", gamma=np.float32(0.5)).param("gamma") == 0.5
    assert type(from_spec("fc-ntk", depth=np.int64(2)).param("depth")) is int
    assert from_spec("fc-ntk", depth=" 2 ").param("depth") == 2  # a string from Python reads like a spec's
    # the override wins, but a bad value in the string is still reported
    assert from_spec("fc-ntk:depth=5", depth=2).param("depth") == 2
    _spec_error("fc-ntk", "depth", "fc-ntk:depth=nan", depth=2)
    # Kernel specs round-trip through from_spec with overrides validated too
    k = from_spec("fc-ntk:depth=2")
    _spec_error("fc-ntk", "w_std", k, w_std=float("inf"))


@pytest.mark.parametrize("builder,key,value", [
    (K.rbf, "gamma", float("nan")), (K.rff, "gamma", float("inf")), (K.fc_ntk, "depth", 10**9),
    (K.fcnn, "slope", float("inf")), (K.rf_fc, "width", 10**8), (K.convnet_nngp, "block_mb", 0),
])
def test_the_python_builders_validate_too(builder, key, value):
    with pytest.raises(SpecError, match=f"^kernel '[a-z-]+': {key}="):
        builder(**{key: value})
    with pytest.raises(SpecError, match="has no parameter 'nope'"):
        builder(nope=1)


@pytest.mark.parametrize("spec,got", [(42, "int 42"), (None, "NoneType None"), (b"rbf", "bytes"),
                                      (["rbf"], "list"), (3.5, "float 3.5")])
def test_a_spec_must_be_a_string_or_a_kernel(spec, got):
    with pytest.raises(SpecError) as err:
        from_spec(spec)
    msg = str(err.value)
    assert "\n" not in msg and "must be a string" in msg and msg.endswith(f"got {got}"), msg
    with pytest.raises(SpecError, match="empty kernel spec"):
        from_spec("  ")


@pytest.mark.parametrize("spec,words", [
    ("fc-ntk:depth=100,w_std=10", ["w_std=10.0", "depth=100", "overflows"]),
    ("convnet-ntk:depth=10,w_std=0.01,b_std=0", ["w_std=0.01", "depth=10", "underflows", "b_std > 0"]),
    ("rf-fc:depth=100,w_std=3", ["w_std=3.0", "depth=100", "overflows"]),
    ("fc-nngp:depth=100,w_std=0.5,b_std=0", ["w_std=0.5", "depth=100", "underflows", "b_std > 0"]),
    ("fcnn:depth=32,w_std=0.1", ["w_std=0.1", "depth=32", "underflows"]),
])
def test_scale_combinations_that_overflow_or_underflow_are_refused(spec, words):
    with pytest.raises(SpecError) as err:
        from_spec(spec)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"kernel {spec.split(':')[0]!r}: ")
    for w in words:
        assert w in msg, msg
    # the published settings are far from it
    for ok in ["fc-ntk:depth=10", "fc-ntk:depth=100", "fc-ntk:depth=100,w_std=1.5,b_std=0.05", "convnet-ntk:depth=3",
               "fc-nngp:depth=100,w_std=1,b_std=0.1", "rf-convnet:depth=3,width=1024,models=8", "fcnn:depth=32"]:
        from_spec(ok)


@pytest.mark.parametrize("spec", ["rf-fc:width=16384,models=8", "rf-fc:width=16384,models=2,depth=3",
                                  "rf-convnet:width=4096,models=4,depth=3", "rf-convnet:models=1024,width=1024",
                                  "rf-fc:depth=100,width=8192"])
def test_random_weights_beyond_the_memory_cap_are_refused_at_build(spec):
    with pytest.raises(SpecError) as err:
        from_spec(spec)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"kernel {spec.split(':')[0]!r}: random weights of models=")
    assert "needed (limit 4 GiB); lower width, models or depth" in msg, msg
    size, unit = msg.split("about ")[1].split(" needed")[0].split()
    assert {"GiB": 2**30, "TiB": 2**40}[unit] * float(size) >= 0.999 * MAX_BYTES


def test_memory_that_depends_on_the_images_is_refused_when_they_are_seen():
    """The d x d weights of fcnn/rff and the random networks' weights and activations depend on
    the image size: refused while tracing (no array allocated), with the estimate."""
    big = jax.ShapeDtypeStruct((2, 224, 224, 3), np.float32)
    for spec in ["fcnn", "rff", "fcnn:depth=4"]:
        with pytest.raises(SpecError, match=r"random 150528 x 150528 weights.*GiB needed \(limit 4 GiB\); lower"):
            jax.eval_shape(from_spec(spec).features, big)
    with pytest.raises(SpecError, match=r"^kernel 'rf-convnet': .*models=8, width=2048, depth=0 on 224x224x3 images: "
                                        r"about .* needed \(limit 4 GiB\); lower width, models or depth"):
        jax.eval_shape(from_spec("rf-convnet:width=2048,models=8,depth=0").features, big)
    with pytest.raises(SpecError, match=r"^kernel 'rf-fc': .*models=8, width=2048, depth=1 on 224x224x3 images"):
        jax.eval_shape(from_spec("rf-fc:width=2048,models=8,depth=1").features, big)
    with pytest.raises(InvalidInputError, match=r"128x128 images need about .* per image pair"):
        jax.eval_shape(from_spec("convnet-ntk:depth=1"), *[jax.ShapeDtypeStruct((1, 128, 128, 1), np.float32)] * 2)
    # the same kernels are fine on small images
    small = jax.ShapeDtypeStruct((2, 8, 8, 1), np.float32)
    for spec in ["fcnn:depth=4", "rff", "rf-convnet:width=2048,models=8,depth=0", "rf-fc:width=2048,models=8,depth=1"]:
        assert jax.eval_shape(from_spec(spec).features, small).shape[0] == 2


def test_describe_shows_default_type_and_range():
    assert _param("fc-ntk", "depth").describe("depth") == "depth=3 (int, 0..100)"
    assert _param("rbf", "gamma").describe() == "0.0 (float, 0..1e+06)"
    assert Param(float, 1.0, min=0.0, max=2.0, min_exclusive=True).describe("x") == "x=1.0 (float, (0, 2])"
    assert Param(float, 1.0, min=0.0, max=2.0, min_exclusive=True).allowed() == "a number > 0 and <= 2"
    for name, key in PARAMS:
        p = _param(name, key)
        assert p.describe(key).startswith(f"{key}={p.default!r} ({p.type.__name__}")


def _kdistill(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    exe = os.path.join(os.path.dirname(sys.executable), "kdistill")
    start = time.perf_counter()
    p = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)
    return p, time.perf_counter() - start


@pytest.mark.parametrize("spec,message", [
    ("fc-ntk:depth=1000000000", "error: kernel 'fc-ntk': depth=1000000000 is out of range; use an integer in 0 .. 100"),
    ("rbf:gamma=nan", "error: kernel 'rbf': gamma=nan is not a finite number; use a number in 0 .. 1e+06"),
])
def test_cli_refuses_a_bad_kernel_at_once(tmp_path, spec, message):
    out = tmp_path / "out"
    p, seconds = _kdistill("distill", "--dataset", "digits", "--ipc", "1", "--no-full", "--no-baseline",
                           "--kernel", spec, "--out", str(out))
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert p.stderr.splitlines() == [message], p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    assert seconds < 30, seconds  # start-up only: nothing is built or loaded
    assert not out.exists() and list(tmp_path.iterdir()) == []


BOOL_WORDS = ["1", "0", "true", "False", "YES", "no", " on ", "Off", "y", "n", "2", "", "truee", "none"]


def test_kernel_parameters_and_method_options_accept_and_refuse_the_same_values():
    """Kernel spec parameters and method options share one validator (kdistill._values.convert_value): the
    same boolean words (those of method options: 1/0/true/false/yes/no/on/off, any case), the same range
    checks and the same range text; only the wording around it differs (a kernel's message names its spec)."""
    from kdistill._values import range_text
    from kdistill.methods import Option

    def outcome(convert, value):
        """("ok", converted value) or ("refused", message)."""
        try:
            return "ok", convert(value)
        except (SpecError, InvalidInputError) as err:
            return "refused", str(err)

    param, option = Param(bool, False), Option("flag", bool)
    for word in [*BOOL_WORDS, True, False, np.bool_(True), 1, 0, None]:
        kernel_side = outcome(lambda v: param.convert("k", "flag", v), word)
        method_side = outcome(lambda v: option.convert("m", v), word)
        assert kernel_side[0] == method_side[0], (word, kernel_side, method_side)
        if kernel_side[0] == "ok":
            assert kernel_side == method_side and type(kernel_side[1]) is bool, word
    assert param.convert("k", "flag", "on") is True and param.convert("k", "flag", "OFF") is False

    for exclusive in (False, True):
        param = Param(float, 1.0, min=0.0, max=2.0, min_exclusive=exclusive)
        option = Option("x", float, 1.0, min=0.0, max=2.0, min_exclusive=exclusive)
        for value in [-1.0, 0.0, 1e-300, 1.0, 2.0, 2.0000001, "0", "2", "3", float("nan"), "inf", 10**400, True]:
            kernel_side = outcome(lambda v: param.convert("k", "x", v), value)
            method_side = outcome(lambda v: option.convert("m", v), value)
            assert kernel_side[0] == method_side[0], (value, kernel_side, method_side)
            if kernel_side[0] == "ok":
                assert kernel_side == method_side and type(kernel_side[1]) is float, value
        text = range_text(0.0, 2.0, exclusive)
        assert text == ("> 0 and <= 2" if exclusive else ">= 0 and <= 2")
        assert outcome(lambda v: option.convert("m", v), 3.0) == ("refused", f"method 'm': --x must be {text}, got 3.0")
        assert outcome(lambda v: param.convert("k", "x", v), 3.0) == (
            "refused", "kernel 'k': x=3.0 is out of range; use " + (f"a number {text}" if exclusive
                                                                    else "a number in 0 .. 2"))
