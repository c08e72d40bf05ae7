"""The contract every registered kernel family keeps (STYLE.md habit 11).

Parametrised over ``kdistill.kernels.families()``, so a newly registered family is
checked automatically: right shape, symmetric and positive semi-definite on
(x, x), gradients in x1 and x2 equal to finite differences (float64), no retracing
or recompilation for repeated same-shape calls (counted with ``jax.monitoring``), a
canonical spec that rebuilds a kernel with the same values (every parameter
non-default, see ``SMALL``), and one-line :class:`~kdistill.errors.SpecError` messages that
name the valid choices.
"""

from __future__ import annotations

import collections
import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdistill.errors import SpecError
from kdistill.kernels import families, from_spec

# Every parameter of every family set to a non-default value (so that a spec that drops or rounds
# one rebuilds a kernel with other values), at cheap sizes. A new family needs an entry here.
W_STD = 1.2345678901234567  # all 17 digits matter
SMALL = {
    "convnet-ntk": dict(depth=1, stem=0, w_std=W_STD, b_std=0.3, block_mb=32),  # one tile of pairs here (the cheapest)
    "convnet-nngp": dict(depth=1, stem=0, w_std=W_STD, b_std=0.3, block_mb=32),
    "fc-ntk": dict(depth=2, w_std=W_STD, b_std=0.3),
    "fc-nngp": dict(depth=2, w_std=W_STD, b_std=0.3),
    "cnn": dict(depth=1, kernel=5, patch=3, slope=0.2345678901234567, offcentre=0.2345678901234567, seed=3),
    "deep-linear": dict(depth=3, width=20, seed=3),
    "fcnn": dict(depth=2, slope=0.2345678901234567, w_std=W_STD, seed=3, width=30),
    "inn": dict(depth=2, width=8, scale=0.2345678901234567, seed=3),
    "linear": dict(),
    "rbf": dict(gamma=0.012345678901234567),
    "rff": dict(gamma=0.012345678901234567, seed=3),
    "rf-convnet": dict(models=2, width=8, depth=1, w_std=W_STD, b_std=0.3, seed=3, stem=0),
    "rf-fc": dict(models=2, width=16, depth=2, w_std=W_STD, b_std=0.3, seed=3),
}

FAMILIES = sorted({fam.name for fam in families().values()})
SHAPE = (6, 6, 2)


@functools.cache
def _kernel(name: str):
    return from_spec(name, **SMALL.get(name, {}))


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((5, *SHAPE)), rng.standard_normal((4, *SHAPE))


# NumPy inputs take the host path of kernels with one (Kernel.host_features), JAX arrays the compiled one
# (what KIP's gradients use): the contract tests run both.
AS_INPUT = {"numpy": np.asarray, "jax": jnp.asarray}


@pytest.mark.parametrize("kind", sorted(AS_INPUT))
@pytest.mark.parametrize("name", FAMILIES)
def test_shape_symmetry_and_psd(name, kind):
    k = _kernel(name)
    if kind == "jax" and k.host_features is None:
        return  # one path only: the numpy case covers it
    x1, x2 = (AS_INPUT[kind](x) for x in _inputs())
    with jax.enable_x64(True):
        assert k(x1, x2).shape == (5, 4)
        gram = np.asarray(k(x1, x1), dtype=np.float64)
    assert gram.shape == (5, 5)
    np.testing.assert_allclose(gram, gram.T, rtol=1e-10, atol=1e-12 * np.abs(gram).max())
    eig = np.linalg.eigvalsh((gram + gram.T) / 2)
    assert eig.min() >= -1e-6 * eig.max(), eig


