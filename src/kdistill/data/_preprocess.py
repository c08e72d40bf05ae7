"""Input preprocessing (per-channel standardisation, KIP's ZCA whitening) and label helpers.

ZCA follows the recipe of KIP (Nguyen et al., arXiv:2011.00050 and
arXiv:2107.13034): every image is first layer-normalised (its own mean over all
pixels and channels subtracted, then divided by its own standard deviation), then
the flattened features are centred with the training mean and whitened with

    W = U diag((e + r)^(-1/2)) U^T,   cov = Xc^T Xc / n = U diag(e) U^T,
    r = zca_reg * mean(e) = zca_reg * tr(cov) / d.

The whitened training covariance is therefore ``U diag(e / (e + r)) U^T``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ._arrays import check_labels

__all__ = [
    "KINDS",
    "Preprocessor",
    "fit_preprocessor",
    "layer_norm",
    "one_hot",
    "class_balanced_indices",
]

KINDS = ("none", "standardize", "zca")
"""The preprocessing kinds :func:`fit_preprocessor` knows."""

_CHUNK = 2048  # rows per block when streaming over large datasets
_BLOCK_BYTES = 1 << 21  # bytes of pixels per block in the streaming passes of "standardize" (stays in cache)
_PREFIX = "prep_"


def layer_norm(flat: np.ndarray) -> np.ndarray:
    """Per-row standardisation: ``(x - mean(x)) / std(x)`` over each row's features.

    flat: ``(n, d)``; returns ``(n, d) float32``. A constant row becomes all zeros.
    """
    flat = np.asarray(flat, dtype=np.float32)
    centred = flat - flat.mean(axis=1, keepdims=True)
    std = np.sqrt(np.mean(np.square(centred), axis=1, keepdims=True))
    return centred / np.where(std > 0, std, np.float32(1.0))


def _block_rows(x: np.ndarray) -> int:
    """Rows of ``x`` per block of about ``_BLOCK_BYTES`` (at least one)."""
    row = x.dtype.itemsize * int(np.prod(x.shape[1:], dtype=np.int64))
    return max(1, _BLOCK_BYTES // max(1, row))


def _check_finite(x: np.ndarray) -> None:
    """Raise InvalidInputError if ``x`` holds NaN or inf; streams over blocks (no full-size mask)."""
    if x.dtype.kind != "f":
        return
    rows = _block_rows(x)
    for start in range(0, x.shape[0], rows):
        if not np.isfinite(x[start : start + rows]).all():
            raise InvalidInputError("x_train contains NaN or infinite values; clean it before preprocessing")


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over every pixel of ``x (n, h, w, c)``: ``(c,) float64`` each.

    Two streaming passes over blocks of rows, with float64 accumulation and one block-sized
    buffer, no full-size temporary:

        mean = sum(x) / N,   std = sqrt(sum((x - mean)^2) / N),   N = n*h*w,

    where, as in the straightforward ``np.mean(np.square(x - mean.astype(x.dtype)), dtype=float64)``,
    the difference and its square are taken in ``x.dtype`` and only summed in float64, so
    the results equal that formula's up to the order of the float64 sums. Raises
    InvalidInputError when ``x`` holds NaN or inf (a finite float64 sum proves every value
    finite, so the values are scanned again only when the sum is not).
    """
    if x.size == 0:  # images without pixels: the formula as written (NaN statistics)
        _check_finite(x)
        mean = x.mean(axis=(0, 1, 2), dtype=np.float64)
        return mean, np.sqrt(np.mean(np.square(x - mean.astype(x.dtype)), axis=(0, 1, 2), dtype=np.float64))
    c = x.shape[-1]
    count = x.size // c
    rows = _block_rows(x)
    total = np.zeros(c, dtype=np.float64)
    for start in range(0, x.shape[0], rows):
        total += x[start : start + rows].reshape(-1, c).sum(axis=0, dtype=np.float64)
    if not np.all(np.isfinite(total)):
        _check_finite(x)  # raises unless the float64 sum of huge finite values overflowed
    mean = total / count
    centre = mean.astype(x.dtype)
    squares = np.zeros(c, dtype=np.float64)
    buf = np.empty((rows, *x.shape[1:]), dtype=x.dtype)
    for start in range(0, x.shape[0], rows):
        block = x[start : start + rows]
        diff = buf[: block.shape[0]]
        np.subtract(block, centre, out=diff)
        np.square(diff, out=diff)
        squares += diff.reshape(-1, c).sum(axis=0, dtype=np.float64)
    return mean, np.sqrt(squares / count)


