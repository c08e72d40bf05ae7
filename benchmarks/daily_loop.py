"""A researcher's first hour (issue 28): the commands the issue named, run as a user runs them, one at a time.

Each case is one ``kdistill`` command in its own process (the whole process timed, load average before and
after); its run folder's ``summary.json`` and ``history.json`` give the phases, estimates, what was skipped,
the validation curve and the flags. Cases:

- ``rfad-budget``: ``distill --dataset mnist --method rfad --ipc 1 --time-limit 300`` (must end within 330 s,
  with a line before each phase);
- ``dc-digits``: ``distill --dataset digits --method dc --ipc 1 --steps 20 --val-every 10 --val-epochs 50``
  (diverged at DC's depth 3: loss 261 -> 376, 10.8% KRR against 66.7% random real);
- ``dc-mnist``, ``dc-fashion``: the same DC command on MNIST and Fashion-MNIST (28x28: DC's depth 3, as
  before), to see that it still learns (loss falls, a later step beats the starting set);
- ``kip1``: the README's ``distill --dataset mnist --method kip --kernel fc-ntk:depth=1 --ipc 1 --steps 400
  --val-every 50 --learn-labels --reg 1e-6 --no-full`` (its "89.2% in 13 s" line);
- ``seeds-compare-export``: ``distill --seeds 2`` of KIP and one analytic run on digits, ``compare`` of the
  three with ``--html``, and ``export`` of one set (seconds and what they printed).

Usage:  .venv/bin/python benchmarks/daily_loop.py [--cases rfad-budget dc-digits ...]   (about 12 minutes)
Writes benchmarks/results/daily_loop.json and .md (cases run now replace their rows).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, load_json, markdown_table, write_results  # noqa: E402

from kdistill._machine import machine_info, versions  # noqa: E402

EXE = str(Path(sys.executable).with_name("kdistill"))
DC = ["--method", "dc", "--ipc", "1", "--steps", "20", "--val-every", "10", "--val-epochs", "50"]
CASES = {
    "rfad-budget": ["distill", "--dataset", "mnist", "--method", "rfad", "--ipc", "1", "--time-limit", "300"],
    "dc-digits": ["distill", "--dataset", "digits", *DC],
    "dc-mnist": ["distill", "--dataset", "mnist", *DC],
    "dc-fashion": ["distill", "--dataset", "fashion_mnist", *DC],
    "kip1": ["distill", "--dataset", "mnist", "--method", "kip", "--kernel", "fc-ntk:depth=1", "--ipc", "1", "--steps",
             "400", "--val-every", "50", "--learn-labels", "--reg", "1e-6", "--no-full"],
}


def _timed(args: list[str], cwd: Path) -> dict:
    load = os.getloadavg()
    t = time.perf_counter()
    p = subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd)
    seconds = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"kdistill {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return {"command": "kdistill " + " ".join(args), "process_seconds": round(seconds, 2),
            "load_before": [round(v, 2) for v in load], "load_after": [round(v, 2) for v in os.getloadavg()],
            "stderr_lines": [ln for ln in p.stderr.splitlines() if not ln.startswith(("rfad step", "dc step", "kip step"))
                             or " val " in ln][:40], "stdout_notes": [ln for ln in p.stdout.splitlines()
                                                                      if ln.startswith(("note", "warning"))]}


def _distill_case(name: str, tmp: Path) -> dict:
    out = tmp / name
    row = {"case": name, **_timed([*CASES[name], "--out", str(out)], tmp)}
    s = json.loads((out / "summary.json").read_text())
    h = json.loads((out / "history.json").read_text()) if (out / "history.json").exists() else {}
    info = s.get("method_info") or {}
    row.update(test_accuracy=s["test_accuracy"], baseline=(s.get("baseline") or {}).get("test_accuracy"),
               full=s.get("full_test_accuracy"), seconds=s["seconds"], budget=s.get("budget"),
               warnings=s.get("warnings"), steps_run=info.get("steps_run"), best_step=info.get("best_step"),
               stop_reason=info.get("stop_reason"), val_step=h.get("val_step"), val_accuracy=h.get("val_accuracy"),
               loss_first=(h.get("loss") or [None])[0], loss_last=(h.get("loss") or [None])[-1],
               dc_depth=(info.get("settings") or {}).get("dc_depth"))
    return row


def _seeds_compare_export(tmp: Path) -> dict:
    kip = ["distill", "--dataset", "digits", "--method", "kip", "--kernel", "rbf", "--ipc", "1", "--steps", "100"]
    steps = [_timed([*kip, "--seeds", "2", "--out", "runs/kip"], tmp),
             _timed(["distill", "--dataset", "digits", "--method", "analytic", "--kernel", "linear", "--ipc", "1",
                     "--out", "runs/analytic"], tmp),
             _timed(["compare", "runs/kip", "runs/analytic", "--html", "compare.html"], tmp),
             _timed(["export", "runs/kip/seed-0/distilled.npz", "--out", "kip0.npz", "--layout", "nchw"], tmp)]
    compare = subprocess.run([EXE, "compare", "runs/kip", "runs/analytic"], capture_output=True, text=True, cwd=tmp)
    with __import__("numpy").load(tmp / "kip0.npz") as z:
        shapes = {k: list(z[k].shape) for k in z.files}
    return {"case": "seeds-compare-export", "steps": steps, "compare_stdout": compare.stdout.splitlines(),
            "html_bytes": (tmp / "compare.html").stat().st_size, "export_shapes": shapes,
            "process_seconds": round(sum(s["process_seconds"] for s in steps), 2)}


def _pct(v):
    return "" if v is None else f"{100 * v:.2f}%"


def render(payload: dict) -> str:
    m = payload["machine"]
    lines = ["# A researcher's first hour: budgets, honest results, compare, export (issue 28)", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m.get('memory_gib', '?')} GiB, JAX {m['jax_backend']}. "
             "Each command ran alone in its own process (`benchmarks/daily_loop.py`); load averages are the "
             "machine's 1/5/15-minute figures before the command.", ""]
    rows = []
    for r in payload["rows"]:
        if r["case"] == "seeds-compare-export":
            continue
        sk = ", ".join((r.get("budget") or {}).get("skipped", {}) or []) or ""
        rows.append({"case": r["case"], "process s": r["process_seconds"], "load before": r["load_before"][0],
                     "KRR acc": _pct(r["test_accuracy"]), "random real": _pct(r["baseline"]),
                     "steps": r.get("steps_run"), "best step": r.get("best_step"), "stop": r.get("stop_reason"),
                     "val (step: %)": " ".join(f"{s}:{100 * a:.1f}" for s, a in zip(r.get("val_step") or [],
                                                                                r.get("val_accuracy") or [])),
                     "loss first/last": "" if r.get("loss_first") is None else
                     f"{r['loss_first']:.4g} / {r['loss_last']:.4g}", "skipped": sk,
                     "flags": "; ".join(r.get("warnings") or [])})
    lines += [markdown_table(rows, list(rows[0])) if rows else "(no distill cases)", ""]
    for r in payload["rows"]:
        if r["case"] == "rfad-budget":
            lines += ["## rfad-budget: what it printed (step lines between validations left out)", "", "```",
                      *r["stderr_lines"], *r["stdout_notes"], "```", "",
                      f"Seconds per phase (summary.json): {json.dumps(r['seconds'])}", "",
                      f"Budget (summary.json): {json.dumps(r['budget'])}", ""]
        if r["case"] == "seeds-compare-export":
            lines += ["## --seeds, compare, export", "", "```"]
            lines += [f"{s['command']}   # {s['process_seconds']} s" for s in r["steps"]]
            lines += ["```", "", "`kdistill compare runs/kip runs/analytic` printed:", "", "```",
                      *r["compare_stdout"], "```", "", f"compare.html: {r['html_bytes']} bytes; export "
                      f"(nchw) shapes: {json.dumps(r['export_shapes'])}", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=[*CASES, "seeds-compare-export"],
                    choices=[*CASES, "seeds-compare-export"])
    ap.add_argument("--render", action="store_true", help="only rewrite the .md from the .json")
    args = ap.parse_args(argv)
    path = RESULTS / "daily_loop.json"
    old = load_json(path) if path.exists() else {"rows": []}
    if args.render:
        return write_results("daily_loop", old, render(old))
    rows = {r["case"]: r for r in old["rows"]}
    with tempfile.TemporaryDirectory(prefix="kd-daily-") as tmp:
        for name in args.cases:
            print(f"{name} ...", flush=True)
            rows[name] = (_seeds_compare_export(Path(tmp)) if name == "seeds-compare-export"
                          else _distill_case(name, Path(tmp)))
            print(json.dumps({k: rows[name].get(k) for k in ("process_seconds", "test_accuracy", "baseline",
                                                             "best_step", "stop_reason")}), flush=True)
    order = [*CASES, "seeds-compare-export"]
    payload = {"machine": machine_info(), "versions": versions(),
               "rows": sorted(rows.values(), key=lambda r: order.index(r["case"]))}
    js, md = write_results("daily_loop", payload, render(payload))
    print(md.read_text())


if __name__ == "__main__":
    main()