@pytest.mark.parametrize("name", FAMILIES)
def test_gradients_match_finite_differences(name):
    k = _kernel(name)
    x1, x2 = _inputs(1)
    rng = np.random.default_rng(2)
    weights, d1, d2 = rng.standard_normal((5, 4)), rng.standard_normal(x1.shape), rng.standard_normal(x2.shape)
    eps = 1e-6
    with jax.enable_x64(True):
        loss = lambda a, b: jnp.sum(weights * k(a, b))  # noqa: E731
        g1, g2 = jax.grad(loss, argnums=(0, 1))(x1, x2)
        assert g1.shape == x1.shape and g2.shape == x2.shape and g1.dtype == jnp.float64
        fd1 = (loss(x1 + eps * d1, x2) - loss(x1 - eps * d1, x2)) / (2 * eps)
        fd2 = (loss(x1, x2 + eps * d2) - loss(x1, x2 - eps * d2)) / (2 * eps)
    assert float(jnp.vdot(g1, d1)) == pytest.approx(float(fd1), rel=1e-5, abs=1e-8)
    assert float(jnp.vdot(g2, d2)) == pytest.approx(float(fd2), rel=1e-5, abs=1e-8)


TRACE = "/jax/core/compile/jaxpr_trace_duration"
COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def _jax_events():
    """Count JAX's tracing and XLA compilation events (``jax.monitoring``) inside the block."""
    events: collections.Counter = collections.Counter()

    def listener(event, duration, **_):
        events[event] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def test_compile_events_are_counted():
    """The listener below sees JAX trace and compile (else the next test could not fail)."""
    with _jax_events() as events:
        jax.jit(lambda a: a * 2 + 1)(np.arange(3.0))
    assert events[TRACE] >= 1 and events[COMPILE] >= 1, dict(events)


@pytest.mark.parametrize("kind", sorted(AS_INPUT))
@pytest.mark.parametrize("name", FAMILIES)
def test_repeated_same_shape_calls_do_not_retrace_or_recompile(name, kind):
    k = _kernel(name)
    if kind == "jax" and k.host_features is None:
        return  # one path only: the numpy case covers it
    x1, x2 = (AS_INPUT[kind](x) for x in _inputs(3))
    out = k(x1, x2)  # compiled here, or already by another test at these shapes
    phi = None if k.features is None else k.features(x1)
    with _jax_events() as later:
        for s in (4, 5):  # new values, same shapes and dtype
            y1, y2 = (AS_INPUT[kind](x) for x in _inputs(s))
            k(y1, y2)
            if k.features is not None:
                k.features(y1)
        again = k(x1, x2)
        phi_again = None if k.features is None else k.features(x1)
    assert later[TRACE] == 0 and later[COMPILE] == 0, dict(later)
    np.testing.assert_array_equal(out, again)
    if phi is not None:
        np.testing.assert_array_equal(phi, phi_again)


@pytest.mark.parametrize("name", FAMILIES)
def test_canonical_spec_round_trip(name):
    assert name in SMALL, f"give the new kernel family {name!r} non-default test parameters in SMALL"
    params = families()[name].params
    assert set(SMALL[name]) == set(params)
    for p, v in SMALL[name].items():
        assert v != params[p].default, p
    k = _kernel(name)
    rebuilt = from_spec(k.spec)
    assert rebuilt is not k and rebuilt.spec == k.spec and rebuilt.name == name and k.spec.startswith(name)
    for p, v in SMALL[name].items():
        assert rebuilt.param(p) == v and type(rebuilt.param(p)) is type(v), p
    x1, x2 = _inputs(6)
    np.testing.assert_allclose(np.asarray(rebuilt(x1, x2)), np.asarray(k(x1, x2)), rtol=1e-12, atol=0)
    # the defaults round-trip too (strings only: default neural kernels are slow to compile)
    default = from_spec(name)
    assert from_spec(default.spec).spec == default.spec and from_spec(default.spec).params == default.params


def test_unknown_kernel_names_the_valid_ones():
    with pytest.raises(SpecError) as err:
        from_spec("no-such-kernel")
    msg = str(err.value)
    assert "\n" not in msg
    for name in FAMILIES:
        assert name in msg


