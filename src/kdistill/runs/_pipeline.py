"""One distillation run: preprocess, distil, evaluate, and describe the result.

:func:`run` works in memory; :func:`kdistill.runs.run_to_dir` adds the run directory the CLI
writes. ``kdistill distill`` is a thin wrapper around them.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from .. import evaluate, krr
from ..parallel import Executor, get_executor
from .._io import DistilledSet
from .._machine import auto_precision, machine_info, usable_cores, versions
from .._precision import check_precision, precision_scope
from ..data import Dataset, fit_preprocessor, one_hot
from ..errors import InvalidInputError
from ..kernels import from_spec
from ..kernels import WEIGHTS_DRAW
from ..methods import Context, RunConfig, get_method, random_real, resolve_options
from ._budget import Budget, Rates, probe, stderr_line

__all__ = ["RunResult", "run"]


@dataclasses.dataclass(frozen=True)
class RunResult:
    """The distilled set, the run's summary (``summary.json``), the per-step history of iterative
    methods (``history.json``) and the preprocessed images the set started from, when it started
    from real images."""

    distilled: DistilledSet
    summary: dict
    history: dict | None = None
    init_images: np.ndarray | None = None


def _describe_config(config: RunConfig) -> dict:
    """The run's settings as JSON-able values (arrays in options are summarised by their shape)."""
    d = dataclasses.asdict(config)
    d["options"] = {k: (f"array{list(np.shape(v))}" if isinstance(v, np.ndarray) else
                        str(v) if isinstance(v, Path) else v) for k, v in config.options.items()}
    return d


def _support_reg(config: RunConfig, kernel, out, x_train, targets, executor=None):
    """The relative ridge of the model trained on the distilled set, and the selection behind it."""
    if out.lam is not None:
        return 0.0, None
    if config.reg != "auto":
        return float(config.reg), None
    if out.reg is not None:
        return float(out.reg), None
    val = krr.held_out_indices(x_train.shape[0], krr.effective_val_size(config.val_size, x_train.shape[0]),
                               seed=config.seed + 1, exclude=out.info.get("indices", []))
    sel = krr.select_support(kernel, out.images, out.labels, x_train[val], targets[val], executor=executor)
    return sel.reg, sel


def _baseline(config: RunConfig, kernel, x_train, dataset: Dataset, targets, x_test, executor) -> dict:
    """Random real images at the same ipc, same kernel, ridge chosen on held-out training images."""
    images, labels, idx = random_real(x_train, dataset.y_train, ipc=config.ipc, num_classes=dataset.num_classes,
                                      seed=config.seed)
    val = krr.held_out_indices(x_train.shape[0], krr.effective_val_size(config.val_size, x_train.shape[0]),
                               seed=config.seed + 1, exclude=idx)
    sel = krr.select_support(kernel, images, labels, x_train[val], targets[val], executor=executor)
    pred = evaluate.support_predictions(kernel, images, labels, x_test, reg=sel.reg, executor=executor)
    return {"method": "random", "ipc": config.ipc, "reg": sel.reg, "test_accuracy": krr.accuracy(pred, dataset.y_test),
            "per_class_accuracy": evaluate.per_class_accuracy(pred, dataset.y_test, dataset.num_classes)}


