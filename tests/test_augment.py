"""Differentiable Siamese augmentation (kdistill.nets) against independent NumPy references.

Every family is checked against a hand computation: flip and crop by search over every admissible
parameter (exactly one must match), cutout likewise over every admissible square, scale and rotate by
recovering the sampling matrix from a probe image (its channels are the row and column index, which
bilinear sampling reproduces exactly inside the frame) and resampling another image of the same
batch with a NumPy bilinear sampler, color by recovering the three random numbers from one image and
applying DSA's three formulas to the others.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdistill.nets import DSA_FAMILIES, dsa_augment, dsa_strategy

TOL = dict(rtol=1e-5, atol=1e-5)  # float32 images in [0, 2)
WARP_TOL = dict(rtol=1e-5, atol=5e-5)  # plus the float32 error of the recovered sampling matrix

_jaug = jax.jit(dsa_augment, static_argnames=("families", "shared"))


def aug(seed, x, families=DSA_FAMILIES, shared=True):
    x = jnp.asarray(x)
    out = _jaug(jax.random.key(seed), x, families=tuple(families), shared=shared)
    assert out.shape == x.shape and out.dtype == x.dtype == jnp.float32
    return np.asarray(out)


def images(seed, shape):
    """Positive float32 images (no pixel is zero, so zeros in an output come from the transform)."""
    return (np.random.default_rng(seed).random(shape) + 0.5).astype(np.float32)


# ----------------------------------------------------------------------------- NumPy references


def shift_ref(x, dr, dc):
    """out[:, i, j] = x[:, i - dr, j - dc], zero off the image: np.roll, then zero the wrapped band."""
    out = np.roll(x, (dr, dc), axis=(1, 2)).copy()
    if dr > 0:
        out[:, :dr] = 0
    elif dr < 0:
        out[:, dr:] = 0
    if dc > 0:
        out[:, :, :dc] = 0
    elif dc < 0:
        out[:, :, dc:] = 0
    return out


def crop_shifts(size):
    s = int(0.125 * size + 0.5)
    return range(-s, s + 1)


def match_crop(x, out):
    """The one shift (dr, dc) in range that maps x (h, w, c) to out; fails unless exactly one matches."""
    h, w = x.shape[:2]
    hits = [(dr, dc) for dr in crop_shifts(h) for dc in crop_shifts(w)
            if np.allclose(shift_ref(x[None], dr, dc)[0], out, **TOL)]
    assert len(hits) == 1, hits
    return hits[0]


def cutout_boxes(size):
    """(first, last) rows of each admissible cutout band, clipped to the image, keyed by its centre."""
    k = int(0.5 * size + 0.5)
    return {c: (max(0, c - k // 2), min(size, c - k // 2 + k)) for c in range(0, size - k % 2 + 1)}


def match_cutout(x, out):
    """(row centre, column centre, rows zeroed, columns zeroed) of the admissible square that maps x (h, w, c,
    all positive) to out: the zeros of out must form exactly one admissible clipped square, across every
    channel, and every other pixel must be unchanged."""
    h, w = x.shape[:2]
    zero = np.all(out == 0, axis=2)
    rows, cols = np.flatnonzero(zero.any(axis=1)), np.flatnonzero(zero.any(axis=0))
    band = (int(rows[0]), int(rows[-1]) + 1), (int(cols[0]), int(cols[-1]) + 1)
    by_band = [{b: c for c, b in cutout_boxes(size).items()} for size in (h, w)]
    assert all(len(d) == len(cutout_boxes(size)) for d, size in zip(by_band, (h, w)))  # one centre per band
    assert band[0] in by_band[0] and band[1] in by_band[1], band
    ref = x.copy()
    ref[slice(*band[0]), slice(*band[1])] = 0
    np.testing.assert_allclose(out, ref, **TOL)
    return by_band[0][band[0]], by_band[1][band[1]], band[0][1] - band[0][0], band[1][1] - band[1][0]


def bilinear_ref(img, mat):
    """img (h, w, c) resampled at mat (q - centre) + centre, each out-of-image neighbour counting as 0."""
    img = img.astype(np.float64)
    h, w, c = img.shape
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    out = np.zeros((h, w, c))
    for i in range(h):
        for j in range(w):
            p = mat @ (np.array([i, j]) - centre) + centre
            r0, c0 = math.floor(p[0]), math.floor(p[1])
            fr, fc = p[0] - r0, p[1] - c0
            for rr, wr in ((r0, 1 - fr), (r0 + 1, fr)):
                for cc, wc in ((c0, 1 - fc), (c0 + 1, fc)):
                    if 0 <= rr < h and 0 <= cc < w:
                        out[i, j] += wr * wc * img[rr, cc]
    return out


def probe(h, w):
    """Channels: row index, column index, ones."""
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([rows, cols, np.ones((h, w))], -1).astype(np.float32)


def recover_matrix(out_probe, margin):
    """The 2x2 sampling matrix from an augmented probe, fitted on pixels within `margin` of the centre
    (whose sample points, for DSA's ranges, lie inside the frame, where bilinear sampling of a linear
    image is exact). Asserts that the fit is exact there."""
    h, w = out_probe.shape[:2]
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    qs = np.array([(i, j) for i in range(h) for j in range(w)
                   if abs(i - centre[0]) <= margin and abs(j - centre[1]) <= margin], float)
    rel = qs - centre
    sampled = out_probe[qs[:, 0].astype(int), qs[:, 1].astype(int), :2].astype(np.float64) - centre
    mat, *_ = np.linalg.lstsq(rel, sampled, rcond=None)
    mat = mat.T
    np.testing.assert_allclose(rel @ mat.T, sampled, atol=2e-5)
    np.testing.assert_allclose(out_probe[qs[:, 0].astype(int), qs[:, 1].astype(int), 2], 1.0, **TOL)
    return mat


def color_ref(x, u_bright, u_sat, u_con):
    """DSA's color family on x (n, h, w, c) with given random numbers (scalars or (n,) arrays)."""
    x = x.astype(np.float64)

    def col(u):
        return np.broadcast_to(np.asarray(u, float), (x.shape[0],))[:, None, None, None]

    x = x + (col(u_bright) - 0.5) * 1.0
    m = x.mean(axis=3, keepdims=True)
    x = (x - m) * (col(u_sat) * 2.0) + m
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - m) * (col(u_con) + 0.5) + m


