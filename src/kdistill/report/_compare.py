"""Many runs side by side (``kdistill compare RUN_DIR...``): read run folders, group them over seeds, show
them as terminal tables and one self-contained HTML page with two plots.

A run is a folder holding ``summary.json`` (written last by every run: its presence marks a finished run)
and usually ``run.json``. :func:`collect_runs` reads them defensively: a folder that is not a run, or whose
``summary.json`` is not valid JSON, not an object, or has a field of the wrong type, is reported through
``on_skip`` and left out. :func:`group_runs` puts together the runs that differ in their seed only, and
:func:`groups_table` / :func:`runs_table` render them with rich; :func:`compare_html` is the page.

Grouping: two runs are in one group when they agree on the dataset, method, kernel and ipc of their
summaries and on every setting of their ``run.json`` config (preprocessing, ridge, ``val_size``,
precision, the full-data reference's ``max_dual_n`` and ``val_fraction``, and every method option)
except those that cannot change the distilled set or its accuracy: ``seed`` (what a group is over),
``full_reference`` and ``baseline`` (whether the two references were also computed), the option
``checkpoint_every`` (a resumed run equals an uninterrupted one) and ``time_limit`` (a budget, not a setting
of the method: the runs of one ``distill --seeds N --time-limit T`` get unequal shares of it, and a run that
stopped by time says so in its ``method_info``). A group's figures are the mean and
population std (``ddof=0``, as finite-network results over seeds are reported) over its runs.
"""

from __future__ import annotations

import dataclasses
import glob
import html
import io
import json
import math
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, NamedTuple, Sequence

from .._atomic import dumps_strict, write_bytes
from ..errors import InvalidInputError

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["RunRecord", "RunGroup", "Stat", "collect_runs", "group_runs", "runs_table", "groups_table",
           "compare_html", "write_compare_html", "compare_json", "write_compare_json"]

# run.json config fields that do not take part in grouping (see the module docstring), and method options.
_NOT_GROUPED = frozenset({"seed", "full_reference", "baseline", "time_limit"})
_NOT_GROUPED_OPTIONS = frozenset({"checkpoint_every"})
_GENERATOR = '<meta name="generator" content="kdistill compare">'  # marks a page compare may replace
_JSON_KIND = "kdistill compare"
_MIN_SECONDS = 1e-4  # the seconds plot is logarithmic: faster runs are drawn at 0.1 ms


class Stat(NamedTuple):
    """Mean and population std (``ddof=0``) of ``n`` values."""

    mean: float
    std: float
    n: int


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What compare reads from one run folder.

    Accuracies are fractions in [0, 1]. ``finite`` maps each finite network ``kdistill evaluate --model``
    trained on the set to its mean test accuracy over its training seeds. ``settings`` is the grouping part
    of the run's config (``run.json``, else the summary's copy; empty when neither is readable).
    """

    path: Path
    dataset: str
    method: str
    kernel: str
    ipc: int
    seed: int
    test_accuracy: float
    baseline: float | None
    full_test_accuracy: float | None
    distill_seconds: float | None
    finite: Mapping[str, float]
    settings: Mapping[str, Any]

    @property
    def key(self) -> tuple:
        return (self.dataset, self.method, self.kernel, self.ipc, json.dumps(self.settings, sort_keys=True))


@dataclasses.dataclass(frozen=True)
class RunGroup:
    """Runs that differ in their seed only, and their mean ± std.

    ``label``: the settings (``name=value``) that set this group apart from another group of the same
    dataset, method, kernel and ipc (empty when no other group shares them). A :class:`Stat` is None when
    none of the runs has the value (e.g. ``baseline`` of the ``random`` method); one with ``n`` smaller than
    ``len(runs)`` when only some have it.
    """

    dataset: str
    method: str
    kernel: str
    ipc: int
    settings: Mapping[str, Any]
    label: str
    runs: tuple[RunRecord, ...]
    test_accuracy: Stat
    baseline: Stat | None
    finite: Mapping[str, Stat]
    distill_seconds: Stat | None

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(r.seed for r in self.runs)


# --- reading run folders --------------------------------------------------------------------------------------


def _natural(p: Path) -> list:
    """Sort key: ``seed-2`` before ``seed-10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(p))]


