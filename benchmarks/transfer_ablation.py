"""What transfers from a distilled set to a finite network, and what costs accuracy (issue 29).

Each given set (a run folder holding ``distilled.npz``) is evaluated with ``kdistill evaluate --model ...``
under variants of one protocol: the protocol as it is, without augmentation, MSE instead of cross-entropy,
a softer label temperature. Each evaluation runs in the set's run folder (since 2026-12-07; before, on a
scratch copy), whose ``summary.json`` records it under its own name (the model plus the settings that differ from
its protocol's), so one already recorded there (by this script, ``benchmarks/frepo.py`` or ``kdistill evaluate``)
is kept, or grown by ``--add`` to ``--seeds`` networks. Rows merged into ``results/transfer_ablation.json``
(keyed by set, model and variant; a row with the same key is replaced) and rendered to
``transfer_ablation.md`` with the seconds, the load average before each evaluation and the machine. A variant
that ``benchmarks/frepo.py`` already evaluated in a kept run folder with the same flags and number of networks
(frepo.json, rcig.json) is taken from there rather than trained again (the row names its ``source``):
evaluations are deterministic given the flags and seeds.

Usage:
  .venv/bin/python benchmarks/transfer_ablation.py run --sets runs/xarch/kip_mnist_1 runs/xarch/rfad_mnist_1 \\
        [--model convnet] [--variants protocol no-aug mse mse-no-aug t1] [--seeds 3]
  .venv/bin/python benchmarks/transfer_ablation.py run --sets runs/bench/rcig_mnist_ipc1_60min_default_seed0 \\
        --variants protocol t0.1 t0.2 t0.3 t1 t2 mse --seeds 3      # the label-temperature sweep (protocol: T 0.5)
        # (RCIG's sets: benchmarks/frepo.py --method rcig run ... --keep runs/bench; RFAD's learned-label sets:
        #  kdistill distill --dataset D --ipc 1 --method rfad --learn-labels --steps 1000000 --no-full
        #  --learn-time-limit 1200 --out runs/tsweep/rfad-learned_D_1)
  .venv/bin/python benchmarks/transfer_ablation.py run --sets runs/xarch/rfad_mnist_1 --model convnet-rfad \
        --variants w128 --seeds 3     # RFAD's protocol at width 128 (width 1024 is hours per network here)
  .venv/bin/python benchmarks/transfer_ablation.py run --sets runs/transfer/label-solve_mnist_1 \
        runs/zca/label-solve_mnist_1_zca --variants protocol --seeds 3      # the ZCA ablation: pairs of sets
        # made by benchmarks/transfer.py's command for the method (transfer.json) and the same command with
        # --preprocess zca --out runs/zca/METHOD_DATASET_IPC_zca (random real: also with --preprocess standardize)
  .venv/bin/python benchmarks/transfer_ablation.py render
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, load_json, markdown_table, merged_rows, write_results  # noqa: E402
from _common import OLD_TEMPERATURE_MARK, evaluate_in_run, label_temperature, old_temperature  # noqa: E402
from _common import old_temperature_note  # noqa: E402

from kdistill._machine import machine_info  # noqa: E402
from kdistill.evaluate import finite_settings  # noqa: E402
from kdistill.evaluate._finite import DEFAULT_LABEL_TEMPERATURE  # noqa: E402

VARIANTS = {
    "protocol": [],
    "no-aug": ["--augment", "none"],
    "mse": ["--loss", "mse"],
    "mse-no-aug": ["--loss", "mse", "--augment", "none"],
    "xent": ["--loss", "xent"],
    "xent-no-aug": ["--loss", "xent", "--augment", "none"],
    # the sweep of the label temperature (a table of its own); 0.1 was the default until 2026-12-07
    "t0.1": ["--label-temperature", "0.1"],
    "t0.1-no-aug": ["--label-temperature", "0.1", "--augment", "none"],
    "t0.2": ["--label-temperature", "0.2"],
    "t0.3": ["--label-temperature", "0.3"],
    "t0.5": ["--label-temperature", "0.5"],
    "t1": ["--label-temperature", "1"],
    "t2": ["--label-temperature", "2"],
    "t1-no-aug": ["--label-temperature", "1", "--augment", "none"],
    "w128": ["--width", "128"],  # KIP's and RFAD's protocols at the width a 2-core CPU affords (theirs: 1024)
    "w256": ["--width", "256"],
}
"""Variant name -> the ``kdistill evaluate`` flags added to ``--model M --seeds N``."""
SWEEP = {"t0.1": 0.1, "t0.2": 0.2, "t0.3": 0.3, "t0.5": 0.5, "t1": 1.0, "t2": 2.0}
"""The label-temperature sweep under DC's protocol (``--model convnet``): variant -> T, rendered as its own table for
the sets with learned labels. Today's default (DEFAULT_LABEL_TEMPERATURE, 0.5 since 2026-12-07) is also the
``protocol`` variant; the rows made as ``protocol`` under the earlier default, 0.1, were renamed ``t0.1`` (and
``no-aug`` ``t0.1-no-aug``), their commands given the flag, ``renamed_from`` naming what they were."""
KEY = ("set", "model", "variant")


def _set_name(run: Path) -> str:
    """The set's name in the tables: its folder and the folder above (``--seeds`` runs are all ``seed-N``)."""
    return f"{run.resolve().parent.name}/{run.resolve().name}"


