"""The run directory: what ``kdistill distill`` writes, written by the library so Python users get the same files.

    OUT/run.json          dataset, data directory and the resolved RunConfig (what --resume rebuilds)
    OUT/distilled.npz     images (m, h, w, c) and labels (m, k), plus preprocessing state; .json sidecar
    OUT/summary.json      accuracies, seconds per phase, machine, versions; method fields under "method_info"
    OUT/history.json      per-step curves of iterative methods
    OUT/checkpoint.npz    iterative methods' checkpoint (resume)
    OUT/distilled.png     the images in pixel space, one row per class
    OUT/init_vs_distilled.png   real starting images above the distilled ones (sets that start from real images)
    OUT/report.html       everything above in one self-contained page

The folder is one unit. A run takes a lock on it (a second run on the same folder is refused), refuses
a folder that holds another run unless ``force`` (or ``resume``), and refuses one that holds files
kdistill did not write. The final files are written into a staging folder inside OUT and renamed into
place only when all of them are written, so a failure (disk full, a bad setting found late) leaves the
earlier files as they were. A new run that fails is rolled back entirely (a replaced run comes back);
an interrupted iterative run keeps its ``run.json`` and checkpoint so ``--resume`` continues it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .. import io
from .._atomic import check_free_space, check_writable_dir, folder_lock, write_json
from ..parallel import Executor
from .._machine import process_seconds
from ..data import Dataset
from ..errors import CorruptFileError, InvalidInputError, KDistillError
from ._pipeline import RunResult, run
from ..methods import RunConfig, get_method

__all__ = ["run_to_dir", "write_run_outputs", "read_run_json", "write_run_json", "RUN_FILES", "is_temp_name",
           "check_out_folder", "record_finite_result", "refresh_report"]

# Every file a run directory may hold (a folder with anything else is not replaced, even with force).
RUN_FILES = frozenset({"run.json", "distilled.npz", "distilled.json", "summary.json", "history.json",
                       "checkpoint.npz", "distilled.png", "init_vs_distilled.png", "report.html"})
_STAGE = ".kdistill-staging"


def _jsonable(options: dict) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()}


def _record(dataset: str, data_dir: str | Path | None, config: RunConfig) -> dict:
    """What ``run.json`` holds: paths made absolute, so ``--resume`` works from any working directory."""
    cfg = dataclasses.asdict(config)
    cfg["options"] = _jsonable(dict(config.options))
    if dataset.endswith(".npz") or os.sep in dataset:
        dataset = os.path.abspath(os.path.expanduser(dataset))
    return {"dataset": dataset,
            "data_dir": None if data_dir is None else os.path.abspath(os.path.expanduser(str(data_dir))),
            "config": cfg}


def write_run_json(out: str | Path, *, dataset: str, data_dir: str | Path | None, config: RunConfig) -> Path:
    """Record what rebuilds this run (``--resume``)."""
    out = Path(out)
    write_json(out / "run.json", _record(dataset, data_dir, config))
    return out / "run.json"


RESUME_CHANGES = ("full_reference", "baseline", "time_limit")
"""Settings a resumed run may change (they decide what is evaluated after the learning and how long this
process may take, never what the steps compute): ``kdistill distill --resume DIR --no-full`` etc."""


def _spent(timings: Mapping[str, float] | None) -> float:
    """Seconds the caller spent before the run (startup, loading), which count against a time limit."""
    return float(sum((timings or {}).values()))


def read_run_json(run_dir: str | Path) -> tuple[str, str | None, RunConfig]:
    """``(dataset, data_dir, config)`` of the run in ``run_dir``; one-line errors for a missing or damaged file."""
    run_file = Path(run_dir) / "run.json"
    if not run_file.exists():
        raise InvalidInputError(f"{run_dir} has no run.json: it is not a kdistill run directory")
    try:
        saved = json.loads(run_file.read_text())
        if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
            raise TypeError("not an object with a 'config' object")
        cfg = dict(saved["config"])
        opts = cfg.get("options")
        if isinstance(opts, dict) and "val_size" in opts:  # runs written before --val-size was one setting
            opts = dict(opts)
            cfg["val_size"] = opts.pop("val_size")
            cfg["options"] = opts
        config = RunConfig(**cfg)
        dataset, data_dir = saved["dataset"], saved.get("data_dir")
        if not isinstance(dataset, str) or not isinstance(config.options, dict):
            raise TypeError("wrong types")
        if data_dir is not None and not isinstance(data_dir, str):
            raise TypeError("data_dir is not a string")
        for name in ("method", "kernel", "preprocess", "precision"):
            if not isinstance(getattr(config, name), str):
                raise TypeError(f"{name} is not a string")
        if not isinstance(config.ipc, int) or isinstance(config.ipc, bool):
            raise TypeError("ipc is not an integer")
        from ..methods import resolve_options

        config = dataclasses.replace(config, options=resolve_options(config.method, config.options))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, OSError) as e:
        msg = str(e).split("\n")[0]
        raise InvalidInputError(f"{run_file} is damaged ({msg}); start a new run instead") from None
    return dataset, data_dir, config


def _stage_outputs(stage: Path, out: Path, result: RunResult, dataset: Dataset, record: dict | None,
                   timings: Mapping[str, float] | None = None) -> dict:
    """Every final file of the run, written into ``stage``; figure paths in the summary name ``out``.
    ``timings`` (seconds the caller measured before the run, e.g. ``startup``, ``load_data``) join the
    summary's ``seconds`` with ``write_outputs`` and, where it can be read, ``process`` (since the process
    started)."""
    from ..report import image_grid, write_report

    t_write = time.perf_counter()
    ds = result.distilled
    io.save(stage / "distilled.npz", ds)
    if result.history is not None:
        write_json(stage / "history.json", result.history)
    s = dict(result.summary)
    pixels = ds.to_pixels(ds.images)
    title = f"{s['dataset']} {s['method']} {s['kernel'].split(':')[0]} ipc={s['ipc']}"
    image_grid(pixels, ds.labels, stage / "distilled.png", class_names=dataset.class_names, title=title,
               ipc=s["ipc"])
    s["figures"] = {"distilled": str(out / "distilled.png")}
    if result.init_images is not None and len(result.init_images) == len(pixels):
        # starting real images above the distilled images, class by class (Chen et al. Fig. 2)
        start = ds.to_pixels(result.init_images)
        both = np.concatenate([start, pixels])
        m, k = len(pixels), dataset.num_classes
        per = max(1, m // k)
        shown = min(per, 10)
        rows = []
        for c in range(k):
            sel = np.arange(c * per, min((c + 1) * per, m))[:shown]
            rows += [(f"{dataset.class_names[c]} X0", sel), (f"{dataset.class_names[c]} X_S", sel + m)]
        more = f", the first {shown} of {per} per class" if shown < per else ""
        image_grid(both, np.zeros((2 * m, 1)), stage / "init_vs_distilled.png", rows=rows, max_per_row=10,
                   title=f"{title}: X0 (real start) above X_S{more}")
        s["figures"]["init_vs_distilled"] = str(out / "init_vs_distilled.png")
    if record is not None:
        write_json(stage / "run.json", record)
    seconds = {k: round(float(v), 4) for k, v in (timings or {}).items()}
    seconds.update(s.get("seconds") or {})
    s["seconds"] = seconds
    write_json(stage / "summary.json", s)  # the report reads it; rewritten below with the final seconds
    write_report(stage, shown_as=out)
    seconds["write_outputs"] = round(time.perf_counter() - t_write, 4)
    process = process_seconds()
    if process is not None:
        seconds["process"] = round(process, 4)
    write_json(stage / "summary.json", s)
    return s


def write_run_outputs(out: str | Path, result: RunResult, dataset: Dataset, *, record: dict | None = None,
                      timings: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Write distilled.npz (+ sidecar), history.json, figures, summary.json and report.html into ``out``
    (and ``run.json`` from ``record``), all or none: they are written into a staging folder first and
    renamed into ``out`` once every one is there. Returns the summary with the figures' paths added."""
    out = Path(out)
    stage = out / _STAGE
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        summary = _stage_outputs(stage, out, result, dataset, record, timings)
        for f in sorted(stage.iterdir(), key=lambda p: p.name == "summary.json"):  # summary.json last: it marks done
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return summary


