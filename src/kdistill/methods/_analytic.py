"""Closed-form distilled sets for linear and kernel ridge regression.

Chen, Huang & Weng, "Provable and Efficient Dataset Distillation for Kernel
Ridge Regression", NeurIPS 2024. Notation of the paper: W (k, p) are the
weights of ridge regression on the full data, Y_S (k, m) the distilled labels
(rank k, or at least W's columns in their range), Z (m, p) free.

    D = Y_S^+ W + (I_m - Y_S^+ Y_S) Z                       (m, p)
    lambda_S = 0:  phi(X_S) = D^+                            (p, m)
    lambda_S > 0:  D = V diag(s) U^T, need lambda_S <= 1 / (4 s_1^2),
                   sigma_i = (1 + sqrt(1 - 4 lambda_S s_i^2)) / (2 s_i),
                   phi(X_S) = U diag(sigma) V^T
    then W_S = Y_S phi_lambda_S(X_S)^+ = W exactly.

Functions here return feature matrices with one row per distilled image,
``phi_s: (m, p)`` (the transpose of the paper's phi(X_S)); images are
``kernel.inverse(phi_s, image_shape)``.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from typing import Any

import numpy as np

from .._precision import precision_scope
from ..data import class_balanced_indices, one_hot
from ..errors import InvalidInputError
from ..kernels import Kernel
from ._registry import Option, register_method
from ._types import Context, MethodOutput

__all__ = [
    "AnalyticResult",
    "check_kernel",
    "distill",
    "distilled_features",
    "deep_linear_theorem_5_3",
    "lambda_s_bound",
    "range_residual",
    "noise_z",
    "KERNELS",
    "RFF_RANGE_MARGIN",
    "realistic_labels_and_z",
    "regularised_pinv",
    "weights_from_support",
    "weight_agreement",
    "WeightAgreement",
    "parse_lambda_s",
]


_RCOND = 1e-10  # relative cutoff of the pseudo-inverses here: below it a singular value is rounding


def _label_pinv(y_s: np.ndarray) -> np.ndarray:
    """Pseudo-inverse of the labels (k, m), treating singular values below 1e-10 * s_max as zero:
    rounding must not turn mean-centred one-hot labels (rank k - 1) into a rank-k matrix with a
    tiny singular value, whose inverse would swamp D."""
    return np.linalg.pinv(y_s, rcond=_RCOND)


def _check(w: np.ndarray, y_s: np.ndarray, z: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    w = np.asarray(w, dtype=np.float64)
    y_s = np.asarray(y_s, dtype=np.float64)
    if w.ndim != 2 or y_s.ndim != 2 or w.shape[0] != y_s.shape[0]:
        raise InvalidInputError(f"expected W (k, p) and Y_S (k, m) with the same k, got {w.shape} and {y_s.shape}")
    k, m = y_s.shape
    if m < k:
        raise InvalidInputError(
            f"m={m} distilled images for k={k} classes: with fewer images than classes no distilled set "
            "reproduces W in general (Chen et al. 2024, Thm 4.1); use at least one image per class"
        )
    for name, a in (("W", w), ("Y_S", y_s)):
        if not np.all(np.isfinite(a)):
            raise InvalidInputError(f"{name} contains NaN or inf")
    if z is not None and np.shape(z) != (m, w.shape[1]):
        raise InvalidInputError(f"Z must be (m, p) = {(m, w.shape[1])}, got {np.shape(z)}")
    y_pinv = _label_pinv(y_s)
    resid = np.linalg.norm(w - y_s @ (y_pinv @ w))
    if resid > 1e-4 * max(np.linalg.norm(w), 1e-300):  # rounding leaves ~1e-7; the rest is dropped
        raise InvalidInputError(
            f"W is not in the range of the labels Y_S (relative residual {resid / np.linalg.norm(w):.2e}); "
            "Y_S needs rank k (or the rank of W)"
        )
    return w, y_s


def _d_matrix(w: np.ndarray, y_s: np.ndarray, z: np.ndarray | None) -> np.ndarray:
    y_pinv = _label_pinv(y_s)
    d = y_pinv @ w
    if z is not None:
        z = np.asarray(z, dtype=np.float64)
        d = d + z - y_pinv @ (y_s @ z)
    return d


def lambda_s_bound(w, y_s, z=None) -> float:
    """Largest admissible ridge of the distilled model, ``1 / (4 s_1^2)`` with s_1 = ||D||_2."""
    w, y_s = _check(np.asarray(w), np.asarray(y_s), z)
    s1 = np.linalg.norm(_d_matrix(w, y_s, z), 2)
    return float(np.inf if s1 == 0 else 1.0 / (4.0 * s1 * s1))


def distilled_features(w, y_s, z=None, *, lambda_s: float = 0.0, clamp: bool = False) -> np.ndarray:
    """Features of the distilled images, ``(m, p)``, such that ridge on them with ``lambda_s`` gives W.

    Args:
      w: (k, p) weights of the original model.
      y_s: (k, m) distilled labels.
      z: (m, p) free matrix (None means 0).
      lambda_s: absolute ridge of the distilled model (>= 0).
      clamp: if ``lambda_s`` exceeds the bound 1/(4 s_1^2), clamp it (with a warning)
        instead of raising.
    """
    w, y_s = _check(np.asarray(w), np.asarray(y_s), z)
    if not (lambda_s >= 0 and np.isfinite(lambda_s)):
        raise InvalidInputError(f"lambda_s must be a finite number >= 0, got {lambda_s}")
    d = _d_matrix(w, y_s, z)
    if lambda_s == 0:  # singular values below 1e-10 s_1 are rounding (rank(D) <= p < m when m > p), not data
        return np.linalg.pinv(d, rcond=_RCOND).T
    v, s, ut = np.linalg.svd(d, full_matrices=False)  # d = v diag(s) ut
    bound = 1.0 / (4.0 * s[0] ** 2) if s[0] > 0 else np.inf
    if bound < lambda_s <= bound * (1 + 1e-9):  # the bound itself, up to rounding: a double root
        lambda_s = bound
    if lambda_s > bound:
        if not clamp:
            raise InvalidInputError(
                f"lambda_s={lambda_s:.6g} exceeds the bound 1/(4 s_1^2) = {bound:.6g} (s_1 = {s[0]:.6g}); "
                "no distilled set reproduces W with it: use a smaller lambda_s or clamp"
            )
        warnings.warn(f"lambda_s={lambda_s:.6g} clamped to the bound {bound:.6g}", RuntimeWarning, stacklevel=2)
        lambda_s = bound
    pos = s > s[0] * _RCOND
    disc = np.sqrt(np.clip(1.0 - 4.0 * lambda_s * s**2, 0.0, None))
    sigma = np.where(pos, (1.0 + disc) / (2.0 * np.where(pos, s, 1.0)), 0.0)
    # phi(X_S) = U diag(sigma) V^T  (p, m); return its transpose
    return (v * sigma) @ ut


def regularised_pinv(phi: np.ndarray, lam: float) -> np.ndarray:
    """``phi_lam^+ = (phi^T phi + lam I)^-1 phi^T`` for ``phi: (p, m)`` (the pseudo-inverse when lam = 0)."""
    if lam == 0:
        return np.linalg.pinv(phi)
    m = phi.shape[1]
    return np.linalg.solve(phi.T @ phi + lam * np.eye(m), phi.T)


def realistic_labels_and_z(w, phi0: np.ndarray, *, lambda_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and Z that keep the distilled features near ``phi0`` (paper Sec. 4.2).

    Args:
      w: (k, p) original weights. phi0: (m, p) features of the starting real images.
    Returns: Y_S = W phi(X0) (k, m), the labels the original model gives X0, and
      Z = (I - Y_S^+ Y_S)(phi_lam(X0)^+ - Y_S^+ W) (m, p), where phi_lam^+ is the
      regularised pseudo-inverse when lambda_s > 0.
    """
    w = np.asarray(w, dtype=np.float64)
    phi = np.asarray(phi0, dtype=np.float64).T  # (p, m)
    y_s = w @ phi
    y_pinv = _label_pinv(y_s)
    target = regularised_pinv(phi, lambda_s) - y_pinv @ w
    z = target - y_pinv @ (y_s @ target)
    return y_s, z


