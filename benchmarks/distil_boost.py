"""Distil-Boost ablation (arXiv:2307.08086): coreset initialisations and SMART-PICK target batches.

Three parts, each mean ± std over seeds, KRR test accuracy on the full test set with fc-ntk:
1. ``coresets``: the selections alone (``--method coreset --init NAME``, no learning) against random
   real images (``real``), ipc 1, 10, 50, ridge chosen on held-out training images (``--reg auto``).
2. ``steps``: KIP with init in {real, kcenter, kmeans-coreset, gaussian-coreset} x sampler in
   {uniform, smart-pick} at an equal step budget.
3. ``wallclock``: smart-pick again with a time limit equal to the uniform run's KIP seconds (same
   dataset, ipc, init and seed), so both get the same wall-clock; it stops earlier when its
   rescoring makes steps dearer.
Overheads: the init's and smart-pick's own seconds, and their share of the KIP seconds.

KIP settings (reduced from the published 1000s of steps so the 144 runs fit in ~30 min on 2 CPU
cores): --steps, --target-batch, lr 0.02 (KIP default), reg 1e-6, fixed labels, validation every
50 steps on 2000 held-out images (keeps the best step), smart-pick defaults (rescoring every 50 steps,
a random candidate pool of 10000 images, floor 0.1, class-balanced, no reweighting).

Usage (each invocation merges its rows into benchmarks/results/distil_boost.json, skipping rows
already there with the same settings unless --fresh, and rewrites distil_boost.md):
  .venv/bin/python benchmarks/distil_boost.py --fresh              # everything again, defaults below
  .venv/bin/python benchmarks/distil_boost.py                      # only the rows not in the file yet
  .venv/bin/python benchmarks/distil_boost.py --parts coresets --datasets mnist --seeds 0
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, load_json, markdown_table, write_results  # noqa: E402

from kdistill._machine import machine_info, versions  # noqa: E402
from kdistill.data import load  # noqa: E402
from kdistill.methods import RunConfig  # noqa: E402
from kdistill.runs import run

INITS = ("real", "kcenter", "kmeans-coreset", "gaussian-coreset")
SAMPLERS = ("uniform", "smart-pick")
KERNEL = "fc-ntk"


def _key(row: dict) -> tuple:
    return tuple(row.get(k) for k in ("part", "dataset", "ipc", "init", "sampler", "seed", "steps", "target_batch"))


def _coreset_row(ds, name, ipc, init, seed) -> dict:
    cfg = RunConfig(method="coreset", ipc=ipc, kernel=KERNEL, seed=seed, reg="auto", val_size=2000,
                    full_reference=False, baseline=False, options={"init": init})
    s = run(ds, cfg).summary
    return {"part": "coresets", "dataset": name, "ipc": ipc, "init": init, "seed": seed,
            "test_acc": s["test_accuracy"], "seconds": s["seconds"]["distill"], "reg": s["reg"]}


def _kip_row(ds, name, ipc, init, sampler, seed, args, time_limit=0.0, part="steps") -> dict:
    opts = dict(steps=args.steps, target_batch=args.target_batch, val_every=50, checkpoint_every=0, init=init,
                sampler=sampler, time_limit=time_limit)
    cfg = RunConfig(method="kip", ipc=ipc, kernel=KERNEL, seed=seed, val_size=2000, full_reference=False,
                    baseline=False, options=opts)
    s = run(ds, cfg).summary
    info = s["method_info"]
    kip_s = s["seconds"]["kip"]
    return {"part": part, "dataset": name, "ipc": ipc, "init": init, "sampler": sampler, "seed": seed,
            "steps": args.steps, "target_batch": args.target_batch, "time_limit": time_limit,
            "test_acc": s["test_accuracy"], "steps_run": info["steps_run"], "best_step": info["best_step"],
            "kip_seconds": kip_s, "init_seconds": info["init_seconds"], "sampler_seconds": info["sampler_seconds"],
            "load": os.getloadavg()[0]}


def _mean_std(vals) -> str:
    v = np.asarray([x for x in vals if x is not None], dtype=float)
    if v.size == 0:
        return ""
    return f"{100 * v.mean():.2f} ± {100 * v.std():.2f}" + ("" if v.size >= 3 else f" (n={v.size})")


def _markdown(rows: list[dict], meta: dict) -> str:
    out = ["# Distil-Boost ablation (coreset inits, SMART-PICK)", "",
           f"Machine: {meta['machine'].get('cpu')}, {meta['machine'].get('cores')} cores; JAX "
           f"{meta['versions'].get('jax')}; kernel {KERNEL}; accuracy = KRR on the full test set, mean ± std over "
           "seeds (%). Regenerate: `.venv/bin/python benchmarks/distil_boost.py --fresh` (settings in the script's "
           "docstring and in distil_boost.json).", ""]
    core = [r for r in rows if r["part"] == "coresets"]
    if core:
        out += ["## Coresets alone (no learning) vs random real images", ""]
        table = []
        for name in sorted({r["dataset"] for r in core}):
            for ipc in sorted({r["ipc"] for r in core if r["dataset"] == name}):
                row = {"dataset": name, "ipc": ipc}
                for init in INITS:
                    row[init] = _mean_std(r["test_acc"] for r in core
                                          if (r["dataset"], r["ipc"], r["init"]) == (name, ipc, init))
                table.append(row)
        out += [markdown_table(table, ["dataset", "ipc", *INITS]), ""]
    for part, title in (("steps", "KIP at an equal step budget"),
                        ("wallclock", "KIP at equal wall-clock (smart-pick limited to the uniform run's seconds)")):
        sel = [r for r in rows if r["part"] in (("steps",) if part == "steps" else ("steps", "wallclock"))]
        if part == "wallclock" and not any(r["part"] == "wallclock" for r in rows):
            continue
        if not sel:
            continue
        out += [f"## {title}", ""]
        table = []
        for name in sorted({r["dataset"] for r in sel}):
            for ipc in sorted({r["ipc"] for r in sel if r["dataset"] == name}):
                for init in INITS:
                    row = {"dataset": name, "ipc": ipc, "init": init}
                    uni = [r for r in sel if (r["dataset"], r["ipc"], r["init"], r["sampler"], r["part"]) ==
                           (name, ipc, init, "uniform", "steps")]
                    sp_part = "steps" if part == "steps" else "wallclock"
                    sp = [r for r in sel if (r["dataset"], r["ipc"], r["init"], r["sampler"], r["part"]) ==
                          (name, ipc, init, "smart-pick", sp_part)]
                    if not uni and not sp:
                        continue
                    row["uniform"] = _mean_std(r["test_acc"] for r in uni)
                    row["smart-pick"] = _mean_std(r["test_acc"] for r in sp)
                    row["smart-pick steps"] = (f"{np.mean([r['steps_run'] for r in sp]):.0f}" if sp else "")
                    row["uniform KIP s"] = f"{np.mean([r['kip_seconds'] for r in uni]):.1f}" if uni else ""
                    row["smart-pick KIP s"] = f"{np.mean([r['kip_seconds'] for r in sp]):.1f}" if sp else ""
                    table.append(row)
        out += [markdown_table(table, ["dataset", "ipc", "init", "uniform", "smart-pick", "smart-pick steps",
                                       "uniform KIP s", "smart-pick KIP s"]), ""]
    steps = [r for r in rows if r["part"] == "steps"]
    if steps:
        out += ["## Overheads (equal-steps runs): seconds and share of the KIP seconds", ""]
        table = []
        for init in INITS:
            rs = [r for r in steps if r["init"] == init]
            if rs:
                share = np.mean([r["init_seconds"] / r["kip_seconds"] for r in rs])
                table.append({"piece": f"init {init}", "seconds (mean)": f"{np.mean([r['init_seconds'] for r in rs]):.3f}",
                              "share of KIP run": f"{100 * share:.2f}%"})
        rs = [r for r in steps if r["sampler"] == "smart-pick"]
        if rs:
            share = np.mean([r["sampler_seconds"] / r["kip_seconds"] for r in rs])
            table.append({"piece": "smart-pick rescoring", "seconds (mean)":
                          f"{np.mean([r['sampler_seconds'] for r in rs]):.2f}", "share of KIP run": f"{100 * share:.1f}%"})
        uni = [r["kip_seconds"] for r in steps if r["sampler"] == "uniform"]
        sp = [r["kip_seconds"] for r in steps if r["sampler"] == "smart-pick"]
        if uni and sp:
            table.append({"piece": "KIP run, uniform vs smart-pick (mean s)", "seconds (mean)":
                          f"{np.mean(uni):.1f} vs {np.mean(sp):.1f}", "share of KIP run": ""})
        out += [markdown_table(table, ["piece", "seconds (mean)", "share of KIP run"]), ""]
        loads = [r["load"] for r in rows if "load" in r]
        out += [f"Load average (1 min) during the KIP runs: {min(loads):.2f} .. {max(loads):.2f}.", ""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["coresets", "steps", "wallclock"])
    ap.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist"])
    ap.add_argument("--ipcs", nargs="+", type=int, default=[1, 10])
    ap.add_argument("--coreset-ipcs", nargs="+", type=int, default=[1, 10, 50])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--target-batch", type=int, default=1000)
    ap.add_argument("--fresh", action="store_true",
                    help="recompute every row (the file is replaced as the rows come) instead of skipping those there")
    args = ap.parse_args()

    path = RESULTS / "distil_boost.json"
    payload = load_json(path) if path.exists() and not args.fresh else {"rows": []}
    rows: list[dict] = payload["rows"]
    done = {_key(r) for r in rows}
    meta = {"machine": machine_info(), "versions": versions()}

    def save():
        payload.update(meta, settings={"kernel": KERNEL, "steps": args.steps, "target_batch": args.target_batch})
        write_results("distil_boost", payload, _markdown(rows, meta))

    def add(row):
        rows.append(row)
        done.add(_key(row))
        save()
        print({k: row[k] for k in row if k in ("part", "dataset", "ipc", "init", "sampler", "seed", "test_acc",
                                                 "kip_seconds", "steps_run")}, flush=True)

    for name in args.datasets:
        ds = load(name)
        if "coresets" in args.parts:
            for ipc in args.coreset_ipcs:
                for init in INITS:
                    for seed in args.seeds:
                        probe = {"part": "coresets", "dataset": name, "ipc": ipc, "init": init, "seed": seed}
                        if _key(probe) not in done:
                            add(_coreset_row(ds, name, ipc, init, seed))
        for ipc in args.ipcs:
            if {"steps", "wallclock"} & set(args.parts):  # compile both samplers' code before any timing
                for sampler in SAMPLERS:
                    warm = argparse.Namespace(steps=min(args.steps, 60), target_batch=args.target_batch)
                    _kip_row(ds, name, ipc, "real", sampler, 99, warm)
            for init in INITS:
                for seed in args.seeds:
                    uniform = None
                    for sampler in SAMPLERS:
                        probe = {"part": "steps", "dataset": name, "ipc": ipc, "init": init, "sampler": sampler,
                                 "seed": seed, "steps": args.steps, "target_batch": args.target_batch}
                        hit = [r for r in rows if _key(r) == _key(probe)]
                        if "steps" in args.parts and not hit:
                            add(_kip_row(ds, name, ipc, init, sampler, seed, args))
                            hit = [rows[-1]]
                        if sampler == "uniform" and hit:
                            uniform = hit[0]
                    if "wallclock" in args.parts and uniform is not None:
                        probe = {"part": "wallclock", "dataset": name, "ipc": ipc, "init": init,
                                 "sampler": "smart-pick", "seed": seed, "steps": args.steps,
                                 "target_batch": args.target_batch}
                        if _key(probe) not in done:
                            add(_kip_row(ds, name, ipc, init, "smart-pick", seed, args,
                                         time_limit=uniform["kip_seconds"], part="wallclock"))
    save()
    print(f"wrote {RESULTS / 'distil_boost.md'}")


if __name__ == "__main__":
    main()