def _validate(config: RunConfig, dataset: Dataset) -> RunConfig:
    """Check the settings against the data; returns the config with the method's options resolved."""
    method = get_method(config.method)
    if isinstance(config.ipc, bool) or not isinstance(config.ipc, (int, np.integer)) or config.ipc < 1:
        raise InvalidInputError(f"ipc must be an integer >= 1, got {config.ipc!r}")
    if (isinstance(config.seed, bool) or not isinstance(config.seed, (int, np.integer))
            or not 0 <= config.seed < 2**32):
        raise InvalidInputError(f"seed must be an integer in 0 .. 2**32 - 1, got {config.seed!r}")
    if dataset.num_classes < 2:
        raise InvalidInputError(f"the training set has {dataset.num_classes} class; distillation needs at least 2")
    check_precision(config.precision, auto=True)
    counts = np.bincount(dataset.y_train, minlength=dataset.num_classes)
    if config.ipc > counts.min():
        c = int(counts.argmin())
        raise InvalidInputError(
            f"ipc={config.ipc} is more than class {c} ({dataset.class_names[c]!r}) has in the training set "
            f"({int(counts[c])} images); use ipc {int(counts.min())} or less"
        )
    if config.reg != "auto" and not (isinstance(config.reg, (int, float)) and not isinstance(config.reg, bool)
                                     and 0 <= config.reg <= krr.MAX_REG):
        raise InvalidInputError(f"reg must be 'auto' or a number in 0 .. {krr.MAX_REG:g} (relative to the mean kernel "
                                f"eigenvalue), got {config.reg!r}")
    if (isinstance(config.val_size, bool) or not isinstance(config.val_size, (int, np.integer))
            or not 0 <= config.val_size <= 10**7):
        raise InvalidInputError(f"val_size must be an integer in 0 .. 10000000, got {config.val_size!r}")
    needs_val = config.reg == "auto" or (config.baseline and config.method != "random")
    if needs_val and krr.effective_val_size(config.val_size, dataset.x_train.shape[0]) < 1:
        raise InvalidInputError(f"reg 'auto' and the random-real baseline choose a ridge on held-out training images, "
                                f"but val_size is {config.val_size} (of {dataset.x_train.shape[0]} training images at "
                                "most a fifth are used); give a larger val_size, or a number for reg and no baseline")
    if (isinstance(config.time_limit, bool) or not isinstance(config.time_limit, (int, float))
            or not 0 <= config.time_limit < 1e9):
        raise InvalidInputError(f"time_limit must be a number of seconds >= 0 (0: no limit), got {config.time_limit!r}")
    if (isinstance(config.max_dual_n, bool) or not isinstance(config.max_dual_n, (int, np.integer))
            or config.max_dual_n < 0):
        raise InvalidInputError(f"max_dual_n must be an integer >= 0, got {config.max_dual_n!r}")
    if config.kernel is None:  # the method's own (rfad: its random ConvNets), else linear
        config = dataclasses.replace(config, kernel=method.kernel or "linear")
    if not isinstance(config.kernel, str):
        raise InvalidInputError(f"kernel must be a spec string such as 'fcnn' or 'rbf:gamma=0.01', got "
                                f"{type(config.kernel).__name__}")
    kernel = from_spec(config.kernel)
    n = dataset.x_train.shape[0]
    if config.full_reference and kernel.features is None and n <= config.max_dual_n:
        evaluate.check_dual_memory(n)
    _refuse_slow_kernel(kernel, config, dataset)
    precision = auto_precision(method.precision) if config.precision == "auto" else config.precision
    return dataclasses.replace(config, ipc=int(config.ipc), seed=int(config.seed), precision=precision,
                               options=resolve_options(config.method, config.options))


_REFUSE_SECONDS = 24 * 3600  # an exact-kernel evaluation estimated longer than this on a CPU is refused


def _kernel_seconds(kernel, config: RunConfig, dataset: Dataset) -> tuple[float, float, int] | None:
    """``(seconds, image pairs, m)`` that evaluating the distilled set will take with a kernel whose cost per
    image pair is large (exact ConvNet kernels cost O((h*w)^2) per pair), else ``None``."""
    if kernel.pair_seconds is None:
        return None
    m = config.ipc * dataset.num_classes
    n_val = 0 if config.reg != "auto" else krr.effective_val_size(config.val_size, dataset.x_train.shape[0])
    pairs = m * (m + dataset.x_test.shape[0] + n_val) * (2 if config.baseline and config.method != "random" else 1)
    # pair_seconds was measured on 2 cores; the kernel's tiles keep every core busy
    return pairs * kernel.pair_seconds(dataset.image_shape) * 2 / usable_cores(), pairs, m


def _slow_kernel_text(kernel, dataset: Dataset, estimate: tuple[float, float, int]) -> str:
    seconds, pairs, m = estimate
    return (f"{kernel.name} on {dataset.image_shape[0]}x{dataset.image_shape[1]} images: evaluating m={m} images "
            f"({pairs:.2g} image pairs) will take about {seconds / 3600:.1f} h on this CPU, before any distillation")


def _refuse_slow_kernel(kernel, config: RunConfig, dataset: Dataset) -> None:
    """Refuse, before anything is written, an evaluation estimated at more than a day on a CPU."""
    estimate = _kernel_seconds(kernel, config, dataset)
    if estimate is not None and estimate[0] > _REFUSE_SECONDS and jax.default_backend() == "cpu":
        raise InvalidInputError(f"{_slow_kernel_text(kernel, dataset, estimate)}, more than the "
                                f"{_REFUSE_SECONDS // 3600} h kdistill starts on a CPU; use fewer images per class, "
                                "--no-baseline, --reg with a number, rf-convnet (random features), or a GPU")