def recover_color(x, out):
    """(u_bright, u_sat, u_con) from one image: out - mean(x) = ks*(x - m_c) + k*(m_c - mean(x)) + b, where
    b = u_bright - 0.5, k = u_con + 0.5, s = 2 u_sat (the composition of the three steps)."""
    x, out = x.astype(np.float64), out.astype(np.float64)
    m_c = x.mean(axis=2, keepdims=True)
    m = x.mean()
    design = np.stack([(x - m_c).ravel(), np.broadcast_to(m_c - m, x.shape).ravel(), np.ones(x.size)], 1)
    (ks, k, b), *_ = np.linalg.lstsq(design, (out - m).ravel(), rcond=None)
    return b + 0.5, ks / k / 2.0, k - 0.5


# ----------------------------------------------------------------------------- public API


def test_strategy():
    assert DSA_FAMILIES == ("color", "crop", "cutout", "flip", "scale", "rotate")
    for name in ("mnist", "digits", "svhn", "MNIST"):
        assert dsa_strategy(name) == ("color", "crop", "cutout", "scale", "rotate")
    for name in ("cifar10", "cifar100", "fashion_mnist", None):
        assert dsa_strategy(name) == DSA_FAMILIES


def test_bad_arguments():
    x = images(0, (2, 8, 8, 1))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="unknown"):
        dsa_augment(key, x, ("colour",))
    with pytest.raises(ValueError, match="empty"):
        dsa_augment(key, x, ())
    with pytest.raises(TypeError):
        dsa_augment(key, x, "crop")
    with pytest.raises(ValueError, match="shape"):
        dsa_augment(key, x[0])
    with pytest.raises(TypeError, match="floating"):
        dsa_augment(key, x.astype(np.int32))


