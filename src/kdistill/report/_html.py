"""A self-contained HTML report of one run directory (``kdistill report RUN_DIR``).

Reads what a run leaves behind, each part optional but at least one of the first two needed:

- ``distilled.npz`` (+ sidecar): drawn one row per class in pixel space;
- ``summary.json``: accuracies (kernel, finite networks under ``"finite"``,
  full-data reference), seconds per phase, machine;
- ``history.json``: ``{"step": [...], "loss": [...], "val_step": [...],
  "val_accuracy": [...]}`` from iterative methods, drawn as curves;
- ``init_vs_distilled.png``: embedded as it is.

Every figure is embedded as a ``data:image/png;base64`` URI, so the single file
can be mailed or archived. Written atomically to ``RUN_DIR/report.html``.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import write_bytes
from ..errors import CorruptFileError, InvalidInputError
from ._grid import image_grid, label_heatmap, labels_are_learned

_PER_ROW = 25

__all__ = ["report_html", "write_report"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; } td, th { padding: 3px 12px; border-bottom: 1px solid #eee; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #ddd; }
.note { color: #666; font-size: 0.9em; } .warn { color: #8a4b00; background: #fff4e0; padding: 6px 10px; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; }
"""


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{_data_uri(png)}">'


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{path}: not valid JSON ({e}); fix or delete it") from None


@contextlib.contextmanager
def _wrong_types(path: Path):
    """A field of the wrong type in a JSON file we read (edited by hand, another tool): one line naming it."""
    try:
        yield
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
        raise CorruptFileError(f"{path}: a field has the wrong type or shape ({type(e).__name__}: "
                               f"{' '.join(str(e).split())[:120]}); fix or delete it, then run kdistill report "
                               "again") from None


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * float(v):.2f}%"


def _distilled_figures(npz: Path, summary: dict) -> tuple[bytes, bytes | None, str]:
    """The grid of every distilled image, the learned-label heatmap (None with one-hot labels) and a caption."""
    from .. import io as kio

    ds = kio.load(npz)
    pixels = ds.to_pixels(ds.images)
    meta = {**summary, **ds.meta}
    title = " ".join(str(meta[k]).split(":")[0] for k in ("dataset", "method", "kernel") if k in meta)
    ipc = meta.get("ipc") if isinstance(meta.get("ipc"), int) and not isinstance(meta.get("ipc"), bool) else None
    if ipc is not None:
        title += f" ipc={ipc}"
    names = meta.get("class_names")
    learned = labels_are_learned(ds.labels)
    with tempfile.TemporaryDirectory() as tmp:
        grid = image_grid(pixels, ds.labels, Path(tmp) / "grid.png", class_names=names, title=title or None,
                          max_per_row=_PER_ROW, ipc=ipc).read_bytes()
        heat = label_heatmap(ds.labels, Path(tmp) / "labels.png", class_names=names, ipc=ipc,
                             title=f"learned labels of the {len(ds.labels)} distilled images").read_bytes() \
            if learned else None
    m, k = ds.labels.shape
    caption = (f"All {m} images, {'one column' if m <= 3 * k else 'one block of lines'} per class"
               f"{' (grouped by the class each was initialised for: the labels were learned)' if learned else ''}"
               f", at most {_PER_ROW} per line, in pixel space (preprocessing undone).")
    return grid, heat, caption


