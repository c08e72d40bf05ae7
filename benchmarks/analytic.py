"""Benchmark of closed-form distillation (Chen, Huang & Weng, NeurIPS 2024).

Part 1, sets: MNIST and Fashion-MNIST x feature map (identity, fcnn at depth 1 and 3, rff, inn, cnn,
deep-linear wider than the input, fcnn wider than the input) x ipc {1, 10, 50} x init {noise, real},
lambda_S = 0. Per original model: full-data accuracy (published where the paper has one), ridge chosen
on a held-out 5%, seconds. Per distilled set: accuracy of KRR on features recomputed from the stored
images, weight cosine and relative error against W, feature round-trip error, the images' RMS and
largest value relative to the training images', seconds to build.

Part 2, deep linear maps: Chen et al.'s Theorem 5.3 (m = k + 1) checked on MNIST's deep-linear map:
rank of H, rank of the block of V_H its construction inverts, and how far W's rows leave the map's
range (0: one image per class reproduces W).

Part 3, time of ``kdistill distill --dataset mnist --method analytic --kernel fcnn --ipc 1`` as a whole
process (median of ``--repeats`` fresh processes; the breakdown its summary.json records), against one
60000 x 784 x 784 matrix product timed in the same run (float64 and float32), and, with ``--before REV``,
the same command on an earlier commit checked out into a temporary git worktree, measured in the same
run. The load average is recorded.

Usage:  .venv/bin/python benchmarks/analytic.py [--datasets ...] [--maps ...] [--ipcs ...]
                                               [--before REV (default 158bd4a; '' for none)] [--repeats N]
                                               [--skip-sets] [--save-sets DIR]
Writes benchmarks/results/analytic.json and analytic.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, markdown_table, matmul_seconds, write_results  # noqa: E402

import numpy as np  # noqa: E402

from kdistill import evaluate, io, krr  # noqa: E402
from kdistill._machine import machine_info, versions  # noqa: E402
from kdistill.data import fit_preprocessor, load, one_hot  # noqa: E402
from kdistill.kernels import from_spec  # noqa: E402
from kdistill.methods import analytic  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# Chen et al. 2024, Table 3 (MNIST, original models; p = d)
PUBLISHED = {("mnist", "identity"): 0.8641, ("mnist", "fcnn"): 0.9389, ("mnist", "rff"): 0.9382}
MAPS = {
    "identity": "linear",
    "fcnn": "fcnn",
    "fcnn-depth3": "fcnn:depth=3",
    "rff": "rff",
    "inn": "inn",
    "cnn": "cnn",
    "deep-linear-wide": "deep-linear:depth=2,width=1024",
    "fcnn-wide": "fcnn:width=1024",
}
BEFORE = "158bd4a"  # the last commit before the closed form was made fast (issue 16): the "before" column
CLI_ARGS = ["distill", "--dataset", "mnist", "--method", "analytic", "--kernel", "fcnn", "--ipc", "1"]


def _rms(a) -> float:
    return float(np.sqrt(np.mean(np.square(np.asarray(a, dtype=np.float64)))))


def sets_part(datasets, maps, ipcs, save_sets):
    fits, rows = [], []
    for name in datasets:
        ds = load(name)
        prep = fit_preprocessor(ds.x_train, "standardize")
        x_train, x_test = prep.apply(ds.x_train), prep.apply(ds.x_test)
        targets = one_hot(ds.y_train, ds.num_classes)
        data_max = float(np.max(np.abs(x_train)))
        for map_name in maps:
            kernel = from_spec(MAPS[map_name])
            with Timer() as t_fit:
                model, sel = krr.fit_primal_selected(kernel.features, x_train, targets, seed=0)
            full_acc = krr.accuracy(krr.predict_primal(kernel.features, model, x_test), ds.y_test)
            fit = {"dataset": name, "map": map_name, "kernel": kernel.spec, "p": int(model.w.shape[0]),
                   "reg": sel.reg, "full_accuracy": full_acc, "published": PUBLISHED.get((name, map_name)),
                   "seconds_fit": t_fit.seconds, "grid_size": len(sel.grid)}
            fits.append(fit)
            print(f"{name} {map_name}: full acc {full_acc:.4f} (p={fit['p']}, reg {sel.reg:g}, "
                  f"{t_fit.seconds:.1f}s)", flush=True)
            w = model.w.T
            for ipc in ipcs:
                for init in ("noise", "real"):
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        res = analytic.distill(kernel, w, x_train, ds.y_train, num_classes=ds.num_classes,
                                               ipc=ipc, seed=0, init=init)
                    with Timer() as t_eval:
                        acc = evaluate.support_accuracy(kernel, res.images, res.labels, x_test, ds.y_test,
                                                        lam=res.lambda_s)
                    info = res.info
                    row = {
                        "dataset": name, "map": map_name, "ipc": ipc, "init": init,
                        "full_acc": full_acc, "distilled_acc": acc, "gap": acc - full_acc,
                        "weight_cosine": info["weight_cosine"], "rel_weight_err": info["relative_weight_error"],
                        "round_trip_err": info["feature_round_trip_error"],
                        "image_rms_ratio": info["image_std_ratio"],
                        "image_max_over_data_max": info["image_max_abs"] / data_max,
                        "dist_to_init": info.get("mean_relative_distance_to_init"),
                        "labels_resolved": bool(info.get("labels_resolved", False)),
                        "warning": "; ".join(str(c.message) for c in caught) or None,
                        "s_build": res.seconds, "s_eval": t_eval.seconds,
                    }
                    rows.append(row)
                    print(f"  ipc {ipc:2d} {init:5s} acc {acc:.4f} rel.err {row['rel_weight_err']:.2e} "
                          f"rms {row['image_rms_ratio']:.2f} build {res.seconds:.2f}s", flush=True)
                    if save_sets is not None:
                        io.save(save_sets / f"{name}_analytic_{map_name}_{init}_ipc{ipc}.npz",
                                io.DistilledSet(res.images, res.labels,
                                                meta={"dataset": name, "method": "analytic", "kernel": kernel.spec,
                                                      "ipc": ipc, "lam": res.lambda_s, "reg": 0.0, "init": init},
                                                arrays=prep.to_arrays()))
    return fits, rows


def deep_linear_part():
    """Theorem 5.3's conditions on MNIST's deep-linear map (p = 1024 > d = 784), and the range test."""
    from kdistill.kernels._invertible import deep_linear_matrix

    ds = load("mnist")
    prep = fit_preprocessor(ds.x_train, "standardize")
    x_train = prep.apply(ds.x_train)
    spec = MAPS["deep-linear-wide"]
    kernel = from_spec(spec)
    model, _ = krr.fit_primal_selected(kernel.features, x_train, one_hot(ds.y_train, 10), seed=0)
    w = model.w.T
    m = deep_linear_matrix(kernel, 784)
    w1 = deep_linear_matrix(from_spec(spec.replace("depth=2", "depth=1")), 784)
    y_s = np.hstack([np.eye(10), np.full((10, 1), 0.1)])
    try:
        analytic.deep_linear_theorem_5_3(w1, m, w, y_s)
        outcome = "construction succeeded"
    except Exception as e:  # the expected one-line refusal
        outcome = str(e)
    out = {"kernel": spec, "p": int(m.shape[0]), "d": int(m.shape[1]),
           "range_residual_of_ridge_w": analytic.range_residual(w, m),
           "range_residual_of_random_w": analytic.range_residual(np.random.default_rng(0).normal(size=w.shape), m),
           "theorem_5_3_at_m_k_plus_1": outcome}
    print(json.dumps(out, indent=1), flush=True)
    return out


def _cli_once(args, env, cwd) -> dict:
    out = Path(tempfile.mkdtemp(prefix="kd-bench-", dir=cwd))
    shutil.rmtree(out)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "kdistill.cli", *args, "--out", str(out)], env=env, cwd=cwd,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"kdistill failed: {r.stderr.strip().splitlines()[-1:]}")
    summary = json.loads((out / "summary.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    return {"wall": wall, "seconds": summary["seconds"], "test_accuracy": summary["test_accuracy"],
            "relative_weight_error": summary["method_info"].get("relative_weight_error")}


def _median_run(runs: list[dict]) -> dict:
    walls = [r["wall"] for r in runs]
    mid = runs[walls.index(sorted(walls)[len(walls) // 2])]
    return {**mid, "walls": walls, "wall_median": statistics.median(walls)}


def timing_part(before: str | None, repeats: int):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("KDISTILL_NO_CACHE", None)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="kd-bench-") as tmp:
        _cli_once(CLI_ARGS, env, tmp)  # warm the data cache and the page cache
        after = _median_run([_cli_once(CLI_ARGS, env, tmp) for _ in range(repeats)])
        old = None
        if before:
            tree = Path(tmp) / "before"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), before], check=True,
                           capture_output=True)
            try:
                old_env = {**env, "PYTHONPATH": str(tree / "src")}
                _cli_once(CLI_ARGS, old_env, tmp)
                old = _median_run([_cli_once(CLI_ARGS, old_env, tmp) for _ in range(repeats)])
                old["commit"] = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                                               capture_output=True, text=True).stdout.strip()
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                               capture_output=True)
    product = {"float64": matmul_seconds(60000, 784, 784, np.float64),
               "float32": matmul_seconds(60000, 784, 784, np.float32)}
    out = {"command": "kdistill " + " ".join(CLI_ARGS), "repeats": repeats, "after": after, "before": old,
           "product_60000x784x784_seconds": product, "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    distill = after["seconds"]["distill"]
    out["distill_over_product_float64"] = distill / product["float64"]
    out["process_over_product_float64"] = after["wall_median"] / product["float64"]
    print(json.dumps({k: out[k] for k in ("product_60000x784x784_seconds", "distill_over_product_float64",
                                          "loadavg_before", "loadavg_after")}, indent=1), flush=True)
    print("after:", after["wall_median"], after["seconds"], flush=True)
    if old:
        print("before:", old["wall_median"], old["seconds"], flush=True)
    return out


def _timing_md(t: dict) -> list[str]:
    keys = ["startup", "load_data", "preprocess", "fit_original", "build_distilled", "distill", "evaluate",
            "baseline", "write_outputs", "total", "process"]
    cols = [("after", t["after"])] + ([(f"before ({t['before']['commit']})", t["before"])] if t["before"] else [])
    rows = [{"phase": k, **{name: r["seconds"].get(k) for name, r in cols}} for k in keys]
    rows.append({"phase": "wall (median)", **{name: r["wall_median"] for name, r in cols}})
    p = t["product_60000x784x784_seconds"]
    return [
        f"`{t['command']}`, {t['repeats']} fresh processes each (the median one shown, data cache warm), load "
        f"average {t['loadavg_before'][0]:.2f} before and {t['loadavg_after'][0]:.2f} after. Seconds from each "
        "run's summary.json; `process` is since the interpreter started; `wall` is measured outside.", "",
        markdown_table(rows, ["phase"] + [name for name, _ in cols]), "",
        f"One 60000 x 784 x 784 matrix product in the same run: {p['float64']:.3f} s (float64), "
        f"{p['float32']:.3f} s (float32). Distillation (W's ridge search and fit, and the set) took "
        f"{t['distill_over_product_float64']:.2f}x one float64 product; the whole process "
        f"{t['process_over_product_float64']:.1f}x.",
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist"])
    ap.add_argument("--maps", nargs="+", default=list(MAPS), choices=list(MAPS))
    ap.add_argument("--ipcs", nargs="+", type=int, default=[1, 10, 50])
    ap.add_argument("--before", default=BEFORE, help="also time the CLI command on this earlier commit ('' for "
                    f"none; default {BEFORE}, the last one before the closed form's speed work)")
    ap.add_argument("--repeats", type=int, default=5, help="fresh processes per timed command")
    ap.add_argument("--skip-sets", action="store_true", help="timing only (parts 2 and 3)")
    ap.add_argument("--save-sets", type=Path, default=None, help="also save every set here (npz)")
    args = ap.parse_args(argv)

    timing = timing_part(args.before, args.repeats)  # first, while nothing else of ours runs
    fits, rows = ([], []) if args.skip_sets else sets_part(args.datasets, args.maps, args.ipcs, args.save_sets)
    deep = deep_linear_part()

    mach = machine_info()
    cols = ["dataset", "map", "ipc", "init", "full_acc", "distilled_acc", "weight_cosine", "rel_weight_err",
            "round_trip_err", "image_rms_ratio", "image_max_over_data_max", "dist_to_init", "s_build"]
    md = ["# Closed-form distillation benchmark", "",
          f"Machine: {mach['cpu']}, {mach['cores']} cores, JAX {mach['jax_backend']}. Command: "
          "`.venv/bin/python benchmarks/analytic.py" + ("" if args.before == BEFORE else f" --before '{args.before or ''}'")
          + "`. "
          "Accuracies are fractions of the full test set; lambda_S = 0.", "",
          "## Time of one run, end to end", "", *_timing_md(timing)]
    if fits:
        md += ["", "## Original models (ridge chosen on a held-out 5% over "
               f"{fits[0]['grid_size']} half-decades)", "",
               markdown_table(fits, ["dataset", "map", "kernel", "p", "reg", "full_accuracy", "published",
                                     "seconds_fit"]),
               "", "## Distilled sets", "",
               "Images and labels are stored in float64; `rel_weight_err` = ||W_S - W|| / ||W|| with W_S fitted on "
               "features recomputed from the stored images. `image_rms_ratio`: RMS of the images over the "
               "training images' RMS; `image_max_over_data_max`: largest |pixel| over the training set's "
               "(standardised space).", "",
               markdown_table(rows, cols)]
        warned = sorted({(r["map"], r["warning"].split(":")[0]) for r in rows if r["warning"]})
        if warned:
            md += ["", "Warnings: " + "; ".join(f"{m}: {w}" for m, w in warned) + "."]
    md += ["", "## Deep linear map: Theorem 5.3 (m = k + 1)", "",
           f"`{deep['kernel']}` on MNIST (p = {deep['p']}, d = {deep['d']}). Rows of the ridge W leave the map's "
           f"range by {deep['range_residual_of_ridge_w']:.2g} (relative), so one image per class reproduces it "
           f"(rows above); a random W leaves it by {deep['range_residual_of_random_w']:.2g}, and no distilled set "
           f"of any size reproduces that one. Theorem 5.3's construction at m = k + 1: {deep['theorem_5_3_at_m_k_plus_1']}"]
    js, mdp = write_results("analytic", {"machine": mach, "versions": versions(), "argv": sys.argv[1:],
                                         "timing": timing, "fits": fits, "rows": rows, "deep_linear": deep},
                            "\n".join(md))
    print(f"wrote {js} and {mdp}")


if __name__ == "__main__":
    from kdistill import precision_scope

    with precision_scope("float64"):  # as the CLI does
        main()