@pytest.mark.parametrize("family", DSA_FAMILIES)
def test_siamese_same_transform_across_batches(family):
    """Shared parameters do not depend on the batch: augmenting a ++ b equals augmenting a and b apart."""
    a, b = images(1, (3, 9, 12, 3)), images(2, (5, 9, 12, 3))
    for seed in range(4):
        together = aug(seed, np.concatenate([a, b]), (family,))
        apart = np.concatenate([aug(seed, a, (family,)), aug(seed, b, (family,))])
        np.testing.assert_allclose(together, apart, **TOL)


def test_siamese_whole_strategy():
    """With every family on offer the key picks the same family for both batches too."""
    a, b = images(1, (3, 9, 12, 3)), images(2, (5, 9, 12, 3))
    for seed in range(8):
        np.testing.assert_allclose(aug(seed, np.concatenate([a, b])),
                                   np.concatenate([aug(seed, a), aug(seed, b)]), **TOL)


def test_one_family_per_call_chosen_among_all():
    """A call with all families equals the single-family call of the family it picked (the parameters
    come from the same sub-key), and over 40 keys every family gets picked."""
    x = images(3, (2, 8, 8, 3))
    picked = set()
    for seed in range(40):
        full = aug(seed, x)
        hits = {f for f in DSA_FAMILIES if np.allclose(aug(seed, x, (f,)), full, **TOL)}
        assert hits, seed
        if len(hits) == 1:
            picked |= hits
    assert picked == set(DSA_FAMILIES)


# ----------------------------------------------------------------------------- per family


def test_flip():
    x = images(4, (3, 8, 12, 1))
    seen = set()
    for seed in range(8):
        out = aug(seed, x, ("flip",))
        flipped = np.allclose(out, x[:, :, ::-1], **TOL)
        assert flipped or np.allclose(out, x, **TOL)
        seen.add(flipped)
    assert seen == {True, False}
    # per image: each of 32 copies flips or not, both happen
    out = aug(0, np.repeat(x[:1], 32, 0), ("flip",), shared=False)
    flips = [np.allclose(o, x[0, :, ::-1], **TOL) for o in out]
    assert all(f or np.allclose(o, x[0], **TOL) for f, o in zip(flips, out))
    assert 0 < sum(flips) < 32


@pytest.mark.parametrize("shape", [(8, 12, 3), (9, 9, 1)])
def test_crop_is_a_zero_filled_integer_shift(shape):
    x = images(5, (2,) + shape)
    for seed in range(5):
        out = aug(seed, x, ("crop",))
        dr, dc = match_crop(x[0], out[0])
        np.testing.assert_allclose(out, shift_ref(x, dr, dc), **TOL)  # the same shift for the whole batch


def test_crop_range_at_32_pixels():
    """s = int(0.125 * 32 + 0.5) = 4: 128 independent draws hit every shift in [-4, 4] on both axes, no other."""
    x = images(6, (1, 32, 32, 1))
    out = aug(1, np.repeat(x, 128, 0), ("crop",), shared=False)
    shifts = np.array([match_crop(x[0], o) for o in out])
    assert set(shifts[:, 0]) == set(range(-4, 5)) == set(shifts[:, 1])


@pytest.mark.parametrize("shape", [(9, 9, 1), (32, 32, 1)])  # odd and even sizes
def test_cutout_zeroes_one_square(shape):
    """One admissible square (side int(0.5 size + 0.5), clipped) is zeroed, nothing else changes, and 256
    per-image draws put its centre at every admissible row and column (0 .. size - side % 2), no other."""
    h, w, _ = shape
    kh, kw = int(0.5 * h + 0.5), int(0.5 * w + 0.5)
    x = images(7, (256,) + shape)
    out = aug(2, x, ("cutout",), shared=False)
    found = np.array([match_cutout(xi, oi) for xi, oi in zip(x, out)])
    assert set(found[:, 0]) == set(cutout_boxes(h)) and set(found[:, 1]) == set(cutout_boxes(w))
    assert np.all((0 < found[:, 2]) & (found[:, 2] <= kh) & (0 < found[:, 3]) & (found[:, 3] <= kw))
    assert np.any((found[:, 2] == kh) & (found[:, 3] == kw))  # unclipped squares of the full side occur
    shared = aug(3, x[:4], ("cutout",))
    assert len({match_cutout(xi, oi)[:2] for xi, oi in zip(x[:4], shared)}) == 1


