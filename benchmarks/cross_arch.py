"""Cross-architecture evaluation (issue 27): distilled sets trained on each of kdistill.nets' architectures under
their published protocols, test accuracy mean and std over seeds, as DC's and DC-BENCH's tables report.

Each cell is one ``kdistill evaluate FILE --model MODEL --seeds S --json`` in its own process (DC's protocol for
convnet, mlp, alexnet, vgg11 and resnet18: 300 epochs, SGD lr 0.01 momentum 0.9 weight decay 5e-4, DC's
augmentation on MNIST; KIP's for convnet-kip). The sets:

- ``random``: class-balanced random real images (``kdistill distill --method random --seed 0``), DC's baseline;
- ``NAME=PATH``: any distilled-set file (``--set rfad=runs/rfad10/distilled.npz``): the best set of a method.

A set in a run folder is evaluated with the command a user types (it prints mean ± std, kept in the row as
``printed``, and records the result in the run's summary.json and report.html, as ``kdistill evaluate`` does);
a bare file with ``--json``.

Rows are merged into benchmarks/results/cross_arch.json (a row with the same dataset, ipc, set, model and
epochs is replaced) and rendered to cross_arch.md: per dataset and ipc a table of sets x architectures, and every row's
seconds per seed, epochs, seeds, load average and command.

Usage:
  .venv/bin/python benchmarks/cross_arch.py run --dataset mnist --ipc 1 [--seeds 2] [--epochs 300]
        [--models convnet mlp alexnet vgg11 resnet18] [--set rfad=PATH ...] [--no-random]
  .venv/bin/python benchmarks/cross_arch.py render
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
from _common import OLD_TEMPERATURE_MARK, RESULTS, load_json, markdown_table, old_temperature_note  # noqa: E402
from _common import old_temperature, write_results  # noqa: E402

MODELS = ("convnet", "mlp", "alexnet", "vgg11", "resnet18")
KEY = ("dataset", "ipc", "set", "model", "epochs")

def _kdistill(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "kdistill.cli", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"kdistill {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return out.stdout


def _random_set(dataset: str, ipc: int, where: Path) -> Path:
    out = where / f"random_{dataset}_ipc{ipc}"
    _kdistill("distill", "--dataset", dataset, "--method", "random", "--ipc", str(ipc), "--seed", "0",
              "--no-full", "--no-baseline", "--out", str(out), "--force")
    return out / "distilled.npz"


def _merge(rows: list[dict]) -> list[dict]:
    path = RESULTS / "cross_arch.json"
    old = load_json(path).get("rows", []) if path.exists() else []
    keys = {tuple(r[k] for k in KEY) for r in rows}
    return [r for r in old if tuple(r.get(k) for k in KEY) not in keys] + rows


def run(args) -> None:
    from kdistill._machine import machine_info, versions
    from kdistill.evaluate import finite_record_key

    sets: list[tuple[str, Path]] = []
    tmp = args.keep_random or Path(tempfile.mkdtemp(prefix="kdistill-cross-"))
    if not args.no_random:
        sets.append(("random", _random_set(args.dataset, args.ipc, tmp)))
    for spec in args.set:
        name, _, path = spec.partition("=")
        if not path or not Path(path).is_file():
            raise SystemExit(f"--set {spec!r}: give NAME=PATH of an existing distilled-set file")
        sets.append((name, Path(path)))
    def hide(text: str) -> str:  # a temporary folder's name says nothing
        return text if args.keep_random else text.replace(str(tmp), "$TMP")

    rows = []
    for name, path in sets:
        for model in args.models:
            # a set in a run folder: the command a user types (it prints mean ± std and records the result in
            # the run's summary.json, read back here); a bare file: --json
            in_run = (path.parent / "summary.json").is_file()
            cmd = ["evaluate", str(path), "--dataset", args.dataset, "--model", model, "--seeds", str(args.seeds)]
            if args.epochs is not None:
                cmd += ["--epochs", str(args.epochs)]
            if not in_run:
                cmd.append("--json")
            load = os.getloadavg()
            t = time.perf_counter()
            printed = _kdistill(*cmd).strip().splitlines()[-1]
            res = (json.loads((path.parent / "summary.json").read_text())["finite"][
                       finite_record_key(model, args.dataset, epochs=args.epochs)] if in_run else json.loads(printed))
            row = {"dataset": args.dataset, "ipc": args.ipc, "set": name, "model": model,
                   "mean": res["mean"], "std": res["std"], "accuracies": res["accuracies"], "seeds": res["seeds"],
                   "epochs": res["epochs"], "augment": res["settings"]["augment"], "width": res["settings"]["width"],
                   "seconds_per_seed": round(res["seconds_per_seed"], 1), "seconds": round(time.perf_counter() - t, 1),
                   "diverged_seeds": res.get("diverged_seeds", []), "label_mode": res.get("label_mode"),
                   "loadavg_before": [round(v, 2) for v in load], "loadavg_after": [round(v, 2) for v in os.getloadavg()],
                   "command": "kdistill " + hide(" ".join(cmd)), "printed": hide(printed) if in_run else None,
                   "file": None if name == "random" else str(path), "machine": machine_info(), "versions": versions()}
            print(json.dumps({k: row[k] for k in ("set", "model", "mean", "std", "seconds_per_seed", "epochs")}),
                  flush=True)
            rows.append(row)
            render(_merge(rows))  # after every cell: a killed run keeps what it finished


def _old_temperature(r: dict) -> bool:
    """Whether the cell trained learned labels at an earlier default label temperature (the row's label mode; rows
    made before it was recorded: the line ``kdistill evaluate`` printed, ``labels: softmax(labels / T),``)."""
    printed = r.get("printed") or ""
    mode = r.get("label_mode") or (printed.split("labels: ", 1)[1].split(",", 1)[0] if "labels: " in printed else None)
    return old_temperature(mode, r.get("command", ""))


def _cell(r: dict | None) -> str:
    if r is None:
        return ""
    mark = f" {OLD_TEMPERATURE_MARK}" if _old_temperature(r) else ""
    return f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}{mark}"


def render(rows: list[dict]) -> None:
    md = ["# Cross-architecture evaluation", "",
          "Test accuracy (%) of networks trained on each set, mean ± std over seeds (population std, as DC "
          "reports), each under its published protocol (`kdistill evaluate --model`; DC's for convnet, mlp, "
          "alexnet, vgg11, resnet18). Rows: the set; columns: the architecture. The sets (RFAD and DC: 10 minutes "
          "of learning; KIP: 400 steps with the FC kernel and learned labels) and every cell: "
          "`bash benchmarks/cross_arch.sh` (its commands); one cell: its command below; the page: "
          "`benchmarks/cross_arch.py render`. An empty cell was not run (each resnet18 seed costs about 3 "
          "minutes at ipc 1 and 14 at ipc 10 on 2 cores).", ""]
    for dataset, ipc in sorted({(r["dataset"], r["ipc"]) for r in rows}):
        part = [r for r in rows if (r["dataset"], r["ipc"]) == (dataset, ipc)]
        models = [m for m in (*MODELS, "convnet-kip", "fc") if any(r["model"] == m for r in part)]
        table = []
        for name in dict.fromkeys(r["set"] for r in part):
            cells = {m: _cell(next((r for r in part if r["set"] == name and r["model"] == m), None)) for m in models}
            table.append({"set": name, **cells})
        md += [f"## {dataset}, ipc {ipc}", "", markdown_table(table, ["set", *models]), ""]
    cols = ["dataset", "ipc", "set", "model", "mean", "std", "seeds", "epochs", "augment", "width",
            "seconds_per_seed", "loadavg_before", "loadavg_after", "command"]
    if any(_old_temperature(r) for r in rows):
        md += [old_temperature_note(), ""]
    md += ["## Every cell", "", markdown_table(rows, cols), ""]
    if rows:
        m = rows[-1]["machine"]
        md += [f"Machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB, JAX backend "
               f"{m.get('jax_backend')}. Cells are run one at a time, nothing else heavy on the machine."]
    write_results("cross_arch", {"rows": rows}, "\n".join(md))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--dataset", default="mnist")
    r.add_argument("--ipc", type=int, default=1)
    r.add_argument("--seeds", type=int, default=2)
    r.add_argument("--epochs", type=int, default=None, help="default: each protocol's (300)")
    r.add_argument("--models", nargs="+", default=list(MODELS))
    r.add_argument("--set", action="append", default=[], help="NAME=PATH of a distilled-set file (repeatable)")
    r.add_argument("--no-random", action="store_true")
    r.add_argument("--keep-random", type=Path, default=None,
                   help="make the random set's run folder here (default: a temporary folder)")
    sub.add_parser("render")
    args = ap.parse_args(argv)
    if args.cmd == "run":
        run(args)
    else:
        path = RESULTS / "cross_arch.json"
        render(load_json(path).get("rows", []) if path.exists() else [])


if __name__ == "__main__":
    main()
