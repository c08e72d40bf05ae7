"""The invertible feature maps inn, cnn and deep-linear (kernels/_invertible.py).

References: the definitions. The JAX path is checked against the NumPy host path and, for cnn,
against a direct sum over the circular convolution's taps (explicit modular indexing) and
``scipy.ndimage.correlate(mode="wrap")``; inverses against the forward maps; deep-linear's
least-squares preimage against ``numpy.linalg.lstsq`` on the matrix M; the closed-form
distilled images (Chen, Huang & Weng 2024) against ridge regression recomputed in the primal
from their features.
"""

import doctest
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from hypothesis import given, settings
from hypothesis import strategies as st

import kdistill
from _helpers import primal_ridge
from conftest import TOL
from kdistill.errors import InvalidInputError, SpecError
from kdistill.kernels import deep_linear_matrix, from_spec
from kdistill.kernels import _invertible
from kdistill.kernels._invertible import _cnn_taps
from kdistill.methods import analytic

# float64 references at float64 tolerances: this module pins 64-bit JAX types.
pytestmark = pytest.mark.usefixtures("x64_module")

# Small settings (few layers, narrow networks) keep compilation and the weight draws cheap.
INN = "inn:depth=2,width=16,scale=0.8"
CNN = "cnn:depth=2,kernel=3,patch=2,slope=0.2"
DEEP = "deep-linear:depth=3,width=40"  # p = 40 > d = 32 below: injective, not onto
MAPS = [INN, CNN, DEEP]
SHAPE = (4, 4, 2)  # d = 32


@functools.cache
def _kernel(spec):
    return from_spec(spec)


def _images(seed, n=3, shape=SHAPE):
    return np.random.default_rng(seed).standard_normal((n, *shape))


@pytest.mark.parametrize("spec", MAPS)
def test_jax_and_host_paths_agree_in_both_precisions(spec):
    kernel = _kernel(spec)
    x = _images(0)
    out = {}
    for precision in ("float64", "float32"):
        with kdistill.precision_scope(precision):
            for dtype in (np.float64, np.float32):
                xd = x.astype(dtype)
                host = kernel.features(xd)  # NumPy input: the host path
                traced = np.asarray(kernel.features(jnp.asarray(xd)))  # JAX input: the jitted path
                want = np.float64 if precision == "float64" and dtype == np.float64 else np.float32
                assert isinstance(host, np.ndarray) and host.dtype == want and traced.dtype == want
                assert host.shape == (3, 40 if spec == DEEP else 32)
                np.testing.assert_allclose(host, traced, **TOL[want])
                out[precision, dtype] = host
    # the same map in every precision: weights are drawn in float32 either way
    for key, value in out.items():
        np.testing.assert_allclose(value, out["float64", np.float64], **TOL[np.float32])