def _warp_case(family, h, w, seed):
    """Augment the batch [probe, random image] with shared parameters: (random image, outputs)."""
    r = images(8, (h, w, 3))
    out = aug(seed, np.stack([probe(h, w), r]), (family,))
    return r, out


@pytest.mark.parametrize("shape", [(10, 14)])  # non-square: rows and columns told apart
def test_rotate_matches_bilinear_reference(shape):
    h, w = shape
    angles = []
    for seed in range(6):
        r, out = _warp_case("rotate", h, w, seed)
        mat = recover_matrix(out[0], margin=2.5)
        np.testing.assert_allclose(mat.T @ mat, np.eye(2), atol=1e-5)
        assert np.linalg.det(mat) > 0
        angle = math.degrees(math.atan2(mat[1, 0], mat[0, 0]))
        assert -15.0 <= angle <= 15.0
        angles.append(angle)
        np.testing.assert_allclose(out[1], bilinear_ref(r, mat), **WARP_TOL)
    assert min(angles) < 0 < max(angles)


@pytest.mark.parametrize("shape", [(10, 14)])
def test_scale_matches_bilinear_reference(shape):
    h, w = shape
    factors = []
    for seed in range(6):
        r, out = _warp_case("scale", h, w, seed)
        mat = recover_matrix(out[0], margin=2.5)
        assert abs(mat[0, 1]) < 1e-5 and abs(mat[1, 0]) < 1e-5
        assert 1 / 1.2 - 1e-5 <= mat[0, 0] <= 1.2 + 1e-5 and 1 / 1.2 - 1e-5 <= mat[1, 1] <= 1.2 + 1e-5
        factors.append((mat[0, 0], mat[1, 1]))
        np.testing.assert_allclose(out[1], bilinear_ref(r, mat), **WARP_TOL)
    factors = np.array(factors)
    assert not np.allclose(factors[:, 0], factors[:, 1])  # the two axes are drawn independently
    assert factors.min() < 1 < factors.max()


def test_rotate_constant_image_and_mass():
    """A constant image keeps its value inside and loses some at every corner; a centred Gaussian blob
    keeps its total mass within 2%. 16 images with their own angles."""
    h = w = 12
    const = np.full((16, h, w, 1), 0.7, np.float32)
    out = aug(4, const, ("rotate",), shared=False)
    np.testing.assert_allclose(out[:, 3:9, 3:9], 0.7, **TOL)
    corners = out[:, [0, 0, -1, -1], [0, -1, 0, -1], 0]
    assert np.all(corners < 0.7 - 1e-4) and np.all(corners >= 0)
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    blob = np.exp(-((rows - 5.5) ** 2 + (cols - 5.5) ** 2) / (2 * 1.5**2))
    blob = np.repeat(blob[None, :, :, None], 16, 0).astype(np.float32)
    out = aug(5, blob, ("rotate",), shared=False)
    np.testing.assert_allclose(out.sum(axis=(1, 2, 3)), blob[0].sum(), rtol=0.02)
    assert not np.allclose(out[0], out[1], **TOL)  # the angles differ per image


def test_scale_constant_image():
    """Inside the frame a constant stays constant; a corner keeps it exactly when both factors are <= 1
    (the sample point moves inwards) and loses part of it otherwise: compared with the reference."""
    h = w = 12
    for seed in range(6):
        x = np.concatenate([probe(h, w)[None], np.full((1, h, w, 3), 0.7, np.float32)])
        out = aug(seed, x, ("scale",))
        mat = recover_matrix(out[0], margin=2.5)
        np.testing.assert_allclose(out[1, 3:9, 3:9], 0.7, **TOL)
        np.testing.assert_allclose(out[1], bilinear_ref(x[1], mat), **WARP_TOL)
        corner_kept = np.isclose(out[1, 0, 0, 0], 0.7, atol=1e-5)
        assert corner_kept == (mat[0, 0] <= 1 + 1e-6 and mat[1, 1] <= 1 + 1e-6)


