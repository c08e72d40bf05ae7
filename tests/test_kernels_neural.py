"""NTK / NNGP kernels against two independent references.

1. neural-tangents 0.6.5 (stax, parameterization 'ntk'), float64 values stored in
   ``tests/reference/nt_values.npz`` by ``tests/reference/make_nt_reference.py``
   (the versions used are in ``nt_versions.json``).
2. Monte-Carlo: empirical NTKs of random finite networks in the NTK parameterization
   (``kdistill.nets.ntk``), whose error shrinks like 1/sqrt(width), and the
   random-feature kernels ``rf-*``, which approach the NNGP as models * width grows.
"""

from __future__ import annotations

import functools
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdistill.kernels import from_spec
from kdistill.nets import ntk as _finite

REF_DIR = pathlib.Path(__file__).parent / "reference"
REF = np.load(REF_DIR / "nt_values.npz")
CASES = json.loads((REF_DIR / "nt_versions.json").read_text())["cases"]

# Agreement with neural-tangents in float64. Not 1e-12: on the diagonal of K(x, x)
# rho = 1 up to rounding, where arccos has infinite slope (1 ulp in rho moves J0 by ~1e-9).
NT_RTOL = 1e-5


# architecture of a reference case (make_nt_reference.py) -> (kernel family prefix, extra spec parameters)
ARCH_SPEC = {"fc": ("fc", ""), "convnet": ("convnet", ""), "convnet_nostem": ("convnet", ",stem=0")}


def _spec(arch: str, get: str, meta: dict) -> str:
    family, extra = ARCH_SPEC[arch]
    return f"{family}-{get}:depth={meta['depth']},w_std={meta['w_std']!r},b_std={meta['b_std']!r}{extra}"


@pytest.mark.parametrize("get", ["ntk", "nngp"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_neural_tangents(case, get):
    meta = CASES[case]
    x1, x2 = REF[f"{case}/x1"], REF[f"{case}/x2"]
    n1 = len(x1)
    with jax.enable_x64(True):
        k = from_spec(_spec(meta["arch"], get, meta))
        # one call gives K(x1, x1) and K(x1, x2) (and exercises n1 != n2)
        both = k(x1, np.concatenate([x1, x2]))
    assert both.dtype == jnp.float64
    np.testing.assert_allclose(both[:, :n1], REF[f"{case}/{get}11"], rtol=NT_RTOL, atol=0)
    np.testing.assert_allclose(both[:, n1:], REF[f"{case}/{get}12"], rtol=NT_RTOL, atol=0)


def test_float32_close_to_float64_reference():
    case = "convnet_d2"
    meta = CASES[case]
    x1, x2 = REF[f"{case}/x1"].astype(np.float32), REF[f"{case}/x2"].astype(np.float32)
    with jax.enable_x64(False):
        k = from_spec(_spec("convnet", "ntk", meta))
        out = k(x1, x2)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, REF[f"{case}/ntk12"], rtol=2e-4)


# ---------------------------------------------------------------- Monte-Carlo

W_STD, B_STD = math.sqrt(2.0), 0.1


def _empirical_ntk(arch: str, x, *, width: int, depth: int, seeds: int) -> list[jax.Array]:
    """J J^T for ``seeds`` random networks, J the Jacobian of the scalar output w.r.t.
    all standard-normal parameters (one compilation, networks drawn outside jit)."""
    n, h, w, c = x.shape
    if arch == "fc":
        init = functools.partial(_finite.init_fc, d_in=h * w * c, width=width, depth=depth)
        apply = _finite.apply_fc
    else:
        init = functools.partial(_finite.init_convnet, c_in=c, width=width, depth=depth, spatial=(h, w))
        apply = _finite.apply_convnet

    @jax.jit
    def ntk(params):
        params = jax.tree.map(lambda a: a.astype(x.dtype), params)
        jac = jax.jacrev(lambda p: apply(p, x, w_std=W_STD, b_std=B_STD))(params)
        jac = jnp.concatenate([j.reshape(n, -1) for j in jax.tree.leaves(jac)], axis=1)
        return jac @ jac.T

    return [ntk(init(jax.random.key(s))) for s in range(seeds)]


@pytest.mark.parametrize("arch, depth, width", [("fc", 2, 128), ("convnet", 1, 64)])
def test_empirical_ntk_error_shrinks_like_inverse_sqrt_width(arch, depth, width, seeds=12):
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(1).standard_normal((4, 6, 6, 1)))
        exact = from_spec(f"{arch}-ntk:depth={depth}")(x, x)

        def mean_error(wd):
            kernels = _empirical_ntk(arch, x, width=wd, depth=depth, seeds=seeds)
            return float(np.mean([jnp.linalg.norm(e - exact) / jnp.linalg.norm(exact) for e in kernels]))

        e1, e4 = mean_error(width), mean_error(4 * width)
    # 1/sqrt(width): quadrupling the width halves the error. Per-seed errors are
    # heavy-tailed; over 12 seeds the ratio was 0.42-0.55 for four input draws.
    assert 0.3 < e4 / e1 < 0.75, (e1, e4)
    assert e4 < 0.15


