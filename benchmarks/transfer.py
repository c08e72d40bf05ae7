"""One table of distilled sets and the finite networks they train (issue 29): ``results/transfer.md``.

For each dataset, images per class and method, the script makes the method's set with the command in ``SETS``
(each method's default options, its learning capped by ``MINUTES``; the set lands in ``RUNS/<method>_<dataset>_<ipc>``
and is not made again while its folder holds a finished run), reads the set's KRR test accuracy and its
distillation seconds from the run's ``summary.json``, then trains finite ConvNets on it under each named protocol
(``kdistill evaluate FILE --model M --seeds N``): DC's (``convnet``), KIP's (``convnet-kip``) and RFAD's
(``convnet-rfad``). KIP's and RFAD's protocols train width-1024 networks, hours each on a 2-core CPU: ``--width``
(128 by default here; ``--width 1024`` on a GPU) runs them narrower and the table says so. The evaluation runs in
the set's run folder, whose ``summary.json`` records it (since 2026-12-07; before, on a scratch copy), so a cell
asked for with more networks later trains only the missing ones while the folder is kept (``--add``).

Every set and every evaluation is one row of ``results/transfer.json`` (with its command, seconds and the load
average before it); a cell whose row exists with at least ``--seeds`` networks is not run again (``--redo``
runs it and its set again; a cell made at an earlier default label temperature is marked in the table until
then), so the table grows over sessions and ``--max-hours`` stops before starting a job once the time is
spent. ``render`` rebuilds the markdown from the JSON with the published numbers beside each row; a
cell never run reads ``not run``.

Usage (one heavy job at a time; the rows record the load average):
  .venv/bin/python benchmarks/transfer.py run                      # everything missing: days on 2 cores
  .venv/bin/python benchmarks/transfer.py run --datasets mnist --ipcs 1 --methods rfad random \\
        --protocols convnet-rfad --seeds 3                          # one cell group
  .venv/bin/python benchmarks/transfer.py render
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, load_and_gemm, load_json, markdown_table, merged_rows, write_results  # noqa: E402
from _common import OLD_TEMPERATURE_MARK, evaluate_in_run, old_temperature, old_temperature_note  # noqa: E402
from _common import kdistill_cli as _kdistill  # noqa: E402

RF_KERNEL = "rf-convnet:models=16,width=64,depth=3,stem=0"  # RFAD's default fixed kernel (kdistill.methods)
SETS = {
    "random": ("random real images", ["--method", "random", "--kernel", RF_KERNEL]),
    "rfad": ("RFAD, fixed labels", ["--method", "rfad"]),
    "rfad-learned": ("RFAD, learned labels, steps until the cap",
                     ["--method", "rfad", "--learn-labels", "--steps", "1000000"]),
    "kip-fc": ("KIP, FC NTK (depth 1), learned labels",
               ["--method", "kip", "--kernel", "fc-ntk:depth=1", "--learn-labels", "--reg", "1e-6"]),
    "kip-conv": ("KIP, random ConvNet kernel (RFAD's fixed draw), learned labels",
                 ["--method", "kip", "--kernel", RF_KERNEL, "--learn-labels"]),
    "dc": ("DC, gradient matching", ["--method", "dc"]),
    "label-solve": ("Label Solve, random ConvNet kernel", ["--method", "label-solve", "--kernel", RF_KERNEL]),
    "analytic": ("closed form (Chen et al.), fcnn features", ["--method", "analytic", "--kernel", "fcnn"]),
}
"""Method name -> (what it is, the ``kdistill distill`` flags besides dataset, ipc and output)."""
ITERATIVE = {"rfad", "rfad-learned", "kip-fc", "kip-conv", "dc"}
MINUTES = {1: 20, 10: 60, 50: 60}
"""Cap on the learning of the iterative methods by images per class (``--learn-time-limit``): each runs its
default steps (RFAD 1000, KIP 4000, DC 1000; ``rfad-learned`` until the cap) or until the cap, keeping its
best validated set."""
PROTOCOLS = ("convnet", "convnet-kip", "convnet-rfad")
WIDE = {"convnet-kip", "convnet-rfad"}  # width 1024 in the papers: --width applies to these

# Published test accuracies (%), by (dataset, ipc). KRR: the method's own kernel; finite: a ConvNet.
# Sources and how far each is confirmed: benchmarks/notes/finite_protocols.md and ../DESIGN.md section 5.
PUBLISHED = {
    ("mnist", 1): {"KIP ConvNet KRR": 96.5, "KIP->NN": 90.1, "RFAD KRR*": 94.4, "DC": 91.7, "Label Solve": 73.4,
                   "DC random real*": 64.9},
    ("mnist", 10): {"KIP ConvNet KRR": 99.1, "KIP->NN": 97.5, "RFAD KRR*": 98.5, "DC": 97.4, "Label Solve": 96.4,
                    "DC random real*": 95.1},
    ("mnist", 50): {"KIP ConvNet KRR": 99.5, "KIP->NN": 98.4, "RFAD KRR*": 98.8, "DC": 98.8, "Label Solve": 98.3,
                    "DC random real*": 97.9},
    ("fashion_mnist", 1): {"KIP ConvNet KRR": 76.7, "KIP->NN": 73.8, "RFAD KRR*": 78.6, "DC": 70.5,
                           "Label Solve": 65.3, "DC random real*": 51.4},
    ("fashion_mnist", 10): {"KIP ConvNet KRR": 88.8, "KIP->NN": 86.8, "RFAD KRR*": 87.0, "DC": 82.3,
                            "Label Solve": 80.8, "DC random real*": 73.8},
    ("fashion_mnist", 50): {"KIP ConvNet KRR": 91.0, "KIP->NN": 87.8, "RFAD KRR*": 88.8, "DC": 83.6,
                            "Label Solve": 86.9, "DC random real*": 82.5},
}
KEY = ("kind", "dataset", "ipc", "method", "protocol", "width")


def _rows() -> list[dict]:
    path = RESULTS / "transfer.json"
    return load_json(path).get("rows", []) if path.exists() else []


def _find(rows, **key) -> dict | None:
    want = {k: key.get(k) for k in KEY}
    return next((r for r in rows if all(r.get(k) == v for k, v in want.items())), None)


def distill_command(method: str, dataset: str, ipc: int, out: Path) -> list[str]:
    flags = ["distill", "--dataset", dataset, "--ipc", str(ipc), *SETS[method][1], "--no-full", "--out", str(out)]
    if method in ITERATIVE:
        flags += ["--learn-time-limit", str(MINUTES[ipc] * 60)]
    if method == "random":
        flags += ["--no-baseline"]
    return flags


def make_set(method: str, dataset: str, ipc: int, runs: Path, redo: bool) -> dict:
    """The set's row: made now unless its run folder holds a finished run (``summary.json``)."""
    out = runs / f"{method}_{dataset}_{ipc}"
    flags = distill_command(method, dataset, ipc, out)
    summary = out / "summary.json"
    row = _find(_rows(), kind="set", dataset=dataset, ipc=ipc, method=method)
    if summary.exists() and row is not None and not redo:
        return {**row, "folder": str(out)}  # evaluated where --runs puts it, whatever the working directory
    load_before, gemm = load_and_gemm()
    seconds = None
    if redo or not summary.exists():
        print(f"making {out} (float32 GEMM {gemm} GFLOP/s) ...", flush=True)
        seconds, _ = _kdistill(*flags, *(["--force"] if out.exists() else []))
    s = json.loads(summary.read_text())
    row = {"kind": "set", "dataset": dataset, "ipc": ipc, "method": method, "protocol": None, "width": None,
           "what": SETS[method][0], "command": "kdistill " + " ".join(flags), "folder": str(out),
           "krr": s.get("test_accuracy"), "kernel": s.get("kernel"),
           "distill_seconds": (s.get("seconds") or {}).get("distill"), "process_seconds": seconds,
           "loadavg_before": load_before, "gemm_gflops_before": gemm}
    render(merged_rows("transfer", row, KEY))
    return row


