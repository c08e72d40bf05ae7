"""Adapters from the run pipeline to each distillation method (name -> ``f(Context) -> MethodOutput``)."""

from __future__ import annotations

import time
from typing import Callable

import dataclasses

import numpy as np

from ..data import class_balanced_indices
from ..errors import InvalidInputError
from . import _analytic as analytic
from ._kip import KIPSettings, kip
from ._label_solve import label_solve
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


KIP_OPTIONS = {f.name for f in dataclasses.fields(KIPSettings)} | {"checkpoint", "resume"}


def _kip_reg(ctx: Context, default: float = 1e-6) -> float:
    return default if ctx.config.reg == "auto" else float(ctx.config.reg)


def _kip(ctx: Context) -> MethodOutput:
    """KIP: learn the support images (and labels) by gradient descent on the KRR loss."""
    opts = dict(ctx.config.options)
    unknown = set(opts) - KIP_OPTIONS
    if unknown:
        raise InvalidInputError(f"kip method: unknown options {sorted(unknown)}; valid: {sorted(KIP_OPTIONS)}")
    checkpoint, resume = opts.pop("checkpoint", None), bool(opts.pop("resume", False))
    settings = KIPSettings(**{**opts, "reg": _kip_reg(ctx)})
    res = kip(ctx.kernel, ctx.x_train, ctx.labels, num_classes=ctx.num_classes, ipc=ctx.config.ipc,
              seed=ctx.config.seed, settings=settings, checkpoint=checkpoint, resume=resume,
              fingerprint={"kernel": ctx.kernel.spec, "dataset_n": int(ctx.x_train.shape[0])},
              progress=ctx.progress)
    info = {"kip": dataclasses.asdict(settings), "steps_run": res.steps_run, "best_step": res.best_step,
            "best_val_accuracy": res.best_val_accuracy, "stopped_early": res.stopped_early,
            "final_loss": res.history["loss"][-1] if res.history["loss"] else None}
    return MethodOutput(res.images, res.labels, info, reg=settings.reg, seconds={"kip": res.seconds},
                        history=res.history)


def _label_solve(ctx: Context) -> MethodOutput:
    """Label Solve: closed-form labels for fixed support images against the whole training set."""
    opts = dict(ctx.config.options)
    unknown = set(opts) - {"support_images"}
    if unknown:
        raise InvalidInputError(f"label-solve method: unknown options {sorted(unknown)}")
    reg = _kip_reg(ctx)
    info: dict = {}
    support = opts.get("support_images")
    if support is None:
        idx = class_balanced_indices(ctx.labels, ctx.config.ipc, seed=ctx.config.seed, num_classes=ctx.num_classes)
        support = ctx.x_train[idx]
        info["indices"] = idx.tolist()
        info["support"] = "class-balanced real images"
    else:
        support = np.asarray(support, dtype=ctx.x_train.dtype)
        if support.shape[1:] != ctx.x_train.shape[1:]:
            raise InvalidInputError(
                f"support images are {support.shape[1:]} but the dataset's are {ctx.x_train.shape[1:]}")
        info["support"] = "given file"
    labels = label_solve(ctx.kernel, support, ctx.x_train, ctx.targets, reg=reg, progress=ctx.progress)
    return MethodOutput(support, labels.astype(np.float32), info, reg=reg)


METHODS: dict[str, Callable[[Context], MethodOutput]] = {
    "random": _random, "analytic": _analytic, "kip": _kip, "label-solve": _label_solve,
}
"""Distillation methods by CLI name."""
