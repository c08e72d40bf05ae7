"""Augmentations of image batches in JAX: DSA (differentiable Siamese augmentation), DC's
crop/scale/rotate, FRePo's evaluation augmentation (:func:`frepo_augment`) and the usual crop + flip
(:data:`AUGMENTS`, :func:`augment_batch`).

DSA (Zhao & Bilen, "Dataset Condensation with Differentiable Siamese
Augmentation", ICML 2021, arXiv:2102.08259) augments the real and the synthetic
batch of a matching step with the *same* random transform, and differentiates
through the transform to the synthetic images. This module implements its
default strategy ``color_crop_cutout_flip_scale_rotate`` in its single mode:
each call picks one family uniformly at random and applies it.

Images are NHWC floats ``(n, h, w, c)``; ``size`` below is ``h`` for the row
axis and ``w`` for the column axis. The families and their ranges (DSA's
defaults):

- ``flip``: the column axis is reversed with probability 0.5.
- ``scale``: each axis scaled by its own factor ``U[1/1.2, 1.2]`` about the
  image centre.
- ``rotate``: a rotation by ``U[-15, 15]`` degrees about the image centre.
- ``crop``: an integer translation ``t`` in ``[-s, s]`` per axis,
  ``s = int(0.125 * size + 0.5)`` (4 for 28 or 32 pixels); the output pixel
  ``q`` is the input pixel ``q - t``, zero where that lies off the image.
- ``cutout``: a square of ``k = int(0.5 * size + 0.5)`` pixels per axis set to
  zero (clipped at the border). Its rows are ``r0 .. r0 + k - 1`` with
  ``r0 = centre - k // 2`` and the integer centre uniform on
  ``0 .. size - (k % 2)``, so the square can hang off either border by the same
  amount (likewise for the columns).
- ``color``: three steps in turn, brightness ``x + (u - 0.5) * 1.0``, saturation
  ``(x - m_c) * (2.0 * u) + m_c`` with ``m_c`` the mean over the channels of each
  pixel, contrast ``(x - m) * (u + 0.5) + m`` with ``m`` the mean of the image
  over rows, columns and channels (a fresh ``u ~ U[0, 1]`` for each step).

``scale`` and ``rotate`` are warps: the output pixel ``q`` (row, column)
samples the input at ``A (q - centre) + centre``, ``centre = ((h-1)/2, (w-1)/2)``,
with ``A = diag(f_row, f_col)`` for scale and a rotation matrix for rotate,
bilinearly, each of the four neighbours off the image counting as zero.

With ``shared=True`` (the Siamese setting) the random numbers are drawn once
per call, independently of the batch size, and applied to every image: two
batches with the same image shape augmented with the same key get exactly the
same transform. With ``shared=False`` each image draws its own parameters (the
family is still one per call). The family's parameters come from the same
sub-key whatever ``families`` holds, so a call with ``families=(f,)`` equals a
call with more families whenever the latter picks ``f``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from ..errors import InvalidInputError

AUGMENTS = ("none", "dc", "crop-flip", "dsa", "frepo")
"""Augmentations of a training batch (:func:`augment_batch`), a fresh draw per image: none, DC's
crop/scale/rotate (:func:`dc_augment`), a shift + flip (:func:`crop_flip`), DSA's families (:func:`dsa_augment`,
``shared=False``), FRePo's (:func:`frepo_augment`)."""

DSA_FAMILIES: tuple[str, ...] = ("color", "crop", "cutout", "flip", "scale", "rotate")

# DSA's default ranges.
_BRIGHTNESS = 1.0
_SATURATION = 2.0
_CONTRAST = 0.5
_SCALE = 1.2
_ROTATE_DEG = 15.0
_CROP_RATIO = 0.125
_CUTOUT_RATIO = 0.5
_FLIP_P = 0.5

# Datasets whose images are digits: a mirrored digit is a different glyph (or none).
_NO_FLIP = frozenset({"mnist", "digits", "svhn"})


def dsa_strategy(dataset_name: str | None) -> tuple[str, ...]:
    """The DSA families to use for a dataset.

    Digit datasets (``"mnist"``, ``"digits"``, ``"svhn"``; case-insensitive) get
    every family but ``"flip"``; any other name, and ``None``, get all of
    :data:`DSA_FAMILIES`.
    """
    if dataset_name is not None and dataset_name.lower() in _NO_FLIP:
        return tuple(f for f in DSA_FAMILIES if f != "flip")
    return DSA_FAMILIES