def evaluate(set_row: dict, protocol: str, width: int, seeds: int, redo: bool) -> dict:
    w = width if protocol in WIDE else None
    key = dict(kind="eval", dataset=set_row["dataset"], ipc=set_row["ipc"], method=set_row["method"],
               protocol=protocol, width=w)
    old = _find(_rows(), **key)
    if old is not None and not redo and len(old["accuracies"]) >= seeds:
        return old  # a row with fewer networks than asked for grows, or is replaced (evaluate_in_run)
    folder = Path(set_row["folder"])
    flags = ["--model", protocol, *(["--width", str(w)] if w else [])]
    load_before, gemm = load_and_gemm()
    print(f"evaluating {folder} under {protocol}{f' (width {w})' if w else ''} (float32 GEMM {gemm} GFLOP/s) ...",
          flush=True)
    seconds, res, _ = evaluate_in_run(folder, *flags, seeds=seeds)
    flags += ["--seeds", str(seeds)]
    row = {**key, "command": f"kdistill evaluate {folder}/distilled.npz " + " ".join(flags),
           "mean": res["mean"], "std": res["std"], "accuracies": res["accuracies"], "seconds": round(seconds, 1),
           "loadavg_before": load_before, "gemm_gflops_before": gemm, "loss": res["settings"]["loss"],
           "label_mode": res.get("label_mode"),
           **{k: res[k] for k in ("lrs", "best_steps", "steps_run") if k in res}}
    print(f"  {100 * row['mean']:.2f} +- {100 * row['std']:.2f}% ({seconds:.0f} s)", flush=True)
    render(merged_rows("transfer", row, KEY))
    return row