def _as_images(x: Any, *, what: str = "x") -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4:
        raise InvalidInputError(f"{what} has shape {x.shape}; expected images (n, h, w, c)")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise InvalidInputError(f"{what} has dtype {x.dtype}; expected float pixels")
    return x


def _standardize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``((x.astype(float32) - mean) / std).astype(float32)``, bit for bit, with no temporary.

    x: ``(n, h, w, c)``; mean, std: ``(c,)``; returns ``(n, h, w, c) float32``. With float32
    ``mean`` and ``std`` the subtraction and the division run in float32 in place on the
    output, block by block (each block is still in cache for the division); other dtypes
    take the formula as written, which then computes in their precision.
    """
    mean, std = np.asarray(mean), np.asarray(std)
    if mean.dtype != np.float32 or std.dtype != np.float32:
        return ((x.astype(np.float32) - mean) / std).astype(np.float32)
    out = np.empty(x.shape, dtype=np.float32)
    rows = _block_rows(out)
    for start in range(0, x.shape[0], rows):
        block = out[start : start + rows]
        if x.dtype == np.float32:
            np.subtract(x[start : start + rows], mean, out=block)
        else:
            block[...] = x[start : start + rows]  # the cast astype(float32) makes
            np.subtract(block, mean, out=block)
        np.divide(block, std, out=block)
    return out


@dataclass(frozen=True, eq=False)
class Preprocessor:
    """A fitted, invertible-for-display input transform.

    Attributes:
      kind: ``"none"``, ``"standardize"`` or ``"zca"``.
      channel_mean, channel_std: ``(c,) float32``; standardize only.
      feature_mean: ``(d,) float32`` mean of the layer-normalised training features
        (``d = h*w*c``); zca only.
      whitening: ``(d, d) float32`` symmetric ``W = U diag((e + r)^-1/2) U^T``; zca only.
      unwhitening: ``(d, d) float32`` its inverse ``U diag((e + r)^1/2) U^T``; zca only.
      zca_reg: the relative regulariser (``r = zca_reg * tr(cov) / d``); zca only.
      image_shape: ``(h, w, c)`` seen when fitting; ``None`` for "none".
    """

    kind: str = "none"
    channel_mean: np.ndarray | None = None
    channel_std: np.ndarray | None = None
    feature_mean: np.ndarray | None = None
    whitening: np.ndarray | None = None
    unwhitening: np.ndarray | None = None
    zca_reg: float | None = None
    image_shape: tuple[int, int, int] | None = None

    def _check(self, x: Any) -> np.ndarray:
        x = _as_images(x)
        if self.image_shape is not None and tuple(x.shape[1:]) != tuple(self.image_shape):
            raise InvalidInputError(
                f"images are {tuple(x.shape[1:])} (h, w, c) but the preprocessor was fitted on "
                f"{tuple(self.image_shape)}; preprocess data of the same shape"
            )
        return x

    def apply(self, x: Any) -> np.ndarray:
        """Transform images: ``x (n, h, w, c)`` in pixel space -> ``(n, h, w, c) float32``."""
        x = self._check(x)
        if self.kind == "none":
            return x.astype(np.float32)
        if self.kind == "standardize":
            assert self.channel_mean is not None and self.channel_std is not None
            return _standardize(x, self.channel_mean, self.channel_std)
        assert self.feature_mean is not None and self.whitening is not None
        n = x.shape[0]
        flat = x.reshape(n, -1)
        out = np.empty(flat.shape, dtype=np.float32)
        for start in range(0, n, _CHUNK):
            block = layer_norm(flat[start : start + _CHUNK]) - self.feature_mean
            out[start : start + _CHUNK] = block @ self.whitening
        return out.reshape(x.shape)

    def to_pixels(self, x: Any, *, clip: bool = True) -> np.ndarray:
        """Map preprocessed images back to ``[0, 1]`` pixels for display.

        Exact (then clipped to ``[0, 1]``, unless ``clip=False``: distilled images can lie far
        outside pixel range) for "none" and "standardize". For "zca"
        the whitening and centring are undone, but layer norm is not invertible,
        so each image is min-max rescaled to ``[0, 1]`` (a constant image -> 0.5).

        x: ``(n, h, w, c)``; returns ``(n, h, w, c) float32`` in ``[0, 1]``.
        """
        x = self._check(x).astype(np.float32)
        lo, hi = (0.0, 1.0) if clip else (-np.inf, np.inf)
        if self.kind == "none":
            return np.clip(x, lo, hi)
        if self.kind == "standardize":
            assert self.channel_mean is not None and self.channel_std is not None
            return np.clip(x * self.channel_std + self.channel_mean, lo, hi).astype(np.float32)
        assert self.feature_mean is not None and self.unwhitening is not None
        n = x.shape[0]
        flat = x.reshape(n, -1) @ self.unwhitening + self.feature_mean
        lo = flat.min(axis=1, keepdims=True)
        span = flat.max(axis=1, keepdims=True) - lo
        scaled = np.where(span > 0, (flat - lo) / np.where(span > 0, span, 1.0), 0.5)
        return scaled.astype(np.float32).reshape(x.shape)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """A flat dict of arrays (keys ``prep_*``, including ``prep_kind``) for an ``.npz``."""
        out: dict[str, np.ndarray] = {f"{_PREFIX}kind": np.array(self.kind)}
        for field in ("channel_mean", "channel_std", "feature_mean", "whitening", "unwhitening"):
            value = getattr(self, field)
            if value is not None:
                out[f"{_PREFIX}{field}"] = np.asarray(value, dtype=np.float32)
        if self.zca_reg is not None:
            out[f"{_PREFIX}zca_reg"] = np.array(float(self.zca_reg), dtype=np.float64)
        if self.image_shape is not None:
            out[f"{_PREFIX}image_shape"] = np.array(self.image_shape, dtype=np.int64)
        return out

    @classmethod
    def from_arrays(cls, d: Mapping[str, Any]) -> Preprocessor:
        """Inverse of :meth:`to_arrays`; keys without the ``prep_`` prefix are ignored.

        A mapping without ``prep_kind`` gives the identity preprocessor ("none").
        """
        key = f"{_PREFIX}kind"
        if key not in d:
            return cls()
        raw_kind = np.asarray(d[key])
        if raw_kind.ndim != 0 or raw_kind.dtype.kind not in "US":
            raise InvalidInputError(
                f"stored {key} is {raw_kind.dtype} {raw_kind.shape}; expected one string (a preprocessing kind)"
            )
        kind = str(raw_kind.item().decode("utf-8", "replace") if raw_kind.dtype.kind == "S" else raw_kind.item())
        if kind not in KINDS:
            raise InvalidInputError(
                f"stored preprocessing kind {kind!r} is unknown; expected one of {', '.join(KINDS)}"
            )
        needed = {
            "none": (),
            "standardize": ("channel_mean", "channel_std"),
            "zca": ("feature_mean", "whitening", "unwhitening", "zca_reg"),
        }[kind]
        missing = [f"{_PREFIX}{n}" for n in needed if f"{_PREFIX}{n}" not in d]
        if missing:
            raise InvalidInputError(
                f"stored {kind} preprocessing lacks {', '.join(missing)}; save it again with "
                "Preprocessor.to_arrays()"
            )

        def arr(name: str) -> np.ndarray | None:
            value = d.get(f"{_PREFIX}{name}")
            if value is None:
                return None
            value = np.asarray(value)
            if value.dtype.kind not in "iuf":
                raise InvalidInputError(
                    f"stored {_PREFIX}{name} has dtype {value.dtype}; expected real numbers"
                )
            with np.errstate(over="ignore"):
                value = value.astype(np.float32)
            if not np.all(np.isfinite(value)):
                raise InvalidInputError(
                    f"stored {_PREFIX}{name} contains NaN or infinite values (or values too large for float32)"
                )
            return value

        reg = d.get(f"{_PREFIX}zca_reg")
        if reg is not None:
            reg = np.asarray(reg)
            if reg.ndim != 0 or reg.dtype.kind not in "iuf" or not (np.isfinite(reg) and reg > 0):
                raise InvalidInputError(
                    f"stored {_PREFIX}zca_reg is {reg.dtype} {reg.shape}; expected one positive finite number"
                )
        shape = d.get(f"{_PREFIX}image_shape")
        if shape is not None:
            shape = np.asarray(shape)
            if shape.shape != (3,) or shape.dtype.kind not in "iu" or not np.all(shape > 0):
                raise InvalidInputError(
                    f"stored {_PREFIX}image_shape is {shape.dtype} {shape.shape}; expected 3 positive integers "
                    "(h, w, c)"
                )
        return cls(
            kind=kind,
            channel_mean=arr("channel_mean"),
            channel_std=arr("channel_std"),
            feature_mean=arr("feature_mean"),
            whitening=arr("whitening"),
            unwhitening=arr("unwhitening"),
            zca_reg=None if reg is None else float(reg),
            image_shape=None if shape is None else tuple(int(v) for v in shape),  # type: ignore[arg-type]
        )

    def check_fits(self, image_shape: tuple[int, ...]) -> None:
        """Raise InvalidInputError unless this preprocessor's arrays fit images of ``image_shape`` ``(h, w, c)``.

        standardize: ``channel_mean, channel_std (c,)``, ``channel_std > 0``; zca: ``feature_mean (d,)``,
        ``whitening, unwhitening (d, d)`` with ``d = h*w*c``; a stored ``image_shape`` equal to ``image_shape``.
        Used when a stored preprocessor is read from a file, before it is applied to anything.
        """
        image_shape = tuple(int(v) for v in image_shape)
        if self.image_shape is not None and tuple(self.image_shape) != image_shape:
            raise InvalidInputError(
                f"stored preprocessing was fitted on images of {tuple(self.image_shape)} (h, w, c) but the images "
                f"are {image_shape}"
            )
        c, d = image_shape[-1], int(np.prod(image_shape))
        expected = {
            "standardize": {"channel_mean": (c,), "channel_std": (c,)},
            "zca": {"feature_mean": (d,), "whitening": (d, d), "unwhitening": (d, d)},
        }.get(self.kind, {})
        for name, shape in expected.items():
            value = getattr(self, name)
            if value is None or tuple(value.shape) != shape:
                got = None if value is None else tuple(value.shape)
                raise InvalidInputError(
                    f"stored {_PREFIX}{name} has shape {got} but images of {image_shape} (h, w, c) need {shape}"
                )
        if self.kind == "standardize" and not np.all(self.channel_std > 0):  # type: ignore[operator]
            raise InvalidInputError(f"stored {_PREFIX}channel_std holds values <= 0; a standard deviation is > 0")

    def describe(self) -> dict[str, Any]:
        """A small JSON-able summary, e.g. ``{"kind": "zca", "zca_reg": 0.1, "dim": 784}``."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.image_shape is not None:
            out["image_shape"] = list(self.image_shape)
        if self.kind == "standardize":
            assert self.channel_mean is not None and self.channel_std is not None
            out["channel_mean"] = [round(float(v), 6) for v in self.channel_mean]
            out["channel_std"] = [round(float(v), 6) for v in self.channel_std]
        if self.kind == "zca":
            assert self.feature_mean is not None
            out["zca_reg"] = self.zca_reg
            out["dim"] = int(self.feature_mean.shape[0])
            out["layer_norm"] = True
        return out