def _warn_slow_kernel(kernel, config: RunConfig, dataset: Dataset) -> None:
    """Say up front when evaluating the distilled set alone will take long, with the estimate and what to
    change (beyond a day on a CPU :func:`_validate` has refused the run)."""
    estimate = _kernel_seconds(kernel, config, dataset)
    if estimate is not None and estimate[0] > 600:
        warnings.warn(f"{_slow_kernel_text(kernel, dataset, estimate)}; use fewer images per class, --no-baseline, "
                      "--reg with a number, or rf-convnet (random features)", RuntimeWarning, stacklevel=3)


def _honesty(summary: dict) -> list[str]:
    """What the result table alone would hide: a set scoring below random real images under the same
    evaluation, and an iterative run whose steps never beat the set it started from (which it then kept)."""
    out = []
    acc, base = summary.get("test_accuracy"), (summary.get("baseline") or {}).get("test_accuracy")
    if acc is not None and base is not None and acc < base:
        summary["below_random"] = True
        info = summary.get("method_info") or {}
        measure = f"; this test accuracy is {info['test_accuracy_is']}" if info.get("test_accuracy_is") else ""
        out.append(f"the distilled set scores below random real images under the same evaluation "
                   f"({100 * acc:.2f}% < {100 * base:.2f}%){measure}")
    info = summary.get("method_info") or {}
    if info.get("best_step") == 0 and info.get("steps_run") and info.get("best_val_accuracy") is not None:
        summary["kept_start"] = True
        out.append(f"no step of {summary['method']} beat the starting set on the {summary['val_size']} validation "
                   f"images ({100 * info['best_val_accuracy']:.1f}% at step 0): the result is the starting set")
    return out


def check_run_arguments(dataset: Any, config: Any) -> None:
    """One-line errors for arguments of the wrong type (instead of an AttributeError deep inside)."""
    if not isinstance(dataset, Dataset):
        hint = f" (load it first: kdistill.data.load({dataset!r:.40}))" if isinstance(dataset, (str, Path)) else ""
        raise InvalidInputError(f"dataset must be a kdistill.data.Dataset, got {type(dataset).__name__}{hint}")
    if not isinstance(config, RunConfig):
        raise InvalidInputError(f"config must be a kdistill.methods.RunConfig, got {type(config).__name__}")


def run(dataset: Dataset, config: RunConfig, *, progress: bool = False, workdir: str | Path | None = None,
        resume: bool = False, executor: Executor | None = None,
        on_checkpoint: Callable[[int], None] | None = None, spent: float = 0.0) -> RunResult:
    """Distil ``dataset`` with ``config`` and evaluate the result.

    Returns the distilled set (images in the preprocessed space, preprocessing state in
    ``arrays``; ``.pixels()`` maps them back) and a summary dict with accuracies, seconds per
    phase, machine and versions. A dataset without test images gives no test accuracies.
    Kernels and gradients run in ``config.precision``; the caller's JAX setting is restored after.
    ``workdir`` is where iterative methods keep their checkpoint (``resume`` continues from it);
    ``on_checkpoint(step)`` is called after each checkpoint is written. ``spent``: seconds already used
    before the call that count against ``config.time_limit`` (the CLI's startup and data loading).
    """
    check_run_arguments(dataset, config)
    t_start = time.perf_counter()
    config = _validate(config, dataset)
    budget = Budget(config.time_limit, started=t_start, spent=spent, say=stderr_line if progress else None)
    with precision_scope(config.precision):
        return _run(dataset, config, progress=progress, workdir=None if workdir is None else Path(workdir),
                    resume=resume, executor=get_executor(executor), on_checkpoint=on_checkpoint, budget=budget)


_ESTIMATE_FROM = 10_000  # training images from which a run without a time limit prints its phases' estimates