def weights_from_support(phi_s: np.ndarray, y_s: np.ndarray, *, lam: float) -> np.ndarray:
    """W_S (k, p) of ridge regression with absolute ridge ``lam`` on features ``phi_s: (m, p)``, labels (k, m)."""
    phi_s = np.asarray(phi_s, dtype=np.float64)
    k_ss = phi_s @ phi_s.T
    m = k_ss.shape[0]
    if lam == 0:
        alpha = np.linalg.lstsq(k_ss, np.asarray(y_s, dtype=np.float64).T, rcond=None)[0]
    else:
        alpha = np.linalg.solve(k_ss + lam * np.eye(m), np.asarray(y_s, dtype=np.float64).T)
    return (phi_s.T @ alpha).T


@dataclasses.dataclass(frozen=True)
class WeightAgreement:
    cosine: float
    relative_error: float


def weight_agreement(w_s: np.ndarray, w: np.ndarray) -> WeightAgreement:
    """cos(W_S, W) (Frobenius) and ||W_S - W|| / ||W||."""
    a = np.asarray(w_s, dtype=np.float64).ravel()
    b = np.asarray(w, dtype=np.float64).ravel()
    nb = np.linalg.norm(b)
    return WeightAgreement(float(a @ b / (np.linalg.norm(a) * nb)), float(np.linalg.norm(a - b) / nb))