def _rounded(ratio: float, size: int) -> int:
    return int(ratio * size + 0.5)


def _draw_shape(n: int, shared: bool) -> tuple[int, ...]:
    return (1,) if shared else (n,)


def _per_image(v: jax.Array, n: int) -> jax.Array:
    """Broadcast draws of leading size 1 (shared) or n (per image) to n rows."""
    return jnp.broadcast_to(v, (n,) + v.shape[1:])


def _flip(key, x: jax.Array, shared: bool) -> jax.Array:
    n = x.shape[0]
    mirror = _per_image(jax.random.bernoulli(key, _FLIP_P, _draw_shape(n, shared)), n)
    return jnp.where(mirror[:, None, None, None], x[:, :, ::-1, :], x)


def _crop(key, x: jax.Array, shared: bool) -> jax.Array:
    n, h, w, c = x.shape
    sh, sw = _rounded(_CROP_RATIO, h), _rounded(_CROP_RATIO, w)
    k_row, k_col = jax.random.split(key)
    t_row = _per_image(jax.random.randint(k_row, _draw_shape(n, shared), -sh, sh + 1), n)
    t_col = _per_image(jax.random.randint(k_col, _draw_shape(n, shared), -sw, sw + 1), n)
    framed = jnp.pad(x, ((0, 0), (sh, sh), (sw, sw), (0, 0)))

    # output (i, j) = input (i - t_row, j - t_col) = framed (i - t_row + sh, j - t_col + sw)
    def window(img, dr, dc):
        return jax.lax.dynamic_slice(img, (sh - dr, sw - dc, 0), (h, w, c))

    return jax.vmap(window)(framed, t_row, t_col)


def _cutout(key, x: jax.Array, shared: bool) -> jax.Array:
    n, h, w, _ = x.shape

    def band(k, size):
        side = _rounded(_CUTOUT_RATIO, size)
        centre = _per_image(jax.random.randint(k, _draw_shape(n, shared), 0, size + 1 - side % 2), n)
        first = centre - side // 2
        idx = jnp.arange(size)
        return (idx[None, :] >= first[:, None]) & (idx[None, :] < first[:, None] + side)  # (n, size)

    k_row, k_col = jax.random.split(key)
    rows, cols = band(k_row, h), band(k_col, w)
    hole = rows[:, :, None] & cols[:, None, :]
    return jnp.where(hole[..., None], jnp.zeros((), x.dtype), x)


def _warp(x: jax.Array, mats: jax.Array, shifts: jax.Array | None = None, mode: str = "constant") -> jax.Array:
    """Output pixel q of image b samples image b at ``mats[b] (q - centre) + centre (+ shifts[b])``, bilinearly;
    off the image a sample is zero (``mode="constant"``, DSA's) or the nearest border pixel (``"nearest"``,
    FRePo's)."""
    _, h, w, _ = x.shape
    centre = jnp.asarray([(h - 1) / 2.0, (w - 1) / 2.0], x.dtype)
    rows, cols = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij")
    offsets = jnp.stack([rows.ravel(), cols.ravel()]).astype(x.dtype) - centre[:, None]  # (2, h*w)
    if shifts is None:
        shifts = jnp.zeros((x.shape[0], 2), x.dtype)

    def one(img, mat, shift):
        where = mat @ offsets + (centre + shift)[:, None]

        def channel(plane):
            sampled = jax.scipy.ndimage.map_coordinates(plane, [where[0], where[1]], order=1, mode=mode, cval=0.0)
            return sampled.reshape(h, w)

        return jax.vmap(channel, in_axes=2, out_axes=2)(img)

    return jax.vmap(one)(x, mats, shifts)


def _scale(key, x: jax.Array, shared: bool) -> jax.Array:
    n = x.shape[0]
    factors = jax.random.uniform(key, _draw_shape(n, shared) + (2,), x.dtype, 1.0 / _SCALE, _SCALE)
    return _warp(x, _per_image(jax.vmap(jnp.diag)(factors), n))


def _rotate(key, x: jax.Array, shared: bool) -> jax.Array:
    n = x.shape[0]
    limit = _ROTATE_DEG * math.pi / 180.0
    angle = jax.random.uniform(key, _draw_shape(n, shared), x.dtype, -limit, limit)
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    mats = jnp.stack([jnp.stack([cos, -sin], -1), jnp.stack([sin, cos], -1)], -2)  # (draws, 2, 2)
    return _warp(x, _per_image(mats, n))


