"""FRePo's evaluation augmentation (kdistill.nets.frepo_augment) against NumPy, without its random numbers.

Each test image carries its own probe: channel 0 is the row index + 1, channel 1 the column index + 1,
channel 2 random data in [0.5, 1.5). Every family is recognised from the output alone and its parameters
recovered: a warp's sampling point is read off the probe channels (bilinear sampling of a linear image
with the border extended gives the clamped point exactly), the affine map is fitted where it is not
clamped, and the data channel must then equal a NumPy bilinear resampling at those points; a cutout is
the one square where every channel is zero; a colour jitter is fitted from channel means (contrast and
brightness) and the deviations from them (saturation). The ranges are FRePo's (``get_aug_by_name`` in
``yongchaoz/FRePo``'s ``lib/dataset/augmax/export.py``).
"""

from __future__ import annotations

import collections
import math

import jax
import numpy as np
import pytest

from kdistill.nets import FREPO_FAMILIES, augment_batch, frepo_augment

_jaug = jax.jit(frepo_augment, static_argnames=("flip",))
H = W = 28


def probe_batch(seed, n=4, h=H, w=W):
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.arange(h) + 1.0, np.arange(w) + 1.0, indexing="ij")
    data = rng.random((n, h, w)) + 0.5
    return np.stack([np.broadcast_to(rows, (n, h, w)), np.broadcast_to(cols, (n, h, w)), data], -1).astype(np.float32)


def bilinear_clamped(img, pr, pc):
    """img (h, w) sampled bilinearly at points (pr, pc) that lie within the frame."""
    h, w = img.shape
    r0 = np.clip(np.floor(pr).astype(int), 0, h - 1)
    c0 = np.clip(np.floor(pc).astype(int), 0, w - 1)
    r1, c1 = np.minimum(r0 + 1, h - 1), np.minimum(c0 + 1, w - 1)
    fr, fc = pr - r0, pc - c0
    return ((1 - fr) * (1 - fc) * img[r0, c0] + (1 - fr) * fc * img[r0, c1]
            + fr * (1 - fc) * img[r1, c0] + fr * fc * img[r1, c1])