def record_finite_result(run_dir: str | Path, name: str, result: Mapping[str, Any]) -> Path | None:
    """Store a finite-network result (what :func:`kdistill.evaluate.finite_evaluate_file` returns) in
    ``run_dir/summary.json`` under ``"finite"`` -> ``name`` (replacing an earlier one of that name; every
    other key stays as it was). ``kdistill evaluate`` names it with :func:`kdistill.evaluate.finite_record_key`:
    the model, plus the settings that differ from its protocol's. Returns the summary.json written, or None
    when ``run_dir`` has none (a file outside a run directory). A summary.json that is not a JSON object is left alone: CorruptFileError."""
    summary_path = Path(run_dir) / "summary.json"
    if not summary_path.exists():
        return None
    try:
        summary = json.loads(summary_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        summary = None
    if not isinstance(summary, dict):
        raise CorruptFileError(f"{summary_path} is not a JSON object; result not recorded there")
    finite = summary.get("finite") if isinstance(summary.get("finite"), dict) else {}
    finite[name] = dict(result)
    summary["finite"] = finite
    write_json(summary_path, summary)
    return summary_path


def refresh_report(run_dir: str | Path) -> Path | None:
    """Rewrite ``run_dir/report.html`` from the run's files (e.g. after :func:`record_finite_result` changed
    its summary.json), only if the run has one; returns its path, or None when there is none to keep in step."""
    if not (Path(run_dir) / "report.html").exists():
        return None
    from ..report import write_report

    return write_report(run_dir)


def _out_path(out: str | Path) -> Path:
    if isinstance(out, str) and not out.strip():
        raise InvalidInputError("the output folder is an empty string; give a folder name such as runs/mnist-kip")
    real = Path(out).expanduser().resolve()
    if real == Path(real.anchor) or real == Path.home().resolve():
        raise InvalidInputError(f"output folder {out} is {real}; give a folder of its own such as runs/mnist-kip")
    return real


def _dir_state(real: Path) -> tuple[str, list[str]]:
    """``absent``, ``empty``, ``run`` (only files a run writes), ``file`` or ``foreign`` (and the foreign names)."""
    if not real.exists():
        return "absent", []
    if not real.is_dir():
        return "file", []
    names = [p.name for p in real.iterdir() if not is_temp_name(p.name)]
    if not names:
        return "empty", []
    foreign = sorted(n for n in names if n not in RUN_FILES)
    if foreign:
        return "foreign", foreign
    return "run", []


def _usable_state(out: str | Path, real: Path, *, force: bool) -> str:
    """``real``'s state (:func:`_dir_state`) if a run may write there: never a file or a folder holding files
    kdistill did not write, and an earlier run only with ``force``."""
    state, foreign = _dir_state(real)
    if state == "file":
        raise InvalidInputError(f"output folder {out} is a file; choose a folder")
    if state == "foreign":
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise InvalidInputError(f"output folder {out} holds files kdistill did not write ({shown}); choose a new "
                                "or empty folder")
    if state == "run" and not force:
        raise InvalidInputError(f"output folder {out} holds an earlier run; add --force to replace it, --resume "
                                f"{out} to continue it, or choose another --out")
    return state


def check_out_folder(out: str | Path, *, force: bool = False) -> None:
    """The checks :func:`run_to_dir` makes of ``out`` before it starts (usable, parent writable), for callers
    that want them before loading data; run_to_dir repeats them under its lock."""
    real = _out_path(out)
    _usable_state(out, real, force=force)
    check_writable_dir(real.parent, what=f"output folder {out}: its parent folder")


def _disk_need(config: RunConfig, dataset: Dataset) -> int:
    """Bytes a run holds on disk at its peak, within a factor of 2 (measured on scikit-learn's digits: 36 KB
    for ``random`` at ipc 1, 179 KB for ``kip`` at ipc 1, 506 KB for ``kip`` at ipc 10 with learned labels, 714
    KB for ``analytic`` at ipc 50). Per image: ``distilled.npz`` (float32, float64 for analytic), about 1.5 KiB
    of figures (``distilled.png``, ``init_vs_distilled.png`` and their copies in ``report.html``) and, for
    iterative methods, the checkpoint (images, two Adam moments and the best set, in up to 8-byte floats) twice
    while a new one replaces the old; with ZCA the whitening matrix and its inverse (d x d each, float32); the
    history (about 64 bytes a step, three copies); the state a method checkpoints besides the set (FRePo's
    pool: 184 MB at its defaults on MNIST), twice; a fixed part for the JSON files, the report's text and its
    curves."""
    m = config.ipc * dataset.num_classes
    pixels = int(np.prod(dataset.image_shape))
    iterative = get_method(config.method).iterative
    per_image = pixels * (8 + (2 * 4 * 8 if iterative else 0)) + 1536
    zca = 8 * pixels * pixels if config.preprocess == "zca" else 0  # whitening and its inverse in distilled.npz
    steps = int(dict(config.options or {}).get("steps", 0) or 0) if iterative else 0
    history = 3 * 64 * steps  # history.json, and in the checkpoint twice while one replaces the other
    return (128 if iterative else 32) * 1024 + m * per_image + zca + history + 2 * _state_bytes(config, dataset)


def _state_bytes(config: RunConfig, dataset: Dataset) -> int:
    """Bytes an iterative method checkpoints besides the set (FRePo's pool of networks): its settings'
    ``checkpoint_bytes(options, image_shape, num_classes)`` when it has one, the options' defaults filled in."""
    method = get_method(config.method)
    count = getattr(method.settings, "checkpoint_bytes", None)
    if count is None:
        return 0
    options = {o.name: o.default for o in method.options} | dict(config.options or {})
    return int(count(options, tuple(dataset.image_shape), dataset.num_classes))


def run_to_dir(
    out: str | Path,
    dataset: Dataset,
    config: RunConfig,
    *,
    dataset_ref: str | None = None,
    data_dir: str | Path | None = None,
    resume: bool = False,
    force: bool = False,
    progress: bool = False,
    executor: Executor | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
    timings: Mapping[str, float] | None = None,
    spent: float | None = None,
) -> tuple[RunResult, dict[str, Any]]:
    """Run ``config`` on ``dataset`` with ``out`` as the run directory; returns the result and the summary
    as written. ``dataset_ref`` (a name or path that ``kdistill.data.load`` accepts) goes into ``run.json``
    so that ``kdistill distill --resume OUT`` can rebuild the run. ``out`` must be new or empty, or hold an
    earlier run and ``force`` be set (it is replaced only when the new run has succeeded); ``resume``
    continues the run already in ``out``. See the module docstring for what a failure leaves. ``timings``:
    seconds measured before the call (``startup``, ``load_data``), added to the summary's ``seconds`` and
    counted against ``config.time_limit`` unless ``spent`` gives the seconds to count instead. A resume
    may change the settings in :data:`RESUME_CHANGES`; run.json then records the new values."""
    from ._pipeline import _validate, check_run_arguments

    if not isinstance(out, (str, os.PathLike)) or not str(out):
        raise InvalidInputError(f"out must be a folder path (str or pathlib.Path), got {type(out).__name__} "
                                f"{out!r:.60}")
    check_run_arguments(dataset, config)
    real = _out_path(out)
    config = _validate(config, dataset)  # fail before touching anything
    check_writable_dir(real.parent)
    check_free_space(real.parent, _disk_need(config, dataset))
    with folder_lock(real):
        _recover(real)
        state = _usable_state(out, real, force=force or resume)
        if resume:
            if state != "run" or not (real / "run.json").exists():
                raise InvalidInputError(f"{out} has no run.json: it is not a kdistill run directory")
            saved_ref, saved_dir, recorded = read_run_json(real)
            same = dataclasses.replace(config, **{k: getattr(recorded, k) for k in RESUME_CHANGES})
            if _record("-", None, recorded)["config"] != _record("-", None, same)["config"]:
                raise InvalidInputError(f"{out}/run.json changed since it was read (an interrupted forced run was "
                                        "rolled back); run the command again")
            if same != config:  # --no-full, --no-baseline or --time-limit given again: the record follows
                write_run_json(real, dataset=saved_ref, data_dir=saved_dir, config=config)
            result = run(dataset, config, progress=progress, workdir=real, resume=True, executor=executor,
                         on_checkpoint=on_checkpoint, spent=_spent(timings) if spent is None else spent)
            return result, write_run_outputs(real, result, dataset, timings=timings)
        record = _record(dataset_ref or dataset.name, data_dir, config)
        replaced = None
        if state == "run":  # moved aside now, deleted when the new run has succeeded, put back if it fails
            replaced = _aside(real)
            os.rename(real, replaced)
        created = state in ("absent", "run")
        real.mkdir(parents=True, exist_ok=True)
        iterative = get_method(config.method).iterative
        try:
            if iterative:  # a killed run must be resumable
                write_json(real / "run.json", record)
            result = run(dataset, config, progress=progress, workdir=real, resume=False, executor=executor,
                         on_checkpoint=on_checkpoint, spent=_spent(timings) if spent is None else spent)
            summary = write_run_outputs(real, result, dataset, record=None if iterative else record,
                                        timings=timings)
        except BaseException as e:
            # progress worth resuming is kept unless keeping it would cost an earlier run (then a failure
            # rolls back; Ctrl-C/SIGTERM means the user gave up the earlier run)
            keep = (real / "checkpoint.npz").exists() and (replaced is None or isinstance(e, KeyboardInterrupt))
            if keep:
                if replaced is not None:
                    _discard(replaced, real)
                if isinstance(e, KDistillError):
                    raise type(e)(f"{e}; the run's progress is kept: kdistill distill --resume {out} continues "
                                  "it") from None
            else:
                if created:
                    _discard(real, real)
                else:
                    _clear(real)
                if replaced is not None:
                    os.rename(replaced, real)  # one rename: the earlier run is back whole
            raise
        if replaced is not None:
            _discard(replaced, real)  # one rename makes the replacement final, then the old copy goes
        return result, summary


def _aside(real: Path) -> Path:
    return real.parent / f".{real.name}.kdistill-replaced"


def _trash(real: Path) -> Path:
    return real.parent / f".{real.name}.kdistill-trash"


def _discard(folder: Path, real: Path) -> None:
    """Remove ``folder`` (the run folder ``real`` or its replaced copy) by first renaming it to ``real``'s
    trash name (one atomic step), so a kill during the removal leaves only trash, which the next run on
    ``real`` clears."""
    trash = _trash(real)
    if trash.exists():
        shutil.rmtree(trash, ignore_errors=True)
    os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _recover(real: Path) -> None:
    """Leftovers of a forced run that was killed. The replaced run sits aside until the new one has
    finished (``summary.json``) or has a checkpoint to resume; otherwise it comes back. Trash goes."""
    if _trash(real).exists():
        shutil.rmtree(_trash(real), ignore_errors=True)
    aside = _aside(real)
    if aside.exists():
        if (real / "summary.json").exists() or (real / "checkpoint.npz").exists():
            _discard(aside, real)
        else:
            if real.exists():
                _discard(real, real)
            os.rename(aside, real)
    if real.is_dir():  # temporary files of writes a kill interrupted
        for p in real.iterdir():
            if is_temp_name(p.name):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)


def is_temp_name(name: str) -> bool:
    """A staging folder or an atomic write's temporary file (``.summary.json.x1y2.tmp``)."""
    return name == _STAGE or (name.startswith(".") and name.endswith(".tmp")
                              and any(name.startswith(f".{f}.") for f in RUN_FILES))


def _clear(real: Path) -> None:
    """Undo a failed new run in the empty folder it was given: empty it again."""
    for p in real.iterdir():
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