def _color(key, x: jax.Array, shared: bool) -> jax.Array:
    n = x.shape[0]
    shape = _draw_shape(n, shared) + (1, 1, 1)
    k_bright, k_sat, k_con = jax.random.split(key, 3)
    u_bright = jax.random.uniform(k_bright, shape, x.dtype)
    u_sat = jax.random.uniform(k_sat, shape, x.dtype)
    u_con = jax.random.uniform(k_con, shape, x.dtype)
    x = x + (u_bright - 0.5) * _BRIGHTNESS
    pixel_mean = jnp.mean(x, axis=3, keepdims=True)
    x = (x - pixel_mean) * (u_sat * _SATURATION) + pixel_mean
    image_mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    return (x - image_mean) * (u_con + _CONTRAST) + image_mean


_FAMILY_FNS: dict[str, Callable[..., jax.Array]] = {
    "color": _color,
    "crop": _crop,
    "cutout": _cutout,
    "flip": _flip,
    "scale": _scale,
    "rotate": _rotate,
}


def _check_families(families: Sequence[str]) -> tuple[str, ...]:
    if isinstance(families, str):
        raise TypeError(f"families must be a sequence of family names, not the string {families!r}")
    families = tuple(families)
    if not families:
        raise ValueError("families is empty: give at least one of " + ", ".join(DSA_FAMILIES))
    unknown = [f for f in families if f not in _FAMILY_FNS]
    if unknown:
        raise ValueError(f"unknown DSA families {unknown}; known: {', '.join(DSA_FAMILIES)}")
    return families


def dsa_augment(key, x, families: Sequence[str] = DSA_FAMILIES, *, shared: bool = True) -> jax.Array:
    """Augment a batch of images with one DSA family chosen at random.

    Args:
        key: a JAX PRNG key (``jax.random.key`` or ``jax.random.PRNGKey``). It
            chooses the family (uniformly among ``families``) and its parameters.
        x: images ``(n, h, w, c)``, floating point (NHWC).
        families: the families to choose from (names in :data:`DSA_FAMILIES`,
            repeats weigh a family up); see :func:`dsa_strategy`. Static under
            ``jax.jit``.
        shared: draw the parameters once for the whole batch (the Siamese
            setting: the same key gives the same transform on any batch of the
            same image shape, whatever its size) rather than once per image.
            Static under ``jax.jit``.

    Returns:
        The augmented batch, of the shape and dtype of ``x``. Jittable and
        differentiable with respect to ``x`` (every family is linear or affine
        in ``x`` for fixed random numbers).
    """
    families = _check_families(families)
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must be a batch of images (n, h, w, c), got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must be floating point, got {x.dtype}")
    k_pick, k_params = jax.random.split(key)
    branches = [functools.partial(_FAMILY_FNS[f], shared=shared) for f in families]
    if len(branches) == 1:
        return branches[0](k_params, x)
    which = jax.random.randint(k_pick, (), 0, len(branches))
    return jax.lax.switch(which, branches, k_params, x)