def _expand(paths: Iterable[str | Path], skip: Callable[[str], None]) -> list[Path]:
    """Run folders named by ``paths``: a folder with ``summary.json``; a quoted glob pattern's matches; a
    folder holding run folders one level down (``distill --seeds N``'s OUT/seed-0, ...); a summary.json."""
    found: list[Path] = []
    for given in paths:
        p = Path(given).expanduser()
        if not p.exists() and glob.has_magic(str(given)):
            matches = sorted((Path(m) for m in glob.glob(str(p))), key=_natural)
            if not matches:
                skip(f"{given}: matches nothing")
            for m in matches:
                found += _expand_one(m, skip, quiet=True)
            continue
        if not p.exists():
            skip(f"{given}: no such folder")
            continue
        found += _expand_one(p, skip, quiet=False)
    seen, unique = set(), []
    for p in found:
        real = p.resolve()
        if real not in seen:
            seen.add(real)
            unique.append(p)
    return unique


def _expand_one(p: Path, skip: Callable[[str], None], *, quiet: bool) -> list[Path]:
    """``quiet``: a loose file (matched by a pattern such as ``runs/*``) is passed over without a word."""
    if p.is_file() and p.name == "summary.json":
        return [p.parent]
    if not p.is_dir():
        if not quiet:
            skip(f"{p}: not a folder")
        return []
    if (p / "summary.json").exists():
        return [p]
    try:
        children = sorted((c for c in p.iterdir() if c.is_dir()), key=_natural)
    except OSError as e:  # a folder we may not list
        skip(f"{p}: cannot be read ({e.strerror or e})")
        return []
    runs = [c for c in children if (c / "summary.json").exists()]
    unfinished = [c for c in [p] + children if (c / "run.json").exists() and not (c / "summary.json").exists()]
    for c in unfinished:  # started but not finished (or still running), e.g. one seed of a seeds folder
        skip(f"{c}: no summary.json (an unfinished run?)")
    if not runs and not unfinished:
        skip(f"{p}: not a run folder (no summary.json in it or in the folders inside it)")
    return runs


def _json_object(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def _str(s: dict, name: str) -> str:
    v = s.get(name)
    if not isinstance(v, str) or not v:
        raise TypeError(f"{name} is not a non-empty string")
    return v


def _int(s: dict, name: str) -> int:
    v = s.get(name)
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"{name} is not an integer")
    return v


def _number(v: Any, name: str, *, optional: bool = True, fraction: bool = False) -> float | None:
    if v is None and optional:
        return None
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        raise TypeError(f"{name} is not a finite number")
    if fraction and not 0 <= v <= 1:
        raise ValueError(f"{name} is {v}, not an accuracy in [0, 1]")
    return float(v)


def _settings(config: Any) -> dict[str, Any]:
    if not isinstance(config, dict):
        return {}
    out = {k: v for k, v in config.items() if k not in _NOT_GROUPED and k != "options"}
    options = config.get("options")
    if isinstance(options, dict):
        out.update({f"options.{k}": v for k, v in options.items() if k not in _NOT_GROUPED_OPTIONS})
    return out


