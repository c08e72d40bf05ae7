"""kdistill.nets.conv3x3: every formulation, every backward piece and the plans "auto" takes, against
lax.conv_general_dilated (values, gradients w.r.t. the input and the weights, a second derivative, vmap),
and lax.conv itself against a NumPy sum over the 9 taps.

Each check runs all shapes in one jitted call (compiling is most of the cost). The suite runs this file
in float64 with KDISTILL_TEST_X64=1 and in float32 with KDISTILL_TEST_X64=0."""

import doctest
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from conftest import X64
from kdistill.errors import InvalidInputError
from kdistill.nets import FORMULATIONS, conv3x3
from kdistill.nets import _conv

# (n, h, w, c_in, c_out): c_in = 1 (MNIST's first layer), odd and non-square images, batch 1, c_out = 1, both
# sides of auto's narrow threshold (16), a 1-pixel-high image (its upper and lower taps read only padding).
SHAPES = [(1, 7, 5, 1, 4), (2, 6, 3, 16, 5), (2, 1, 7, 17, 1), (3, 2, 2, 20, 6)]  # the last: a tiny 2x2 map
DTYPE = np.float64 if X64 else np.float32
# Relative to the largest entry of the reference (a sum of 9 c_in products, so absolute errors scale with it).
RTOL = {np.float32: 1e-5, np.float64: 1e-12}[DTYPE]
# The plans "auto" takes for a narrow first layer and for a large wide layer; the rule picks NARROW and plain
# XLA on the small shapes here, TAPS is forced on them.
NARROW, TAPS = _conv._plan(256, 28, 28, 1, 128), _conv._plan(256, 28, 28, 256, 256)


def _reference(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _close(actual, expected):
    for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        b = np.asarray(b)
        assert np.asarray(a).dtype == b.dtype == DTYPE
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL * max(float(np.abs(b).max()), 1.0))


def _draw(shape, seed):
    n, h, w, c_in, c_out = shape
    rng = np.random.default_rng(seed)
    draw = lambda *s: jnp.asarray(rng.standard_normal(s).astype(DTYPE))  # noqa: E731
    return draw(n, h, w, c_in), draw(3, 3, c_in, c_out), draw(n, h, w, c_out)


DATA = [_draw(s, seed) for seed, s in enumerate(SHAPES)]


def _value_and_grads(conv):
    """For every (x, w, g) of DATA: conv(x, w) and the gradients of the random linear functional
    <conv(x, w), g> w.r.t. x and w, in one jitted call."""
    def one(x, w, g):
        return conv(x, w), jax.grad(lambda a, b: jnp.vdot(conv(a, b), g), (0, 1))(x, w)
    return jax.jit(lambda data: [one(*d) for d in data])(DATA)


@functools.cache
def _expected():
    return _value_and_grads(_reference)


@pytest.fixture
def force_plan(monkeypatch):
    def force(plan):
        if plan is not None:
            monkeypatch.setattr(_conv, "_plan", lambda *shape: plan)
    return force


def test_auto_rule_on_the_measured_shapes():
    assert NARROW == ("xla", "col2im", "patches") and TAPS == ("xla", "xla", "taps")
    assert _conv._plan(256, 14, 14, 128, 128) == TAPS
    assert _conv._plan(256, 7, 7, 128, 128) == _conv._XLA  # 3.7 GFLOP: XLA's weight gradient is fast there
    assert _conv._plan(32, 28, 28, 1024, 1024) == TAPS
    # XLA's convolution collapses on maps of at most 4 pixels (VGG-11's last stage): patches there
    assert _conv._plan(500, 2, 2, 512, 512) == _conv._plan(500, 1, 1, 512, 512) == _conv._PATCHES
    assert _conv._plan(500, 3, 3, 128, 128) == _conv._XLA and _conv._plan(500, 4, 4, 512, 512) == TAPS
    assert _conv._plan(10, 2, 2, 1, 64) == _conv._PATCHES


def test_reference_matches_numpy_sum_of_taps():
    x, w, _ = DATA[1]
    h, wd = x.shape[1:3]
    xp = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
    _close(_reference(x, w), sum(xp[:, i : i + h, j : j + wd, :] @ np.asarray(w)[i, j]
                                 for i in range(3) for j in range(3)))


@pytest.mark.parametrize("formulation, plan", [(f, None) for f in FORMULATIONS] + [("auto", TAPS)],
                         ids=list(FORMULATIONS) + ["auto-taps"])
def test_values_and_gradients_match_lax(formulation, plan, force_plan):
    force_plan(plan)
    _close(_value_and_grads(functools.partial(conv3x3, formulation=formulation)), _expected())


def test_backward_pieces_match_lax():
    """Every input- and weight-gradient formulation "auto" can choose, on every shape (but XLA's weight
    gradient, which is the reference's own)."""
    weight_grads = [f for name, f in _conv._WEIGHT_GRAD.items() if name != "xla"]

    def pieces(data):
        return [([f(g, w) for f in _conv._INPUT_GRAD.values()], [f(x, g) for f in weight_grads]) for x, w, g in data]
    got = jax.jit(pieces)(DATA)
    for (dxs, dws), (_, (dx, dw)) in zip(got, _expected(), strict=True):
        _close(dxs, [dx] * len(dxs))
        _close(dws, [dw] * len(dws))


def _two_layers(formulation):
    """Two conv layers (c_in 1 -> 20 -> 18), jitted: the gradient w.r.t. the input of the squared norm of the
    weight gradient (DC's gradient matching differentiates through a backward pass), and the input gradient
    vmapped over a leading axis of inputs."""
    x, w1, _ = _draw((2, 6, 5, 1, 20), 10)
    _, w2, g = _draw((2, 6, 5, 20, 18), 11)

    def f(a, p):
        h = jnp.tanh(conv3x3(a, p[0], formulation=formulation))
        return jnp.vdot(jnp.tanh(conv3x3(h, p[1], formulation=formulation)), g)

    def second(a, p):
        return jax.grad(lambda a_: sum(jnp.sum(q**2) for q in jax.grad(f, 1)(a_, p)))(a)

    return jax.jit(lambda a, p, b: (second(a, p), jax.vmap(lambda c: jax.grad(f)(c, p))(b)))(
        x, (w1, w2), jnp.stack([x, -x[::-1]]))


@functools.cache
def _two_layers_expected():
    return _two_layers("xla")


@pytest.mark.parametrize("plan", [None, TAPS], ids=["rule", "taps"])
def test_auto_equals_xla_second_order_and_vmapped(plan, force_plan):
    force_plan(plan)
    _close(_two_layers("auto"), _two_layers_expected())


def test_misuse_is_a_one_line_error():
    x, w, _ = DATA[1]
    with pytest.raises(InvalidInputError, match="formulation must be one of auto, xla"):
        conv3x3(x, w, formulation="winograd")
    with pytest.raises(InvalidInputError, match=r"w \(3, 3, c_in, c_out\), got x \(2, 6, 3, 16\) and w \(3, 3, 1, 5\)"):
        conv3x3(x, w[:, :, :1])
    with pytest.raises(InvalidInputError, match=r"w \(2, 3, 16, 5\)"):
        conv3x3(x, w[:2], formulation="xla")


def test_docstring_examples():
    failures, tried = doctest.testmod(_conv)
    assert tried > 0 and failures == 0