def _curves_png(history: dict, best_step: Any = None) -> bytes | None:
    """Training loss against step and validation accuracy against step, side by side; a dashed line
    marks ``best_step``, the step whose set was kept."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(xk: str, yk: str) -> tuple[np.ndarray, np.ndarray]:
        x, y = history.get(xk) or [], history.get(yk) or []
        n = min(len(x), len(y))
        return np.asarray(x[:n], dtype=float), np.asarray(y[:n], dtype=float)

    panels = [(p, s) for p, s in (("training loss", series("step", "loss")),
                                  ("validation accuracy", series("val_step", "val_accuracy"))) if len(s[0])]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), squeeze=False)
    for ax, (name, (x, y)) in zip(axes[0], panels):
        ax.plot(x, y, marker="o" if len(x) < 30 else None, markersize=3)
        if name == "training loss" and np.all(y[np.isfinite(y)] > 0):
            ax.set_yscale("log")
        if isinstance(best_step, (int, float)) and not isinstance(best_step, bool) and best_step > 0:
            ax.axvline(best_step, color="tab:red", linestyle="--", linewidth=1,
                       label=f"kept: step {int(best_step)}")
            ax.legend(loc="best", fontsize=8)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _rows(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td class='num'>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _summary_tables(s: dict) -> str:
    parts = []
    setup = [(k, str(s[k])) for k in ("dataset", "method", "kernel", "ipc", "seed") if k in s]
    prep = s.get("preprocess")
    if isinstance(prep, dict) and "kind" in prep:
        setup.append(("preprocessing", str(prep["kind"])))
    if s.get("created"):
        setup.append(("created", str(s["created"])))
    if setup:
        parts.append(_rows(setup))
    acc = []
    if "test_accuracy" in s:
        acc.append((f"kernel (KRR) test accuracy, {s.get('kernel', '')}", _pct(s["test_accuracy"])))
    finite = s.get("finite")
    for name, r in (finite.items() if isinstance(finite, dict) else ()):  # beside the KRR number: the networks
        if isinstance(r, dict) and isinstance(r.get("mean"), (int, float)):
            acc.append((f"finite network {name}, test accuracy (mean ± std over {r.get('seeds', '?')} seeds)",
                        f"{100 * r['mean']:.2f} ± {100 * (r.get('std') or 0):.2f}%"))
    base = s.get("baseline")
    if isinstance(base, dict) and "test_accuracy" in base:
        acc.append(("random real images, same ipc and kernel (baseline)", _pct(base["test_accuracy"])))
    if "full_test_accuracy" in s:
        note = s.get("full_test_accuracy_note")
        acc.append(("full-data reference", _pct(s["full_test_accuracy"]) + (f" ({note})" if note else "")))
    if acc:
        parts.append("<h2>Accuracy</h2>" + _rows(acc))
    flags = s.get("warnings")
    if isinstance(flags, list) and flags:  # below random real, or no step beat the starting set
        parts.append("".join(f"<p class='warn'>{html.escape(str(w))}</p>" for w in flags))
    for key, what in (("baseline_note", "random-real baseline"),):
        if s.get(key):
            parts.append(f"<p class='note'>{html.escape(what)}: {html.escape(str(s[key]))}</p>")
    per = s.get("per_class_accuracy")
    if isinstance(per, list) and per:
        names = (s.get("class_names") or [str(c) for c in range(len(per))])
        base_per = base.get("per_class_accuracy") if isinstance(base, dict) else None
        head = "<tr><th>class</th><th>distilled</th>" + ("<th>random real</th>" if base_per else "") + "</tr>"
        body = "".join(
            f"<tr><td>{html.escape(str(names[c] if c < len(names) else c))}</td><td class='num'>{_pct(v)}</td>"
            + (f"<td class='num'>{_pct(base_per[c])}</td>" if base_per and c < len(base_per) else "") + "</tr>"
            for c, v in enumerate(per))
        parts.append(f"<h2>Per-class test accuracy</h2><table>{head}{body}</table>")
    finite = s.get("finite")
    if isinstance(finite, dict) and finite:
        head = ("<tr><th>model</th><th>test accuracy (mean ± std)</th><th>seeds</th><th>epochs</th>"
                "<th>width</th><th>s / seed</th><th>labels</th></tr>")
        body = ""
        for name, r in finite.items():
            if not isinstance(r, dict):
                continue
            width = (r.get("settings") or {}).get("width", "")
            mean, std = r.get("mean"), r.get("std")
            acc_s = "n/a" if mean is None else f"{100 * mean:.2f} ± {100 * (std or 0):.2f}%"
            sps = r.get("seconds_per_seed")
            cells = [name, acc_s, r.get("seeds", ""), r.get("epochs", ""), width,
                     "" if sps is None else f"{sps:.1f}", r.get("label_mode", "")]
            body += "<tr>" + "".join(
                f"<td{'' if i in (0, 6) else ' class=num'}>{html.escape(str(c))}</td>" for i, c in enumerate(cells)
            ) + "</tr>"
        parts.append("<h2>Finite networks trained on the distilled set</h2>"
                     f"<table>{head}{body}</table>")
    sec = s.get("seconds")
    if isinstance(sec, dict) and sec:
        parts.append("<h2>Seconds</h2>" + _rows([(k, f"{float(v):.2f}") for k, v in sec.items()]))
    machine = s.get("machine")
    if isinstance(machine, dict):
        parts.append("<p class='note'>machine: " + html.escape(
            f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, {machine.get('memory_gib', '?')} GiB, "
            f"JAX {machine.get('jax_backend', '?')}") + "</p>")
    return "\n".join(parts)


def report_html(run_dir: str | Path, *, shown_as: str | Path | None = None) -> str:
    """The HTML text of the report of ``run_dir`` (see the module docstring for what it reads);
    ``shown_as`` is the folder named in the page (default ``run_dir``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InvalidInputError(f"{run_dir}: no such run directory")
    summary_path, npz, hist_path = run_dir / "summary.json", run_dir / "distilled.npz", run_dir / "history.json"
    if not summary_path.exists() and not npz.exists():
        raise InvalidInputError(
            f"{run_dir}: has neither summary.json nor distilled.npz; is it the --out of a kdistill run?")
    summary = _read_json(summary_path) if summary_path.exists() else {}
    if not isinstance(summary, dict):
        raise CorruptFileError(f"{summary_path}: expected a JSON object")
    name = " ".join(str(summary[k]).split(":")[0] for k in ("dataset", "method") if k in summary)
    title = f"kdistill report: {name}" if name else f"kdistill report: {run_dir.name}"
    where = Path(shown_as or run_dir).resolve()
    body = [f"<h1>{html.escape(title)}</h1>", f"<p class='note'>{html.escape(str(where))}</p>"]
    if summary:
        with _wrong_types(summary_path):
            body.append(_summary_tables(summary))
    if hist_path.exists():
        body.append("<h2>Training curves</h2>")
        history = _read_json(hist_path)
        info = summary.get("method_info") if isinstance(summary.get("method_info"), dict) else {}
        with _wrong_types(hist_path):
            png = _curves_png(history, info.get("best_step")) if isinstance(history, dict) else None
        body.append(_img(png, "training curves") if png else
                    "<p class='note'>history.json holds no step/loss or val_step/val_accuracy series.</p>")
    if npz.exists():
        grid, heat, caption = _distilled_figures(npz, summary)
        body.append("<h2>Distilled images</h2>")
        body.append(f"<p class='note'>{html.escape(caption)}</p>")
        body.append(_img(grid, "distilled images"))
        if heat is not None:
            body.append("<h2>Learned labels</h2><p class='note'>Each column is one distilled image's label vector "
                        "(red positive, blue negative); one-hot labels would show one red cell per column, in the "
                        "row of the image's class.</p>")
            body.append(_img(heat, "learned labels"))
    init = run_dir / "init_vs_distilled.png"
    if init.exists():
        body.append("<h2>Real starting images above the distilled images</h2>")
        body.append(_img(init.read_bytes(), "initial vs distilled images"))
    if summary:
        body.append("<h2>summary.json</h2><details><summary>show</summary><pre>"
                    + html.escape(json.dumps(summary, indent=2)) + "</pre></details>")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_report(run_dir: str | Path, *, shown_as: str | Path | None = None) -> Path:
    """Write ``run_dir/report.html`` (atomically) and return its path."""
    text = report_html(run_dir, shown_as=shown_as)
    out = Path(run_dir) / "report.html"
    write_bytes(out, text.encode("utf-8"))
    return out