def _describe(run: Path) -> dict:
    """Dataset, method, ipc and label kind of a run folder (from its run.json and the set itself)."""
    doc = json.loads((run / "run.json").read_text())
    with np.load(run / "distilled.npz", allow_pickle=False) as z:
        labels = z["labels"]
    k = labels.shape[1]
    one_hot = np.allclose(labels, np.eye(k)[labels.argmax(1)]) or np.allclose(labels + 1.0 / k,
                                                                            np.eye(k)[labels.argmax(1)])
    cfg = doc.get("config", doc)
    return {"dataset": doc.get("dataset"), "method": cfg.get("method", doc.get("method")),
            "ipc": cfg.get("ipc", doc.get("ipc")), "labels": "fixed" if one_hot else "learned",
            "preprocess": cfg.get("preprocess", doc.get("preprocess")),
            "m": int(labels.shape[0]), "label_std": round(float(labels.std()), 4), **_distillation(run)}


def _distillation(run: Path) -> dict:
    """The set's own record from its summary.json (absent for sets written without one): KRR test accuracy,
    distillation seconds and steps, when and on what machine it was made."""
    path = run / "summary.json"
    if not path.exists():
        return {}
    summary = json.loads(path.read_text())
    return {"set_krr_accuracy": summary.get("test_accuracy"),
            "set_distill_seconds": round(summary.get("seconds", {}).get("distill", float("nan")), 1),
            "set_steps": summary.get("method_info", {}).get("steps_run"), "set_created": summary.get("created"),
            "set_cpu": summary.get("machine", {}).get("cpu")}


def _frepo_entries() -> list[tuple[str, Path, dict]]:
    """Every distillation seed on record in frepo.json and rcig.json: ``(file name, its run folder, entry)``."""
    import frepo

    found = []
    for method in frepo.TITLES:
        path = RESULTS / f"{method}.json"
        for row in (load_json(path).get("rows", []) if path.exists() else []):
            for entry in (row["seeds"] if row.get("kind") == "run" else ()):  # (random rows count their seeds)
                command = entry.get("command", "").split()
                if "--out" in command:
                    found.append((f"{method}.json", Path(command[command.index("--out") + 1]).resolve(), entry))
    return found


def _on_record(records: list, run_dir: Path, flags: list[str], seeds: int, dataset: str) -> tuple[str, dict] | None:
    """An evaluation of this run folder's set with exactly these ``kdistill evaluate`` flags and ``seeds``
    networks among ``records`` (:func:`_frepo_entries`: what ``benchmarks/frepo.py`` recorded for the run folders
    it kept under ``--keep``), made with the augmentation and label temperature these flags give today:
    ``(file name, its entry)``, else None. Evaluations are deterministic given the flags and seeds, so the entry
    stands for this variant (its own seconds are kept with it)."""
    import frepo

    augment = frepo._augment(flags, dataset)
    for source, folder, entry in records:
        if folder != Path(run_dir).resolve():
            continue
        for model, (theirs, _) in frepo.PROTOCOLS.items():
            done = entry.get(model, {})
            if sorted(zip(theirs[::2], theirs[1::2])) == sorted(zip(flags[::2], flags[1::2])) \
                    and len(done.get("accuracies", ())) == seeds and done["augment"] == augment \
                    and not old_temperature(done["label_mode"], " ".join(flags)):
                return source, done
    return None