def fit_preprocessor(x_train: Any, kind: str = "standardize", *, zca_reg: float = 0.1) -> Preprocessor:
    """Fit a preprocessor on training images.

    Args:
      x_train: ``(n, h, w, c)`` pixels (float in ``[0, 1]``).
      kind: ``"none"``; ``"standardize"``: per-channel mean/std over every training
        pixel (a channel with std 0 keeps std 1); ``"zca"``: layer norm per image,
        then ZCA whitening with regulariser ``r = zca_reg * tr(cov) / d`` (KIP,
        arXiv:2107.13034; see the module docstring for the formula).
      zca_reg: relative ZCA regulariser, > 0 (ignored for other kinds).

    Returns:
      a :class:`Preprocessor`.
    """
    if kind not in KINDS:
        raise InvalidInputError(
            f"unknown preprocessing {kind!r}; choose one of {', '.join(KINDS)}"
        )
    x = _as_images(x_train, what="x_train")
    if x.shape[0] == 0:
        raise InvalidInputError("x_train is empty; cannot fit preprocessing on zero images")
    shape = tuple(int(v) for v in x.shape[1:])
    if kind == "standardize":
        mean, std = _channel_stats(x)  # also refuses NaN / inf
        std = np.where(std > 0, std, 1.0)
        return Preprocessor(
            kind="standardize",
            channel_mean=mean.astype(np.float32),
            channel_std=std.astype(np.float32),
            image_shape=shape,  # type: ignore[arg-type]
        )
    _check_finite(x)
    if kind == "none":
        return Preprocessor(kind="none")
    if not (np.isfinite(zca_reg) and zca_reg > 0):
        raise InvalidInputError(
            f"zca_reg={zca_reg} must be a positive number (KIP uses about 0.1); with 0 the "
            "whitening divides by the zero eigenvalues that layer norm creates"
        )
    n = x.shape[0]
    flat = x.reshape(n, -1)
    d = flat.shape[1]
    total = np.zeros(d, dtype=np.float64)
    for start in range(0, n, _CHUNK):
        total += layer_norm(flat[start : start + _CHUNK]).sum(axis=0, dtype=np.float64)
    mean = total / n
    cov = np.zeros((d, d), dtype=np.float64)
    for start in range(0, n, _CHUNK):
        block = layer_norm(flat[start : start + _CHUNK]).astype(np.float64) - mean
        cov += block.T @ block
    cov /= n
    eigvals, eigvecs = np.linalg.eigh(cov)
    eigvals = np.clip(eigvals, 0.0, None)
    r = float(zca_reg) * float(eigvals.mean())
    if r <= 0:
        raise InvalidInputError(
            "x_train has no variance after layer norm (every image is constant); ZCA is undefined"
        )
    whitening = (eigvecs * (eigvals + r) ** -0.5) @ eigvecs.T
    unwhitening = (eigvecs * (eigvals + r) ** 0.5) @ eigvecs.T
    return Preprocessor(
        kind="zca",
        feature_mean=mean.astype(np.float32),
        whitening=whitening.astype(np.float32),
        unwhitening=unwhitening.astype(np.float32),
        zca_reg=float(zca_reg),
        image_shape=shape,  # type: ignore[arg-type]
    )


