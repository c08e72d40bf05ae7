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
import time
import warnings
from typing import Any

import numpy as np

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
    "lambda_s_bound",
    "noise_z",
    "realistic_labels_and_z",
    "regularised_pinv",
    "weights_from_support",
    "weight_agreement",
    "WeightAgreement",
    "parse_lambda_s",
]


def _label_pinv(y_s: np.ndarray) -> np.ndarray:
    """Pseudo-inverse of the labels (k, m), treating singular values below 1e-10 * s_max as zero:
    rounding must not turn mean-centred one-hot labels (rank k - 1) into a rank-k matrix with a
    tiny singular value, whose inverse would swamp D."""
    return np.linalg.pinv(y_s, rcond=1e-10)


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
    if lambda_s == 0:
        return np.linalg.pinv(d).T
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
    pos = s > s[0] * max(d.shape) * np.finfo(np.float64).eps
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


def noise_z(w, y_s, *, seed: int, scale: float = 0.1) -> np.ndarray:
    """Gaussian Z (m, p) with standard deviation ``scale * std(Y_S^+ W)`` (paper Sec. 4.1)."""
    w = np.asarray(w, dtype=np.float64)
    base = _label_pinv(np.asarray(y_s, dtype=np.float64)) @ w
    return scale * float(np.std(base)) * np.random.default_rng(seed).standard_normal(base.shape)


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


def _rff_out_of_range(phi_s: np.ndarray) -> float:
    """Share of target rff features outside the map's range |sqrt(p/2) f| <= 1."""
    return float(np.mean(np.abs(phi_s) * np.sqrt(phi_s.shape[1] / 2.0) > 1.0))


def check_kernel(kernel: Kernel) -> None:
    """The analytic method needs an explicit, invertible feature map."""
    if kernel.features is None or kernel.inverse is None:
        raise InvalidInputError(
            f"the analytic method needs a kernel with an invertible feature map (identity/linear, fcnn, rff); "
            f"{kernel.spec!r} has none"
        )


