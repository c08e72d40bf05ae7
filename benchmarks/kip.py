"""Benchmark of KIP and Label Solve (Nguyen et al. 2021) with the fc-ntk kernel.

For each dataset and ipc: random real images, Label Solve on the same random images,
KIP with fixed labels and KIP with learned labels; KRR test accuracy (reg 1e-6, KIP's
protocol), steps, seconds, machine. Also KIP with the analytic method's kernel
(fcnn: a linear kernel on one-hidden-layer LeakyReLU features) next to the analytic
method itself, for the cost comparison of Chen et al.'s Table 4.

``--defaults`` runs the plain command with every KIP default, as a user would type it, in its own
process, and records its accuracy, wall-clock, steps, the validation curve and the load average:
  kdistill distill --dataset mnist --method kip --kernel fc-ntk --ipc 10 --learn-labels --out DIR

Usage:
  .venv/bin/python benchmarks/kip.py --defaults
  .venv/bin/python benchmarks/kip.py --datasets mnist --ipcs 1 10 --steps 2000 --time-limit 1700
  .venv/bin/python benchmarks/kip.py --table4 --ipcs 1 10 50 --steps 300
Each invocation merges its rows into benchmarks/results/kip.json and rewrites kip.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, Timer, markdown_table, write_results  # noqa: E402

from kdistill._machine import machine_info, versions  # noqa: E402
from kdistill.data import load  # noqa: E402
from kdistill.methods import RunConfig  # noqa: E402
from kdistill.runs import run

PUBLISHED = {("mnist", 1): 0.855, ("mnist", 10): 0.972, ("mnist", 50): 0.984}


def _row(name, variant, kernel, ipc, summary, seconds):
    return {"dataset": name, "variant": variant, "kernel": kernel, "ipc": ipc,
            "test_acc": summary["test_accuracy"], "steps": summary["method_info"].get("steps_run"),
            "best_step": summary["method_info"].get("best_step"),
            "best_val": summary["method_info"].get("best_val_accuracy"),
            "seconds": seconds, "published_kip_fc": PUBLISHED.get((name, ipc)) if variant == "kip-learned" else None}


DEFAULTS_COMMAND = "kdistill distill --dataset mnist --method kip --kernel fc-ntk --ipc 10 --learn-labels"


def _run_defaults(out: str | None) -> dict:
    exe = Path(sys.executable).with_name("kdistill")
    out_dir = Path(out) if out else Path(tempfile.mkdtemp(prefix="kip-defaults-"))
    load_before = os.getloadavg()
    with Timer() as t:
        subprocess.run([str(exe), *DEFAULTS_COMMAND.split()[1:], "--out", str(out_dir)], check=True)
    load_after = os.getloadavg()
    s = json.loads((out_dir / "summary.json").read_text())
    h = json.loads((out_dir / "history.json").read_text())
    info = s["method_info"]
    curve = list(zip(h["val_step"], h["val_accuracy"]))
    mach = s["machine"]
    return {"command": DEFAULTS_COMMAND, "test_acc": s["test_accuracy"], "published_kip_fc": PUBLISHED[("mnist", 10)],
            "steps": info["steps_run"], "best_step": info["best_step"], "best_val": info["best_val_accuracy"],
            "seconds": t.seconds, "seconds_distill": s["seconds"].get("distill"),
            "load_before": round(load_before[0], 2), "load_after": round(load_after[0], 2),
            "machine": f"{mach['cpu']}, {mach['cores']} cores", "settings": info["settings"],
            "val_curve": curve[::5] + ([curve[-1]] if (len(curve) - 1) % 5 else [])}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist"])
    ap.add_argument("--ipcs", nargs="+", type=int, default=[1, 10, 50])
    ap.add_argument("--kernel", default="fc-ntk:depth=1")
    ap.add_argument("--variants", nargs="+", default=["random", "label-solve", "kip-fixed", "kip-learned"])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--target-batch", type=int, default=5000)
    ap.add_argument("--time-limit", type=float, default=1700.0, help="seconds per KIP run")
    ap.add_argument("--table4", action="store_true", help="KIP vs analytic with the fcnn kernel on MNIST")
    ap.add_argument("--defaults", action="store_true", help="the plain CLI command with KIP's defaults (MNIST ipc 10)")
    ap.add_argument("--out", default=None, help="--defaults: run directory (default: a temporary one)")
    args = ap.parse_args(argv)

    path = RESULTS / "kip.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    rows, table4, defaults = old.get("rows", []), old.get("table4", []), old.get("defaults", [])
    kip_opts = dict(steps=args.steps, lr=args.lr, target_batch=args.target_batch, val_every=100,
                    checkpoint_every=0, time_limit=args.time_limit)
    if args.defaults:
        defaults = [r for r in defaults if r.get("command") != DEFAULTS_COMMAND] + [_run_defaults(args.out)]
        print(defaults[-1], flush=True)
    elif args.table4:
        ds = load("mnist")
        for ipc in args.ipcs:
            with Timer() as ta:
                a = run(ds, RunConfig(method="analytic", kernel="fcnn", ipc=ipc, full_reference=False)).summary
            with Timer() as tk:
                k = run(ds, RunConfig(method="kip", kernel="fcnn", ipc=ipc, reg=1e-6, full_reference=False,
                                      options=dict(kip_opts, learn_labels=True))).summary
            table4 = [r for r in table4 if r["ipc"] != ipc]
            table4.append({"ipc": ipc, "analytic_acc": a["test_accuracy"], "analytic_s": ta.seconds,
                           "kip_acc": k["test_accuracy"], "kip_s": tk.seconds,
                           "kip_steps": k["method_info"]["steps_run"],
                           "kip_over_analytic_s": tk.seconds / ta.seconds})
            print(table4[-1], flush=True)
    else:
        for name in args.datasets:
            ds = load(name)
            for ipc in args.ipcs:
                for variant in args.variants:
                    method = {"random": "random", "label-solve": "label-solve"}.get(variant, "kip")
                    options = {}
                    if method == "kip":
                        options = dict(kip_opts, learn_labels=variant == "kip-learned")
                    with Timer() as t:
                        s = run(ds, RunConfig(method=method, kernel=args.kernel, ipc=ipc, reg=1e-6,
                                              full_reference=False, options=options), progress=True).summary
                    row = _row(name, variant, s["kernel"], ipc, s, t.seconds)
                    rows = [r for r in rows if (r["dataset"], r["variant"], r["kernel"], r["ipc"]) !=
                            (name, variant, row["kernel"], ipc)]
                    rows.append(row)
                    print(row, flush=True)
    mach = machine_info()
    md = ["# KIP / Label Solve benchmark", "",
          f"Machine: {mach['cpu']}, {mach['cores']} cores, JAX {mach['jax_backend']}. KRR test accuracy with "
          "reg 1e-6 (KIP's protocol); seconds exclude data loading.", "",
          markdown_table(sorted(rows, key=lambda r: (r["dataset"], r["ipc"], r["variant"])),
                         ["dataset", "ipc", "variant", "kernel", "test_acc", "published_kip_fc", "steps",
                          "best_step", "best_val", "seconds"])]
    if table4:
        md += ["", "## KIP vs closed form with the same kernel (fcnn features), MNIST (cf. Chen et al. Table 4)", "",
               markdown_table(sorted(table4, key=lambda r: r["ipc"]),
                              ["ipc", "analytic_acc", "analytic_s", "kip_acc", "kip_steps", "kip_s",
                               "kip_over_analytic_s"])]
    if defaults:
        md += ["", "## The plain command with KIP's defaults", "",
               "Run by `benchmarks/kip.py --defaults` in its own process; seconds are the whole process "
               "(loading included); load average of this 2-core machine before and after.", "",
               markdown_table(defaults, ["command", "test_acc", "published_kip_fc", "steps", "best_step", "best_val",
                                         "seconds", "load_before", "load_after", "machine"]),
               "", "Validation accuracy (5,000 held-out training images) against steps, same run:", "",
               markdown_table([{"step": st, "val_acc": v} for st, v in defaults[-1].get("val_curve", [])],
                              ["step", "val_acc"])]
    write_results("kip", {"machine": mach, "versions": versions(), "rows": rows, "table4": table4,
                          "defaults": defaults}, "\n".join(md))


if __name__ == "__main__":
    main()