def _out_of_range(phi_s: np.ndarray, bound: float) -> float:
    """Share of target features outside a bounded map's range |f| <= bound (``Kernel.feature_bound``)."""
    return float(np.mean(np.abs(phi_s) / bound > 1.0))


# The kernel families whose feature map has an inverse (Kernel.features and Kernel.inverse), which is what
# check_kernel accepts: the one list behind the method's doc (kdistill methods) and check_kernel's message.
# tests/test_cli.py checks it against the kernel registry and the README's Methods table.
KERNELS = ("identity", "linear", "fcnn", "rff", "inn", "cnn", "deep-linear")


# rff's inverse is arccos: keep targets strictly inside its range, where it is well conditioned (the same for
# every map with bounded features, Kernel.feature_bound)
RFF_RANGE_MARGIN = 0.95
# a round trip phi(inverse(f)) off by more than this (relative) means the map cannot reach f
REACH_TOL = 1e-6


def check_kernel(kernel: Kernel) -> None:
    """The analytic method needs an explicit feature map with a (pre-)inverse."""
    if kernel.features is None or kernel.inverse is None:
        raise InvalidInputError(
            f"the analytic method needs a kernel with an explicit, invertible feature map ({', '.join(KERNELS)}); "
            f"{kernel.spec!r} has none"
        )


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a))))


def _median_singular_value(a: np.ndarray) -> float:
    s = np.linalg.svd(a, compute_uv=False)
    s = s[s > s[0] * 1e-10] if s.size and s[0] > 0 else s[:0]
    return float(np.median(s)) if s.size else 0.0


def noise_z(kernel: Kernel, w, y_s, image_shape, *, seed: int, scale: float = 1.0) -> np.ndarray:
    """Free matrix Z (m, p) for the noise start: features of Gaussian noise images, with the part Y_S^+ Y_S Z
    (which D ignores) removed and the rest scaled so that its median singular value is ``scale`` times that of
    Y_S^+ W. Shapes: w (k, p), y_s (k, m), image_shape (h, w, c) of the m noise images.

    Rows of Z are features of images, so they lie in the map's range even when it is not onto (deep-linear
    with width > d): then so do the rows of D and the columns of D^+, and the images reach their targets.
    With ``scale`` near 1, D (hence the distilled features) is well conditioned; the paper's small Gaussian
    Z (std 0.1 of Y_S^+ W) makes D nearly rank k and the extra images huge.
    """
    w = np.asarray(w, dtype=np.float64)
    y_s = np.asarray(y_s, dtype=np.float64)
    m = y_s.shape[1]
    noise = np.random.default_rng(seed).standard_normal((m, *image_shape))
    z = np.asarray(kernel.features(noise), dtype=np.float64)
    y_pinv = _label_pinv(y_s)
    z = z - y_pinv @ (y_s @ z)
    sz = _median_singular_value(z)
    if sz == 0.0:
        return z
    return z * (scale * _median_singular_value(y_pinv @ w) / sz)