@pytest.mark.parametrize("shared", [True, False])
def test_color_matches_formula(shared):
    x = images(9, (5, 8, 8, 3))
    for seed in range(4):
        out = aug(seed, x, ("color",), shared=shared)
        us = np.array([recover_color(xi, oi) for xi, oi in zip(x, out)])  # (n, 3)
        assert np.all(us >= -1e-5) and np.all(us <= 1 + 1e-5)
        if shared:
            np.testing.assert_allclose(us, np.broadcast_to(us[0], us.shape), atol=1e-4)
            np.testing.assert_allclose(out, color_ref(x, *us[0]), **TOL)  # u from image 0 explains all
        else:
            assert np.ptp(us, axis=0).min() > 1e-3  # each image its own numbers
            np.testing.assert_allclose(out, color_ref(x, *us.T), **TOL)


def test_color_ranges_are_covered():
    """The recovered random numbers of 64 per-image draws fill [0, 1] for each step (a wrong brightness,
    saturation or contrast factor would squeeze them into a sub-interval or push them out of [0, 1])."""
    x = images(22, (64, 4, 4, 3))
    out = aug(5, x, ("color",), shared=False)
    us = np.array([recover_color(xi, oi) for xi, oi in zip(x, out)])
    assert np.all(us >= -1e-4) and np.all(us <= 1 + 1e-4)
    assert np.all(us.min(axis=0) < 0.1) and np.all(us.max(axis=0) > 0.9)


# ----------------------------------------------------------------------------- shared / per image


@pytest.mark.parametrize("family", DSA_FAMILIES)
def test_shared_gives_identical_images_identical_outputs(family):
    x = np.repeat(images(10, (1, 8, 8, 3)), 4, 0)
    for seed in range(3):
        out = aug(seed, x, (family,))
        np.testing.assert_allclose(out, np.broadcast_to(out[0], out.shape), **TOL)


def test_per_image_parameters_differ():
    x = np.repeat(images(11, (1, 8, 8, 3)), 2, 0)
    for family in ("crop", "color", "rotate", "scale", "cutout"):
        assert any(not np.allclose(o[0], o[1], **TOL)
                   for o in (aug(seed, x, (family,), shared=False) for seed in range(5))), family
    for seed in range(5):  # and each of them is still a valid crop
        out = aug(seed, x, ("crop",), shared=False)
        for xi, oi in zip(x, out):
            match_crop(xi, oi)


# ----------------------------------------------------------------------------- gradients, jit, dtype


@functools.partial(jax.jit, static_argnames=("families", "shared"))
def _grad_weighted(key, x, weights, families=DSA_FAMILIES, shared=True):
    """Gradient of sum(weights * augment(x)) with respect to x: the transpose of the map applied to weights."""
    return jax.grad(lambda x: jnp.sum(weights * dsa_augment(key, x, families, shared=shared)))(x)


def _vjp(seed, x, family, weights):
    return np.asarray(_grad_weighted(jax.random.key(seed), jnp.asarray(x), weights, (family,)))


def test_gradients_finite():
    x = jnp.asarray(images(12, (3, 8, 8, 3)))
    g = jax.grad(lambda x: dsa_augment(jax.random.key(0), x).sum())(x)  # eager, as a user would write it
    assert g.shape == x.shape and g.dtype == x.dtype and bool(jnp.all(jnp.isfinite(g)))
    wts = jnp.asarray(np.random.default_rng(21).standard_normal(x.shape).astype(np.float32))
    for shared, seed in itertools.product((True, False), range(1, 12)):
        g = _grad_weighted(jax.random.key(seed), x, wts, shared=shared)
        assert g.shape == x.shape and g.dtype == x.dtype
        assert bool(jnp.all(jnp.isfinite(g)))


