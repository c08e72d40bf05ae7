"""RFAD (Loo et al. 2022) on this CPU: test accuracy within a wall-clock budget (issue 12, first rows).

Each row is one ``kdistill distill --method rfad`` command in its own process, with ``--time-limit``
(the run keeps the best validated set when the budget is spent), learned labels and the KRR
evaluation with the ``--kernel`` spec's own fixed draw; the random-real baseline (same kernel, same
ipc) comes from the same run. Recorded: test accuracy, baseline, steps run, best step, seconds per
phase, the whole process's seconds, load average before and after.

Usage:  .venv/bin/python benchmarks/rfad.py --dataset mnist --ipc 1 --minutes 20
        [--kernel rf-convnet:models=2,width=64,depth=3] [--redraw-every 10] [--lr 0.01] [--target-batch 1280]
Each invocation merges its row into benchmarks/results/rfad.json (a row with the same settings is
replaced) and rewrites rfad.md.
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

KEY = ("dataset", "ipc", "kernel", "minutes", "redraw_every", "lr", "target_batch")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--ipc", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--kernel", default="rf-convnet:models=2,width=64,depth=3")
    ap.add_argument("--redraw-every", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--target-batch", type=int, default=1280)
    args = ap.parse_args(argv)

    cmd = ["distill", "--dataset", args.dataset, "--method", "rfad", "--kernel", args.kernel, "--ipc", str(args.ipc),
           "--learn-labels", "--steps", "1000000", "--time-limit", str(int(args.minutes * 60)),
           "--redraw-every", str(args.redraw_every), "--lr", str(args.lr), "--target-batch", str(args.target_batch),
           "--val-every", "100", "--val-size", "2000", "--no-full"]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="kd-rfad-") as tmp:
        out = Path(tmp) / "run"
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "kdistill.cli", *cmd, "--out", str(out)], capture_output=True,
                           text=True)
        wall = time.perf_counter() - t
        if r.returncode != 0:
            raise SystemExit(f"kdistill failed: {r.stderr.strip().splitlines()[-1:]}")
        s = json.loads((out / "summary.json").read_text())
        h = json.loads((out / "history.json").read_text())
    info = s["method_info"]
    row = {"dataset": args.dataset, "ipc": args.ipc, "kernel": args.kernel, "minutes": args.minutes,
           "redraw_every": args.redraw_every, "lr": args.lr, "target_batch": args.target_batch,
           "test_acc": s["test_accuracy"], "random_real_acc": (s.get("baseline") or {}).get("test_accuracy"),
           "steps_run": info["steps_run"], "best_step": info["best_step"], "best_val": info["best_val_accuracy"],
           "seconds_distill": s["seconds"]["distill"], "seconds_process": wall,
           "seconds_per_step": s["seconds"]["distill"] / max(info["steps_run"], 1),
           "val_curve": list(zip(h["val_step"], h["val_accuracy"])), "command": "kdistill " + " ".join(cmd),
           "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    print({k: v for k, v in row.items() if k != "val_curve"}, flush=True)

    path = RESULTS / "rfad.json"
    rows = [x for x in (load_json(path)["rows"] if path.exists() else []) if tuple(x[k] for k in KEY) !=
            tuple(row[k] for k in KEY)] + [row]
    mach = machine_info()
    cols = ["dataset", "ipc", "kernel", "minutes", "redraw_every", "lr", "target_batch", "test_acc",
            "random_real_acc", "steps_run", "best_step", "best_val", "seconds_per_step", "seconds_process"]
    md = ["# RFAD on this CPU (first rows; issue 12)", "",
          f"Machine: {mach['cpu']}, {mach['cores']} cores, JAX {mach['jax_backend']}. Each row: "
          "`.venv/bin/python benchmarks/rfad.py --dataset D --ipc N --minutes M [...]`, which runs the `command` "
          "in rfad.json in its own process (learned labels, validation every 100 steps on 2000 held-out images, "
          "the best validated set kept, KRR test accuracy with the --kernel spec's fixed draw, random real images "
          "at the same ipc and kernel beside it). Defaults untuned: the speed-knob ablation is still to come.", "",
          markdown_table(rows, cols), "",
          "Validation accuracy against steps (last row): "
          + ", ".join(f"{s_}: {a:.3f}" for s_, a in row["val_curve"][:: max(1, len(row["val_curve"]) // 12)])]
    js, mdp = write_results("rfad", {"machine": mach, "versions": versions(), "rows": rows}, "\n".join(md))
    print(f"wrote {js} and {mdp}")


if __name__ == "__main__":
    main()