def one_hot(
    labels: Any, num_classes: int, *, centred: bool = True, dtype: Any = np.float32
) -> np.ndarray:
    """One-hot targets, mean-centred by default (KIP's convention).

    labels: ``(n,)`` integers in ``[0, num_classes)``. Returns ``(n, k)``: 1 at the
    label and 0 elsewhere, minus ``1/k`` everywhere when ``centred`` (so each row
    sums to 0).
    """
    if int(num_classes) < 1:
        raise InvalidInputError(f"num_classes={num_classes} must be at least 1")
    k = int(num_classes)
    y = check_labels(labels, what="labels", num_classes=k)
    out = np.zeros((y.shape[0], k), dtype=dtype)
    out[np.arange(y.shape[0]), y] = 1
    if centred:
        out -= np.asarray(1.0 / k, dtype=dtype)
    return out


def class_balanced_indices(
    labels: Any, per_class: int, *, seed: int, num_classes: int | None = None
) -> np.ndarray:
    """Pick ``per_class`` random examples of every class.

    labels: ``(n,)`` integers in ``[0, k)`` (``k = num_classes`` or ``max + 1``).
    Returns ``(per_class * k,) int64`` indices into ``labels``, grouped by class
    (class 0 first) and in random order within a class; the same for the same
    ``seed`` (``numpy.random.default_rng(seed)``).
    """
    y = check_labels(labels, what="labels", num_classes=num_classes)
    if per_class < 1:
        raise InvalidInputError(f"per_class={per_class} must be at least 1 image per class")
    k = int(num_classes) if num_classes is not None else int(y.max(initial=-1)) + 1
    counts = np.bincount(y, minlength=k)
    if k == 0:
        raise InvalidInputError("labels are empty; cannot pick examples per class")
    short = np.flatnonzero(counts < per_class)
    if short.size:
        c = int(short[0])
        raise InvalidInputError(
            f"class {c} has only {int(counts[c])} examples, fewer than per_class={per_class}; "
            f"at most {int(counts.min())} per class is possible"
        )
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(y == c))[:per_class] for c in range(k)]
    return np.concatenate(picks).astype(np.int64)
