"""Adapters from the run pipeline to each distillation method (name -> ``f(Context) -> MethodOutput``)."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ..data import class_balanced_indices, one_hot
from ..errors import InvalidInputError
from . import _analytic as analytic
from ._random import random_real
from ._types import Context, MethodOutput

__all__ = ["METHODS", "parse_lambda_s"]


def _random(ctx: Context) -> MethodOutput:
    images, labels, idx = random_real(
        ctx.x_train, ctx.labels, ipc=ctx.config.ipc, num_classes=ctx.num_classes, seed=ctx.config.seed
    )
    return MethodOutput(images, labels, {"indices": idx.tolist()})


def parse_lambda_s(value: float | str) -> tuple[float, bool]:
    """``0.001`` -> (0.001, False); ``"0.5xbound"`` -> (0.5, True): a fraction of the bound 1/(4 s_1^2)."""
    if isinstance(value, (int, float)):
        return float(value), False
    text = str(value).strip().lower()
    try:
        if text.endswith("xbound"):
            return float(text[: -len("xbound")]), True
        return float(text), False
    except ValueError:
        raise InvalidInputError(
            f"lambda_s {value!r} is neither a number nor a fraction of the bound such as '0.5xbound'"
        ) from None


def _analytic(ctx: Context) -> MethodOutput:
    """Chen et al. (2024): fit W on all data, then build the distilled set in closed form."""
    kernel, cfg, opts = ctx.kernel, ctx.config, dict(ctx.config.options)
    unknown = set(opts) - {"init", "lambda_s", "clamp", "z_scale"}
    if unknown:
        raise InvalidInputError(f"analytic method: unknown options {sorted(unknown)}")
    if kernel.features is None or kernel.inverse is None:
        raise InvalidInputError(
            f"the analytic method needs a kernel with an invertible feature map (identity/linear, fcnn, rff); "
            f"{kernel.spec!r} has none"
        )
    init = opts.get("init", "noise")
    if init not in ("noise", "real"):
        raise InvalidInputError(f"analytic method: init must be 'noise' or 'real', got {init!r}")
    lam_value, relative = parse_lambda_s(opts.get("lambda_s", 0.0))
    image_shape = ctx.x_train.shape[1:]

    t = time.perf_counter()
    full = ctx.full_reference(max_dual_n=0)  # primal only: W is needed explicitly
    if full.form != "primal":
        raise InvalidInputError(f"analytic method: {full.note}")
    t_fit = time.perf_counter() - t

    t = time.perf_counter()
    w = full.model.w.T  # (k, p)
    idx = class_balanced_indices(ctx.labels, cfg.ipc, seed=cfg.seed, num_classes=ctx.num_classes)
    info: dict = {"init": init}
    if init == "noise":
        y_s = one_hot(ctx.labels[idx], ctx.num_classes).astype(np.float64).T  # (k, m)
        z = analytic.noise_z(w, y_s, seed=cfg.seed, scale=float(opts.get("z_scale", 0.1)))
    else:
        x0 = ctx.x_train[idx]
        phi0 = np.asarray(kernel.features(x0), dtype=np.float64)
        y_s, z = analytic.realistic_labels_and_z(w, phi0, lambda_s=0.0)
    bound = analytic.lambda_s_bound(w, y_s, z)
    lam_s = lam_value * bound if relative else lam_value
    if init == "real" and lam_s > 0:  # Sec. 4.2 with lambda_S > 0: the regularised pseudo-inverse of phi(X0)
        y_s, z = analytic.realistic_labels_and_z(w, phi0, lambda_s=lam_s)
        bound = analytic.lambda_s_bound(w, y_s, z)
        if relative:
            lam_s = lam_value * bound
    phi_s = analytic.distilled_features(w, y_s, z, lambda_s=lam_s, clamp=bool(opts.get("clamp", False)))
    lam_s = min(lam_s, bound)
    images = np.asarray(kernel.inverse(phi_s, image_shape), dtype=np.float32)
    t_build = time.perf_counter() - t

    # Round trip the user makes: features recomputed from the stored (float32) images.
    phi_back = np.asarray(kernel.features(images), dtype=np.float64)
    w_s = analytic.weights_from_support(phi_back, y_s, lam=lam_s)
    agree = analytic.weight_agreement(w_s, w)
    info.update(
        weight_cosine=agree.cosine,
        relative_weight_error=agree.relative_error,
        lambda_s=lam_s,
        lambda_s_bound=bound,
        feature_round_trip_error=float(np.linalg.norm(phi_back - phi_s) / np.linalg.norm(phi_s)),
        init_indices=idx.tolist(),
    )
    if kernel.name == "rff":
        c = np.abs(phi_s) * np.sqrt(phi_s.shape[1] / 2.0)
        info["rff_out_of_range_fraction"] = float(np.mean(c > 1.0))
        info["rff_note"] = (
            "rff is invertible only inside its range |sqrt(p/2) f| <= 1; coordinates outside were clipped, so "
            "the distilled images reproduce W only approximately (see feature_round_trip_error, weight_cosine)"
            if info["rff_out_of_range_fraction"] > 0 else "all target features inside the range of rff"
        )
    if init == "real":
        x0 = ctx.x_train[idx]
        num = np.linalg.norm((images - x0).reshape(len(idx), -1), axis=1)
        den = np.linalg.norm(x0.reshape(len(idx), -1), axis=1)
        info["mean_relative_distance_to_init"] = float(np.mean(num / den))
    return MethodOutput(images, y_s.T.astype(np.float32), info, full_reference=full, lam=lam_s,
                        seconds={"fit_original": t_fit, "build_distilled": t_build})


METHODS: dict[str, Callable[[Context], MethodOutput]] = {"random": _random, "analytic": _analytic}
"""Distillation methods by CLI name."""