def _read_run(folder: Path) -> RunRecord:
    summary_path = folder / "summary.json"
    try:
        s = json.loads(summary_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{summary_path}: not valid JSON ({' '.join(str(e).split())[:80]})") from None
    if not isinstance(s, dict):
        raise ValueError(f"{summary_path}: not a JSON object")
    try:
        base = s.get("baseline")
        if base is not None and not isinstance(base, dict):
            raise TypeError("baseline is not an object")
        seconds = s.get("seconds")
        if seconds is not None and not isinstance(seconds, dict):
            raise TypeError("seconds is not an object")
        finite_doc = s.get("finite")
        if finite_doc is not None and not isinstance(finite_doc, dict):
            raise TypeError("finite is not an object")
        finite = {}
        for model, r in (finite_doc or {}).items():
            if not isinstance(r, dict):
                raise TypeError(f"finite.{model} is not an object")
            finite[model] = _number(r.get("mean"), f"finite.{model}.mean", optional=False, fraction=True)
        ipc = _int(s, "ipc")
        if ipc < 1:
            raise ValueError(f"ipc is {ipc}")
        config = (_json_object(folder / "run.json") or {}).get("config")
        record = RunRecord(
            path=folder, dataset=_str(s, "dataset"), method=_str(s, "method"), kernel=_str(s, "kernel"), ipc=ipc,
            seed=_int(s, "seed"),
            test_accuracy=_number(s.get("test_accuracy"), "test_accuracy", optional=False, fraction=True),
            baseline=_number((base or {}).get("test_accuracy"), "baseline.test_accuracy", fraction=True),
            full_test_accuracy=_number(s.get("full_test_accuracy"), "full_test_accuracy", fraction=True),
            distill_seconds=_number((seconds or {}).get("distill"), "seconds.distill"),
            finite=finite, settings=_settings(config if isinstance(config, dict) else s.get("config")))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{summary_path}: {' '.join(str(e).split())[:120]}") from None
    return record


def collect_runs(paths: Iterable[str | Path], *, on_skip: Callable[[str], None] | None = None) -> list[RunRecord]:
    """The runs in ``paths``, in the order found (a folder's runs in natural order: seed-2 before seed-10),
    each once.

    Each path is a run folder (one holding ``summary.json``), a folder holding run folders one level down
    (``kdistill distill --seeds N``'s output, or a folder of runs), a glob pattern (``'runs/*'``, for shells
    that did not expand it) or a run's ``summary.json``. What is not a finished run, or whose ``summary.json``
    is not a JSON object with the fields of the right types, is left out, and ``on_skip`` hears why in one
    line (``PATH: reason``; default: a warning ``...; skipped``). Returns an empty list when nothing was usable.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]

    def skip(msg: str) -> None:
        if on_skip is None:
            warnings.warn(f"{msg}; skipped", stacklevel=3)
        else:
            on_skip(msg)

    runs = []
    for folder in _expand(paths, skip):
        try:
            runs.append(_read_run(folder))
        except ValueError as e:
            skip(str(e))
        except OSError as e:  # unreadable (permissions), vanished meanwhile
            skip(f"{folder}: cannot be read ({e.strerror or e})")
    return runs


# --- grouping --------------------------------------------------------------------------------------------------


def _stat(values: Sequence[float | None]) -> Stat | None:
    import numpy as np

    v = np.asarray([x for x in values if x is not None], dtype=float)
    return Stat(float(v.mean()), float(v.std()), len(v)) if len(v) else None


def _short(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def group_runs(runs: Iterable[RunRecord], *, on_note: Callable[[str], None] | None = None) -> list[RunGroup]:
    """``runs`` in groups of runs that differ only in their seed (see the module docstring for what is
    compared), sorted by dataset, method, kernel, ipc; within a group by seed. ``on_note`` (default
    ``warnings.warn``) hears of a seed that appears twice in one group (a copied folder: both are counted)."""
    by_key: dict[tuple, list[RunRecord]] = {}
    for r in runs:
        by_key.setdefault(r.key, []).append(r)
    keys = sorted(by_key, key=lambda k: (k[0], k[1], k[2], k[3], k[4]))
    # what sets a group apart from the others of the same dataset, method, kernel and ipc
    labels = {}
    for k in keys:
        mine = by_key[k][0].settings
        differ: set[str] = set()
        for o in keys:
            if o[:4] == k[:4] and o != k:
                theirs = by_key[o][0].settings
                differ |= {n for n in mine.keys() | theirs.keys() if mine.get(n) != theirs.get(n)}
        labels[k] = " ".join(f"{n.removeprefix('options.')}={_short(mine.get(n))}" for n in sorted(differ))
    groups = []
    for k in keys:
        members = tuple(sorted(by_key[k], key=lambda r: (r.seed, _natural(r.path))))
        seeds = [r.seed for r in members]
        twice = sorted({s for s in seeds if seeds.count(s) > 1})
        if twice:
            msg = (f"{', '.join(str(r.path) for r in members if r.seed in twice)}: the same settings and seed "
                   f"{', '.join(map(str, twice))} (a copied folder?); each is counted in the mean ± std")
            (on_note or (lambda m: warnings.warn(m, stacklevel=3)))(msg)
        models = sorted({m for r in members for m in r.finite})
        first = members[0]
        groups.append(RunGroup(
            dataset=first.dataset, method=first.method, kernel=first.kernel, ipc=first.ipc,
            settings=first.settings, label=labels[k], runs=members,
            test_accuracy=_stat([r.test_accuracy for r in members]),
            baseline=_stat([r.baseline for r in members]),
            finite={m: _stat([r.finite.get(m) for r in members]) for m in models},
            distill_seconds=_stat([r.distill_seconds for r in members])))
    return groups


# --- terminal tables -------------------------------------------------------------------------------------------


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _pct_stat(s: Stat | None, runs: int) -> str:
    if s is None:
        return "n/a"
    text = f"{100 * s.mean:.2f}%" if s.n == 1 else f"{100 * s.mean:.2f} ± {100 * s.std:.2f}%"
    return text if s.n == runs else f"{text} ({s.n} of {runs})"


def _sec(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _sec_stat(s: Stat | None) -> str:
    return "n/a" if s is None else f"{s.mean:.2f}" if s.n == 1 else f"{s.mean:.2f} ± {s.std:.2f}"


def _plain(s: Any) -> str:
    """A string from a run folder as terminal text: control characters (escape sequences, newlines) shown
    as ``?`` (rich markup is not interpreted: cells are ``rich.text.Text``)."""
    return "".join(c if c.isprintable() else "?" for c in str(s))


_LONG_FLOAT = re.compile(r"\d+\.\d{7,}")


def _shown(spec: str) -> str:
    """A kernel spec or settings label as shown in a table or plot: long floats to 6 significant digits
    (``w_std=1.4142135623730951`` -> ``w_std=1.41421``); the JSON keeps them whole."""
    return _LONG_FLOAT.sub(lambda m: f"{float(m.group()):.6g}", spec)


def _models(items: Iterable[Any]) -> list[str]:
    return sorted({m for it in items for m in it.finite})


def _run_rows(runs: Sequence[RunRecord]) -> tuple[list[str], list[list[str]]]:
    models = _models(runs)
    head = (["run", "dataset", "method", "kernel", "ipc", "seed", "KRR acc"] + [f"{m} acc" for m in models]
            + ["random real acc", "distill s"])
    rows = [[str(r.path), r.dataset, r.method, _shown(r.kernel), str(r.ipc), str(r.seed), _pct(r.test_accuracy)]
            + [_pct(r.finite.get(m)) for m in models] + [_pct(r.baseline), _sec(r.distill_seconds)] for r in runs]
    return head, rows


def _group_rows(groups: Sequence[RunGroup]) -> tuple[list[str], list[list[str]]]:
    models = _models(groups)
    labelled = any(g.label for g in groups)
    head = (["dataset", "method", "kernel", "ipc"] + (["settings"] if labelled else []) + ["seeds", "KRR acc"]
            + [f"{m} acc" for m in models] + ["random real acc", "distill s"])
    rows = []
    for g in groups:
        n = len(g.runs)
        rows.append([g.dataset, g.method, _shown(g.kernel), str(g.ipc)] + ([_shown(g.label)] if labelled else [])
                    + [",".join(map(str, g.seeds)), _pct_stat(g.test_accuracy, n)]
                    + [_pct_stat(g.finite.get(m), n) for m in models]
                    + [_pct_stat(g.baseline, n), _sec_stat(g.distill_seconds)])
    return head, rows


_TEXT_COLUMNS = {"run", "dataset", "method", "kernel", "settings"}


def _rich_table(head: list[str], rows: list[list[str]], title: str) -> "Table":
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title)
    for i, col in enumerate(head):
        if col in _TEXT_COLUMNS:  # long paths and kernel specs wrap (at 20 characters or more), never cut short
            longest = max([len(col)] + [len(_plain(r[i])) for r in rows])
            table.add_column(col, justify="left", overflow="fold", min_width=min(longest, 20))
        else:
            table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*[Text(_plain(c)) for c in row])
    return table


def runs_table(runs: Sequence[RunRecord], *, title: str | None = None) -> "Table":
    """A rich table of ``runs``, one row each: accuracies in percent (a finite network's is the mean over its
    training seeds), ``distill s`` the seconds of the distillation itself."""
    return _rich_table(*_run_rows(runs), title or f"{len(runs)} run{'s' if len(runs) != 1 else ''}")


def groups_table(groups: Sequence[RunGroup], *, title: str | None = None) -> "Table":
    """A rich table of ``groups``, one row each: mean ± std over the group's seeds (population std), in
    percent; ``(k of n)`` where only k of the n runs have the value."""
    return _rich_table(*_group_rows(groups), title or "mean ± std over seeds (runs that differ only in the seed)")


# --- plots and the page ----------------------------------------------------------------------------------------


def _legend_text(name: str) -> str:
    """A legend entry: at most 60 characters, no control characters, ``$`` not read as mathematics."""
    name = _plain(_shown(name))
    return (name if len(name) <= 60 else name[:57] + "...").replace("$", r"\$")


def _line_name(g: RunGroup, several_datasets: bool) -> str:
    """The legend entry of ``g``'s line: what tells groups apart (the settings label) before the kernel spec,
    which is the part cut short."""
    name = f"{g.method} " + (f"[{g.label}] " if g.label else "") + g.kernel
    return f"{g.dataset}: {name}" if several_datasets else name


def _plots(groups: Sequence[RunGroup]) -> tuple[bytes, bytes]:
    """Test accuracy against ipc (one line per dataset/method/kernel, error bars = std over seeds, the
    random-real baseline dashed) and against distillation seconds (log x), as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    several = len({g.dataset for g in groups}) > 1
    lines: dict[str, list[RunGroup]] = {}
    for g in groups:
        lines.setdefault(_line_name(g, several), []).append(g)
    colours = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(lines)}
    markers = {name: "osD^v<>"[i // 10 % 7] for i, name in enumerate(lines)}  # more than 10 lines: new shapes

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for name, gs in lines.items():
        gs = sorted(gs, key=lambda g: g.ipc)
        ax.errorbar([g.ipc for g in gs], [100 * g.test_accuracy.mean for g in gs],
                    yerr=[100 * g.test_accuracy.std for g in gs], marker=markers[name], capsize=3,
                    color=colours[name], label=_legend_text(name))
    base: dict[str, dict[int, list[float]]] = {}  # baseline per dataset/kernel: it depends on neither method
    for g in groups:
        if g.baseline is not None:
            key = (f"{g.dataset}: " if several else "") + f"random real, {g.kernel}"
            base.setdefault(key, {}).setdefault(g.ipc, []).extend(
                r.baseline for r in g.runs if r.baseline is not None)
    for i, (name, per_ipc) in enumerate(base.items()):
        xs = sorted(per_ipc)
        ax.plot(xs, [100 * sum(per_ipc[x]) / len(per_ipc[x]) for x in xs], linestyle="--", marker="x",
                color=plt.get_cmap("Dark2")(i % 8), alpha=0.8, label=_legend_text(f"(baseline) {name}"))
    ipcs = sorted({g.ipc for g in groups})
    if len(ipcs) > 1 and ipcs[-1] / ipcs[0] >= 10:
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks(ipcs, [str(i) for i in ipcs])
    ax.margins(x=0.08)
    ax.set_xlabel("images per class (ipc)")
    ax.set_ylabel("KRR test accuracy (%)")
    ax.set_title("test accuracy against ipc (error bars: std over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    _legend_below(ax)
    by_ipc = _png(fig, plt)

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for name, gs in lines.items():
        gs = [g for g in gs if g.distill_seconds is not None]
        if gs:
            ax.errorbar([max(g.distill_seconds.mean, _MIN_SECONDS) for g in gs],
                        [100 * g.test_accuracy.mean for g in gs], yerr=[100 * g.test_accuracy.std for g in gs],
                        marker=markers[name], linestyle="none", capsize=3, color=colours[name],
                        label=_legend_text(name))
            for g in gs:
                ax.annotate(f"ipc {g.ipc}", (max(g.distill_seconds.mean, _MIN_SECONDS), 100 * g.test_accuracy.mean),
                            textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.margins(x=0.12)
    ax.set_xlabel("distillation seconds (mean over seeds; log scale)")
    ax.set_ylabel("KRR test accuracy (%)")
    ax.set_title("test accuracy against distillation time", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        _legend_below(ax)
    return by_ipc, _png(fig, plt)


def _legend_below(ax) -> None:
    """The legend under the axes (many lines would hide the points), the figure grown to hold it."""
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.16), fontsize=7, frameon=False)


def _png(fig, plt) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; } td, th { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.text { max-width: 24em; } td.spec { overflow-wrap: anywhere; }
img { max-width: 100%; border: 1px solid #ddd; } .plots img { width: 49%; min-width: 420px; vertical-align: top; }
.note { color: #666; font-size: 0.9em; } .scroll { overflow-x: auto; }
"""


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    def cell(tag: str, col: str, v: str) -> str:
        cls = " class='num'" if col not in _TEXT_COLUMNS else " class='text spec'" if col in ("run", "kernel") \
            else " class='text'"
        return f"<{tag}{cls}>{html.escape(v)}</{tag}>"

    top = "<tr>" + "".join(cell("th", c, c) for c in head) + "</tr>"
    body = "".join("<tr>" + "".join(cell("td", c, v) for c, v in zip(head, r)) + "</tr>" for r in rows)
    return f"<div class='scroll'><table>{top}{body}</table></div>"


def _img(png: bytes, alt: str) -> str:
    import base64

    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def compare_html(runs: Sequence[RunRecord], *, groups: Sequence[RunGroup] | None = None) -> str:
    """The HTML text of the comparison page of ``runs``: the grouped table, the two plots (test accuracy
    against ipc and against distillation seconds) and the table of every run. Self-contained (the plots
    are ``data:`` PNGs, no script); every string read from a run folder is HTML-escaped."""
    if not runs:
        raise InvalidInputError("no runs to compare")
    groups = group_runs(runs, on_note=lambda m: None) if groups is None else groups
    by_ipc, by_time = _plots(groups)
    title = f"kdistill compare: {len(runs)} run{'s' if len(runs) != 1 else ''} in {len(groups)} " \
            f"group{'s' if len(groups) != 1 else ''}"
    body = [
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Mean ± std over seeds</h2>",
        "<p class='note'>One row per group of runs that agree on dataset, method, kernel, ipc and every setting of "
        "their run.json except the seed (and except whether the references were computed and how often a "
        "checkpoint was written); population std. <i>settings</i>, where shown, names what sets a row apart from "
        "another with the same dataset, method, kernel and ipc. Finite-network accuracies are each run's mean over "
        "its training seeds (<code>kdistill evaluate --model</code>), then mean ± std over the group's runs; "
        "<i>random real</i> is the baseline of random real images at the same ipc and kernel.</p>",
        _html_table(*_group_rows(groups)),
        "<h2>Plots</h2><div class='plots'>",
        _img(by_ipc, "test accuracy against ipc"),
        _img(by_time, "test accuracy against distillation seconds"),
        "</div><p class='note'>Left: KRR test accuracy against images per class, one line per method and kernel, "
        "error bars the std over seeds, the random-real baseline dashed. Right: the same accuracy against the "
        f"seconds of the distillation itself (log scale; runs faster than {_MIN_SECONDS * 1000:g} ms drawn at "
        f"{_MIN_SECONDS * 1000:g} ms).</p>",
        "<h2>Every run</h2>",
        _html_table(*_run_rows(runs)),
    ]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>" + _GENERATOR
            + f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _check_target(path: Path, force: bool, ours: Callable[[bytes], bool], what: str) -> None:
    """A file compare may write: new, written by compare before, or anything (not a folder) with ``force``."""
    if path.is_dir():
        raise InvalidInputError(f"{what} {path} is a folder; give a file name")
    if path.exists() and not force:
        try:
            head = path.read_bytes()[:4096]
        except OSError:
            head = b""
        if not ours(head):
            raise InvalidInputError(f"{what} {path} exists and was not written by kdistill compare; choose another "
                                    "name, or add --force to replace it")


def check_compare_targets(html: str | Path | None, json_path: str | Path | None, *, force: bool = False) -> None:
    """Refuse, before either is written, an ``--html`` or ``--json`` target that :func:`write_compare_html` or
    :func:`write_compare_json` would refuse (so a refused second file never follows a written first one)."""
    if html is not None:
        _check_target(Path(html), force, lambda head: _GENERATOR.encode() in head, "--html")
    if json_path is not None:
        _check_target(Path(json_path), force, lambda head: f'"kind": "{_JSON_KIND}"'.encode() in head, "--json")


def write_compare_html(runs: Sequence[RunRecord], path: str | Path, *, groups: Sequence[RunGroup] | None = None,
                       force: bool = False) -> Path:
    """Write :func:`compare_html` to ``path`` atomically and return it. An existing file is replaced only
    when an earlier compare wrote it, or with ``force``."""
    path = Path(path)
    check_compare_targets(path, None, force=force)
    write_bytes(path, compare_html(runs, groups=groups).encode("utf-8"))
    return path


def _stat_json(s: Stat | None) -> dict | None:
    return None if s is None else {"mean": s.mean, "std": s.std, "n": s.n}


def compare_json(groups: Sequence[RunGroup]) -> dict[str, Any]:
    """The groups as a JSON-able object: ``{"kind": "kdistill compare", "groups": [...]}``, each group with
    dataset, method, kernel, ipc, label, settings, seeds, runs (folders) and ``{mean, std, n}`` of
    ``test_accuracy``, ``baseline``, ``distill_seconds`` and each ``finite`` model (accuracies as fractions,
    as in summary.json; null where no run has the value)."""
    return {"kind": _JSON_KIND, "std": "population (ddof=0) over the group's runs", "groups": [
        {"dataset": g.dataset, "method": g.method, "kernel": g.kernel, "ipc": g.ipc, "label": g.label,
         "settings": dict(g.settings), "seeds": list(g.seeds), "runs": [str(r.path) for r in g.runs],
         "test_accuracy": _stat_json(g.test_accuracy), "baseline": _stat_json(g.baseline),
         "finite": {m: _stat_json(s) for m, s in g.finite.items()},
         "distill_seconds": _stat_json(g.distill_seconds)} for g in groups]}


def write_compare_json(groups: Sequence[RunGroup], path: str | Path, *, force: bool = False) -> Path:
    """Write :func:`compare_json` to ``path`` atomically (strict JSON); the same rule as
    :func:`write_compare_html` for an existing file."""
    path = Path(path)
    check_compare_targets(None, path, force=force)
    write_bytes(path, (dumps_strict(compare_json(groups), indent=2) + "\n").encode())
    return path