def _feature_scale(kernel: Kernel, x_train: np.ndarray, seed: int, count: int = 256) -> float:
    """RMS of the map's features on ``count`` training images: the scale distilled features are brought to."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(x_train.shape[0], size=min(count, x_train.shape[0]), replace=False)
    return _rms(np.asarray(kernel.features(np.asarray(x_train[np.sort(idx)], dtype=np.float64)), dtype=np.float64))


@dataclasses.dataclass(frozen=True)
class AnalyticResult:
    """images: (m, h, w, c) float64 (the round trip through the feature map needs it: float32 images
    reproduce W only to ~1e-4 for fcnn); labels: (m, k) float64 (Y_S^T); lambda_s: the ridge they are
    built for; info: diagnostics (weight_cosine, relative_weight_error, round-trip errors, ...);
    seconds: build time."""

    images: np.ndarray
    labels: np.ndarray
    lambda_s: float
    info: dict[str, Any]
    seconds: float


def _least_squares_labels(w: np.ndarray, phi: np.ndarray, lam: float, phi_data: np.ndarray) -> np.ndarray:
    """Labels (k, m) for support features ``phi: (m, p)`` minimising ||(Y_S phi_lam^+ - W) phi_data^T||: the
    distilled model's outputs against W's on training features ``phi_data: (n, p)`` (Chen et al. Thm 4.2
    measured where the data lie; KIP's Label Solve)."""
    b = regularised_pinv(phi.T, lam) @ phi_data.T  # (m, n)
    return np.asarray((w @ phi_data.T) @ np.linalg.pinv(b), dtype=np.float64)


def _output_error(w_s: np.ndarray, w: np.ndarray, phi_data: np.ndarray) -> float:
    """||(W_S - W) phi_data^T|| / ||W phi_data^T||: how far the distilled model's outputs on training images
    are from the original model's."""
    ref = w @ phi_data.T
    return float(np.linalg.norm(w_s @ phi_data.T - ref) / max(np.linalg.norm(ref), 1e-300))


def _invisible_part(kernel: Kernel, w: np.ndarray, d: int) -> tuple[np.ndarray, float | None]:
    """For a linear map that need not be onto (``kernel.linear_matrix``, deep-linear: not onto when wider than d):
    W with its rows projected onto the map's range, and the relative size of what was dropped. That part meets
    no input's features, so predictions are unchanged; but rounding in a float32 Gram puts ~1e-7 of it into W,
    which no distilled set can reproduce (``range_residual``). Other maps: W unchanged, None."""
    if kernel.linear_matrix is None:
        return w, None
    m = kernel.linear_matrix(d)
    q, r = np.linalg.qr(m)
    q = q[:, np.abs(np.diag(r)) > np.abs(np.diag(r)).max() * _RCOND]
    kept = (w @ q) @ q.T
    return kept, float(np.linalg.norm(w - kept) / max(np.linalg.norm(w), 1e-300))


def _targets(w, y_s, z, lambda_s, relative, clamp):
    """Distilled features for labels ``y_s`` and free ``z``; returns (phi_s, lambda_s used, its bound)."""
    bound = lambda_s_bound(w, y_s, z)
    lam_s = lambda_s * bound if relative else float(lambda_s)
    phi_s = distilled_features(w, y_s, z, lambda_s=lam_s, clamp=clamp)
    return phi_s, min(lam_s, bound), bound


def _in_float64(fn):
    """Run ``fn`` with JAX's 64-bit types on: the construction and its diagnostics need float64 features
    whatever the run's precision (float32 features of the images round at ~1e-4, which would read as a
    map that cannot reach its targets)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with precision_scope("float64"):
            return fn(*args, **kwargs)

    return wrapper


@_in_float64
def distill(
    kernel: Kernel,
    w: np.ndarray,
    x_train: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    ipc: int,
    seed: int,
    init: str = "noise",
    lambda_s: float = 0.0,
    lambda_s_relative: bool = False,
    clamp: bool = False,
    z_scale: float = 1.0,
) -> AnalyticResult:
    """Closed-form distilled set of ``ipc`` images per class for the model ``w: (k, p)``.

    Args:
      kernel: kernel with an explicit feature map and inverse (:data:`KERNELS`: identity, fcnn, rff, inn, cnn,
        deep-linear).
      w: (k, p) weights of ridge regression on the full training set (features of ``kernel``).
      x_train: (n, h, w, c) training images (preprocessed); labels: (n,) ints.
      init: ``"noise"`` (paper Sec. 4.1: one-hot labels, Z from noise, see :func:`noise_z`) or ``"real"``
        (Sec. 4.2: start from class-balanced real images X0, labels W phi(X0)).
      lambda_s: ridge of the distilled model; with ``lambda_s_relative`` a fraction of the bound.
      clamp: clamp lambda_s to its bound instead of raising.
      z_scale: noise init: size of Z's part of D relative to Y_S^+ W (median singular values; 1 keeps D
        well conditioned).

    Scale. Y_S is free up to rank, and scaling Y_S by c > 0 and Z by 1/c scales D by 1/c, the distilled features by c
    and leaves W_S unchanged (for lambda_S = 0 exactly; a fraction of the bound stays a fraction of it). The
    noise start uses this to give the images the RMS of the training images (``image_std_ratio`` = 1),
    instead of the ~1e4 that D^+ of a small Z gives; the real start scales down to that RMS when above it
    (fcnn: ~30x otherwise, and further from X0). For rff the features are further scaled into 0.95 of
    its range (its inverse is arccos), which keeps the round trip exact; with the real start this moves
    the images away from X0 when W phi(X0)'s targets leave the range.

    Maps that are not onto. When the images cannot reach the target features (relative round-trip error
    above 1e-6: e.g. ``fcnn:width=..`` wider than the input), the labels are re-solved for the images
    actually obtained (least squares, the paper's Theorem 4.2), or the real starting images are kept with
    such labels when that reproduces W better (``info["fallback"]`` says which); W_S then differs from W,
    the info says by how much, and a warning says so in one line. For ``deep-linear`` wider than d, the
    part of W outside the map's range (which no input's features meet) is dropped first
    (``info["w_outside_range"]``); the rest is reached exactly.

    Diagnostics in ``info`` use features recomputed from the images returned, i.e. the round trip a user
    makes: ``weight_cosine`` = cos(W_S, W), ``relative_weight_error``, ``relative_output_error`` (the two
    models' outputs on 2000 training images), ``feature_round_trip_error``, ``image_std_ratio`` (RMS of the
    images over that of the training images).
    """
    check_kernel(kernel)
    if init not in ("noise", "real"):
        raise InvalidInputError(f"analytic method: init must be 'noise' or 'real', got {init!r}")
    if not (np.isfinite(z_scale) and z_scale > 0):
        raise InvalidInputError(f"analytic method: z_scale must be a finite number > 0, got {z_scale!r}")
    t = time.perf_counter()
    w = np.asarray(w, dtype=np.float64)
    image_shape = tuple(x_train.shape[1:])
    w, dropped = _invisible_part(kernel, w, int(np.prod(image_shape)))
    idx = class_balanced_indices(labels, ipc, seed=seed, num_classes=num_classes)
    info: dict[str, Any] = {"init": init}
    if dropped is not None:
        info["w_outside_range"] = dropped  # the weight errors below are against W without it
    data_rms = _rms(np.asarray(x_train[: min(4096, x_train.shape[0])], dtype=np.float64))
    if init == "noise":
        y_s = one_hot(labels[idx], num_classes, dtype=np.float64).T  # (k, m)
        z = noise_z(kernel, w, y_s, image_shape, seed=seed, scale=z_scale)
        # first guess: distilled features with the RMS of real images' features
        phi_s, _, _ = _targets(w, y_s, z, 0.0, False, clamp)
        scale = _feature_scale(kernel, x_train, seed) / max(_rms(phi_s), 1e-300)
    else:
        phi0 = np.asarray(kernel.features(np.asarray(x_train[idx], dtype=np.float64)), dtype=np.float64)
        y_s, z = realistic_labels_and_z(w, phi0, lambda_s=0.0)
        if lambda_s > 0:  # Sec. 4.2 with lambda_S > 0: regularised pseudo-inverse of phi(X0)
            bound = lambda_s_bound(w, y_s, z)
            y_s, z = realistic_labels_and_z(w, phi0, lambda_s=lambda_s * bound if lambda_s_relative else lambda_s)
        scale = 1.0

    def build(c: float):
        phi, lam, bnd = _targets(w, c * y_s, z / c, lambda_s, lambda_s_relative, clamp)
        return phi, lam, bnd, np.asarray(kernel.inverse(phi, image_shape), dtype=np.float64)

    phi_s, lam_s, bound, images = build(scale)
    # then the images' own RMS: that of the training images for the noise start; at most that for the real
    # start (fcnn's W phi(X0) targets give images ~30x the data otherwise, further from X0, not closer).
    # Exact in one step for maps without biases (fcnn, cnn, deep-linear, identity). Not for maps with bounded
    # features (Kernel.feature_bound, rff): rff's images are dominated by A^-1 (arccos(.) - b), whatever the
    # features' scale, and shrinking the features only costs round-trip precision; they are scaled into the
    # map's range instead.
    feature_bound = None if kernel.feature_bound is None else kernel.feature_bound(phi_s.shape[1])
    for _ in range(0 if feature_bound is not None else 4):
        ratio = data_rms / max(_rms(images), 1e-300)
        if abs(np.log(ratio)) < 0.01 or (init == "real" and ratio >= 1):
            break
        scale *= ratio
        phi_s, lam_s, bound, images = build(scale)
    if feature_bound is not None:
        info["rff_out_of_range_before_scaling"] = _out_of_range(phi_s, feature_bound)  # the key runs record
        for _ in range(8):  # exact in one pass for lambda_S = 0 or a fraction of the bound
            peak = float(np.max(np.abs(phi_s)) / feature_bound)
            if peak <= RFF_RANGE_MARGIN * (1 + 1e-9):
                break
            scale *= RFF_RANGE_MARGIN / peak
            phi_s, lam_s, bound, images = build(scale)
    y_s, z = scale * y_s, z / scale
    info["label_scale"] = scale
    phi_back = np.asarray(kernel.features(images), dtype=np.float64)
    reach = float(np.linalg.norm(phi_back - phi_s) / np.linalg.norm(phi_s))
    rng = np.random.default_rng(seed + 7)
    sample = np.sort(rng.choice(x_train.shape[0], size=min(2000, x_train.shape[0]), replace=False))
    phi_data = np.asarray(kernel.features(np.asarray(x_train[sample], dtype=np.float64)), dtype=np.float64)
    if reach > REACH_TOL:
        # not onto: labels that best reproduce W's outputs on training images from the features actually
        # reached (least squares, cf. Thm 4.2 and KIP's Label Solve); the real starting images (reachable by
        # definition) with such labels are the other candidate, kept when their outputs are closer
        y_s = _least_squares_labels(w, phi_back, lam_s, phi_data)
        x0 = np.asarray(x_train[idx], dtype=np.float64)
        phi0 = np.asarray(kernel.features(x0), dtype=np.float64)
        y0 = _least_squares_labels(w, phi0, lam_s, phi_data)
        if (_output_error(weights_from_support(phi0, y0, lam=lam_s), w, phi_data)
                < _output_error(weights_from_support(phi_back, y_s, lam=lam_s), w, phi_data)):
            images, phi_back, y_s = x0, phi0, y0
            info["fallback"] = "real images with least-squares labels (closer to W's outputs than the targets)"
        else:
            info["fallback"] = "least-squares preimages of the targets with least-squares labels"
        info["labels_resolved"] = True
    seconds = time.perf_counter() - t

    w_s = weights_from_support(phi_back, y_s, lam=lam_s)
    agree = weight_agreement(w_s, w)
    info.update(
        weight_cosine=agree.cosine,
        relative_weight_error=agree.relative_error,
        relative_output_error=_output_error(w_s, w, phi_data),
        lambda_s=lam_s,
        lambda_s_bound=bound,
        feature_round_trip_error=reach,
        image_std_ratio=_rms(images) / max(data_rms, 1e-300),
        image_max_abs=float(np.max(np.abs(images))),
        init_indices=idx.tolist(),
    )
    if reach > REACH_TOL:
        info["reach_note"] = (
            f"{kernel.spec} cannot reach the target features (relative round-trip error {reach:.2g}): "
            f"{info['fallback']}; the outputs on training images differ from the full model's by "
            f"{info['relative_output_error']:.2g} (relative), the weights by {agree.relative_error:.2g}"
        )
        warnings.warn(info["reach_note"], RuntimeWarning, stacklevel=2)
    if init == "real":
        x0 = np.asarray(x_train[idx], dtype=np.float64).reshape(len(idx), -1)
        dist = np.linalg.norm(images.reshape(len(idx), -1) - x0, axis=1) / np.linalg.norm(x0, axis=1)
        info["mean_relative_distance_to_init"] = float(np.mean(dist))
    return AnalyticResult(images, y_s.T.copy(), lam_s, info, seconds)


def range_residual(w: np.ndarray, m: np.ndarray) -> float:
    """``||W - W P_M|| / ||W||`` with P_M the projector onto range(M): how far the rows of ``w: (k, p)`` leave
    the range of a linear feature map ``M: (p, d)``.

    For a linear map, W_S = Y_S phi_lambda(X_S)^+ has its rows in range(phi(X_S)) (those of any pseudo-inverse
    lie in the column space of its argument), which lies in range(M): no distilled set of any size reproduces
    a W with a residual above rounding. A W fitted by ridge on the map's own features has residual 0 (its
    rows are combinations of training features), and then one image per class suffices.
    """
    w = np.asarray(w, dtype=np.float64)
    q, r = np.linalg.qr(np.asarray(m, dtype=np.float64))
    q = q[:, np.abs(np.diag(r)) > np.abs(np.diag(r)).max() * max(m.shape) * np.finfo(np.float64).eps]
    return float(np.linalg.norm(w - (w @ q) @ q.T) / max(np.linalg.norm(w), 1e-300))


def deep_linear_theorem_5_3(w1: np.ndarray, m: np.ndarray, w: np.ndarray, y_s: np.ndarray,
                            z: np.ndarray | None = None, *, tol: float = 1e-10) -> np.ndarray:
    """Distilled data ``X_S: (m_S, d)`` (one row per image) for a deep linear feature map phi(x) = M x,
    ``M = W_L ... W_1: (p, d)``, by the construction in the proof of Chen et al.'s Theorem 5.3 (lambda_S = 0).

    With H = [M W_1^+, W^+ W - I_p] (p, 2p) and V_2 the last p right singular vectors of H, split into
    p x p blocks V_2^top, V_2^bot: C = H^+ W^+ Y_S, b = (V_2^bot)^-1 (Z' (I - Y_S^+ Y_S) - C_bot),
    Z_1 = V_2^top b + C_top and X_S = W_1^+ Z_1, whose features are W^+ Y_S + (I - W^+ W) Z' (I - Y_S^+ Y_S).

    The theorem asks rank(H) = p and V_2^bot of full rank p; both are checked and a failure raises a
    one-line error. Note: V_2^bot has rank k + dim(range(M) and null(W)) <= d, so the second condition
    holds only when p <= d: for a network wider than its input (the non-surjective case the theorem is
    about) it always fails. What decides that case is :func:`range_residual`: W_S = W is reachable at any
    m_S >= k iff W's rows lie in range(M), which holds for any W fitted by ridge on the map's features.

    Args:
      w1: (p, d) first layer. m: (p, d) the product of all layers. w: (k, p) weights to reproduce.
      y_s: (k, m_S) labels of rank k, m_S > k. z: (p, m_S) free matrix Z' (default: zeros).
    """
    w1, m, w, y_s = (np.asarray(a, dtype=np.float64) for a in (w1, m, w, y_s))
    p = m.shape[0]
    k, m_s = y_s.shape
    if w1.shape != m.shape or w.shape != (k, p):
        raise InvalidInputError(f"expected W_1 and M (p, d) of one shape and W (k, p): got {w1.shape}, {m.shape}, "
                                f"{w.shape}")
    if m_s <= k or np.linalg.matrix_rank(y_s) < k:
        raise InvalidInputError(f"Theorem 5.3 needs m > k distilled points and labels of rank k; got m={m_s}, k={k}, "
                                f"rank {np.linalg.matrix_rank(y_s)}")
    z = np.zeros((p, m_s)) if z is None else np.asarray(z, dtype=np.float64)
    w_pinv = np.linalg.pinv(w)
    h = np.hstack([m @ np.linalg.pinv(w1), w_pinv @ w - np.eye(p)])
    _, sv, vt = np.linalg.svd(h)
    rank_h = int(np.sum(sv > tol * sv[0]))
    if rank_h < p:
        raise InvalidInputError(f"Theorem 5.3 does not apply: H = [M W_1^+, W^+ W - I] has rank {rank_h} < p = {p}")
    v2 = vt[p:].T  # (2p, p): right singular vectors of the zero singular values
    top, bot = v2[:p], v2[p:]
    sb = np.linalg.svd(bot, compute_uv=False)
    rank_b = int(np.sum(sb > tol * max(sb[0], 1e-300)))
    if rank_b < p:
        raise InvalidInputError(
            f"Theorem 5.3 does not apply: the lower-right {p} x {p} block of H's right singular vectors has rank "
            f"{rank_b} < p (it is at most d = {m.shape[1]}, so the condition fails whenever the width p exceeds d); "
            f"W's rows leave range(M) by {range_residual(w, m):.2g} (relative): 0 means one image per class "
            "already reproduces W"
        )
    c = np.linalg.pinv(h) @ (w_pinv @ y_s)
    proj = np.eye(m_s) - _label_pinv(y_s) @ y_s
    b = np.linalg.solve(bot, z @ proj - c[p:])
    z1 = top @ b + c[:p]
    return (np.linalg.pinv(w1) @ z1).T


def parse_lambda_s(value: float | str) -> tuple[float, bool]:
    """``0.001`` -> (0.001, False); ``"0.5xbound"`` -> (0.5, True): a fraction of the bound 1/(4 s_1^2)."""
    if isinstance(value, tuple):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number, relative = float(value), False
    else:
        text = str(value).strip().lower()
        relative = text.endswith("xbound")
        try:
            number = float(text[: -len("xbound")] if relative else text)
        except ValueError:
            raise InvalidInputError(
                f"lambda_s {value!r} is neither a number nor a fraction of the bound such as '0.5xbound'"
            ) from None
    if not (np.isfinite(number) and number >= 0):
        raise InvalidInputError(f"lambda_s must be a finite number >= 0 (or e.g. '0.5xbound'), got {value!r}")
    return number, relative


def _lambda_s_option(value):
    number, relative = parse_lambda_s(value)
    return f"{number!r}xbound" if relative else number


@register_method(
    "analytic",
    doc="closed-form distilled set that reproduces the full-data ridge model exactly (Chen et al. 2024); "
        f"kernels {', '.join(KERNELS)}",
    options=[
        Option("init", str, "noise", "noise (paper Sec. 4.1) or real images (Sec. 4.2, writes "
               "init_vs_distilled.png)", choices=("noise", "real")),
        Option("lambda_s", str, "0", "ridge of the distilled model: a number, or a fraction of its bound such as "
               "'0.5xbound'", parse=_lambda_s_option),
        Option("clamp", bool, False, "clamp --lambda-s to its bound instead of failing", flag="--clamp-lambda-s"),
        Option("z_scale", float, 1.0, "noise init: size of the free part of D relative to Y_S^+ W (median "
               "singular values; 1 keeps the distilled features well conditioned)", min=0, min_exclusive=True,
               max=1e6),
    ],
    smoke_kernel="fcnn",
)
def _run_analytic(ctx: Context, opts: dict) -> MethodOutput:
    """Fit W on all data in the primal, then build the distilled set in closed form."""
    kernel, cfg = ctx.kernel, ctx.config
    check_kernel(kernel)
    lam_value, relative = parse_lambda_s(opts["lambda_s"])
    t = time.perf_counter()
    full = ctx.full_reference(max_dual_n=0)  # primal only: W is needed explicitly
    if full.form != "primal":
        raise InvalidInputError(f"analytic method: {full.note}")
    t_fit = time.perf_counter() - t
    res = distill(
        kernel, full.model.w.T, ctx.x_train, ctx.labels, num_classes=ctx.num_classes, ipc=cfg.ipc, seed=cfg.seed,
        init=opts["init"], lambda_s=lam_value, lambda_s_relative=relative, clamp=bool(opts["clamp"]),
        z_scale=float(opts["z_scale"]),
    )
    init_images = ctx.x_train[np.asarray(res.info["init_indices"])] if opts["init"] == "real" else None
    return MethodOutput(res.images, res.labels, res.info, full_reference=full, lam=res.lambda_s,
                        seconds={"fit_original": t_fit, "build_distilled": res.seconds}, init_images=init_images)
