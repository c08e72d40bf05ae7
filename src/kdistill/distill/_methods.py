"""Adapters from the run pipeline to each distillation method (name -> ``f(Context) -> MethodOutput``)."""

from __future__ import annotations

import time
from typing import Callable

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
    analytic.check_kernel(kernel)
    lam_value, relative = parse_lambda_s(opts.get("lambda_s", 0.0))
    t = time.perf_counter()
    full = ctx.full_reference(max_dual_n=0)  # primal only: W is needed explicitly
    if full.form != "primal":
        raise InvalidInputError(f"analytic method: {full.note}")
    t_fit = time.perf_counter() - t
    res = analytic.distill(
        kernel, full.model.w.T, ctx.x_train, ctx.labels, num_classes=ctx.num_classes, ipc=cfg.ipc, seed=cfg.seed,
        init=opts.get("init", "noise"), lambda_s=lam_value, lambda_s_relative=relative,
        clamp=bool(opts.get("clamp", False)), z_scale=float(opts.get("z_scale", 0.1)),
    )
    return MethodOutput(res.images, res.labels, res.info, full_reference=full, lam=res.lambda_s,
                        seconds={"fit_original": t_fit, "build_distilled": res.seconds})


METHODS: dict[str, Callable[[Context], MethodOutput]] = {"random": _random, "analytic": _analytic}
"""Distillation methods by CLI name."""