def run(args) -> None:
    records = _frepo_entries()
    for run_dir in args.sets:
        info = _describe(run_dir)
        name = _set_name(run_dir)
        for variant in args.variants:
            if "label-temperature" in VARIANTS[variant] and args.model in ("convnet-kip", "convnet-frepo",
                                                                            "convnet-rfad"):
                print(f"{name} {args.model} {variant}: skipped (MSE protocol: no label temperature)")
                continue
            load_before = [round(v, 2) for v in os.getloadavg()]
            flags = ["--model", args.model, *VARIANTS[variant]]
            command = f"kdistill evaluate {run_dir}/distilled.npz " + " ".join(flags + ["--seeds", str(args.seeds)])
            known = _on_record(records, run_dir, flags, args.seeds, info["dataset"])
            if known is not None:  # made by frepo.py with the same flags and networks: not trained again
                source, res = known
                row = {"set": name, **info, "model": args.model, "variant": variant, "command": command,
                       "source": source, **{k: res[k] for k in ("mean", "std", "accuracies", "augment",
                                                               "label_mode", "epochs", "seconds")},
                       "loss": flags[flags.index("--loss") + 1] if "--loss" in flags
                       else finite_settings(args.model).loss,
                       "label_temperature": label_temperature(flags)}
                print(f"{name} {args.model} {variant}: {100 * res['mean']:.2f} +- {100 * res['std']:.2f}% "
                      f"(from {source})", flush=True)
                render(merged_rows("transfer_ablation", row, KEY))
                continue
            seconds, res, trained = evaluate_in_run(run_dir, *flags, seeds=args.seeds)
            s = res["settings"]
            row = {"set": name, **info, "model": args.model, "variant": variant, "command": command,
                   **({"source": f"{run_dir}/summary.json ({trained} of {len(res['accuracies'])} networks trained "
                                 "here)"} if trained < len(res["accuracies"]) else {}),
                   "mean": res["mean"], "std": res["std"], "accuracies": res["accuracies"],
                   "loss": s["loss"], "augment": s["augment"], "label_temperature": s["label_temperature"],
                   "label_mode": res["label_mode"], "epochs": res["epochs"], "seconds": round(seconds, 1),
                   "loadavg_before": load_before, "width": s["width"], "lr": s["lr"],
                   **{k: res[k] for k in ("lrs", "best_steps", "steps_run", "val_accuracies") if k in res}}
            print(f"{name} {args.model} {variant}: {100 * res['mean']:.2f} +- {100 * res['std']:.2f}% "
                  f"({row['label_mode']}, augment {s['augment']}, {seconds:.0f} s)", flush=True)
            render(merged_rows("transfer_ablation", row, KEY))


def render(rows: list[dict] | None = None) -> None:
    if rows is None:
        path = RESULTS / "transfer_ablation.json"
        rows = load_json(path).get("rows", []) if path.exists() else []
    lines = ["# What transfers to a finite network (issue 29)", "",
             "Finite-network test accuracy (mean ± std over the evaluation networks, %) of distilled sets under one "
             "protocol and its variants: `protocol` as `kdistill evaluate --model M` runs it (DC's for `convnet`: "
             f"cross-entropy on the labels, learned labels as softmax(labels / {DEFAULT_LABEL_TEMPERATURE:g}), DC's "
             "crop/scale/rotate on MNIST; FRePo's for `convnet-frepo`: MSE, FRePo's augmentation), `no-aug` "
             "(`--augment none`), `mse` (`--loss mse`: MSE on the stored labels), `xent` (`--loss xent`), `t0.1` "
             "and `t1` (`--label-temperature`; 0.1 was the default until 2026-12-07: the learned-label sets evaluated "
             "before then have `t0.1` and `t0.1-no-aug` where they had `protocol` and `no-aug`), "
             "`w128`/`w256` (`--width`: KIP's `convnet-kip` and RFAD's `convnet-rfad` protocols are width 1024, "
             "hours per network on a 2-core CPU, so they run narrower here; their learning rates are their own: "
             "KIP's NTK estimate, RFAD's tuned table). "
             "Each row's command, seconds and load average are in transfer_ablation.json. Machine: "
             f"{machine_info()['cpu']}, {machine_info()['cores']} cores.", ""]
    for model in sorted({r["model"] for r in rows}):
        sub = [r for r in rows if r["model"] == model]
        variants = [v for v in VARIANTS if any(r["variant"] == v for r in sub)
                    and (v not in SWEEP or v in ("t0.1", "t1"))]
        table = []
        for name in sorted({r["set"] for r in sub}):
            mine = {r["variant"]: r for r in sub if r["set"] == name}
            first = next(iter(mine.values()))
            table.append({"set": name, "dataset": first["dataset"], "method": first["method"], "ipc": first["ipc"],
                          "labels": first["labels"],
                          **{v: _cell(mine.get(v)) + _mark(mine.get(v)) for v in variants}})
        lines += [f"## `--model {model}`", "",
                  markdown_table(table, ["set", "dataset", "method", "ipc", "labels", *variants]), ""]
    if any(_mark(r) for r in rows):
        lines += [old_temperature_note(), ""]
    lines += _sweep_table(rows)
    lines += _preprocess_table(rows)
    write_results("transfer_ablation", {"rows": rows}, "\n".join(lines))