@dataclasses.dataclass(frozen=True)
class AnalyticResult:
    """images: (m, h, w, c) float32; labels: (m, k) float32 (Y_S^T); lambda_s: the ridge they are built for;
    info: diagnostics (weight_cosine, relative_weight_error, round-trip errors, ...); seconds: build time."""

    images: np.ndarray
    labels: np.ndarray
    lambda_s: float
    info: dict[str, Any]
    seconds: float


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
    z_scale: float = 0.1,
    z_scale_auto: bool = True,
) -> AnalyticResult:
    """Closed-form distilled set of ``ipc`` images per class for the model ``w: (k, p)``.

    Args:
      kernel: kernel with invertible ``features``/``inverse`` (identity, fcnn, rff).
      w: (k, p) weights of ridge regression on the full training set (features of ``kernel``).
      x_train: (n, h, w, c) training images (preprocessed); labels: (n,) ints.
      init: ``"noise"`` (paper Sec. 4.1: balanced one-hot labels, Gaussian Z) or ``"real"``
        (Sec. 4.2: start from class-balanced real images X0, labels W phi(X0)).
      lambda_s: ridge of the distilled model; with ``lambda_s_relative`` a fraction of the bound.
      clamp: clamp lambda_s to its bound instead of raising.
      z_scale: noise init: std of Z relative to std(Y_S^+ W) (paper: 0.1).
      z_scale_auto: for rff with noise init, multiply z_scale by 4 (up to 8 times) until the target
        features lie inside rff's range, where its inverse is exact (W_S = W holds for any Z).
    Diagnostics in ``info`` use features recomputed from the float32 images, i.e. the round
    trip a user makes: ``weight_cosine`` = cos(W_S, W), ``relative_weight_error``.
    """
    check_kernel(kernel)
    if init not in ("noise", "real"):
        raise InvalidInputError(f"analytic method: init must be 'noise' or 'real', got {init!r}")
    t = time.perf_counter()
    w = np.asarray(w, dtype=np.float64)
    image_shape = x_train.shape[1:]
    idx = class_balanced_indices(labels, ipc, seed=seed, num_classes=num_classes)
    info: dict[str, Any] = {"init": init}
    phi0 = None
    if init == "noise":
        y_s = one_hot(labels[idx], num_classes, dtype=np.float64).T  # (k, m), exactly centred
        z = noise_z(w, y_s, seed=seed, scale=z_scale)
        if kernel.name == "rff" and z_scale_auto:
            # Z is free: a larger Z shrinks D^+ = phi(X_S) into rff's range, where its inverse is exact
            for _ in range(8):
                if _rff_out_of_range(distilled_features(w, y_s, z, lambda_s=0.0)) == 0:
                    break
                z_scale *= 4.0
                z = noise_z(w, y_s, seed=seed, scale=z_scale)
            info["z_scale"] = z_scale
    else:
        phi0 = np.asarray(kernel.features(x_train[idx]), dtype=np.float64)
        y_s, z = realistic_labels_and_z(w, phi0, lambda_s=0.0)
    bound = lambda_s_bound(w, y_s, z)
    lam_s = lambda_s * bound if lambda_s_relative else float(lambda_s)
    if phi0 is not None and lam_s > 0:  # Sec. 4.2 with lambda_S > 0: regularised pseudo-inverse of phi(X0)
        y_s, z = realistic_labels_and_z(w, phi0, lambda_s=lam_s)
        bound = lambda_s_bound(w, y_s, z)
        if lambda_s_relative:
            lam_s = lambda_s * bound
    phi_s = distilled_features(w, y_s, z, lambda_s=lam_s, clamp=clamp)
    lam_s = min(lam_s, bound)
    images = np.asarray(kernel.inverse(phi_s, image_shape), dtype=np.float32)
    seconds = time.perf_counter() - t

    phi_back = np.asarray(kernel.features(images), dtype=np.float64)
    agree = weight_agreement(weights_from_support(phi_back, y_s, lam=lam_s), w)
    info.update(
        weight_cosine=agree.cosine,
        relative_weight_error=agree.relative_error,
        lambda_s=lam_s,
        lambda_s_bound=bound,
        feature_round_trip_error=float(np.linalg.norm(phi_back - phi_s) / np.linalg.norm(phi_s)),
        init_indices=idx.tolist(),
    )
    if kernel.name == "rff":
        out = _rff_out_of_range(phi_s)
        info["rff_out_of_range_fraction"] = out
        info["rff_note"] = (
            "rff is invertible only inside its range |sqrt(p/2) f| <= 1; coordinates outside were clipped, so "
            "the images reproduce W only approximately (see feature_round_trip_error, weight_cosine)"
            if out > 0 else "all target features inside the range of rff: the round trip is exact"
        )
    if init == "real":
        x0 = x_train[idx].reshape(len(idx), -1)
        dist = np.linalg.norm(images.reshape(len(idx), -1) - x0, axis=1) / np.linalg.norm(x0, axis=1)
        info["mean_relative_distance_to_init"] = float(np.mean(dist))
    return AnalyticResult(images, y_s.T.astype(np.float32), lam_s, info, seconds)


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
        "kernels identity/linear, fcnn, rff",
    options=[
        Option("init", str, "noise", "noise (paper Sec. 4.1) or real images (Sec. 4.2, writes "
               "init_vs_distilled.png)", choices=("noise", "real")),
        Option("lambda_s", str, "0", "ridge of the distilled model: a number, or a fraction of its bound such as "
               "'0.5xbound'", parse=_lambda_s_option),
        Option("clamp", bool, False, "clamp --lambda-s to its bound instead of failing", flag="--clamp-lambda-s"),
        Option("z_scale", float, 0.1, "noise init: std of Z relative to std(Y_S^+ W) (paper: 0.1)",
               min=0, min_exclusive=True, max=1e6),
    ],
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
