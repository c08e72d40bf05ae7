"""One driver for every iterative distillation method (KIP, RFAD, DC and any method registered alike).

A method is an :class:`IterativeMethod`, in the spirit of optax's ``init``/``update``:

    state = method.init(x_s, y_s)                  # from the initial support set
    state, metrics = method.step(state, batch)     # one optimisation step on a target batch
    x_s, y_s = method.support(state)               # the current support set
    acc = method.validate(x_s, y_s, x_val, labels_val)

``state`` is a pytree of arrays. The driver owns everything else: the held-out validation split,
the initial support set (a pluggable init), target batches (a pluggable sampler that sees the
step and the state), validation and keeping the best set, patience, the time limit, atomic
checksummed checkpoints with exact resume, progress and the history (``history.json``).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..._progress import step_bar
from ...data import one_hot
from ...errors import InvalidInputError
from ...kernels import Kernel
from ._checkpoint import load_checkpoint, save_checkpoint
from .._registry import Option
from ._sampling import INITS, SAMPLERS, Init, Sampler, get_init, get_sampler
from ._settings import option, settings_options

__all__ = ["Batch", "IterativeMethod", "DriverSettings", "IterativeResult", "run_iterative", "driver_options",
           "driver_settings"]


@dataclasses.dataclass(frozen=True)
class Batch:
    """A target batch: ``x (b, h, w, c)``, ``y (b, k)`` centred one-hot, ``weights (b,)``, the pool
    ``indices (b,)`` and the ``step`` it belongs to; ``pool`` is the target pool itself (``x`` is
    ``pool[indices]``; the same array every step, which a distributed step keeps on its workers)."""

    x: Any
    y: Any
    weights: Any
    indices: np.ndarray
    step: int
    pool: Any = None


@dataclasses.dataclass(frozen=True)
class IterativeMethod:
    """``init(x_s, y_s) -> state``; ``step(state, batch) -> (state, metrics)`` with a finite
    ``metrics["loss"]``; ``support(state) -> (x_s, y_s)``; ``validate(x_s, y_s, x_val, labels_val) -> acc``."""

    name: str
    init: Callable[[np.ndarray, np.ndarray], Any]
    step: Callable[[Any, Batch], tuple[Any, Mapping[str, float]]]
    support: Callable[[Any], tuple[Any, Any]]
    validate: Callable[[Any, Any, np.ndarray, np.ndarray], float]
    hint: str = "lower --lr"  # what to try when the loss stops being finite
    # scores(state, x (n, h, w, c), y (n, k)) -> (n,): each example's loss under the current support set
    # (what importance samplers such as smart-pick draw by); None when the method cannot score
    scores: Callable[[Any, np.ndarray, np.ndarray], np.ndarray] | None = None


@dataclasses.dataclass(frozen=True)
class DriverSettings:
    """What the driver does around the steps; an iterative method's settings subclass it
    (:mod:`kdistill.methods.iterative._settings`: its fields are the ``--flags`` of ``kdistill distill``, but
    ``val_size``, from ``--val-size``, and ``hold_batch``, which a method sets itself).

    Attributes:
      steps: optimisation steps.
      target_batch: target images per step (capped at the pool size).
      init: support initialisation, a name in ``INITS``.
      sampler: target sampler, a name in ``SAMPLERS``.
      val_every: validate (accuracy on the held-out split) the starting set and then every N steps, keeping the
        best (the starting set unless a step beats it); 0: never (keep the last set).
      patience: stop after this many validations without improvement (0: never stop early).
      checkpoint_every: write a checkpoint every N steps (0: never).
      time_limit: seconds of this process for the learning phase (0: none; ``--learn-time-limit``): the run
        stops when another step and a final validation would pass it, validates the set its last step left,
        and keeps the best set. A run's ``--time-limit`` (:class:`~kdistill.methods.RunConfig` ``time_limit``)
        bounds the whole run and lowers this to what is left once evaluating the set is set aside.
      pick_every, pick_pool, pick_floor, pick_unbiased, pick_global: the ``smart-pick`` sampler's settings
        (see :mod:`kdistill.methods._smart_pick`).
      val_size: held-out training images for validation (0: none), at most a fifth of the training set
        (a run's ``--val-size``, shared with ``--reg auto``).
      hold_batch: keep each target batch for N steps: step s gets the sampler's batch of step s - s % N
        (a method that caches the batch's features, such as RFAD's, reuses them; 1: a new batch every step).
    """

    steps: int = option(1000, "optimisation steps", min=1, max=10**9)
    target_batch: int = option(5000, "target images per step, class-balanced", min=1, max=10**8)
    init: str = option("real", "support-set initialisation", choices=lambda: tuple(INITS))
    sampler: str = option("uniform", "target-batch sampler", choices=lambda: tuple(SAMPLERS))
    val_every: int = option(100, "validate the starting set and every N steps, keeping the best (0: never)",
                            min=0)
    patience: int = option(0, "stop after N validations without gain (0: never)", min=0)
    checkpoint_every: int = option(100, "checkpoint every N steps (0: never)", min=0)
    time_limit: float = option(0.0, "seconds for the learning phase alone, keeping the best set (0: none; "
                               "--time-limit bounds the whole run)", min=0, flag="--learn-time-limit")
    pick_every: int = option(50, "smart-pick: rescore the target pool every N steps", min=1, max=10**9)
    pick_pool: int = option(10_000, "smart-pick: score a random candidate pool of N images (0: all)", min=0,
                            max=10**8)
    pick_floor: float = option(0.1, "smart-pick: share of uniform probability mixed in (no image at probability "
                               "0)", min=0, min_exclusive=True, max=1)
    pick_unbiased: bool = option(False, "smart-pick: weight each drawn image by 1/(n P) so the batch loss "
                                 "estimates the uniform loss")
    pick_global: bool = option(False, "smart-pick: draw from the whole pool by score instead of per class (class "
                               "counts then follow the scores)")
    val_size: int = option(5000, "held-out training images for validation", min=0, cli=False)
    hold_batch: int = option(1, "keep each target batch for N steps", min=1, cli=False)

    def driver(self) -> "DriverSettings":
        """The driver's share of these settings (a method's settings subclass this class)."""
        return driver_settings(dataclasses.asdict(self))

    def validate(self) -> None:
        for name in ("steps", "target_batch", "hold_batch"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("val_every", "val_size", "patience", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise InvalidInputError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (self.time_limit >= 0 and np.isfinite(self.time_limit)):
            raise InvalidInputError(f"time_limit must be a finite number of seconds >= 0, got {self.time_limit}")
        if self.pick_every < 1 or self.pick_pool < 0:
            raise InvalidInputError(f"pick_every must be >= 1 and pick_pool >= 0, got {self.pick_every}, "
                                    f"{self.pick_pool}")
        if not 0 < self.pick_floor <= 1:
            raise InvalidInputError(f"pick_floor must be in (0, 1], got {self.pick_floor}")
        get_init(self.init)
        get_sampler(self.sampler)


def driver_options(defaults: DriverSettings = DriverSettings()) -> tuple[Option, ...]:
    """The driver's settings as registry options with ``defaults``' values (for a method registered by hand
    with :func:`~kdistill.methods.register_method`; :func:`register_iterative` derives them itself)."""
    return tuple(dataclasses.replace(o, default=getattr(defaults, o.name)) for o in settings_options(DriverSettings))


def driver_settings(options: Mapping[str, Any]) -> DriverSettings:
    """The driver's share of a method's resolved options."""
    names = {f.name for f in dataclasses.fields(DriverSettings)}
    return DriverSettings(**{k: v for k, v in options.items() if k in names})


@dataclasses.dataclass(frozen=True)
class IterativeResult:
    """The best support set (by validation), its curves and how the run ended."""

    images: np.ndarray
    labels: np.ndarray
    history: dict[str, list]
    best_step: int
    best_val_accuracy: float | None
    steps_run: int
    stopped_early: bool
    stop_reason: str
    seconds: float
    init_images: np.ndarray
    state: Any
    seconds_before: float = 0.0  # of the segments before a resume (included in ``seconds``)
    init_seconds: float = 0.0  # choosing the starting support set (this segment)
    sampler_seconds: float = 0.0  # a scoring sampler's own work, e.g. smart-pick's rescoring (all segments)


def _split(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 7])
    perm = rng.permutation(n)
    return np.sort(perm[:val_size]), np.sort(perm[val_size:])


def _check_resumed(checkpoint, best: dict, step: int, bad_vals: int, history: dict) -> None:
    """Refuse a checkpoint whose bookkeeping no run writes (its checksum only proves it was not damaged):
    a best accuracy that is NaN or outside [0, 1] (-1: nothing validated yet) would win or lose every later
    comparison and freeze the kept set."""
    acc = best["acc"]
    ok = isinstance(acc, (int, float)) and not isinstance(acc, bool) and math.isfinite(acc) \
        and (0.0 <= acc <= 1.0 or acc == -1.0)
    ok = ok and isinstance(best["step"], int) and 0 <= best["step"] <= step and 0 <= bad_vals <= step
    vals = history.get("val_accuracy", []) if isinstance(history, dict) else None
    ok = ok and isinstance(vals, list) and all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals)
    if not ok:
        raise InvalidInputError(f"checkpoint {checkpoint} records a best accuracy of {acc!r} at step "
                                f"{best['step']!r} (or non-finite validation accuracies), which no run writes; "
                                "delete it to start again")


def _warn_scale(method: IterativeMethod, x_s: np.ndarray, x_real: np.ndarray) -> None:
    """Warn when the learned images ended far outside the data's scale (a learning rate too high)."""
    real = float(np.max(np.abs(x_real))) if x_real.size else 0.0
    learned = float(np.max(np.abs(x_s))) if x_s.size else 0.0
    if not np.isfinite(learned):
        raise InvalidInputError(f"{method.name}: the learned images hold NaN/inf; {method.hint}")
    if real > 0 and learned > 100 * real:
        warnings.warn(f"{method.name}: the learned images reach |x| = {learned:.3g}, {learned / real:.0f} times the "
                      f"largest real value ({real:.3g}); the learning rate is probably too high, results may be "
                      "meaningless", RuntimeWarning, stacklevel=3)


