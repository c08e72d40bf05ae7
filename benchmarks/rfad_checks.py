"""Checks of an RFAD set beyond its KRR test accuracy (issue 12): is the random-feature estimate honest,
does the set transfer to a finite network, and what does Label Solve reach on the same features?

For a run directory kept by ``benchmarks/rfad.py --keep DIR`` (or any ``kdistill distill --method rfad``
output) this computes:

- ``nngp``: KRR test accuracy with the exact infinite-width kernel of the same architecture
  (``convnet-nngp`` of the rf-convnet spec's depth, w_std and b_std) on the first ``--nngp-test`` test
  images, beside the run's own fixed random-feature kernel on the same images (the exact kernel
  costs O((h w)^2) per pair: about 1e-2 s per 28x28 pair here, so the subset bounds the time);
- ``finite``: ``kdistill evaluate FILE --model convnet --seeds S`` (DC's ConvNet and protocol: 300
  epochs, augmentation on MNIST, none on Fashion-MNIST, as DC evaluates);
- ``label_solve``: ``kdistill distill --method label-solve`` with the run's kernel at the same ipc (random
  real images with closed-form labels on the same random features).

Usage:  .venv/bin/python benchmarks/rfad_checks.py RUN_DIR [--nngp-test 300] [--finite-seeds 3]
        [--no-label-solve]
        .venv/bin/python benchmarks/rfad_checks.py --render
Rows merge into benchmarks/results/rfad_checks.json (keyed by the run directory's name; parts skipped this time
keep their earlier results) and rfad_checks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OLD_TEMPERATURE_MARK, RESULTS, fmt, load_json, markdown_table, old_temperature_note  # noqa: E402
from _common import old_temperature, write_results  # noqa: E402

from kdistill._machine import machine_info, versions  # noqa: E402


def _kdistill(*args: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "kdistill.cli", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"kdistill {args[0]} failed: {r.stderr.strip().splitlines()[-1:]}")
    return json.loads(r.stdout) if "--json" in args else {}


def nngp_check(run: Path, n_test: int) -> dict:
    import jax

    from kdistill.data import load
    from kdistill.evaluate import evaluate_file
    from kdistill.kernels import from_spec

    summary = json.loads((run / "summary.json").read_text())
    spec = from_spec(summary["kernel"])
    p = dict(spec.params)
    exact = f"convnet-nngp:depth={p['depth']},stem={p.get('stem', 1)},w_std={p['w_std']},b_std={p['b_std']}"
    data = load(summary["dataset"])
    sub = dataclasses.replace(data, x_test=data.x_test[:n_test], y_test=data.y_test[:n_test])
    out = {"nngp_kernel": exact, "nngp_test_images": n_test}
    with jax.enable_x64(False):
        for name, kernel in (("rf", summary["kernel"]), ("nngp", exact)):
            t = time.perf_counter()
            res = evaluate_file(run / "distilled.npz", sub, kernel=kernel)
            out[f"{name}_subset_acc"] = res["test_accuracy"]
            out[f"{name}_subset_seconds"] = round(time.perf_counter() - t, 1)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, nargs="?", help="the run folder to check (omitted with --render)")
    ap.add_argument("--render", action="store_true", help="only rebuild rfad_checks.md from rfad_checks.json")
    ap.add_argument("--nngp-test", type=int, default=300)
    ap.add_argument("--finite-seeds", type=int, default=3)
    ap.add_argument("--no-label-solve", action="store_true")
    args = ap.parse_args(argv)
    if args.render:
        path = RESULTS / "rfad_checks.json"
        doc = load_json(path) if path.exists() else {"rows": []}
        render(doc["rows"], doc.get("machine"), doc.get("versions"))
        return
    if args.run is None:
        ap.error("name a run folder, or --render")
    run = args.run.resolve()
    summary = json.loads((run / "summary.json").read_text())
    dataset, ipc, kernel = summary["dataset"], summary["ipc"], summary["kernel"]
    row = {"run": run.name, "dataset": dataset, "ipc": ipc, "kernel": kernel,
           "rfad_test_acc": summary["test_accuracy"], "loadavg_before": os.getloadavg()}
    if args.nngp_test:
        row.update(nngp_check(run, args.nngp_test))
        print(row, flush=True)
    if args.finite_seeds:
        t = time.perf_counter()
        res = _kdistill("evaluate", str(run / "distilled.npz"), "--model", "convnet", "--seeds",
                        str(args.finite_seeds), "--json")  # the default: DC's protocol (MNIST augmented)
        row.update(finite_acc_mean=res.get("mean"), finite_acc_std=res.get("std"),
                   finite_augment=res["settings"]["augment"],
                   finite_seconds=round(time.perf_counter() - t, 1), finite=res)
        print(row, flush=True)
    if not args.no_label_solve:
        with tempfile.TemporaryDirectory(prefix="kd-ls-") as tmp:
            t = time.perf_counter()
            _kdistill("distill", "--dataset", dataset, "--method", "label-solve", "--kernel", kernel, "--ipc", str(ipc),
                      "--no-full", "--no-baseline", "--out", f"{tmp}/run")
            ls = json.loads(Path(f"{tmp}/run/summary.json").read_text())
        row.update(label_solve_acc=ls["test_accuracy"], label_solve_seconds=round(time.perf_counter() - t, 1))
    row["loadavg_after"] = os.getloadavg()
    print(row, flush=True)

    path = RESULTS / "rfad_checks.json"
    old = [r for r in (load_json(path)["rows"] if path.exists() else [])]
    # a part skipped this time (--nngp-test 0, --finite-seeds 0, --no-label-solve) keeps its earlier result
    row = {**next((r for r in old if r["run"] == row["run"]), {}), **row}
    render([r for r in old if r["run"] != row["run"]] + [row])


def render(rows: list[dict], mach: dict | None = None, vers: dict | None = None) -> None:
    """Write rfad_checks.json and .md; ``mach`` and ``vers``: the machine and versions of the last check (today's
    when None)."""
    mach = mach or machine_info()
    cols = ["run", "dataset", "ipc", "kernel", "rfad_test_acc", "nngp_test_images", "rf_subset_acc", "nngp_subset_acc",
            "nngp_subset_seconds", "finite_acc_mean", "finite_acc_std", "finite_augment", "finite_seconds",
            "label_solve_acc"]

    def stale(r: dict) -> bool:  # finite: learned labels at an earlier default label temperature
        return old_temperature((r.get("finite") or {}).get("label_mode"))

    shown = [{**r, "finite_acc_mean": f"{fmt(r['finite_acc_mean'])} {OLD_TEMPERATURE_MARK}"} if stale(r) else r
             for r in rows]
    md = ["# Checks of RFAD sets (issue 12)", "",
          f"Machine: {mach['cpu']}, {mach['cores']} cores, JAX {mach['jax_backend']}. Each row: "
          "`.venv/bin/python benchmarks/rfad_checks.py RUN` on a run kept by `benchmarks/rfad.py --keep`. "
          "rf_subset_acc / nngp_subset_acc: KRR accuracy of the same set on the first nngp_test_images test images "
          "with the run's fixed random-feature kernel / the exact convnet-nngp it estimates. finite: DC's ConvNet "
          "(width 128, instance norm) trained on the set, 300 epochs, mean and std over seeds. label_solve: random "
          "real images at the same ipc with closed-form labels under the run's kernel.", "",
          markdown_table(shown, cols), ""]
    if any(stale(r) for r in rows):
        md += [old_temperature_note(), ""]
    js, mdp = write_results("rfad_checks", {"machine": mach, "versions": vers or versions(), "rows": rows},
                            "\n".join(md))
    print(f"wrote {js} and {mdp}")


if __name__ == "__main__":
    main()