@pytest.mark.parametrize("arch", ["fc", "convnet", "convnet:stem=0"])
def test_random_features_approach_nngp_at_the_monte_carlo_rate(arch):
    # networks x width grows 64-fold (1x16 .. 8x128): the RMS error of the random-feature kernel against
    # the exact NNGP, over 16 draws, should shrink like (models * width)^(-1/2) (the finite-width bias
    # of a depth-2 net is O(1/width), which here shrinks at the same rate)
    with jax.enable_x64(True):
        x = np.random.default_rng(2).standard_normal((4, 8, 8, 2))
        arch, _, extra = arch.partition(":")
        extra = "," + extra if extra else ""
        exact = np.asarray(from_spec(f"{arch}-nngp:depth=2{extra}")(x, x))
        sizes, errors = [], []
        for models, width in [(1, 16), (2, 32), (4, 64), (8, 128)]:
            keyed = jax.jit(from_spec(f"rf-{arch}:depth=2,models={models},width={width}{extra}").keyed)
            diffs = [np.asarray(keyed(jax.random.key(s), x, x)) - exact for s in range(16)]
            sizes.append(models * width)
            errors.append(np.sqrt(np.mean(np.square(diffs)) / np.mean(exact**2)))
    slope = np.polyfit(np.log(sizes), np.log(errors), 1)[0]
    assert -0.75 < slope < -0.35, (errors, slope)
    assert errors[-1] < 0.15, errors


@pytest.mark.parametrize("arch", ["fc", "convnet"])
def test_random_feature_map_reproduces_kernel(arch):
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        x1, x2 = rng.standard_normal((3, 8, 8, 1)), rng.standard_normal((2, 8, 8, 1))
        k = from_spec(f"rf-{arch}:depth=1,models=3,width=16")
        f1, f2 = k.features(x1), k.features(x2)
        assert f1.shape == (3, 3 * (16 * 16 if arch == "convnet" else 16) + 1)
        np.testing.assert_allclose(f1 @ f2.T, k(x1, x2), rtol=1e-12)
        # the same seed draws the same networks; another seed draws others
        again = from_spec(f"rf-{arch}:depth=1,models=3,width=16")
        np.testing.assert_array_equal(again.features(x1), f1)
        other = from_spec(f"rf-{arch}:depth=1,models=3,width=16,seed=1")
        assert not np.allclose(other.features(x1), f1)


def test_rf_convnet_chunks_images_consistently():
    # more images than one chunk of the feature map: same rows as one at a time
    with jax.enable_x64(True):
        x = np.random.default_rng(4).standard_normal((70, 4, 4, 1))
        k = from_spec("rf-convnet:depth=1,models=2,width=4")
        np.testing.assert_allclose(k.features(x)[65:], k.features(x[65:]), rtol=1e-12)


def test_convnet_tiles_do_not_change_values_or_gradients():
    with jax.enable_x64(True):
        rng = np.random.default_rng(5)
        x1, x2 = rng.standard_normal((5, 8, 8, 1)), rng.standard_normal((3, 8, 8, 1))
        weights = rng.standard_normal((5, 3))

        def value_and_grad(spec):
            k = from_spec(spec)
            return jax.value_and_grad(lambda a: jnp.sum(weights * k(a, x2)))(x1)

        v_one, g_one = value_and_grad("convnet-ntk:depth=1,block_mb=64")
        # block_mb=1 with 8x8 images in float64: two pairs per tile, so several tiles
        # on both sides and padded rows in both
        v_many, g_many = value_and_grad("convnet-ntk:depth=1,block_mb=1")
    np.testing.assert_allclose(v_many, v_one, rtol=1e-12)
    assert np.all(np.isfinite(g_many))
    np.testing.assert_allclose(g_many, g_one, rtol=1e-10, atol=1e-14)


def test_convnet_rejects_images_too_small_for_depth():
    from kdistill.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="too small"):
        from_spec("convnet-nngp:depth=3")(np.zeros((2, 4, 4, 1)), np.zeros((2, 4, 4, 1)))
    with pytest.raises(InvalidInputError, match="too small"):
        from_spec("convnet-nngp:depth=3,stem=0")(np.zeros((2, 4, 4, 1)), np.zeros((2, 4, 4, 1)))


def test_convnet_stem_values_checked():
    from kdistill.errors import InvalidInputError, SpecError
    from kdistill.kernels._convnet import convnet_kernel

    assert from_spec("convnet-ntk").spec == from_spec("convnet-ntk:stem=1").spec
    assert ",stem=0," in from_spec("convnet-ntk:stem=0").spec
    with pytest.raises(SpecError, match="stem=2 is out of range"):
        from_spec("convnet-ntk:stem=2")
    with pytest.raises(SpecError, match="stem=0 needs depth >= 1"):
        from_spec("convnet-ntk:stem=0,depth=0")
    with pytest.raises(InvalidInputError, match="stem=2 is not 0 or 1"):
        convnet_kernel(np.zeros((1, 4, 4, 1)), np.zeros((1, 4, 4, 1)), stem=2)


