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

4. ``rfad`` and ``dc`` (issue 32: the seed's claim on the methods it was made for), not run unless named:
   RFAD with init in {real, gaussian-coreset, kmeans-coreset, kcenter} x sampler in {uniform, smart-pick}, DC
   with init in {real, kmeans-coreset, kcenter}, each at its method's default options but for an equal
   wall-clock budget per cell (``BUDGET_MINUTES``: RFAD 15 / DC 30 minutes at ipc 1, as the issue asks; RFAD 30
   / DC 60 at ipc 10, our choice), which counts the init's and smart-pick's own seconds, with the steps left
   unbounded so the budget is what stops every run. Each cell is one ``kdistill distill`` process (the command is
   in its row; the run folder under ``runs/distil_boost``), then ``--nets`` ConvNets under DC's protocol
   (``kdistill evaluate --model convnet``). Seeds are the outer loop, so a partial run still compares every
   cell at the same number of seeds. The whole grid (2 datasets x ipc 1 and 10 x 3 seeds) is about 60 hours
   of a 2-core CPU: ``--max-hours`` starts no cell after its time, and later invocations add the missing rows.
   ``--inits`` and ``--samplers`` pick cells; the RFAD sampler variants ``smart-pick-unbiased`` and
   ``smart-pick-global`` (SMART-PICK with ``--pick-unbiased`` / ``--pick-global``) run only when named.

Usage (each invocation merges its rows into benchmarks/results/distil_boost.json, skipping rows
already there with the same settings unless --fresh, and rewrites distil_boost.md):
  .venv/bin/python benchmarks/distil_boost.py --fresh              # the KIP parts again, defaults below
  .venv/bin/python benchmarks/distil_boost.py                      # only the rows not in the file yet
  .venv/bin/python benchmarks/distil_boost.py --parts coresets --datasets mnist --seeds 0
  .venv/bin/python benchmarks/distil_boost.py --parts rfad dc --ipcs 1 --seeds 0 --max-hours 2
  .venv/bin/python benchmarks/distil_boost.py --parts rfad --ipcs 1 --inits real --samplers smart-pick-unbiased
  .venv/bin/python benchmarks/distil_boost.py --report                   # distil_boost.md from the json, nothing run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, evaluate_in_run, kdistill_cli, load_and_gemm, load_json, markdown_table  # noqa: E402
from _common import write_results  # noqa: E402

from kdistill._machine import machine_info, versions  # noqa: E402
from kdistill.data import load  # noqa: E402
from kdistill.methods import RunConfig  # noqa: E402
from kdistill.runs import run

INITS = ("real", "kcenter", "kmeans-coreset", "gaussian-coreset")
SAMPLERS = ("uniform", "smart-pick")
KERNEL = "fc-ntk"


# RFAD and DC (part 4): the inits and samplers each method takes, and the budget per cell (minutes)
BOOST_INITS = {"rfad": INITS, "dc": ("real", "kmeans-coreset", "kcenter")}
BOOST_SAMPLERS = {"rfad": SAMPLERS, "dc": ("uniform",)}  # DC has no target batch to pick
# RFAD sampler variants run only when named in --samplers (the paper is silent on these choices; see the README)
SAMPLER_FLAGS = {"uniform": ["--sampler", "uniform"], "smart-pick": ["--sampler", "smart-pick"],
                 "smart-pick-unbiased": ["--sampler", "smart-pick", "--pick-unbiased"],
                 "smart-pick-global": ["--sampler", "smart-pick", "--pick-global"]}
BUDGET_MINUTES = {("rfad", 1): 15, ("dc", 1): 30, ("rfad", 10): 30, ("dc", 10): 60}
RUNS = Path("runs/distil_boost")


def _key(row: dict) -> tuple:
    return tuple(row.get(k) for k in ("part", "dataset", "ipc", "init", "sampler", "seed", "steps", "target_batch",
                                      "budget"))


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


def _boost_budget(method: str, ipc: int, minutes: float | None) -> int:
    """Seconds of learning per cell: ``--minutes`` when given, else ``BUDGET_MINUTES``."""
    return int(round(60 * (minutes if minutes else BUDGET_MINUTES[(method, ipc)])))


def _boost_row(method: str, name: str, ipc: int, init: str, sampler: str, seed: int, args) -> dict:
    """One RFAD or DC cell: the set made in its own process at an equal wall-clock budget, its KRR accuracy (the
    run's summary) and ``args.nets`` ConvNets trained on it under DC's protocol."""
    budget = _boost_budget(method, ipc, args.minutes)
    out = RUNS / f"{method}_{name}_{ipc}_{init}_{sampler}_{seed}_{budget}s"
    flags = ["distill", "--dataset", name, "--ipc", str(ipc), "--method", method, "--init", init,
             *(SAMPLER_FLAGS[sampler] if method == "rfad" else []), "--seed", str(seed), "--steps", "1000000",
             "--learn-time-limit", str(budget), "--no-full", "--no-baseline", "--out", str(out)]
    (load, *_), gemm = load_and_gemm()
    print(f"making {out} ({budget} s, float32 GEMM {gemm} GFLOP/s) ...", flush=True)
    kdistill_cli(*flags, *(["--force"] if out.exists() else []))
    s = json.loads((out / "summary.json").read_text())
    info = s["method_info"]
    eval_seconds, res, _ = evaluate_in_run(out, "--model", "convnet", seeds=args.nets)  # a new folder: all trained
    return {"part": method, "dataset": name, "ipc": ipc, "init": init, "sampler": sampler, "seed": seed,
            "budget": budget, "command": "kdistill " + " ".join(flags), "test_acc": s["test_accuracy"],
            "kernel": s.get("kernel"), "convnet": res["mean"], "convnet_accuracies": res["accuracies"],
            "convnet_seconds": round(eval_seconds, 1), "steps_run": info["steps_run"], "best_step": info["best_step"],
            "learn_seconds": s["seconds"].get("distill"), "init_seconds": info["init_seconds"],
            "sampler_seconds": info["sampler_seconds"], "load": load, "gemm_gflops_before": gemm}


def _cell(r: dict) -> tuple:
    """An RFAD/DC row's cell: everything but the seed."""
    return r["dataset"], r["ipc"], r["budget"], r["init"], r["sampler"]


def _boost_markdown(rows: list[dict]) -> list[str]:
    """The RFAD and DC tables: per dataset, ipc, init and sampler, mean ± std over the seeds of the sets' KRR
    accuracy and of their ConvNets' (each set's mean over its networks)."""
    out = []
    for method, title in (("rfad", "RFAD"), ("dc", "DC")):
        sel = [r for r in rows if r["part"] == method]
        if not sel:
            continue
        budgets = sorted({(r["ipc"], r["budget"]) for r in sel})
        nets = sorted({len(r["convnet_accuracies"]) for r in sel})
        loads = [r["load"] for r in sel]
        out += [f"## {title}: inits{' and samplers' if method == 'rfad' else ''} at an equal wall-clock budget", "",
                f"{title}'s default options, steps unbounded, learning capped at "
                + ", ".join(f"{b / 60:g} min at ipc {i}" for i, b in budgets)
                + f" (the init's and the sampler's own seconds included). KRR: the run's own kernel "
                f"({sel[0]['kernel']}); ConvNet: DC's protocol (`kdistill evaluate --model convnet`), "
                f"{'/'.join(map(str, nets))} network(s) per set. Mean ± std over seeds (n marks fewer than 3). "
                f"Load average (1 min) before the cells: {min(loads):.2f} .. {max(loads):.2f}. Each row's "
                "command is in distil_boost.json; regenerate with `.venv/bin/python benchmarks/distil_boost.py "
                "--parts rfad dc` (the smart-pick-* variant rows: add `--samplers` with their names).", ""]
        out[-2] += (" Paired: the mean over seeds of (this cell - real/uniform at the same seed, dataset, ipc and "
                    "budget), KRR / ConvNet points; same init: against uniform from the same start instead; "
                    "networks: each seed's ConvNet accuracies.")
        table = []
        for key in sorted({_cell(r) for r in sel},
                          key=lambda k: (k[0], k[1], k[2], INITS.index(k[3]), list(SAMPLER_FLAGS).index(k[4]))):
            rs = sorted((r for r in sel if _cell(r) == key), key=lambda r: r["seed"])
            real = "" if key[3:] == ("real", "uniform") else _paired(rs, sel, (*key[:3], "real", "uniform"))
            same = "" if key[4] == "uniform" else _paired(rs, sel, (*key[:4], "uniform"))
            table.append({"dataset": key[0], "ipc": key[1], "init": key[3], "sampler": key[4],
                          "KRR": _mean_std(r["test_acc"] for r in rs),
                          "ConvNet (DC)": _mean_std(r["convnet"] for r in rs),
                          "paired vs real/uniform": real, "paired vs uniform, same init": same,
                          "networks": "; ".join("/".join(f"{100 * a:.1f}" for a in r["convnet_accuracies"])
                                                for r in rs),
                          "steps": f"{np.mean([r['steps_run'] for r in rs]):.0f}",
                          "init s": f"{np.mean([r['init_seconds'] for r in rs]):.1f}",
                          "sampler s": f"{np.mean([r['sampler_seconds'] for r in rs]):.1f}"})
        out += [markdown_table(table, ["dataset", "ipc", "init", "sampler", "KRR", "ConvNet (DC)",
                                       "paired vs real/uniform", "paired vs uniform, same init", "networks",
                                       "steps", "init s", "sampler s"]), ""]
    return out


def _paired(rs: list[dict], rows: list[dict], base_cell: tuple) -> str:
    """Mean over the seeds ``rs`` shares with ``base_cell`` of (row - base row), KRR / ConvNet points."""
    base = {r["seed"]: r for r in rows if _cell(r) == base_cell}
    pairs = [(r, base[r["seed"]]) for r in rs if r["seed"] in base]
    if not pairs:
        return ""
    return (f"{100 * np.mean([a['test_acc'] - b['test_acc'] for a, b in pairs]):+.2f} / "
            f"{100 * np.mean([a['convnet'] - b['convnet'] for a, b in pairs]):+.2f} (n={len(pairs)})")


def _mean_std(vals) -> str:
    v = np.asarray([x for x in vals if x is not None], dtype=float)
    if v.size == 0:
        return ""
    return f"{100 * v.mean():.2f} ± {100 * v.std():.2f}" + ("" if v.size >= 3 else f" (n={v.size})")


def _markdown(rows: list[dict], meta: dict) -> str:
    out = ["# Distil-Boost ablation (coreset inits, SMART-PICK)", "",
           f"Machine: {meta['machine'].get('cpu')}, {meta['machine'].get('cores')} cores; JAX "
           f"{meta['versions'].get('jax')}. KIP sections: kernel {KERNEL}; accuracy = KRR on the full test set, "
           "mean ± std over seeds (%). Regenerate: `.venv/bin/python benchmarks/distil_boost.py --fresh` (settings "
           "in the script's docstring and in distil_boost.json).", ""]
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
                table.append({"piece": f"init {init}",
                              "seconds (mean)": f"{np.mean([r['init_seconds'] for r in rs]):.3f}",
                              "share of KIP run": f"{100 * share:.2f}%"})
        rs = [r for r in steps if r["sampler"] == "smart-pick"]
        if rs:
            share = np.mean([r["sampler_seconds"] / r["kip_seconds"] for r in rs])
            table.append({"piece": "smart-pick rescoring",
                          "seconds (mean)": f"{np.mean([r['sampler_seconds'] for r in rs]):.2f}",
                          "share of KIP run": f"{100 * share:.1f}%"})
        uni = [r["kip_seconds"] for r in steps if r["sampler"] == "uniform"]
        sp = [r["kip_seconds"] for r in steps if r["sampler"] == "smart-pick"]
        if uni and sp:
            table.append({"piece": "KIP run, uniform vs smart-pick (mean s)", "seconds (mean)":
                          f"{np.mean(uni):.1f} vs {np.mean(sp):.1f}", "share of KIP run": ""})
        out += [markdown_table(table, ["piece", "seconds (mean)", "share of KIP run"]), ""]
        loads = [r["load"] for r in steps + [r for r in rows if r["part"] == "wallclock"] if "load" in r]
        out += [f"Load average (1 min) during the KIP runs: {min(loads):.2f} .. {max(loads):.2f}.", ""]
    out += _boost_markdown(rows)
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
    ap.add_argument("--nets", type=int, default=3, help="rfad/dc: ConvNets trained on each set (DC's protocol)")
    ap.add_argument("--minutes", type=float, default=0.0,
                    help="rfad/dc: learning minutes per cell instead of BUDGET_MINUTES (a row records its budget)")
    ap.add_argument("--max-hours", type=float, default=0.0, help="rfad/dc: start no cell after this long (0: no limit)")
    ap.add_argument("--inits", nargs="+", choices=INITS, default=None,
                    help="rfad/dc: only these inits (default: each method's own list)")
    ap.add_argument("--samplers", nargs="+", choices=list(SAMPLER_FLAGS), default=None,
                    help="rfad: only these samplers (default: uniform smart-pick; the smart-pick-* variants add "
                         "--pick-unbiased or --pick-global)")
    ap.add_argument("--report", action="store_true",
                    help="rewrite distil_boost.md from distil_boost.json and run nothing")
    ap.add_argument("--fresh", action="store_true",
                    help="recompute every row of the selected --parts (the others are kept) instead of skipping "
                         "those there")
    args = ap.parse_args()
    unknown = set(args.parts) - {"coresets", "steps", "wallclock", "rfad", "dc"}
    if unknown:
        ap.error(f"unknown parts {sorted(unknown)}: choose among coresets, steps, wallclock, rfad, dc")
    if args.nets < 1 or args.minutes < 0 or args.max_hours < 0:
        ap.error("--nets must be at least 1, --minutes and --max-hours at least 0")
    if {"rfad", "dc"} & set(args.parts) and not args.minutes and not set(args.ipcs) <= {1, 10}:
        ap.error("rfad/dc budgets are set for ipc 1 and 10 (BUDGET_MINUTES): give --minutes for other ipcs")

    path = RESULTS / "distil_boost.json"
    payload = load_json(path) if path.exists() else {"rows": []}
    if args.fresh:  # the parts not named keep their rows (RFAD's and DC's took hours)
        payload["rows"] = [r for r in payload["rows"] if r["part"] not in args.parts]
    rows: list[dict] = payload["rows"]
    done = {_key(r) for r in rows}
    meta = {"machine": machine_info(), "versions": versions()}
    if args.report:  # the rows' own machine and versions stay in the json; only the markdown is rewritten
        from kdistill._atomic import write_bytes

        write_bytes(RESULTS / "distil_boost.md",
                    (_markdown(rows, {k: payload.get(k, v) for k, v in meta.items()}) + "\n").encode())
        print(f"wrote {RESULTS / 'distil_boost.md'}")
        return

    def save():
        payload.update(meta, settings={"kernel": KERNEL, "steps": args.steps, "target_batch": args.target_batch})
        write_results("distil_boost", payload, _markdown(rows, meta))

    def add(row):
        rows.append(row)
        done.add(_key(row))
        save()
        print({k: row[k] for k in row if k in ("part", "dataset", "ipc", "init", "sampler", "seed", "test_acc",
                                                 "kip_seconds", "steps_run", "convnet")}, flush=True)

    for name in args.datasets if {"coresets", "steps", "wallclock"} & set(args.parts) else ():
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
    deadline = time.monotonic() + 3600 * args.max_hours if args.max_hours else None
    for seed in args.seeds:  # outermost: a partial run compares every cell at the same seeds
        for method in [p for p in args.parts if p in BOOST_INITS]:
            for name in args.datasets:
                for ipc in args.ipcs:
                    for init in [i for i in BOOST_INITS[method] if args.inits is None or i in args.inits]:
                        for sampler in (BOOST_SAMPLERS[method] if method == "dc" or args.samplers is None
                                        else args.samplers):
                            probe = {"part": method, "dataset": name, "ipc": ipc, "init": init, "sampler": sampler,
                                     "seed": seed, "budget": _boost_budget(method, ipc, args.minutes)}
                            if _key(probe) in done:
                                continue
                            if deadline is not None and time.monotonic() > deadline:
                                save()
                                print(f"--max-hours {args.max_hours} spent: stopping before the next cell")
                                return
                            add(_boost_row(method, name, ipc, init, sampler, seed, args))
    save()
    print(f"wrote {RESULTS / 'distil_boost.md'}")


if __name__ == "__main__":
    main()