def _mark(row: dict | None) -> str:
    """`` †`` for a row made at an earlier default label temperature than its variant's flags give today."""
    return f" {OLD_TEMPERATURE_MARK}" if row and old_temperature(row.get("label_mode"), row.get("command", "")) else ""


def _cell(row: dict | None) -> str:
    """A table cell: the row's mean ± std in %, or empty."""
    return f"{100 * row['mean']:.2f} ± {100 * row['std']:.2f}" if row else ""


def _with_protocol_as_sweep(mine: dict[str, dict]) -> dict[str, dict]:
    """One set's rows by variant, with its ``protocol`` row also standing for the sweep's variant of the temperature
    it trained at (today's default) where that variant was not run itself: the two are the same evaluation."""
    p = mine.get("protocol")
    for v, t in SWEEP.items():
        if p is not None and v not in mine and p.get("label_mode") == f"softmax(labels / {t:g})":
            mine = {**mine, v: p}
    return mine


def _sweep_table(rows: list[dict]) -> list[str]:
    """The label-temperature table: each learned-label set evaluated at a T other than 0.1 under ``--model convnet``,
    its accuracy at each T, with MSE on the stored labels beside, and the labels' standard deviation (the scale
    that T divides)."""
    sub = [r for r in rows if r["model"] == "convnet" and r["labels"] == "learned"]
    swept = sorted({r["set"] for r in sub if r["variant"] in SWEEP and r["variant"] != "t0.1"})
    if not swept:
        return []
    table = []
    for name in swept:
        mine = _with_protocol_as_sweep({r["variant"]: r for r in sub if r["set"] == name})
        first = next(iter(mine.values()))
        at = {v: mine[v] for v in SWEEP if v in mine}
        best = max(at, key=lambda v: at[v]["mean"])
        table.append({"set": name, "dataset": first["dataset"], "method": first["method"], "ipc": first["ipc"],
                      "KRR": f"{100 * first['set_krr_accuracy']:.2f}" if first.get("set_krr_accuracy") else "",
                      "label std": f"{first['label_std']:.3f}" if "label_std" in first else "",
                      **{f"T {t:g}": _cell(at.get(v)) for v, t in SWEEP.items()},
                      "MSE": _cell(mine.get("mse")), "best T": f"{SWEEP[best]:g}"})
    groups = {}
    for r in table:
        groups.setdefault((r["method"], r["dataset"], r["ipc"]), []).append(r["set"])
    summary = []
    by_set = {name: _with_protocol_as_sweep({r["variant"]: r for r in sub if r["set"] == name}) for name in swept}
    for (method, dataset, ipc), names in groups.items():
        cells = {}
        for col, variant in [*((f"T {t:g}", v) for v, t in SWEEP.items()), ("MSE", "mse")]:
            means = [by_set[n][variant]["mean"] for n in names if variant in by_set[n]]
            cells[col] = f"{100 * np.mean(means):.2f}" if len(means) == len(names) else ""
        summary.append({"method": method, "dataset": dataset, "ipc": ipc, "sets": len(names), **cells})
    return ["## The label temperature under DC's protocol (`--model convnet`, learned labels)", "",
            f"Cross-entropy on softmax(labels / T); T {DEFAULT_LABEL_TEMPERATURE:g} is today's default (`protocol` "
            "above; 0.1 until 2026-12-07, when this table moved it). Each column is "
            "`--label-temperature T` (the `t0.1` ... `t2` rows of transfer_ablation.json); MSE is `--loss mse` on "
            "the stored labels. KRR: the set's own test accuracy from its summary.json. label std: the standard "
            "deviation of the set's labels, the scale T divides (not "
            "recorded for the sets evaluated before the sweep, whose folders are gone). best T: the best of the T "
            "columns measured for that set.", "",
            markdown_table(table, ["set", "dataset", "method", "ipc", "KRR", "label std", *[f"T {t:g}" for t in
                                                                                    SWEEP.values()],
                                   "MSE", "best T"]), "",
            "Mean over the sets of each method, dataset and ipc (a cell only where every set has that column):", "",
            markdown_table(summary, ["method", "dataset", "ipc", "sets", *[f"T {t:g}" for t in SWEEP.values()],
                                     "MSE"]), ""]


