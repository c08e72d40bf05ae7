"""FRePo (neural feature regression with a model pool, Zhou et al. 2022) on this CPU (issue 30).

Rows merged into benchmarks/results/frepo.json (a row with the same key is replaced) and rendered to
frepo.md with the machine, seconds and load averages:

- ``run``: one ``kdistill distill --method frepo`` per training seed, each in its own process with
  ``--learn-time-limit`` (its defaults unless ``--extra`` adds flags), then the kept set under DC's protocol
  (``kdistill evaluate --model convnet``) and FRePo's (``--model convnet-frepo``), ``--eval-seeds`` networks
  each; the row holds the mean +- std over the training seeds of each seed's mean, and every number.
- ``random``: class-balanced random real images under FRePo's protocol (DC's protocol's random rows are in
  dc.json, measured by ``benchmarks/dc.py random``; they are shown beside these).

Usage:
  .venv/bin/python benchmarks/frepo.py run --dataset mnist --ipc 1 --minutes 60 [--seeds 3] [--eval-seeds 2]
        [--tag NAME --extra "--target-batch 256 --lr 0.003"] [--keep runs/bench]
  .venv/bin/python benchmarks/frepo.py random --datasets mnist fashion_mnist --ipcs 1 10 [--seeds 3]
  .venv/bin/python benchmarks/frepo.py render
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, load_json, markdown_table, write_results  # noqa: E402

from kdistill._machine import machine_info, versions  # noqa: E402

# Published finite ConvNet accuracies (%). FRePo: arXiv:2206.00719 Table 1 as recalled; not confirmed here (the
# stored copy of the paper is its abstract only). DC: DC's README Table 1 (confirmed, benchmarks/dc.py).
# KIP->NN: arXiv:2107.13034 Table 2 as recalled, not confirmed. RFAD: not confirmed for MNIST/Fashion-MNIST.
PUBLISHED = {
    "FRePo (unconfirmed)": {("mnist", 1): 93.0, ("mnist", 10): 98.6, ("fashion_mnist", 1): 75.6,
                            ("fashion_mnist", 10): 86.2},
    "DC": {("mnist", 1): 91.7, ("mnist", 10): 97.4, ("fashion_mnist", 1): 70.5, ("fashion_mnist", 10): 82.3},
    "KIP->NN (unconfirmed)": {("mnist", 1): 90.1, ("mnist", 10): 97.5, ("fashion_mnist", 1): 73.5,
                              ("fashion_mnist", 10): 86.8},
}
RUN_KEY = ("kind", "dataset", "ipc", "minutes", "tag")
RANDOM_KEY = ("kind", "dataset", "ipc", "model")
PROTOCOLS = {"convnet": "DC's", "convnet-frepo": "FRePo's"}


def _kdistill(*args: str) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "kdistill.cli", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"kdistill {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return time.perf_counter() - t, out.stdout


def _merge(row: dict, key: tuple[str, ...]) -> None:
    path = RESULTS / "frepo.json"
    rows = load_json(path).get("rows", []) if path.exists() else []
    rows = [r for r in rows if tuple(r.get(k) for k in key) != tuple(row.get(k) for k in key)] + [row]
    render(rows)


def _mean_std(values) -> dict:
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "std": float(v.std())}


def run(args) -> None:
    extra = shlex.split(args.extra)
    base = Path(tempfile.mkdtemp(prefix="kdistill-frepo-")) if args.keep is None else args.keep
    seeds = []
    for seed in range(args.seeds):
        load_before = os.getloadavg()
        out = base / f"frepo_{args.dataset}_ipc{args.ipc}_{args.minutes:g}min_{args.tag}_seed{seed}"
        cmd = ["distill", "--dataset", args.dataset, "--method", "frepo", "--ipc", str(args.ipc), "--seed", str(seed),
               "--learn-time-limit", str(int(args.minutes * 60)), "--no-full", "--no-baseline", "--out", str(out),
               "--force", *extra]
        seconds, _ = _kdistill(*cmd)
        summary = json.loads((out / "summary.json").read_text())
        history = json.loads((out / "history.json").read_text())
        info = summary["method_info"]
        entry = {"seed": seed, "steps": info["steps_run"], "best_step": info["best_step"],
                 "krr_accuracy": summary["accuracy"], "seconds_distill": round(summary["seconds"]["distill"], 1),
                 "process_seconds": round(seconds, 1), "loadavg_before": [round(v, 2) for v in load_before],
                 "val": list(zip(history.get("val_step", []), history.get("val_accuracy", []))),
                 "command": "kdistill " + " ".join(cmd)}
        for model in PROTOCOLS:
            t = time.perf_counter()
            _, stdout = _kdistill("evaluate", str(out / "distilled.npz"), "--model", model, "--seeds",
                                  str(args.eval_seeds), "--json")
            res = json.loads(stdout.strip().splitlines()[-1])
            entry[model] = {"mean": res["mean"], "std": res["std"], "accuracies": res["accuracies"],
                            "epochs": res["epochs"], "augment": res["settings"]["augment"],
                            "label_mode": res["label_mode"], "seconds": round(time.perf_counter() - t, 1)}
        entry["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
        print(json.dumps({k: v for k, v in entry.items() if k != "val"}), flush=True)
        seeds.append(entry)
    row = {"kind": "run", "dataset": args.dataset, "ipc": args.ipc, "minutes": args.minutes, "tag": args.tag,
           "extra": args.extra, "seeds": seeds, "krr": _mean_std([s["krr_accuracy"] for s in seeds]),
           **{model: _mean_std([s[model]["mean"] for s in seeds]) for model in PROTOCOLS},
           "machine": machine_info(), "versions": versions()}
    _merge(row, RUN_KEY)


class _RandomRows:
    def __init__(self, model: str):
        self.model = model

    def add(self, r: dict) -> None:
        _merge({"kind": "random", "dataset": r["dataset"], "ipc": r["ipc"], "model": self.model,
                "augment": r["augment"], "epochs": r["epochs"], "seeds": r["seeds"], "mean": r["mean"],
                "std": r["std"], "accuracies": r["accuracies"], "seconds_per_seed": round(r["seconds_per_seed"], 1),
                "loadavg": [round(v, 2) for v in os.getloadavg()], "machine": machine_info()}, RANDOM_KEY)


def random(args) -> None:
    from finite import random_real

    random_real(_RandomRows("convnet-frepo"), args.datasets, args.ipcs, args.seeds, "convnet-frepo", None, None,
                "auto")


def _dc_random() -> dict:
    path = RESULTS / "dc.json"
    rows = load_json(path).get("rows", []) if path.exists() else []
    return {(r["dataset"], r["ipc"]): r for r in rows if r.get("kind") == "random"}


def _pct(d: dict | None) -> str:
    return "" if not d else f"{100 * d['mean']:.2f} ± {100 * d['std']:.2f}"


def render(rows: list[dict] | None = None) -> None:
    path = RESULTS / "frepo.json"
    if rows is None:
        rows = load_json(path).get("rows", []) if path.exists() else []
    runs = sorted((r for r in rows if r["kind"] == "run"), key=lambda r: (r["dataset"], r["ipc"], r["minutes"], r["tag"]))
    randoms = {(r["dataset"], r["ipc"]): r for r in rows if r["kind"] == "random"}
    dc_random = _dc_random()
    table = []
    for r in runs:
        key = (r["dataset"], r["ipc"])
        table.append({
            "dataset": r["dataset"], "ipc": r["ipc"], "minutes": r["minutes"], "tag": r["tag"],
            "seeds": len(r["seeds"]), "steps": "/".join(str(s["steps"]) for s in r["seeds"]),
            "KRR %": _pct(r["krr"]), "DC's protocol %": _pct(r["convnet"]),
            "random real, DC's %": _pct(dc_random.get(key)), "FRePo's protocol %": _pct(r["convnet-frepo"]),
            "random real, FRePo's %": _pct(randoms.get(key)),
            **{name: pub.get(key, "") for name, pub in PUBLISHED.items()},
        })
    cols = ["dataset", "ipc", "minutes", "tag", "seeds", "steps", "KRR %", "DC's protocol %", "random real, DC's %",
            "FRePo's protocol %", "random real, FRePo's %", *PUBLISHED]
    lines = ["# FRePo on a 2-core CPU (issue 30)", "",
             "Finite ConvNet test accuracy of `kdistill distill --method frepo` sets: mean ± std over the training "
             "seeds of each set's mean over its evaluation networks. DC's protocol: `kdistill evaluate --model "
             "convnet` (DC's ConvNet, cross-entropy on softmax(labels / 0.1), DC's augmentation on MNIST); FRePo's: "
             "`--model convnet-frepo` (module docstring of kdistill.evaluate). KRR: the run's rf-convnet kernel. "
             "Random real under DC's protocol from dc.json (5 seeds). Published numbers marked unconfirmed could "
             "not be checked against the papers here.", "",
             markdown_table(table, cols), ""]
    for r in runs:
        lines.append(f"## {r['dataset']} ipc {r['ipc']}, {r['minutes']:g} min, {r['tag']}")
        lines.append("")
        for s in r["seeds"]:
            lines.append(f"- seed {s['seed']}: `{s['command']}`: {s['steps']} steps (best {s['best_step']}), "
                         f"{s['seconds_distill']} s, load {s['loadavg_before']} -> {s['loadavg_after']}; KRR "
                         f"{100 * s['krr_accuracy']:.2f}%, DC's {_pct(s['convnet'])}% "
                         f"({s['convnet']['augment']}, {s['convnet']['epochs']} epochs), FRePo's "
                         f"{_pct(s['convnet-frepo'])}% ({s['convnet-frepo']['augment']}, "
                         f"{s['convnet-frepo']['epochs']} epochs); validation {s['val']}")
        lines.append("")
    if randoms:
        lines += ["## Random real images under FRePo's protocol", "",
                  markdown_table([{"dataset": k[0], "ipc": k[1], "mean %": _pct(v), "seeds": v["seeds"],
                                   "augment": v["augment"], "epochs": v["epochs"], "s per seed": v["seconds_per_seed"],
                                   "load": v["loadavg"]} for k, v in sorted(randoms.items())],
                                 ["dataset", "ipc", "mean %", "seeds", "augment", "epochs", "s per seed", "load"]), ""]
    write_results("frepo", {"rows": rows}, "\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--dataset", required=True)
    r.add_argument("--ipc", type=int, required=True)
    r.add_argument("--minutes", type=float, default=60)
    r.add_argument("--seeds", type=int, default=3)
    r.add_argument("--eval-seeds", type=int, default=2)
    r.add_argument("--tag", default="default")
    r.add_argument("--extra", default="", help="more distill flags, one string")
    r.add_argument("--keep", type=Path, default=None)
    q = sub.add_parser("random")
    q.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist"])
    q.add_argument("--ipcs", nargs="+", type=int, default=[1, 10])
    q.add_argument("--seeds", type=int, default=3)
    sub.add_parser("render")
    args = p.parse_args()
    {"run": run, "random": random, "render": lambda a: render()}[args.cmd](args)


if __name__ == "__main__":
    main()