@pytest.mark.parametrize("get", ["ntk", "nngp"])
@pytest.mark.parametrize("shape", [(4, 4, 1), (5, 4, 1)])
def test_convnet_without_stem_gradients_match_finite_differences(get, shape):
    # stem=0 pools after the first Conv, ReLU (at full resolution); the hand-written backward pass must
    # follow it, also when an odd row is dropped there (5x4). Off the diagonal of K(x, x): rho < 1.
    with jax.enable_x64(True):
        rng = np.random.default_rng(8)
        x1, x2 = rng.standard_normal((2, *shape)), rng.standard_normal((3, *shape))
        k = from_spec(f"convnet-{get}:depth=2,stem=0")
        loss = jax.jit(lambda a, b: jnp.sum(k(a, b)))
        g1, g2 = jax.grad(loss, argnums=(0, 1))(x1, x2)
        eps = 1e-5

        def fd(x, which):
            out = np.zeros(x.size)
            for i in range(x.size):
                d = np.zeros(x.size)
                d[i] = eps
                d = d.reshape(x.shape)
                args = [(x + d, x2), (x - d, x2)] if which == 0 else [(x1, x + d), (x1, x - d)]
                out[i] = (float(loss(*args[0])) - float(loss(*args[1]))) / (2 * eps)
            return out.reshape(x.shape)

        fd1, fd2 = fd(x1, 0), fd(x2, 1)
    np.testing.assert_allclose(g1, fd1, rtol=1e-6, atol=1e-9 * np.abs(fd1).max())
    np.testing.assert_allclose(g2, fd2, rtol=1e-6, atol=1e-9 * np.abs(fd2).max())


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-15), (np.float32, 5e-7)])
def test_fast_arccos_matches_numpy(dtype, tol):
    from kdistill.kernels._arccos import fast_arccos

    x = np.concatenate([np.linspace(-1, 1, 20001), [-1.0, -0.5, 0.0, 0.5, 1.0], 1 - np.logspace(-16, -1, 50)])
    x = x.astype(dtype)
    with jax.enable_x64(dtype == np.float64):
        got = np.asarray(fast_arccos(jnp.asarray(x)))
    assert got.dtype == dtype
    np.testing.assert_allclose(got, np.arccos(x.astype(np.float64)), rtol=0, atol=tol)


def test_gradients_finite_on_the_diagonal_of_k_x_x():
    # rho = 1 on the pixel diagonal of K(x, x): dJ0/drho is infinite there, the gradient must not be
    with jax.enable_x64(True):
        x = np.random.default_rng(6).standard_normal((3, 8, 8, 1))
        d = np.random.default_rng(7).standard_normal(x.shape)
        for spec in ("fc-ntk", "convnet-ntk:depth=1"):
            k = from_spec(spec)
            loss = lambda a: jnp.sum(k(a, a))  # noqa: E731
            g = jax.grad(loss)(x)
            assert np.all(np.isfinite(g)), spec
            # K(x, x) is smooth in x (rho stays 1 on the diagonal), so the gradient is the
            # derivative; a wide step because rounding in rho ~ 1 moves J0 by ~1e-9
            fd = (loss(x + 1e-3 * d) - loss(x - 1e-3 * d)) / 2e-3
            assert float(jnp.vdot(g, d)) == pytest.approx(float(fd), rel=1e-4), spec


@pytest.mark.parametrize("pieces, residual", [(0, 2**30), (64, 0)])
def test_rf_convnet_straight_line_pieces_equal_the_mapped_form_in_values_and_gradients(monkeypatch, pieces, residual):
    # the default writes (network, chunk) pieces out straight-line (fast to differentiate); forcing lax.map
    # (pieces=0), or recomputation in the backward pass (residual=0), must not change values or gradients
    import kdistill.kernels._random_features as rf

    with jax.enable_x64(True):
        x = np.random.default_rng(5).standard_normal((70, 8, 8, 1))
        key = jax.random.key(3)

        def total(x_):
            f = rf.random_features(x_, arch="convnet", models=2, width=4, depth=2, w_std=2**0.5, b_std=0.1, seed=0,
                                   key=key)
            return jnp.sum(jnp.sin(f)), f

        # jitted (one compilation each, not thousands of eager dispatches); a fresh jit traces the settings anew
        (v0, f0), g0 = jax.jit(jax.value_and_grad(total, has_aux=True))(x)
        monkeypatch.setattr(rf, "_UNROLL_PIECES", pieces)
        monkeypatch.setattr(rf, "_RESIDUAL_BYTES", residual)
        (v1, f1), g1 = jax.jit(jax.value_and_grad(total, has_aux=True))(x)
    np.testing.assert_allclose(f1, f0, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g1, g0, rtol=1e-10, atol=1e-14)
