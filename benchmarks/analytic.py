"""Benchmark of closed-form distillation (Chen, Huang & Weng, NeurIPS 2024).

MNIST and Fashion-MNIST x feature maps {identity, fcnn, rff} x ipc {1, 10, 50}
x init {noise, real} x lambda_S {0, half its bound}. For every row: full-data
accuracy, distilled accuracy (KRR on features recomputed from the stored float32
images), weight cosine, seconds to fit the original model (ridge search
included), seconds to build the distilled set, total, machine.

Also measured in the same run, so that the ratios are not spoiled by a noisy
shared machine:
  - the whole ridge grid (search + refit) against one plain fit at a fixed ridge;
  - ``kdistill.methods.run`` end to end for MNIST, fcnn, ipc 1 (data loading excluded).

Usage:  .venv/bin/python benchmarks/analytic.py [--datasets mnist fashion_mnist] [--save-sets DIR]
Writes benchmarks/results/analytic.json and analytic.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, markdown_table, write_results  # noqa: E402

from kdistill import evaluate, io, krr  # noqa: E402
from kdistill._machine import machine_info, versions  # noqa: E402
from kdistill.data import fit_preprocessor, load, one_hot  # noqa: E402
from kdistill.methods import RunConfig, analytic, run  # noqa: E402
from kdistill.kernels import from_spec  # noqa: E402

PUBLISHED = {("mnist", "identity"): 0.8641, ("mnist", "fcnn"): 0.9389, ("mnist", "rff"): 0.9382}
MAPS = {"identity": "linear", "fcnn": "fcnn", "rff": "rff"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist"])
    ap.add_argument("--maps", nargs="+", default=list(MAPS))
    ap.add_argument("--ipcs", nargs="+", type=int, default=[1, 10, 50])
    ap.add_argument("--save-sets", type=Path, default=None, help="also save the lambda_S = 0 sets here (npz)")
    args = ap.parse_args(argv)

    rows, fits = [], []
    for name in args.datasets:
        ds = load(name)
        prep = fit_preprocessor(ds.x_train, "standardize")
        x_train, x_test = prep.apply(ds.x_train), prep.apply(ds.x_test)
        targets = one_hot(ds.y_train, ds.num_classes)
        for map_name in args.maps:
            kernel = from_spec(MAPS[map_name])
            kernel.features(x_train[:8])  # compile outside the timings
            with Timer() as t_search:
                model, sel = krr.fit_primal_selected(kernel.features, x_train, targets, seed=0)
            with Timer() as t_one:
                krr.fit_primal(kernel.features, x_train, targets, reg=sel.reg)
            full_acc = krr.accuracy(krr.predict_primal(kernel.features, model, x_test), ds.y_test)
            fit = {"dataset": name, "map": map_name, "kernel": kernel.spec, "reg": sel.reg,
                   "full_accuracy": full_acc, "published": PUBLISHED.get((name, map_name)),
                   "seconds_grid_search_and_refit": t_search.seconds, "seconds_one_fit": t_one.seconds,
                   "grid_over_one_fit": t_search.seconds / t_one.seconds, "grid_size": len(sel.grid)}
            fits.append(fit)
            print(f"{name} {map_name}: full acc {full_acc:.4f}, grid/one-fit "
                  f"{fit['grid_over_one_fit']:.2f} ({t_search.seconds:.2f}s / {t_one.seconds:.2f}s)", flush=True)
            w = model.w.T
            for ipc in args.ipcs:
                for init in ("noise", "real"):
                    for lam_frac in (0.0, 0.5):
                        res = analytic.distill(kernel, w, x_train, ds.y_train, num_classes=ds.num_classes, ipc=ipc,
                                               seed=0, init=init, lambda_s=lam_frac, lambda_s_relative=True)
                        with Timer() as t_eval:
                            acc = evaluate.support_accuracy(kernel, res.images, res.labels, x_test, ds.y_test,
                                                            lam=res.lambda_s)
                        info = res.info
                        row = {
                            "dataset": name, "map": map_name, "ipc": ipc, "init": init,
                            "lambda_s": "0" if lam_frac == 0 else "0.5 x bound",
                            "full_acc": full_acc, "distilled_acc": acc, "gap": acc - full_acc,
                            "weight_cosine": info["weight_cosine"],
                            "rel_weight_err": info["relative_weight_error"],
                            "round_trip_err": info["feature_round_trip_error"],
                            "rff_out_of_range": info.get("rff_out_of_range_fraction"),
                            "dist_to_init": info.get("mean_relative_distance_to_init"),
                            "s_fit_original": t_search.seconds, "s_build": res.seconds,
                            "s_total": t_search.seconds + res.seconds, "s_eval": t_eval.seconds,
                        }
                        rows.append(row)
                        print(f"  ipc {ipc:2d} {init:5s} lam {row['lambda_s']:11s} acc {acc:.4f} "
                              f"cos {info['weight_cosine']:.8f} build {res.seconds:.2f}s", flush=True)
                        if args.save_sets is not None and lam_frac == 0:
                            io.save(args.save_sets / f"{name}_analytic_{map_name}_{init}_ipc{ipc}.npz",
                                    io.DistilledSet(res.images, res.labels,
                                                    meta={"dataset": name, "method": "analytic",
                                                          "kernel": kernel.spec, "ipc": ipc, "lam": res.lambda_s,
                                                          "reg": 0.0, "init": init},
                                                    arrays=prep.to_arrays()))

    # End to end through the library pipeline, data loading excluded.
    e2e = None
    if "mnist" in args.datasets:
        ds = load("mnist")
        with Timer() as t:
            r = run(ds, RunConfig(method="analytic", kernel="fcnn", ipc=1))
        e2e = {"dataset": "mnist", "kernel": "fcnn", "ipc": 1, "seconds": t.seconds,
               "test_accuracy": r.summary["test_accuracy"], "phases": r.summary["seconds"]}
        print(f"end to end mnist fcnn ipc 1: {t.seconds:.2f}s, acc {e2e['test_accuracy']:.4f}")

    mach = machine_info()
    cols = ["dataset", "map", "ipc", "init", "lambda_s", "full_acc", "distilled_acc", "weight_cosine",
            "rel_weight_err", "round_trip_err", "rff_out_of_range", "dist_to_init", "s_fit_original", "s_build",
            "s_total"]
    md = ["# Closed-form distillation benchmark", "",
          f"Machine: {mach['cpu']}, {mach['cores']} cores, JAX {mach['jax_backend']}. "
          "Seconds exclude data loading. Accuracies are fractions of the full test set.", "",
          "## Original models (ridge chosen on a held-out 5% over "
          f"{fits[0]['grid_size'] if fits else 0} values)", "",
          markdown_table(fits, ["dataset", "map", "reg", "full_accuracy", "published",
                                "seconds_grid_search_and_refit", "seconds_one_fit", "grid_over_one_fit"]),
          "", "## Distilled sets", "", markdown_table(rows, cols)]
    if e2e:
        md += ["", f"End to end (`kdistill.methods.run`, MNIST, fcnn, ipc 1, loading excluded): "
               f"{e2e['seconds']:.2f} s, test accuracy {e2e['test_accuracy']:.4f}."]
    js, mdp = write_results("analytic", {"machine": mach, "versions": versions(), "fits": fits, "rows": rows,
                                         "end_to_end": e2e}, "\n".join(md))
    print(f"wrote {js} and {mdp}")


if __name__ == "__main__":
    from kdistill import precision_scope

    with precision_scope("float64"):  # as the CLI does (the finite networks themselves run in float32)
        main()