@pytest.mark.parametrize("spec", [*MAPS, "deep-linear"])
@pytest.mark.parametrize("shape", [SHAPE, (4, 6, 1)], ids=["4x4x2", "4x6x1"])
def test_inverse_and_features_undo_each_other(spec, shape):
    kernel = _kernel(spec)
    x = _images(1, n=5, shape=shape)
    f = kernel.features(x)
    back = kernel.inverse(f, shape)
    assert isinstance(back, np.ndarray) and back.dtype == np.float64 and back.shape == x.shape
    np.testing.assert_allclose(back, x, rtol=1e-9, atol=1e-9)  # every map here is injective
    np.testing.assert_allclose(kernel.features(back), f, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("spec,shape", [
    (INN, SHAPE), (INN, (3, 3, 1)), ("inn:depth=2,width=8", (2, 2, 3)),  # 3x3x1: uneven halves (4, 5)
    (CNN, SHAPE), (CNN, (2, 2, 3)),  # a 1x1 grid after space-to-depth: every tap wraps onto the centre
    ("cnn:depth=1,kernel=5,patch=1,offcentre=0.9", SHAPE), ("cnn:depth=1,kernel=5,patch=1,offcentre=0.9", (3, 3, 1)),
])
def test_bijections_reach_any_feature_vector(spec, shape):
    """inn and cnn are onto: features drawn anywhere in R^p (not from images) have an exact preimage."""
    kernel = _kernel(spec)
    d = int(np.prod(shape))
    f = 3.0 * np.random.default_rng(2).standard_normal((4, d))
    x = kernel.inverse(f, shape)
    np.testing.assert_allclose(kernel.features(x), f, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(kernel.inverse(kernel.features(x), shape), x, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("spec", MAPS)
@settings(max_examples=6, deadline=None)
# h, w in {2, 4}, c in {1, 2} with d = h*w*c >= m = 6: m images have features in a space of dimension
# at most d (deep-linear's range), so more of them make D (m, p) rank-deficient and D^+ inverts rounding.
@given(seed=st.integers(0, 10_000), shape=st.sampled_from([(2, 2, 2), (2, 4, 1), (4, 2, 2), (4, 4, 1), (4, 4, 2)]),
       m_per_class=st.integers(1, 2), lam_frac=st.sampled_from([0.0, 0.5, 1.0]))
def test_distilled_images_reproduce_the_weights(spec, seed, shape, m_per_class, lam_frac):
    """W_S = W (Chen et al. 2024, Thm 4.2): ridge on the features of the distilled images gives back W."""
    kernel = _kernel(spec)
    rng = np.random.default_rng(seed)
    k, (h, w, c) = 3, shape
    x = rng.standard_normal((40, *shape))
    y = np.eye(k)[rng.integers(0, k, size=40)] - 1.0 / k
    w_full = primal_ridge(kernel.features(x), y, lam=0.3)  # (k, p)
    y_s = np.tile(np.eye(k), m_per_class) - 1.0 / k  # (k, m), centred one-hot
    # Z (m, p) free: features of noise images, so its rows lie in the map's range (deep-linear is not onto)
    z = kernel.features(rng.standard_normal((y_s.shape[1], *shape)))
    lam_s = lam_frac * analytic.lambda_s_bound(w_full, y_s, z)
    phi_s = analytic.distilled_features(w_full, y_s, z, lambda_s=lam_s)
    if spec == DEEP:  # then D's rows, and the target features, lie in range(M) too
        q = np.linalg.qr(deep_linear_matrix(kernel, h * w * c))[0]
        assert np.abs(phi_s - phi_s @ q @ q.T).max() < 1e-9 * np.abs(phi_s).max()
    images = kernel.inverse(phi_s, shape)
    phi_back = kernel.features(images)
    np.testing.assert_allclose(phi_back, phi_s, rtol=1e-7, atol=1e-9 * np.abs(phi_s).max())
    np.testing.assert_allclose(primal_ridge(phi_back, y_s.T, lam_s), w_full, rtol=1e-6,
                               atol=1e-8 * np.abs(w_full).max())


def _direct_cnn(x, taps, patch, slope):
    """cnn by its definition: space-to-depth and the circular convolution as explicit index sums."""
    n, h, w, c = x.shape
    hp, wp, cp = h // patch, w // patch, patch * patch * c
    z = np.zeros((n, hp, wp, cp))
    for i in range(h):
        for j in range(w):
            for ch in range(c):
                z[:, i // patch, j // patch, ((i % patch) * patch + j % patch) * c + ch] = x[:, i, j, ch]
    r = taps.shape[1] // 2
    for layer in taps:
        out = np.zeros_like(z)
        for i in range(hp):
            for j in range(wp):
                for a in range(layer.shape[0]):
                    for b in range(layer.shape[1]):
                        out[:, i, j] += z[:, (i + a - r) % hp, (j + b - r) % wp] @ layer[a, b].T
        z = np.where(out > 0, out, slope * out)
    return z.reshape(n, -1)


@pytest.mark.parametrize("spec,shape", [(CNN, (4, 6, 1)), ("cnn:depth=1,kernel=5,patch=1", (3, 2, 2))],
                         ids=["patch2", "taps-wrap-around"])
def test_cnn_equals_the_direct_convolution(spec, shape):
    kernel = _kernel(spec)
    p = dict(kernel.params)
    x = _images(3, n=2, shape=shape)
    taps = _cnn_taps(p["seed"], p["patch"] ** 2 * shape[2], p["depth"], p["kernel"], p["offcentre"])
    want = _direct_cnn(x, taps, p["patch"], p["slope"])
    np.testing.assert_allclose(np.asarray(kernel.features(jnp.asarray(x))), want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(kernel.features(x), want, rtol=1e-10, atol=1e-12)


def test_cnn_layer_equals_scipy_correlate_with_wrap():
    kernel = _kernel("cnn:depth=1,kernel=3,patch=1,slope=1.0")  # slope 1: one bare convolution
    x = _images(4, n=1, shape=(5, 5, 2))
    taps = _cnn_taps(0, 2, 1, 3, 0.5)[0]  # (3, 3, out, in)
    want = np.stack([sum(scipy.ndimage.correlate(x[0, :, :, i], taps[:, :, o, i], mode="wrap") for i in range(2))
                     for o in range(2)], axis=-1)
    np.testing.assert_allclose(kernel.features(x).reshape(5, 5, 2), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kernel_size,r,grid",
                         [(3, 0.5, (4, 4)), (5, 0.95, (3, 5)), (7, 0.3, (2, 2)), (3, 0.0, (4, 1))])
def test_cnn_convolutions_are_invertible_at_every_frequency(kernel_size, r, grid):
    """Centre tap orthogonal, off-centre spectral norms summing to r, so at every frequency the
    layer's matrix H(w) has singular values in [1 - r, 1 + r] (also when the taps wrap around)."""
    channels = 3
    taps = _cnn_taps(7, channels, 2, kernel_size, r)
    c0 = kernel_size // 2
    for layer in taps:
        q = layer[c0, c0]
        np.testing.assert_allclose(q.T @ q, np.eye(channels), atol=1e-12)
        off = [np.linalg.norm(layer[a, b], 2)
               for a in range(kernel_size) for b in range(kernel_size) if (a, b) != (c0, c0)]
        assert sum(off) == pytest.approx(r, rel=1e-12, abs=1e-15)
        # H(w) = sum_o T_o exp(+i w.o) = (h w) ifft2 of the taps laid on the periodic grid at their offsets
        g = np.zeros((*grid, channels, channels))
        for a in range(kernel_size):
            for b in range(kernel_size):
                g[(a - c0) % grid[0], (b - c0) % grid[1]] += layer[a, b]
        response = np.fft.ifft2(g, axes=(0, 1)) * grid[0] * grid[1]
        sv = np.linalg.svd(response, compute_uv=False)
        assert sv.min() >= 1 - r - 1e-12 and sv.max() <= 1 + r + 1e-12, (sv.min(), sv.max())
        assert (sv.max(-1) / sv.min(-1)).max() <= (1 + r) / (1 - r) + 1e-9


def test_deep_linear_range_least_squares_and_gradient():
    kernel = _kernel(DEEP)
    x = _images(5, n=4)
    m = deep_linear_matrix(kernel, 32)
    assert m.shape == (40, 32) and m.dtype == np.float64 and not m.flags.writeable
    f = kernel.features(x)
    np.testing.assert_allclose(f, x.reshape(4, -1) @ m.T, rtol=1e-10, atol=1e-12)
    q = np.linalg.qr(m)[0]
    assert np.abs(f - f @ q @ q.T).max() < 1e-12 * np.abs(f).max()  # features lie in range(M)
    # a target outside the range: the least-squares preimage, whose features are f's projection
    g = np.random.default_rng(6).standard_normal((3, 40))
    assert np.linalg.norm(g - g @ q @ q.T) > 0.2 * np.linalg.norm(g)  # really outside (~sqrt(8/40) of it)
    x_ls = kernel.inverse(g, SHAPE)
    np.testing.assert_allclose(x_ls.reshape(3, -1), np.linalg.lstsq(m, g.T, rcond=None)[0].T, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(kernel.features(x_ls), g @ q @ q.T, rtol=1e-9, atol=1e-10)
    # gradients flow through features (iterative methods use them): grad 0.5 ||M x||^2 = M^T M x
    grad = jax.grad(lambda z: 0.5 * jnp.sum(kernel.features(z) ** 2))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(grad).reshape(4, -1), x.reshape(4, -1) @ m.T @ m, rtol=1e-9, atol=1e-10)
    # width=0: square layers
    assert deep_linear_matrix("deep-linear", 6).shape == (6, 6)


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 300, msg
    return msg


@pytest.mark.parametrize("spec,words", [
    ("inn:depth=0", ["kernel 'inn': depth=0 is out of range", "1 .. 32"]),
    ("inn:scale=3", ["kernel 'inn': scale=3 is out of range"]),
    ("cnn:kernel=4", ["kernel 'cnn': kernel=4 is even", "odd"]),
    ("cnn:offcentre=1", ["kernel 'cnn': offcentre=1 is out of range", "0 .. 0.95"]),
    ("deep-linear:width=-1", ["kernel 'deep-linear': width=-1 is out of range"]),
])
def test_bad_parameters_are_one_line_spec_errors(spec, words):
    with pytest.raises(SpecError) as err:
        from_spec(spec)
    msg = _one_line(err)
    for word in words:
        assert word in msg, msg


def test_shapes_the_maps_cannot_take_are_one_line_errors():
    cnn = from_spec("cnn:patch=3")
    for features in (cnn.features, jax.jit(cnn.features)):  # host path and traced path
        with pytest.raises(SpecError) as err:
            features(np.zeros((1, 28, 28, 1), dtype=np.float32))
        assert "kernel 'cnn': patch=3 does not divide the 28x28 images" in _one_line(err)
    with pytest.raises(SpecError, match="patch=3 does not divide"):
        cnn.inverse(np.zeros((1, 784)), (28, 28, 1))
    with pytest.raises(InvalidInputError, match=r"expects features \(n, 32\)"):
        _kernel(CNN).inverse(np.zeros((1, 31)), SHAPE)
    with pytest.raises(InvalidInputError, match="at least 2 features"):
        _kernel(INN).features(np.zeros((2, 1, 1, 1)))
    with pytest.raises(InvalidInputError, match="needs a 'deep-linear' kernel"):
        deep_linear_matrix("fcnn", 4)
    big = jax.ShapeDtypeStruct((2, 224, 224, 3), np.float32)  # refused while tracing, nothing allocated
    for spec, what in [("inn:depth=32,width=4096", "random coupling networks"),
                       ("deep-linear:width=16384,depth=16", "random weights of depth=16")]:
        with pytest.raises(SpecError) as err:
            jax.eval_shape(from_spec(spec).features, big)
        assert what in _one_line(err) and "needed (limit" in str(err.value)


def test_docstring_examples():
    failures, tried = doctest.testmod(_invertible)
    assert tried > 0 and failures == 0