def _estimates(config: RunConfig, dataset: Dataset, rates: Rates, *, has_test: bool) -> dict[str, float | None]:
    """Seconds each phase after the learning will take: ``evaluate`` (the ridge choice on held-out images
    and the test predictions), ``baseline`` and ``full_reference`` (None: not done, or not possible)."""
    m, n = config.ipc * dataset.num_classes, dataset.x_train.shape[0]
    n_test = dataset.x_test.shape[0]
    n_val = krr.effective_val_size(config.val_size, n)
    evaluate_s = rates.images(n_test + (n_val if config.reg == "auto" else 0), m)
    baseline_s = rates.images(n_test + n_val, m) if has_test and config.baseline and config.method != "random" else None
    full_s = (rates.full(n, n_test, config.val_fraction, config.max_dual_n)
              if has_test and (config.full_reference or config.method == "analytic") else None)
    # (analytic fits the whole training set itself, whatever --full says: its set reproduces that model)
    return {"evaluate": evaluate_s, "baseline": baseline_s, "full_reference": full_s}


def _run(dataset: Dataset, config: RunConfig, *, progress: bool, workdir: Path | None, resume: bool,
         executor: Executor, on_checkpoint: Callable[[int], None] | None, budget: Budget) -> RunResult:
    t_start = time.perf_counter()
    method = get_method(config.method)
    kernel = from_spec(config.kernel)
    seconds: dict[str, float] = {}
    has_test = dataset.x_test.shape[0] > 0

    t = time.perf_counter()
    prep = fit_preprocessor(dataset.x_train, config.preprocess)
    x_train = prep.apply(dataset.x_train)
    x_test = prep.apply(dataset.x_test) if has_test else None
    targets = one_hot(dataset.y_train, dataset.num_classes)
    seconds["preprocess"] = time.perf_counter() - t

    def full_reference(max_dual_n: int = config.max_dual_n) -> evaluate.FullReference:
        return evaluate.full_data_reference(
            kernel, x_train, targets, x_test, None if x_test is None else dataset.y_test,
            val_fraction=config.val_fraction, seed=config.seed, max_dual_n=max_dual_n, progress=progress,
            executor=executor,
        )

    _warn_slow_kernel(kernel, config, dataset)
    est: dict[str, float | None] = {"evaluate": None, "baseline": None, "full_reference": None}
    # estimates for the budget, and for the lines before long phases (without a limit, only on datasets large
    # enough for a phase to take long: timing the kernel compiles it at one more shape)
    rates = None
    if budget.limit or (progress and x_train.shape[0] >= _ESTIMATE_FROM):
        t = time.perf_counter()
        rates = probe(kernel, x_train, config.ipc * dataset.num_classes, executor)
        est = _estimates(config, dataset, rates, has_test=has_test)
        seconds["estimate"] = time.perf_counter() - t
    # the learning phase leaves room for the evaluation and the baseline (the comparison every result needs);
    # the full-data reference runs only if time is left
    learn_limit = budget.learning_seconds((est["evaluate"] or 0.0) + (est["baseline"] or 0.0)) if method.iterative \
        else 0.0
    ctx = Context(x_train, dataset.y_train, targets, dataset.num_classes, kernel, config, progress, full_reference,
                  workdir=workdir, resume=resume, executor=executor, on_checkpoint=on_checkpoint,
                  dataset_name=dataset.name, time_limit=learn_limit)
    if learn_limit:
        budget.phase("distill", learn_limit, what=f"{config.method}: learning until its share of the time limit is "
                                                 "spent, keeping the best set")
    elif not method.iterative and config.method not in ("random", "coreset"):  # one pass that cannot be skipped
        core = est["full_reference"] if config.method == "analytic" else (
            None if rates is None else rates.images(x_train.shape[0], config.ipc * dataset.num_classes))
        budget.phase("distill", core, what=f"{config.method}: fitting the {x_train.shape[0]} training images")
    t = time.perf_counter()
    out = method.run(ctx, dict(config.options))
    seconds["distill"] = time.perf_counter() - t + out.seconds_before  # summed over resumed segments

    seconds.update(out.seconds)
    m = int(np.shape(out.images)[0])
    if has_test or (config.reg == "auto" and out.lam is None and out.reg is None):
        budget.phase("evaluate", est["evaluate"], what=f"evaluating the {m} distilled images" + (
            f" on {dataset.x_test.shape[0]} test images" if has_test else ""))
    t = time.perf_counter()
    reg, reg_selection = _support_reg(config, kernel, out, x_train, targets, executor)
    test_acc, per_class, baseline = None, None, None
    if has_test:
        pred = evaluate.support_predictions(kernel, out.images, out.labels, x_test, reg=reg, lam=out.lam,
                                            executor=executor)
        test_acc = krr.accuracy(pred, dataset.y_test)
        per_class = evaluate.per_class_accuracy(pred, dataset.y_test, dataset.num_classes)
    seconds["evaluate"] = time.perf_counter() - t
    if est["evaluate"]:  # what followed the evaluation's estimate: the later ones are off by as much
        factor = min(max(seconds["evaluate"] / est["evaluate"], 0.2), 5.0)
        est = {k: None if v is None else v * factor for k, v in est.items()}
    if has_test and config.baseline and config.method != "random" and budget.phase(
            "baseline", est["baseline"], what=f"random-real baseline ({m} real images)",
            optional_flag="--no-baseline"):
        t = time.perf_counter()
        baseline = _baseline(config, kernel, x_train, dataset, targets, x_test, executor)
        seconds["baseline"] = time.perf_counter() - t

    full = out.full_reference
    if full is None and config.full_reference and has_test and budget.phase(
            "full_reference", est["full_reference"], optional_flag="--no-full",
            what=f"full-data reference (KRR on all {x_train.shape[0]} training images)"):
        t = time.perf_counter()
        full = full_reference()
        seconds["full_reference"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t_start + out.seconds_before

    summary: dict[str, Any] = {
        "dataset": dataset.name,
        "dataset_source": dataset.source,
        "method": config.method,
        "kernel": kernel.spec,
        "ipc": config.ipc,
        "seed": config.seed,
        "precision": config.precision,
        "n_train": int(dataset.x_train.shape[0]),
        "n_test": int(dataset.x_test.shape[0]),
        "val_size": krr.effective_val_size(config.val_size, int(dataset.x_train.shape[0])),
        "num_classes": dataset.num_classes,
        "class_names": list(dataset.class_names),
        "image_shape": list(dataset.image_shape),
        "preprocess": prep.describe(),
        "reg": reg,
        "lam": out.lam,
        "reg_selection": None if reg_selection is None else reg_selection.as_dict(),
        "test_accuracy": test_acc,
        "per_class_accuracy": per_class,
        "baseline": baseline,
        "full_test_accuracy": None if full is None else full.test_accuracy,
        "full_reg": None if full is None else full.reg,
        "full_form": None if full is None else full.form,
        "full_reg_selection": None if full is None or full.selection is None else full.selection.as_dict(),
        "seconds": {k: round(v, 4) for k, v in seconds.items()},
        "budget": budget.describe(),
        "config": _describe_config(config),
        "method_info": dict(out.info),
        "machine": machine_info(),
        "executor": executor.describe(),
        "versions": versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if "baseline" in budget.skipped:
        summary["baseline_note"] = budget.skipped["baseline"]
    summary["warnings"] = _honesty(summary)
    for text in summary["warnings"]:
        warnings.warn(text, RuntimeWarning, stacklevel=3)
    if not has_test:
        summary["full_test_accuracy_note"] = "no test set given"
    elif full is None and "full_reference" in budget.skipped:
        summary["full_test_accuracy_note"] = budget.skipped["full_reference"]
    elif full is None:
        summary["full_test_accuracy_note"] = "not requested (--no-full)"
    elif full.note:
        summary["full_test_accuracy_note"] = full.note
    meta = {
        k: summary[k]
        for k in ("dataset", "method", "kernel", "ipc", "seed", "preprocess", "reg", "lam", "seconds", "num_classes",
                  "image_shape", "created", "precision")
    }
    meta["class_names"] = list(dataset.class_names)
    meta["kernel_weights"] = WEIGHTS_DRAW
    # float32 unless the method returned float64 NumPy images (the closed-form method: its round trip needs them)
    wide = isinstance(out.images, np.ndarray) and out.images.dtype == np.float64
    distilled = DistilledSet(
        images=np.asarray(out.images, dtype=np.float64 if wide else np.float32),
        labels=np.asarray(out.labels, dtype=np.float64 if wide else np.float32),
        meta=meta,
        arrays=prep.to_arrays(),
    )
    init = None if out.init_images is None else np.asarray(out.init_images, dtype=np.float32)
    return RunResult(distilled, summary, None if out.history is None else dict(out.history), init)
