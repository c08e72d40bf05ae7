"""One call registers an iterative method from its frozen settings dataclass.

    register_iterative("toy", ToySettings, build, doc="...", smoke={"steps": 4})

``build(settings, ctx) -> IterativeMethod`` is all the method supplies (its ``init`` / ``step`` /
``support`` / ``validate`` and, if it can, ``scores``). From the settings class come: the CLI options with
help, ranges and choices (:func:`~kdistill.methods.iterative._settings.settings_options`), their
validation, the resume fingerprint (every field: the driver's under ``driver``, the method's own under
its name, with the run's kernel, precision and dataset), the checkpoint path (``checkpoint.npz`` in the
run directory), the info dict (``summary.json``'s ``method_info``) and the
:class:`~kdistill.methods.MethodOutput`.

Fields the run fills: ``reg`` (when the class has one) from the run's ``--reg``, its own default for
``auto``; ``val_size`` from ``--val-size``. A settings class may define ``resolve(ctx) -> settings`` for
values that depend on the data (DC's loops and target batch) and ``info(ctx) -> dict`` for extra summary
fields.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping

from .._registry import register_method
from .._types import Context, MethodOutput
from ._driver import DriverSettings, IterativeMethod, run_iterative
from ._settings import check_settings, method_fields, settings_options

__all__ = ["register_iterative", "fingerprints", "CHECKPOINT"]

CHECKPOINT = "checkpoint.npz"
"""An iterative run's checkpoint, in its run directory."""


def _settings_for(cls: type, name: str, opts: Mapping[str, Any], ctx: Context):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = dict(opts)
    if "reg" in fields:
        values["reg"] = ctx.relative_reg(default=fields["reg"].default)
    values["val_size"] = ctx.config.val_size
    settings = cls(**values)
    if hasattr(settings, "resolve"):
        settings = settings.resolve(ctx)
    settings.validate()
    check_settings(settings, name)
    return settings


def fingerprints(name: str, own: Mapping[str, Any], *, kernel: str, precision: str,
                 dataset: str | None) -> tuple[dict, list[dict]]:
    """``(fingerprint, aliases)`` of a run's settings beyond the driver's: the method's own fields under its
    name with the run's kernel, precision and dataset; the aliases are the forms kdistill recorded before
    settings-class registration (KIP and RFAD: no dataset; DC: no kernel), which a checkpoint may carry."""
    fp = {"kernel": kernel, "precision": precision, "dataset": dataset, name: dict(own)}
    return fp, [{k: v for k, v in fp.items() if k != drop} for drop in ("dataset", "kernel")]


def _with_time_limit(settings: DriverSettings, seconds: float) -> DriverSettings:
    """The driver's settings with the learning-phase seconds the run's budget leaves (the smaller of the two
    when the settings carry a time limit of their own)."""
    if not seconds:
        return settings
    own = settings.time_limit
    return dataclasses.replace(settings, time_limit=min(own, seconds) if own else seconds)


def register_iterative(name: str, settings: type, build: Callable[[Any, Context], IterativeMethod], *, doc: str,
                       smoke: Mapping[str, Any], smoke_kernel: str | None = None, precision: str = "float64",
                       kernel: str | None = None,
                       check: Callable[[Context], None] | None = None) -> Callable[[Context, dict], MethodOutput]:
    """Register the iterative method ``name``: ``settings`` is a frozen dataclass subclassing
    :class:`DriverSettings`; ``build(settings, ctx)`` returns the :class:`IterativeMethod`; ``smoke`` are
    options (``smoke_kernel`` a kernel spec) small enough for the contract tests; ``precision`` and
    ``kernel`` as :func:`~kdistill.methods.register_method`; ``check(ctx)`` refuses a run the method cannot
    do at all (RFAD without a random-feature kernel) before its settings are looked at. Returns the
    registered ``run(ctx, options)``."""
    if not (dataclasses.is_dataclass(settings) and issubclass(settings, DriverSettings)):
        raise RuntimeError(f"method {name!r}: settings must be a dataclass subclassing DriverSettings")
    if not settings.__dataclass_params__.frozen:
        raise RuntimeError(f"method {name!r}: settings must be a frozen dataclass")

    options = settings_options(settings)  # (a field without option(...) is refused here)

    def run(ctx: Context, opts: dict) -> MethodOutput:
        if check is not None:
            check(ctx)
        s = _settings_for(settings, name, opts, ctx)
        method = build(s, ctx)
        fp, aliases = fingerprints(name, method_fields(s, DriverSettings), kernel=ctx.kernel.spec,
                                   precision=ctx.config.precision, dataset=ctx.dataset_name)
        res = run_iterative(method, ctx.x_train, ctx.labels, num_classes=ctx.num_classes, ipc=ctx.config.ipc,
                            seed=ctx.config.seed, settings=_with_time_limit(s.driver(), ctx.time_limit),
                            kernel=ctx.kernel,
                            checkpoint=None if ctx.workdir is None else Path(ctx.workdir) / CHECKPOINT,
                            resume=ctx.resume, fingerprint=fp, fingerprint_aliases=aliases,
                            on_checkpoint=ctx.on_checkpoint, progress=ctx.progress)
        info = {"settings": dataclasses.asdict(s), "init": s.init, "sampler": s.sampler,
                "init_seconds": res.init_seconds, "sampler_seconds": res.sampler_seconds, "steps_run": res.steps_run,
                "best_step": res.best_step, "best_val_accuracy": res.best_val_accuracy,
                "stopped_early": res.stopped_early, "stop_reason": res.stop_reason,
                "final_loss": res.history["loss"][-1] if res.history["loss"] else None}
        if hasattr(s, "info"):
            info.update(s.info(ctx))
        return MethodOutput(res.images, res.labels, info, reg=getattr(s, "reg", None), seconds={name: res.seconds},
                            history=res.history, init_images=res.init_images, seconds_before=res.seconds_before)

    register_method(name, doc=doc, options=options, iterative=True, precision=precision,
                    kernel=kernel, smoke=smoke, smoke_kernel=smoke_kernel, settings=settings)(run)
    return run