def classify(x, out):
    """(family, parameters) of one image's augmentation, recognised from x (h, w, 3) and out alone."""
    h, w, _ = x.shape
    hole = np.all(out == 0, axis=2)
    if hole.any():
        rows, cols = np.flatnonzero(hole.any(1)), np.flatnonzero(hole.any(0))
        ref = x.copy()
        ref[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = 0
        np.testing.assert_array_equal(out, ref)
        return "cutout", (rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    pr, pc = out[..., 0].astype(np.float64) - 1, out[..., 1].astype(np.float64) - 1
    inside = (pr > 0.5) & (pr < h - 1.5) & (pc > 0.5) & (pc < w - 1.5)
    if inside.sum() > 20 and pr.min() >= -1e-4 and pc.min() >= -1e-4:
        centre = np.array([(h - 1) / 2, (w - 1) / 2])
        q = np.argwhere(inside) - centre
        rel = np.column_stack([q, np.ones(len(q))])
        sol, *_ = np.linalg.lstsq(rel, np.column_stack([pr[inside], pc[inside]]) - centre, rcond=None)
        resampled = bilinear_clamped(x[..., 2].astype(np.float64), pr, pc)  # border extended, not zero-filled
        # (a colour jitter with saturation near 1 keeps the probe channels nearly affine: the data channel decides)
        if np.allclose(rel @ sol, np.column_stack([pr[inside], pc[inside]]) - centre, atol=2e-3) and \
                np.allclose(out[..., 2], resampled, atol=2e-5, rtol=2e-5):
            mat, shift = sol[:2].T, sol[2]
            # the fit is good to about 1e-6 (float32 probes up to 28): 2e-5 tells a zoom or an angle this small
            # from none with odds of about 1e-4 per image
            ident = np.allclose(mat, np.eye(2), atol=2e-5)
            if ident and np.allclose(shift, 0, atol=2e-5):
                return "identity", ()
            if np.allclose(mat, [[1, 0], [0, -1]], atol=2e-5) and np.allclose(shift, 0, atol=2e-5):
                return "mirror", ()
            if ident:
                return "translate", tuple(-shift)
            if np.allclose(mat, np.eye(2) * mat[0, 0], atol=2e-5):
                zoom = 1 / mat[0, 0]
                return "crop", (zoom, *(shift * zoom))
            angle = math.atan2(mat[0, 1], mat[0, 0])
            np.testing.assert_allclose(mat, [[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]],
                                       atol=1e-3)
            np.testing.assert_allclose(shift, 0, atol=1e-3)
            return "rotate", (math.degrees(angle),)
    # colour: brightness and contrast move every channel of a pixel alike; saturation scales the deviations
    xm, om = x.mean(2).astype(np.float64), out.mean(2).astype(np.float64)
    contrast = np.polyfit(xm.ravel(), om.ravel(), 1)[0]
    dev_x, dev_o = x - xm[..., None], out - om[..., None]
    saturation = float((dev_o * dev_x).sum() / (dev_x * dev_x).sum()) / contrast
    brightness = float(out.mean() - x.mean())  # contrast keeps the image mean, saturation each pixel's
    ref = (x.astype(np.float64) + brightness - (x.mean() + brightness)) * contrast + x.mean() + brightness
    ref_m = ref.mean(2, keepdims=True)
    np.testing.assert_allclose(out, (ref - ref_m) * saturation + ref_m, atol=5e-4, rtol=1e-4)
    return "color", (brightness, contrast, saturation)


def families_seen(keys, flip, n=4):
    seen = collections.defaultdict(list)
    for k in keys:
        x = probe_batch(k, n)
        out = np.asarray(_jaug(jax.random.key(k), x, flip=flip))
        assert out.shape == x.shape and out.dtype == np.float32
        kinds = [classify(x[i], out[i]) for i in range(n)]
        names = {name for name, _ in kinds}
        assert len(names - {"identity", "mirror"}) <= 1 and (names <= {"identity", "mirror"} or len(names) == 1), \
            f"one family per call, got {names}"
        family = "flip" if names <= {"identity", "mirror"} else names.pop()
        seen[family].extend(p for _, p in kinds)
    return seen


@pytest.fixture(scope="module")
def seen_without_flip():
    return families_seen(range(40), flip=False)


def test_every_family_is_used_and_flip_only_when_asked(seen_without_flip):
    assert set(seen_without_flip) == set(FREPO_FAMILIES)
    assert "flip" in families_seen(range(40, 60), flip=True)


def test_ranges_are_frepos_and_covered(seen_without_flip):
    s = seen_without_flip
    angles = np.array(s["rotate"])[:, 0]
    assert np.all(np.abs(angles) <= 15 + 1e-3) and np.abs(angles).max() > 10
    shifts = np.array(s["translate"])
    assert np.all(np.abs(shifts) <= H / 8 + 1e-3) and np.abs(shifts).max() > 2.5
    assert np.mean(shifts != np.round(shifts)) > 0.9  # fractions of a pixel
    crops = np.array(s["crop"])
    zoom, offset = crops[:, 0], crops[:, 1:]
    assert np.all((zoom >= 0.8 - 1e-4) & (zoom <= 1.25 + 1e-4)) and zoom.min() < 0.9 and zoom.max() > 1.12
    assert np.all(np.abs(offset) <= np.abs(H * (zoom[:, None] - 1)) / 2 + 1e-3)
    assert all(p == (H // 4, W // 4) for p in s["cutout"])  # the whole square, inside the image
    b, c, sat = np.array(s["color"]).T
    assert np.all(np.abs(b) <= 0.25 + 1e-4) and np.abs(b).max() > 0.15
    for f in (c, sat):
        assert np.all((f >= math.exp(-0.25) - 1e-3) & (f <= math.exp(0.25) + 1e-3))
        assert f.min() < 0.88 and f.max() > 1.15


def test_parameters_differ_between_images():
    x = np.repeat(probe_batch(0, 1), 6, axis=0)
    for k in range(6):
        out = np.asarray(_jaug(jax.random.key(k), x, flip=False))
        assert len({out[i].tobytes() for i in range(6)}) >= 5  # two cutouts may share a place (1 in 484)


def test_augment_batch_dispatches_to_it():
    x = probe_batch(1)
    batch = jax.jit(augment_batch, static_argnames=("augment", "flip"))
    np.testing.assert_array_equal(np.asarray(batch("frepo", jax.random.key(5), x, flip=False)),
                                  np.asarray(_jaug(jax.random.key(5), x, flip=False)))