def _preprocess_table(rows: list[dict]) -> list[str]:
    """The ZCA ablation: sets of one method, dataset and ipc made with ``--preprocess standardize`` and ``zca``
    (the rows that record it, since 2026-12-08), each with its KRR accuracy and its networks' accuracy under the
    same model and variant; one table row per pair, with the change ZCA makes."""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        if r.get("preprocess") in ("standardize", "zca"):
            key = (r["method"], r["dataset"], r["ipc"], r["labels"], r["model"], r["variant"])
            groups.setdefault(key, {})[r["preprocess"]] = r
    table = []
    for (method, dataset, ipc, labels, model, variant), by in sorted(groups.items()):
        if len(by) < 2:
            continue
        std, zca = by["standardize"], by["zca"]
        krr = [r.get("set_krr_accuracy") for r in (std, zca)]
        table.append({"method": method, "dataset": dataset, "ipc": ipc, "labels": labels, "model": model,
                      "variant": variant,
                      **{f"KRR, {k}": f"{100 * a:.2f}" if a else "" for k, a in zip(("standardize", "zca"), krr)},
                      "network, standardize": _cell(std), "network, zca": _cell(zca),
                      "ZCA's change": f"{100 * (zca['mean'] - std['mean']):+.2f}",
                      "sets": f"{std['set']}, {zca['set']}"})
    if not table:
        return []
    return ["## Preprocessing: the same method's sets made with and without ZCA", "",
            "Each row: one method, dataset and ipc distilled twice, with `--preprocess standardize` (kdistill's "
            "default: per-channel mean and std) and with `--preprocess zca` (KIP's per-image layer norm, then ZCA with "
            "regulariser 0.1), everything else as in benchmarks/transfer.py's command for the method (transfer.json): "
            "so the random sets hold the same images, and Label Solve's are those images with solved labels. KRR is "
            "the set's own test accuracy under its method's kernel; `network` the accuracy (mean ± std, %) of the "
            "networks trained on it under the model's protocol and variant (columns above), test images in the set's "
            "own preprocessing; ZCA's change: the difference of the two means, in points.", "",
            markdown_table(table, ["method", "dataset", "ipc", "labels", "model", "variant", "KRR, standardize",
                                   "KRR, zca", "network, standardize", "network, zca", "ZCA's change", "sets"]), ""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--sets", type=Path, nargs="+", required=True, help="run folders holding distilled.npz")
    r.add_argument("--model", default="convnet")
    r.add_argument("--variants", nargs="+", default=["protocol", "no-aug", "mse", "mse-no-aug"],
                   choices=list(VARIANTS))
    r.add_argument("--seeds", type=int, default=3)
    sub.add_parser("render")
    args = p.parse_args()
    if args.cmd == "run":
        for d in args.sets:
            if not (d / "distilled.npz").exists() or not (d / "run.json").exists():
                p.error(f"{d} is not a run folder with distilled.npz and run.json")
        run(args)
    else:
        render()


if __name__ == "__main__":
    main()