@pytest.mark.parametrize("name", FAMILIES)
def test_unknown_parameter_names_the_valid_ones(name):
    with pytest.raises(SpecError) as err:
        from_spec(f"{name}:no_such_param=1")
    msg = str(err.value)
    assert "\n" not in msg and "no_such_param" in msg
    for param in families()[name].params:
        assert param in msg


@pytest.mark.parametrize("name", [n for n in FAMILIES if families()[n].params])
def test_badly_typed_value_is_a_spec_error(name):
    for param, p in families()[name].params.items():
        if p.type in (int, float):
            with pytest.raises(SpecError) as err:
                from_spec(f"{name}:{param}=not-a-number")
            assert "\n" not in str(err.value) and param in str(err.value)


NEURAL = ["fc-ntk", "fc-nngp", "convnet-ntk", "convnet-nngp", "rf-convnet", "rf-fc"]
OUT_OF_RANGE = ["depth=-1", "w_std=0", "w_std=-1", "b_std=-0.5", "w_std=nan", "depth=1.5"]


@pytest.mark.parametrize("name", NEURAL)
@pytest.mark.parametrize("bad", OUT_OF_RANGE)
def test_out_of_range_values_are_spec_errors(name, bad):
    with pytest.raises(SpecError) as err:
        from_spec(f"{name}:{bad}")
    msg = str(err.value)
    assert "\n" not in msg and name in msg and bad.split("=")[0] in msg


@pytest.mark.parametrize("spec", ["rf-convnet:models=0", "rf-fc:width=0", "rf-fc:seed=-1", "convnet-ntk:block_mb=0"])
def test_out_of_range_sizes_are_spec_errors(spec):
    with pytest.raises(SpecError, match=spec.split(":")[1].split("=")[0]):
        from_spec(spec)


def test_python_overrides_are_validated_too():
    assert from_spec("fc-ntk", depth=2).spec == "fc-ntk:depth=2,w_std=1.4142135623730951,b_std=0.1"
    # an int where a float is expected is accepted and canonicalised
    assert from_spec("fc-nngp", w_std=2).param("w_std") == 2.0
    with pytest.raises(SpecError, match="depth"):
        from_spec("fc-ntk", depth=2.5)


RANDOM_FEATURES = [n for n in FAMILIES if _kernel(n).draw_features is not None]


def test_random_feature_kernels_can_be_redrawn():
    assert set(RANDOM_FEATURES) == {"rf-convnet", "rf-fc"}
    for name in FAMILIES:
        k = _kernel(name)
        assert (k.keyed is None) == (k.draw_features is None), name


@pytest.mark.parametrize("name", RANDOM_FEATURES)
def test_draw_features_at_the_spec_seed_are_the_features(name):
    """``Kernel.draw_features`` at the key of the spec's seed gives ``features``; another key other networks;
    ``models``/``width`` replace the spec's; ``keyed`` is the kernel of the same draw."""
    k = _kernel(name)
    x1, x2 = _inputs(7)
    draw = jax.jit(lambda x, key: k.draw_features(x, key=key))
    seed_key = jax.random.key(k.param("seed"))
    with jax.enable_x64(True):
        phi = np.asarray(k.features(x1))
        np.testing.assert_allclose(np.asarray(draw(x1, seed_key)), phi, rtol=1e-12, atol=1e-14)
        other = np.asarray(draw(x1, jax.random.key(k.param("seed") + 1)))
        assert other.shape == phi.shape and np.abs(other - phi).max() > 1e-3 * np.abs(phi).max()
        smaller = k.draw_features(x1, key=seed_key, models=1, width=4)
        per_unit = (phi.shape[1] - 1) // (k.param("models") * k.param("width"))  # features per unit of width
        assert smaller.shape == (5, per_unit * 4 + 1)
        key = jax.random.key(11)
        np.testing.assert_allclose(np.asarray(k.keyed(key, x1, x2)),
                                   np.asarray(k.draw_features(x1, key=key) @ k.draw_features(x2, key=key).T),
                                   rtol=1e-12, atol=1e-14)
