"""The run directory: what ``kdistill distill`` writes, written by the library so Python users get the same files.

    OUT/run.json          dataset, data directory and the resolved RunConfig (what --resume rebuilds)
    OUT/distilled.npz     images (m, h, w, c) and labels (m, k), plus preprocessing state; .json sidecar
    OUT/summary.json      accuracies, seconds per phase, machine, versions; method fields under "method_info"
    OUT/history.json      per-step curves of iterative methods
    OUT/checkpoint.npz    iterative methods' checkpoint (resume)
    OUT/distilled.png     the images in pixel space, one row per class
    OUT/init_vs_distilled.png   real starting images above the distilled ones (sets that start from real images)
    OUT/report.html       everything above in one self-contained page
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import io
from .._atomic import write_bytes, write_json
from .._executor import Executor
from ..data import Dataset
from ..errors import InvalidInputError
from ._pipeline import RunResult, run
from ._types import RunConfig

__all__ = ["run_to_dir", "write_run_outputs", "read_run_json", "write_run_json"]


def _jsonable(options: dict) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()}


def write_run_json(out: str | Path, *, dataset: str, data_dir: str | Path | None, config: RunConfig) -> Path:
    """Record what rebuilds this run (``--resume``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.asdict(config)
    cfg["options"] = _jsonable(dict(config.options))
    write_json(out / "run.json", {"dataset": dataset, "data_dir": None if data_dir is None else str(data_dir),
                                  "config": cfg})
    return out / "run.json"


def read_run_json(run_dir: str | Path) -> tuple[str, str | None, RunConfig]:
    """``(dataset, data_dir, config)`` of the run in ``run_dir``; one-line errors for a missing or damaged file."""
    run_file = Path(run_dir) / "run.json"
    if not run_file.exists():
        raise InvalidInputError(f"{run_dir} has no run.json: it is not a kdistill run directory")
    try:
        saved = json.loads(run_file.read_text())
        config = RunConfig(**saved["config"])
        dataset = saved["dataset"]
        if not isinstance(dataset, str) or not isinstance(config.options, dict):
            raise TypeError("wrong types")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"{run_file} is damaged ({e}); start a new run instead") from None
    return dataset, saved.get("data_dir"), config


def write_run_outputs(out: str | Path, result: RunResult, dataset: Dataset) -> dict[str, Any]:
    """Write distilled.npz (+ sidecar), history.json, figures, summary.json and report.html into ``out``;
    returns the summary with the figures' paths added."""
    from ..report import image_grid, write_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ds = result.distilled
    io.save(out / "distilled.npz", ds)
    if result.history is not None:
        write_json(out / "history.json", result.history)
    s = dict(result.summary)
    pixels = ds.to_pixels(ds.images)
    title = f"{s['dataset']} {s['method']} {s['kernel'].split(':')[0]} ipc={s['ipc']}"
    s["figures"] = {"distilled": str(image_grid(pixels, ds.labels, out / "distilled.png",
                                                class_names=dataset.class_names, title=title))}
    if result.init_images is not None and len(result.init_images) == len(pixels):
        # starting real images above the distilled images, class by class (Chen et al. Fig. 2)
        start = ds.to_pixels(result.init_images)
        both = np.concatenate([start, pixels])
        m, k = len(pixels), dataset.num_classes
        per = max(1, m // k)
        rows = []
        for c in range(k):
            sel = np.arange(c * per, min((c + 1) * per, m))[:10]
            rows += [(f"{dataset.class_names[c]} X0", sel), (f"{dataset.class_names[c]} X_S", sel + m)]
        s["figures"]["init_vs_distilled"] = str(image_grid(
            both, np.zeros((2 * m, 1)), out / "init_vs_distilled.png", rows=rows,
            title=f"{title}: X0 (real start) above X_S"))
    write_json(out / "summary.json", s)
    write_report(out)
    return s


def run_to_dir(
    out: str | Path,
    dataset: Dataset,
    config: RunConfig,
    *,
    dataset_ref: str | None = None,
    data_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    executor: Executor | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
) -> tuple[RunResult, dict[str, Any]]:
    """Run ``config`` on ``dataset`` with ``out`` as the run directory; returns the result and the summary
    as written. ``dataset_ref`` (a name or path that ``kdistill.data.load`` accepts) goes into ``run.json``
    so that ``kdistill distill --resume OUT`` can rebuild the run."""
    from ._pipeline import _validate

    from ._registry import get_method

    out = Path(out)
    config = _validate(config, dataset)  # fail before writing anything
    record = dict(dataset=dataset_ref or dataset.name, data_dir=data_dir, config=config)
    early = not resume and get_method(config.method).iterative  # a killed run must be resumable
    run_file = out / "run.json"
    previous = run_file.read_bytes() if early and run_file.exists() else None
    if early:
        write_run_json(out, **record)
    try:
        result = run(dataset, config, progress=progress, workdir=out, resume=resume, executor=executor,
                     on_checkpoint=on_checkpoint)
    except BaseException as e:
        if early and not isinstance(e, KeyboardInterrupt):  # a failed run leaves the earlier run.json as it was
            if previous is None:
                run_file.unlink(missing_ok=True)
            else:
                write_bytes(run_file, previous)
        raise
    if not resume and not early:
        write_run_json(out, **record)
    return result, write_run_outputs(out, result, dataset)