def crop_flip(key, x: jax.Array, flip: bool = True) -> jax.Array:
    """A random crop of the zero-padded batch ``x: (n, h, w, c)`` (a shift of up to ``p = max(1, h // 7)``
    pixels, 4 at 28x28 and 32x32) and, with ``flip``, a random horizontal flip, per image."""
    n, h, w, c = x.shape
    p = max(1, h // 7)
    k_shift, k_flip = jax.random.split(key)
    shifts = jax.random.randint(k_shift, (n, 2), -p, p + 1)
    padded = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    x = jax.vmap(lambda img, o: jax.lax.dynamic_slice(img, (o[0] + p, o[1] + p, 0), (h, w, c)))(padded, shifts)
    if not flip:
        return x
    flips = jax.random.bernoulli(k_flip, 0.5, (n,))
    return jnp.where(flips[:, None, None, None], x[:, :, ::-1, :], x)


def dc_augment(key, x: jax.Array) -> jax.Array:
    """DC's ``crop_scale_rotate`` on a batch ``x: (n, h, w, c)``: each image gets one of a shift of up to
    ``p = max(1, h // 7)`` pixels, a scaling of each axis by U[0.8, 1.2] or a rotation by U[-45, 45]
    degrees, about the centre, bilinear, filled with the image's per-channel mean."""
    n, h, w, c = x.shape
    p = max(1, h // 7)
    k_op, k_shift, k_scale, k_rot = jax.random.split(key, 4)
    shifts = jax.random.randint(k_shift, (n, 2), -p, p + 1)
    op = jax.random.randint(k_op, (n,), 0, 3)
    scale = jax.random.uniform(k_scale, (n, 2), x.dtype, 0.8, 1.2)
    angle = jax.random.uniform(k_rot, (n,), x.dtype, -jnp.pi / 4, jnp.pi / 4)
    eye = jnp.eye(2, dtype=x.dtype)
    # output pixel q samples the input at  A (q - centre) + centre + t
    rot = jnp.stack([jnp.stack([jnp.cos(angle), -jnp.sin(angle)], -1),
                     jnp.stack([jnp.sin(angle), jnp.cos(angle)], -1)], -2)
    mats = jnp.where((op == 0)[:, None, None], eye,
                     jnp.where((op == 1)[:, None, None], jax.vmap(jnp.diag)(1.0 / scale), rot))
    offsets = jnp.where((op == 0)[:, None], -shifts.astype(x.dtype), 0.0)
    centre = jnp.asarray([(h - 1) / 2, (w - 1) / 2], x.dtype)
    grid = jnp.stack(jnp.meshgrid(jnp.arange(h, dtype=x.dtype), jnp.arange(w, dtype=x.dtype), indexing="ij"))
    rel = grid.reshape(2, -1) - centre[:, None]

    def warp(img, mat, off):
        coords = mat @ rel + centre[:, None] + off[:, None]
        mean = img.mean(axis=(0, 1))

        def channel(ch, m):
            vals = jax.scipy.ndimage.map_coordinates(ch - m, [coords[0], coords[1]], order=1, cval=0.0)
            return vals.reshape(h, w) + m

        return jax.vmap(channel, in_axes=(2, 0), out_axes=2)(img, mean)

    return jax.vmap(warp)(x, mats, offsets)


FREPO_FAMILIES: tuple[str, ...] = ("color", "crop", "rotate", "translate", "cutout")
"""FRePo's evaluation augmentation (``color_crop_rotate_translate_cutout`` in its ``script/eval.py``; ``flip``
is added in front for datasets that are flipped)."""


def _log_uniform(key, shape, dtype, low: float, high: float) -> jax.Array:
    return jnp.exp(jax.random.uniform(key, shape, dtype, math.log(low), math.log(high)))


def _frepo_color(key, x: jax.Array) -> jax.Array:
    n = x.shape[0]
    k_bright, k_con, k_sat = jax.random.split(key, 3)
    bright = jax.random.uniform(k_bright, (n, 1, 1, 1), x.dtype, -0.25, 0.25)
    contrast = _log_uniform(k_con, (n, 1, 1, 1), x.dtype, math.exp(-0.25), math.exp(0.25))
    saturation = _log_uniform(k_sat, (n, 1, 1, 1), x.dtype, math.exp(-0.25), math.exp(0.25))
    x = x + bright
    image_mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    x = (x - image_mean) * contrast + image_mean
    pixel_mean = jnp.mean(x, axis=3, keepdims=True)
    return (x - pixel_mean) * saturation + pixel_mean


def _frepo_crop(key, x: jax.Array) -> jax.Array:
    n, h, w, _ = x.shape
    k_zoom, k_centre = jax.random.split(key)
    zoom = _log_uniform(k_zoom, (n, 1), x.dtype, 0.8, 1.25)
    limit = jnp.abs(zoom * jnp.asarray([h, w], x.dtype) - jnp.asarray([h, w], x.dtype)) / 2.0  # (n, 2)
    centre = (2.0 * jax.random.uniform(k_centre, (n, 2), x.dtype) - 1.0) * limit
    mats = jnp.eye(2, dtype=x.dtype)[None] / zoom[:, :, None]
    return _warp(x, mats, centre / zoom, mode="nearest")


def _frepo_rotate(key, x: jax.Array) -> jax.Array:
    n = x.shape[0]
    angle = jax.random.uniform(key, (n,), x.dtype, -math.pi / 12.0, math.pi / 12.0)
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    mats = jnp.stack([jnp.stack([cos, sin], -1), jnp.stack([-sin, cos], -1)], -2)
    return _warp(x, mats, mode="nearest")


def _frepo_translate(key, x: jax.Array) -> jax.Array:
    n, h, w, _ = x.shape
    limit = jnp.asarray([h, w], x.dtype) * 0.125
    shift = (2.0 * jax.random.uniform(key, (n, 2), x.dtype) - 1.0) * limit
    return _warp(x, jnp.broadcast_to(jnp.eye(2, dtype=x.dtype), (n, 2, 2)), -shift, mode="nearest")


def _frepo_cutout(key, x: jax.Array) -> jax.Array:
    n, h, w, _ = x.shape
    sh, sw = max(h // 4, 1), max(w // 4, 1)
    k_row, k_col = jax.random.split(key)
    top = jax.random.randint(k_row, (n,), 0, h - sh + 1)
    left = jax.random.randint(k_col, (n,), 0, w - sw + 1)
    r, c = jnp.arange(h), jnp.arange(w)
    rows = (r[None] >= top[:, None]) & (r[None] < top[:, None] + sh)
    cols = (c[None] >= left[:, None]) & (c[None] < left[:, None] + sw)
    return jnp.where((rows[:, :, None] & cols[:, None, :])[..., None], jnp.zeros((), x.dtype), x)


def _frepo_flip(key, x: jax.Array) -> jax.Array:
    return _flip(key, x, shared=False)


_FREPO_FNS: dict[str, Callable[..., jax.Array]] = {
    "color": _frepo_color, "crop": _frepo_crop, "rotate": _frepo_rotate, "translate": _frepo_translate,
    "cutout": _frepo_cutout, "flip": _frepo_flip,
}


def frepo_augment(key, x: jax.Array, *, flip: bool = True) -> jax.Array:
    """FRePo's evaluation augmentation of a batch ``x: (n, h, w, c)`` (its ``get_aug_by_name`` with the
    strategy ``[flip_]color_crop_rotate_translate_cutout``, read from ``yongchaoz/FRePo`` at 43e028a): one
    family per call, chosen uniformly, with parameters drawn per image; milder than DSA's:

    - ``color``: brightness ``x + b``, ``b ~ U[-0.25, 0.25]``; contrast about the image's mean and saturation
      about each pixel's channel mean, each a factor log-uniform on ``[e^-0.25, e^0.25]``, in that order;
    - ``crop``: a zoom ``z`` log-uniform on ``[0.8, 1.25]`` about a centre offset ``u`` uniform within
      ``|size (z - 1)| / 2`` per axis (output pixel q samples ``(q - centre + u) / z + centre``);
    - ``rotate``: U[-15, 15] degrees about the centre;
    - ``translate``: a shift uniform in ``[-size/8, size/8]`` per axis, in fractions of a pixel;
    - ``cutout``: a ``size // 4`` square set to zero, wholly inside the image;
    - ``flip`` (``flip=True`` only): mirrored with probability 0.5.

    The warps are bilinear and take the nearest border pixel off the image (not zeros as DSA's do).
    """
    families = (("flip",) if flip else ()) + FREPO_FAMILIES
    k_pick, k_params = jax.random.split(key)
    which = jax.random.randint(k_pick, (), 0, len(families))
    return jax.lax.switch(which, [_FREPO_FNS[f] for f in families], k_params, x)


def augment_batch(augment: str, key, x: jax.Array, *, flip: bool = True) -> jax.Array:
    """``x: (n, h, w, c)`` under the augmentation ``augment`` (one of :data:`AUGMENTS`), a draw per image."""
    if augment == "none":
        return x
    if augment == "dc":
        return dc_augment(key, x)
    if augment == "crop-flip":
        return crop_flip(key, x, flip)
    if augment == "dsa":
        return dsa_augment(key, x, tuple(f for f in DSA_FAMILIES if flip or f != "flip"), shared=False)
    if augment == "frepo":
        return frepo_augment(key, x, flip=flip)
    raise InvalidInputError(f"unknown augmentation {augment!r}; valid: {', '.join(AUGMENTS)}")


__all__ = ["AUGMENTS", "DSA_FAMILIES", "FREPO_FAMILIES", "augment_batch", "crop_flip", "dc_augment", "dsa_augment",
           "dsa_strategy", "frepo_augment"]