def test_gradient_flip_crop_cutout_are_transposes():
    x = images(13, (2, 8, 12, 3))
    wts = jnp.asarray(np.random.default_rng(14).standard_normal(x.shape).astype(np.float32))
    w_np = np.asarray(wts)
    for seed in range(4):
        out = aug(seed, x, ("flip",))
        flipped = np.allclose(out, x[:, :, ::-1], **TOL)
        np.testing.assert_allclose(_vjp(seed, x, "flip", wts), w_np[:, :, ::-1] if flipped else w_np, **TOL)

        dr, dc = match_crop(x[0], aug(seed, x, ("crop",))[0])
        # input pixel p lands on p + (dr, dc): its gradient is the weight there, 0 if that is off the frame
        np.testing.assert_allclose(_vjp(seed, x, "crop", wts), shift_ref(w_np, -dr, -dc), **TOL)
        ones = jnp.ones_like(wts)
        mask = shift_ref(np.ones_like(w_np), -dr, -dc)
        np.testing.assert_allclose(_vjp(seed, x, "crop", ones), mask, **TOL)
        assert mask.sum() == 2 * 3 * (8 - abs(dr)) * (12 - abs(dc))

        kept = aug(seed, x, ("cutout",)) != 0
        np.testing.assert_allclose(_vjp(seed, x, "cutout", wts), np.where(kept, w_np, 0), **TOL)


@pytest.mark.parametrize("family", ["scale", "rotate"])
def test_warps_linear_and_gradient_adjoint(family):
    """The warps are linear in x: <grad of sum(w * T x), x> = sum(w * T x), and T(2x + y) = 2 Tx + Ty."""
    x, y = images(15, (2, 10, 10, 3)), images(16, (2, 10, 10, 3))
    wts = jnp.asarray(np.random.default_rng(17).standard_normal(x.shape).astype(np.float32))
    for seed in range(3):
        g = _vjp(seed, x, family, wts)
        np.testing.assert_allclose(np.sum(g.astype(np.float64) * x),
                                   np.sum(np.asarray(wts, np.float64) * aug(seed, x, (family,))), rtol=1e-5)
        np.testing.assert_allclose(aug(seed, 2 * x + y, (family,)),
                                   2 * aug(seed, x, (family,)) + aug(seed, y, (family,)), **TOL)


def test_jit_matches_eager():
    x = jnp.asarray(images(18, (3, 8, 8, 3)))
    jitted = jax.jit(dsa_augment, static_argnames=("families", "shared"))
    key = jax.random.key(0)  # one key: eager calls trace and compile the family switch afresh
    np.testing.assert_allclose(np.asarray(jitted(key, x, families=DSA_FAMILIES, shared=False)),
                               np.asarray(dsa_augment(key, x, DSA_FAMILIES, shared=False)), **TOL)


def test_shape_and_dtype_kept(x64):
    """Traced abstractly (jax.eval_shape: no compilation) for every family, both dtypes, both modes;
    `aug` also checks float32 on every concrete call in this file."""
    key = jax.random.key(0)
    for dtype, shared in itertools.product((np.float32, np.float64), (True, False)):
        x = jax.ShapeDtypeStruct((2, 8, 10, 1), dtype)
        for families in [(f,) for f in DSA_FAMILIES] + [DSA_FAMILIES]:
            out = jax.eval_shape(functools.partial(dsa_augment, families=families, shared=shared), key, x)
            assert out.shape == x.shape and out.dtype == dtype, (families, shared, out.dtype)
    out = _jaug(key, jnp.asarray(images(19, (2, 8, 10, 1)), jnp.float64), families=("rotate",), shared=True)
    assert out.dtype == jnp.float64


def test_raw_uint32_keys_work():
    x = images(20, (2, 8, 8, 3))
    out = dsa_augment(jax.random.PRNGKey(3), jnp.asarray(x))
    assert out.shape == x.shape and np.all(np.isfinite(np.asarray(out)))