def run_iterative(
    method: IterativeMethod,
    x_train: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    ipc: int,
    seed: int,
    settings: DriverSettings = DriverSettings(),
    kernel: Kernel | None = None,
    init: Init | None = None,
    sampler: Sampler | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    fingerprint: Mapping[str, Any] | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
    progress: bool = False,
    fingerprint_aliases: Sequence[Mapping[str, Any]] = (),
) -> IterativeResult:
    """Run ``method`` on ``x_train: (n, h, w, c)``, ``labels: (n,)`` and return the best support set.

    ``min(val_size, n // 5)`` training images (drawn with ``seed``) are held out for validation;
    the rest is the target pool and the source of the initial support set. ``init`` and
    ``sampler`` replace the named ones in ``settings``. With ``checkpoint`` set, state is saved
    every ``checkpoint_every`` steps (and when the run stops); ``resume`` continues from that file,
    refusing a corrupt one or one written with other settings (``fingerprint``; ``fingerprint_aliases``
    are older forms of the same settings, which a checkpoint of an earlier kdistill may carry).
    """
    settings.validate()
    t0 = time.perf_counter()
    n = x_train.shape[0]
    val_size = min(settings.val_size, n // 5)
    val_idx, pool_idx = _split(n, val_size, seed)
    x_pool, lab_pool = x_train[pool_idx], labels[pool_idx]
    y_pool = one_hot(lab_pool, num_classes, dtype=x_train.dtype)
    x_val, lab_val = x_train[val_idx], labels[val_idx]
    if sampler is None:
        sampler = get_sampler(settings.sampler)(lab_pool, settings.target_batch, num_classes=num_classes, seed=seed,
                                                x=x_pool, targets=y_pool, scores=method.scores, settings=settings)
    init_fn = init or get_init(settings.init)
    t_init = time.perf_counter()
    x0, y0 = init_fn(x_pool, lab_pool, kernel=kernel, num_classes=num_classes, ipc=ipc, key=jax.random.key(seed))
    init_seconds = time.perf_counter() - t_init
    dtype = x_train.dtype
    x0, y0 = np.asarray(x0, dtype=dtype), np.asarray(y0, dtype=dtype)
    state = method.init(x0, y0)
    # val_seconds: the run's seconds (all segments, validation included) when each validation ended
    history: dict[str, list] = {"step": [], "loss": [], "val_step": [], "val_accuracy": [], "val_seconds": []}
    best: dict[str, Any] = {"x": x0, "y": y0, "acc": -1.0, "step": 0}
    start, bad_vals, seconds_before, finished = 0, 0, 0.0, False
    # (time_limit changes where a run stops, not what it computes: a resumed run has a time limit of its own)
    driver_fp = {k: v for k, v in dataclasses.asdict(settings).items()
                 if k != "time_limit" and not (k == "hold_batch" and v == 1)}
    common = dict(method=method.name, driver=driver_fp, ipc=ipc, seed=seed, n=int(n), dtype=str(dtype),
                  x64=bool(jax.config.jax_enable_x64))
    fp = dict(fingerprint or {}, **common)
    treedef = jax.tree_util.tree_structure(state)

    if resume:
        if checkpoint is None or not Path(checkpoint).exists():
            raise InvalidInputError(f"nothing to resume: no checkpoint at {checkpoint}")
        arrays, meta = load_checkpoint(checkpoint, fingerprint=fp,
                                       aliases=[dict(a, **common) for a in fingerprint_aliases])
        leaves = jax.tree_util.tree_leaves(state)
        try:
            restored = [arrays[f"state_{i}"].astype(np.asarray(leaf).dtype) for i, leaf in enumerate(leaves)]
            best = {"x": arrays["best_x"], "y": arrays["best_y"], "acc": meta["best_acc"], "step": meta["best_step"]}
            start, bad_vals, history = int(meta["step"]), int(meta["bad_vals"]), meta["history"]
            # checkpoints written before val_seconds was recorded: pad so entries stay aligned with val_step
            missing = len(history["val_step"]) - len(history.get("val_seconds", []))
            history["val_seconds"] = [None] * missing + list(history.get("val_seconds", []))
            seconds_before = float(meta.get("seconds", 0.0))
            finished = meta.get("stopped") == "patience"  # final: an uninterrupted run stopped here too
            sampler_state = {k[len("sampler_"):]: v for k, v in arrays.items() if k.startswith("sampler_")}
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInputError(f"checkpoint {checkpoint} lacks {e}; it is not a {method.name} checkpoint") from None
        if not 0 <= start <= settings.steps or len(restored) != len(leaves):
            raise InvalidInputError(f"checkpoint {checkpoint} is at step {start}, outside 0..{settings.steps}")
        _check_resumed(checkpoint, best, start, bad_vals, history)
        state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in restored])
        if sampler_state and hasattr(sampler, "load_state_dict"):
            sampler.load_state_dict(sampler_state)

    def save(step_next: int) -> None:
        arrays = {f"state_{i}": np.asarray(leaf) for i, leaf in enumerate(jax.tree_util.tree_leaves(state))}
        arrays.update(best_x=np.asarray(best["x"]), best_y=np.asarray(best["y"]))
        if hasattr(sampler, "state_dict"):
            arrays.update({f"sampler_{k}": np.asarray(v) for k, v in sampler.state_dict().items()})
        save_checkpoint(checkpoint, arrays, {
            "step": step_next, "bad_vals": bad_vals, "history": history, "best_acc": best["acc"],
            "best_step": best["step"], "fingerprint": fp, "seconds": seconds_before + time.perf_counter() - t0,
            "stopped": reason if reason != "steps" else None})
        if on_checkpoint is not None:
            on_checkpoint(step_next)

    can_save = checkpoint is not None and settings.checkpoint_every > 0
    can_validate = bool(val_size and settings.val_every)
    reason = "patience" if finished else "steps"
    val_seconds = 0.0  # how long the last validation took (the time limit keeps room for a final one)

    def validation(at_step: int) -> float:
        """Validate the current support set as the set after ``at_step`` steps; keep it if it is the best."""
        nonlocal best, bad_vals, val_seconds
        t = time.perf_counter()
        x_s, y_s = method.support(state)
        va = float(method.validate(x_s, y_s, x_val, lab_val))
        val_seconds = time.perf_counter() - t
        history["val_step"].append(at_step)
        history["val_accuracy"].append(va)
        history.setdefault("val_seconds", []).append(round(seconds_before + time.perf_counter() - t0, 3))
        if va > best["acc"]:  # ties keep the earlier set (the starting set, when no step beats it)
            best = {"x": np.asarray(x_s), "y": np.asarray(y_s), "acc": va, "step": at_step}
            bad_vals = 0
        else:
            bad_vals += 1
        return va

    with step_bar(settings.steps, description=method.name, completed=start, enabled=progress) as bar:
        if can_validate and start == 0 and not finished:
            bar.note(0, val=validation(0))  # the starting set: the result unless a later step beats it
        for step in range(start, start if finished else settings.steps):
            t_step = time.perf_counter()
            idx, weights = sampler(step - step % settings.hold_batch, state)
            idx = np.asarray(idx)
            batch = Batch(jnp.asarray(x_pool[idx]), jnp.asarray(y_pool[idx]),
                          jnp.asarray(np.asarray(weights, dtype=dtype)), idx, step, x_pool)
            state, metrics = method.step(state, batch)
            metrics = {k: float(v) for k, v in metrics.items()}
            # the first step of a process also compiles: it says nothing about the next one's time
            step_seconds = time.perf_counter() - t_step if step > start else 0.0
            loss = metrics.get("loss", float("nan"))
            if not np.isfinite(loss):
                raise InvalidInputError(f"{method.name} loss became {loss} at step {step}; {method.hint}")
            history["step"].append(step)
            for k, v in metrics.items():
                history.setdefault(k, []).append(v)
            last = step == settings.steps - 1
            stopped = False
            if can_validate and ((step + 1) % settings.val_every == 0 or last):
                metrics["val"] = validation(step + 1)
                if settings.patience and bad_vals >= settings.patience:
                    stopped, reason = True, "patience"
            bar.update(**{k: v for k, v in metrics.items() if k in ("loss", "val")})
            # stop when another step and a final validation would pass the time limit; validate the set the
            # last step left (unless that was just done), so the time spent since the last validation counts
            if (not stopped and not last and settings.time_limit and time.perf_counter() - t0 + step_seconds
                    + (val_seconds if can_validate else 0.0) > settings.time_limit):
                stopped, reason = True, "time_limit"
                if can_validate and history["val_step"][-1:] != [step + 1]:
                    bar.note(step + 1, val=validation(step + 1))
            if can_save and ((step + 1) % settings.checkpoint_every == 0 or last or stopped):
                save(step + 1)
            if stopped:
                break
    if best["acc"] < 0:  # no validation: keep the final support set
        x_s, y_s = method.support(state)
        best = {"x": np.asarray(x_s), "y": np.asarray(y_s), "acc": None, "step": len(history["step"])}
    _warn_scale(method, np.asarray(best["x"]), x_pool)
    return IterativeResult(
        images=np.asarray(best["x"]), labels=np.asarray(best["y"]), history=history, best_step=int(best["step"]),
        best_val_accuracy=best["acc"], steps_run=len(history["step"]), stopped_early=reason != "steps",
        stop_reason=reason, seconds=seconds_before + time.perf_counter() - t0, init_images=x0, state=state,
        seconds_before=seconds_before, init_seconds=init_seconds,
        sampler_seconds=float(getattr(sampler, "seconds", 0.0)),
    )