def run(args) -> None:
    deadline = time.monotonic() + args.max_hours * 3600 if args.max_hours else None
    for dataset in args.datasets:
        for ipc in args.ipcs:
            for method in args.methods:
                for protocol in [None, *args.protocols]:
                    if deadline is not None and time.monotonic() > deadline:
                        print(f"--max-hours {args.max_hours} spent: stopping before the next job")
                        return
                    set_row = make_set(method, dataset, ipc, args.runs, args.redo and protocol is None)
                    if protocol is not None:
                        evaluate(set_row, protocol, args.width, args.seeds, args.redo)


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.2f}"


def render(rows: list[dict] | None = None) -> None:
    rows = _rows() if rows is None else rows
    widths = sorted({r["width"] for r in rows if r["kind"] == "eval" and r["width"]})
    cols = [("convnet", None)] + [(p, w) for p in sorted(WIDE) for w in widths or [128]]
    head = {("convnet", None): "DC's protocol"}
    gemm = [r["gemm_gflops_before"] for r in rows if r.get("gemm_gflops_before")]
    gemm_range = f": {min(gemm):.0f} to {max(gemm):.0f} here" if gemm else ""
    head.update({(p, w): f"{'KIP' if p == 'convnet-kip' else 'RFAD'}'s protocol, width {w}" for p, w in cols[1:]})
    lines = ["# Distilled sets and the finite networks they train (issue 29)", "",
             "One row per set: its KRR test accuracy (the method's own kernel), its distillation minutes on the "
             "machine that made it, and the test accuracy (%, mean ± std over the seeds) of ConvNets trained on it "
             "under each published protocol: DC's (`kdistill evaluate --model convnet`: width 128, instance norm, "
             "cross-entropy, DC's augmentation on MNIST), KIP's (`--model convnet-kip`) and RFAD's "
             "(`--model convnet-rfad`), the last two at the width in the column (theirs is 1024). `not run`: "
             "the cell has not been measured yet. Every set is made by the command in transfer.json with its "
             "method's default options and its learning capped (iterative methods: "
             f"{', '.join(f'{m} min at ipc {i}' for i, m in MINUTES.items())}); regenerate with "
             "`.venv/bin/python benchmarks/transfer.py run` (`--help`: one cell group at a time). "
             "Machines: 2-core AMD EPYCs, which have differed about 4x in speed between sessions; each row of "
             "transfer.json records the load average before it and (rows made since 2026-12-07) the machine's "
             f"float32 GEMM rate (`gemm_gflops_before`, GFLOP/s, shown beside the minutes{gemm_range}; the runs in "
             "rcig.json and frepo.json record 391 to 534), so minutes compare only between rows at similar rates, "
             "and so do the sets of iterative methods stopped by their cap (a faster machine makes more steps), while "
             "a set made in fixed steps and a network trained on it do not depend on the machine. "
             "Published numbers below each table; * marks those not confirmed from the papers' tables "
             "(benchmarks/notes/finite_protocols.md).",
             ""]
    for dataset, ipc in sorted({(r["dataset"], r["ipc"]) for r in rows}, key=lambda k: (k[0] != "mnist", k)):
        table = []
        for method in SETS:
            s = _find(rows, kind="set", dataset=dataset, ipc=ipc, method=method)
            if s is None:
                continue
            minutes = s.get("distill_seconds")
            line = {"set": method, "what": s["what"], "KRR": _pct(s.get("krr")),
                    "minutes": "" if minutes is None else f"{minutes / 60:.1f}"
                    + (f" (GEMM {s['gemm_gflops_before']:.0f})" if s.get("gemm_gflops_before") else "")}
            for p, w in cols:
                e = _find(rows, kind="eval", dataset=dataset, ipc=ipc, method=method, protocol=p, width=w)
                line[head[(p, w)]] = ("not run" if e is None else
                                      f"{100 * e['mean']:.2f} ± {100 * e['std']:.2f} ({len(e['accuracies'])})"
                                      + (f" {OLD_TEMPERATURE_MARK}" if _old_temperature(e) else ""))
            table.append(line)
        pub = PUBLISHED.get((dataset, ipc), {})
        lines += [f"## {dataset}, {ipc} image{'s' if ipc > 1 else ''} per class", "",
                  markdown_table(table, ["set", "what", "KRR", "minutes", *(head[c] for c in cols)]), "",
                  "Published: " + "; ".join(f"{k} {v}" for k, v in pub.items()) + ".", ""]
    if any(_old_temperature(r) for r in rows if r["kind"] == "eval"):
        lines += [old_temperature_note() + " `run --redo` with the cell's dataset, ipc and method remakes its set "
                  "and every cell of it (re-evaluating one cell of a remade set would mix two sets in a row).", ""]
    write_results("transfer", {"rows": rows}, "\n".join(lines))


def _old_temperature(e: dict) -> bool:
    return old_temperature(e.get("label_mode"), e.get("command", ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="make and evaluate the cells not yet in transfer.json")
    r.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist"])
    r.add_argument("--ipcs", nargs="+", type=int, default=[1, 10, 50], choices=sorted(MINUTES))
    r.add_argument("--methods", nargs="+", default=list(SETS), choices=list(SETS))
    r.add_argument("--protocols", nargs="*", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    r.add_argument("--width", type=int, default=128, help="width of KIP's and RFAD's networks (theirs: 1024)")
    r.add_argument("--seeds", type=int, default=3)
    r.add_argument("--runs", type=Path, default=Path("runs/transfer"), help="where the sets' run folders go")
    r.add_argument("--redo", action="store_true", help="run the selected cells again even if they have rows")
    r.add_argument("--max-hours", type=float, default=0.0, help="start no new job after this long (0: no limit)")
    sub.add_parser("render")
    args = p.parse_args()
    if args.cmd == "run":
        if args.seeds < 1 or args.width < 1:
            p.error("--seeds and --width must be at least 1")
        run(args)
    else:
        render()


if __name__ == "__main__":
    main()
