"""DC (gradient matching, Zhao et al. 2021) on this CPU (issue 14): what an hour buys, and random real images
under DC's evaluation protocol.

Two kinds of rows, merged into benchmarks/results/dc.json (a row with the same key is replaced) and rendered
to dc.md with the machine, seconds and load averages:

- ``run``: one ``kdistill distill --method dc`` in its own process with ``--learn-time-limit`` (the run keeps the
  best set by its validation: a ConvNet trained 300 epochs on the set, accuracy on held-out training
  images), then ``kdistill evaluate --model convnet --seeds S`` on the kept set (DC's protocol, the
  default: MNIST augmented, Fashion-MNIST not; ``--dsa`` runs under DSA's: ``--augment dsa --epochs 1000``). The accuracy-versus-time curve is the run's validation
  accuracy against its seconds (``history.json``: ``val_seconds``, ``val_accuracy``).
- ``random``: class-balanced random real images (seed = training seed) under the same protocol, DC's
  random baseline.

Usage:
  .venv/bin/python benchmarks/dc.py run --dataset mnist --ipc 1 --minutes 40 [--seeds 5] [--val-every 25]
        [--dsa] [--init real] [--batch-real 256] [--keep runs/bench]
  .venv/bin/python benchmarks/dc.py random --datasets mnist fashion_mnist --ipcs 1 10 [--seeds 5]
  .venv/bin/python benchmarks/dc.py profile
  .venv/bin/python benchmarks/dc.py render
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, load_json, markdown_table, merged_rows, write_results  # noqa: E402
from _common import kdistill_cli as _kdistill  # noqa: E402

from kdistill._machine import machine_info, versions  # noqa: E402

# DC (arXiv:2006.05929), Table 1: ConvNet test accuracy, DC's sets and random real images
PUBLISHED_DC = {("mnist", 1): 91.7, ("mnist", 10): 97.4, ("mnist", 50): 98.8,
                ("fashion_mnist", 1): 70.5, ("fashion_mnist", 10): 82.3, ("fashion_mnist", 50): 83.6}
PUBLISHED_RANDOM = {("mnist", 1): 64.9, ("mnist", 10): 95.1, ("mnist", 50): 97.9,
                    ("fashion_mnist", 1): 51.4, ("fashion_mnist", 10): 73.8, ("fashion_mnist", 50): 82.5}
# DSA (Zhao & Bilen, ICML 2021, arXiv:2102.08259), Table 1: ConvNet test accuracy of DSA's sets
PUBLISHED_DSA = {("mnist", 1): 88.7, ("mnist", 10): 97.8, ("fashion_mnist", 1): 70.6, ("fashion_mnist", 10): 84.6}
RUN_KEY = ("kind", "dataset", "ipc", "minutes", "init", "dsa", "batch_real")
RANDOM_KEY = ("kind", "dataset", "ipc")


def _merge(row: dict, key: tuple[str, ...]) -> None:
    render(merged_rows("dc", row, key))


def run(args) -> None:
    load_before = os.getloadavg()
    keep = args.keep
    name = f"dc_{args.dataset}_ipc{args.ipc}_{args.minutes:g}min" + ("_dsa" if args.dsa else "") + \
        ("" if args.init == "real" else f"_{args.init}")
    base = Path(tempfile.mkdtemp(prefix="kdistill-dc-")) if keep is None else keep
    out = base / name
    cmd = ["distill", "--dataset", args.dataset, "--method", "dc", "--ipc", str(args.ipc), "--steps", "1000",
           "--learn-time-limit", str(int(args.minutes * 60)), "--val-every", str(args.val_every), "--init", args.init,
           "--batch-real", str(args.batch_real), "--no-full", "--no-baseline", "--out", str(out), "--force"]
    if args.dsa:
        cmd.append("--dsa")
    seconds, _ = _kdistill(*cmd)
    summary = json.loads((out / "summary.json").read_text())
    history = json.loads((out / "history.json").read_text())
    info = summary["method_info"]
    t = time.perf_counter()
    # DSA's sets are evaluated under DSA's protocol (its augmentation while training, 1000 epochs), DC's under DC's
    evaluate = ["--augment", "dsa", "--epochs", "1000"] if args.dsa else []
    _, stdout = _kdistill("evaluate", str(out / "distilled.npz"), "--model", "convnet", "--seeds", str(args.seeds),
                          *evaluate, "--json")
    finite = json.loads(stdout.strip().splitlines()[-1])
    iters = info["steps_run"]
    distill_s = summary["seconds"]["distill"]
    val_s = history.get("val_seconds", [])
    curve = [{"seconds": s, "iteration": i, "val_accuracy": a}
             for s, i, a in zip(val_s, history["val_step"], history["val_accuracy"]) if s is not None]
    row = {"kind": "run", "dataset": args.dataset, "ipc": args.ipc, "minutes": args.minutes, "init": args.init,
           "dsa": args.dsa, "batch_real": args.batch_real, "iterations": iters, "best_iteration": info["best_step"],
           "outer_loop": info["outer_loop"], "inner_loop": info["inner_loop"],
           "validation_augment": info.get("validation_augment", "none"),
           "seconds_distill": round(distill_s, 1), "seconds_per_iteration": round(distill_s / max(iters, 1), 2),
           "finite_mean": finite["mean"], "finite_std": finite["std"], "finite_accuracies": finite["accuracies"],
           "finite_seeds": args.seeds, "finite_augment": finite["settings"]["augment"],
           "finite_epochs": finite["epochs"],
           "finite_seconds_per_seed": round(finite["seconds_per_seed"], 1),
           "finite_seconds": round(time.perf_counter() - t, 1), "curve": curve,
           "published": (PUBLISHED_DSA if args.dsa else PUBLISHED_DC).get((args.dataset, args.ipc)),
           "process_seconds": round(seconds, 1),
           "loadavg_before": [round(v, 2) for v in load_before],
           "loadavg_after": [round(v, 2) for v in os.getloadavg()], "command": "kdistill " + " ".join(cmd),
           "run_dir": str(out) if keep is not None else None, "machine": machine_info(), "versions": versions()}
    print(json.dumps({k: v for k, v in row.items() if k not in ("machine", "versions", "curve")}), flush=True)
    _merge(row, RUN_KEY)


class _RandomRows:
    """What benchmarks/finite.py's ``random_real`` writes to, here merged into dc.json."""

    def add(self, r: dict) -> None:
        _merge({"kind": "random", "dataset": r["dataset"], "ipc": r["ipc"], "augment": r["augment"],
                "epochs": r["epochs"], "seeds": r["seeds"], "mean": r["mean"], "std": r["std"],
                "accuracies": r["accuracies"], "seconds_per_seed": round(r["seconds_per_seed"], 1),
                "published": PUBLISHED_RANDOM.get((r["dataset"], r["ipc"])), "loadavg": [round(v, 2) for v in
                                                                                         os.getloadavg()],
                "machine": machine_info()}, RANDOM_KEY)


def random(args) -> None:
    from finite import random_real

    random_real(_RandomRows(), args.datasets, args.ipcs, args.seeds, "convnet", None, None, "auto")


def _seconds(fn, repeats: int = 3) -> tuple[float, float]:
    """(first call, best of ``repeats`` later calls) seconds of ``fn()`` (blocking on its result)."""
    import jax

    t = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return first, best


def profile(args) -> None:
    """Where one DC iteration's time goes on MNIST (k = 10, DC's ConvNet), and the alternatives measured."""
    import functools

    import jax
    import jax.numpy as jnp
    import numpy as np

    from kdistill.data import load
    from kdistill import nets
    from kdistill.methods import _dc
    from kdistill.nets import ConvNet

    load_before = os.getloadavg()
    ds = load("mnist")
    x = ds.x_train.astype(np.float32)
    x = (x - x.mean()) / x.std()
    k, b = 10, args.batch_real
    net = ConvNet(width=128, depth=3)
    params = net.init(jax.random.key(0), x.shape[1:], k)
    rng = np.random.default_rng(0)
    real = jnp.asarray(np.stack([x[rng.choice(np.flatnonzero(ds.y_train == c), b, replace=False)] for c in range(k)]))
    mask = jnp.ones((k, b), jnp.float32)
    eye = jnp.eye(k, dtype=jnp.float32)
    keys = jax.vmap(lambda c: jax.random.fold_in(jax.random.key(1), c))(jnp.arange(k))
    rows = []

    def add(what, first, best, note=""):
        rows.append({"what": what, "first_call_s": round(first, 2), "seconds": round(best, 3), "note": note})
        print(rows[-1], flush=True)

    @functools.partial(jax.jit, static_argnames=("net",))
    def real_grads(params, real, mask, *, net):  # the real side alone: a forward and backward per class
        return [jax.grad(_dc._xent)(params, net, real[c], jnp.broadcast_to(eye[c], (b, k)), mask[c])
                for c in range(k)]

    add("real-batch gradients, 10 classes x 256 images (unrolled)", *_seconds(lambda: real_grads(params, real, mask,
                                                                                              net=net)))
    for ipc in (1, 10):
        xs = real[:, :ipc]
        add(f"one matching round, ipc {ipc} (real gradients + synthetic double backward, the default)",
            *_seconds(lambda: _dc._group_match(params, real, mask, xs, eye, keys, net=net, families=None)))

    def per_class(xs):
        return [_dc._group_match(params, real[c:c + 1], mask[c:c + 1], xs[c:c + 1], eye[c:c + 1], keys[c:c + 1],
                                 net=net, families=None) for c in range(k)]

    add("one matching round, ipc 1, one call per class", *_seconds(lambda: per_class(real[:, :1])),
        "the same arithmetic without cross-class overlap")

    @functools.partial(jax.jit, static_argnames=("net",))
    def vmapped(params, real, mask, xs, *, net):
        def one(xr, mr, xc, t):
            g_real = jax.grad(_dc._xent)(params, net, xr, jnp.broadcast_to(t, (b, k)), mr)
            return _dc.match_distance(g_real, jax.grad(_dc._xent)(params, net, xc, t[None], jnp.ones(1)))
        return jax.grad(lambda z: jnp.sum(jax.vmap(one)(real, mask, z, eye)))(xs)

    add("one matching round, ipc 1, classes vmapped", *_seconds(lambda: vmapped(params, real, mask, real[:, :1],
                                                                                net=net), repeats=1),
        "per-class weight gradients become grouped convolutions")
    flat = real[:, :10].reshape((100,) + x.shape[1:])
    t_syn = jnp.repeat(eye, 10, axis=0)
    idx, emask, ekeys = nets.epoch_plan(jax.random.key(2), 0, m=100, batch=100)
    state = nets.init_optimizer("sgd", params, learning_rate=0.01, momentum=0.5)

    def epoch():
        p, s = jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, state)
        return nets.train_step(p, s, flat, t_syn, idx[0], emask[0], ekeys[0], jnp.float32(0.01), net=net,
                               loss="xent")

    first, best = _seconds(epoch)
    add("one network epoch on the ipc-10 synthetic set (100 images)", first, best)
    outer, inner = _dc.dc_loops(10)
    match10 = next(r["seconds"] for r in rows if r["what"].startswith("one matching round, ipc 10"))
    add("one DC iteration at ipc 10, estimated: 10 rounds + 9 x 50 network epochs", 0.0,
        outer * match10 + (outer - 1) * inner * best, "from the rows above")
    path = RESULTS / "dc.json"
    old = load_json(path).get("rows", []) if path.exists() else []
    old = [r for r in old if r["kind"] != "profile"]
    old.append({"kind": "profile", "rows": rows, "batch_real": b, "loadavg_before": [round(v, 2) for v in load_before],
                "loadavg_after": [round(v, 2) for v in os.getloadavg()], "machine": machine_info()})
    render(old)


def _init_comparison(runs: list[dict]) -> list[str]:
    """Distil-Boost's DC claim (seed 002): a K-means coreset initialisation beats K-center and random real
    images for non-kernel methods. Runs that differ only in ``init`` (same dataset, ipc, budget, dsa, real
    batch), side by side, with the difference to ``real``."""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in runs:
        groups.setdefault((r["dataset"], r["ipc"], r["minutes"], r["dsa"], r["batch_real"]), {})[r["init"]] = r
    table = []
    for (dataset, ipc, minutes, dsa, _), by_init in sorted(groups.items(), key=str):
        if len(by_init) < 2:
            continue
        ref = by_init.get("real")
        for init, r in sorted(by_init.items()):
            table.append({"dataset": dataset, "ipc": ipc, "budget min": minutes, "dsa": "yes" if dsa else "no",
                          "init": init, "iterations": r["iterations"],
                          "ConvNet test %": f"{100 * r['finite_mean']:.2f} ± {100 * r['finite_std']:.2f}",
                          "vs real (points)": None if ref is None else
                          round(100 * (r["finite_mean"] - ref["finite_mean"]), 2)})
    if not table:
        return []
    return ["", "## Initialisations at equal budget (Distil-Boost's DC claim)", "",
            "Distil-Boost (seed 002) initialises non-kernel methods such as DC from a lightweight K-means "
            "coreset and claims it beats K-center; `--init kmeans-coreset`, `kcenter` and `real` (random real "
            "images, DC's own choice) below, each one distillation run evaluated over the seeds above.", "",
            markdown_table(table, list(table[0]))]


def render(rows: list[dict]) -> None:
    machine = machine_info()
    runs = [r for r in rows if r["kind"] == "run"]
    prof = next((r for r in rows if r["kind"] == "profile"), None)
    rand = [r for r in rows if r["kind"] == "random"]
    run_table = [{"dataset": r["dataset"], "ipc": r["ipc"], "init": r["init"], "dsa": "yes" if r["dsa"] else "no",
                  "budget min": r["minutes"], "iterations (outer x inner)":
                  f"{r['iterations']} ({r['outer_loop']} x {r['inner_loop']})", "s / iteration":
                  r["seconds_per_iteration"], "best iteration": r["best_iteration"],
                  "ConvNet test % (seeds)": f"{100 * r['finite_mean']:.2f} ± {100 * r['finite_std']:.2f} "
                  f"({r['finite_seeds']}, augment {r['finite_augment']}, {r.get('finite_epochs', 300)} epochs)",
                  "published % (DC, or DSA with dsa)": r["published"], "load before/after":
                  f"{r['loadavg_before'][0]} / {r['loadavg_after'][0]}"} for r in runs]
    rand_table = [{"dataset": r["dataset"], "ipc": r["ipc"], "augment": r["augment"], "epochs": r["epochs"],
                   "seeds": r["seeds"], "ConvNet test %": f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f}",
                   "DC published %": r["published"], "diff (points)":
                   None if r["published"] is None else round(100 * r["mean"] - r["published"], 1),
                   "s / seed": r["seconds_per_seed"]} for r in rand]
    md = ["# DC (gradient matching) on this CPU (issue 14)", "",
          f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, JAX "
          f"{machine['jax_backend']}. Rows come from `benchmarks/dc.py` (the command of each run is in dc.json).",
          "", "## DC runs within a wall-clock budget", "",
          "Each run: `kdistill distill --method dc` with `--learn-time-limit` (DC's defaults otherwise: ConvNet width 128, "
          "image lr 0.1, network lr 0.01, 256 real images per class and round, DC's loops per ipc), then "
          "`kdistill evaluate --model convnet` on the kept set under DC's protocol (300 epochs; MNIST augmented), "
          "or DSA's for `--dsa` runs (`--augment dsa --epochs 1000`).",
          "", markdown_table(run_table, list(run_table[0]) if run_table else ["dataset"]), ""]
    for r in runs:
        pts = ", ".join(f"{p['seconds'] / 60:.0f} min: {100 * p['val_accuracy']:.1f}%" for p in r["curve"])
        what = f"{r['dataset']} ipc {r['ipc']}, init {r['init']}" + (", dsa" if r["dsa"] else "")
        md.append(f"- Accuracy against time, {what} (validation: a ConvNet trained {r.get('val_epochs', 300)} epochs "
                  f"on the set, augmentation {r.get('validation_augment', 'none')}, accuracy on held-out training "
                  f"images): {pts or 'no validation ran'}.")
    for r in runs:
        if r["ipc"] > 1:
            md.append(f"- Plainly: at {r['dataset']} ipc {r['ipc']} an iteration ({r['outer_loop']} matching rounds and "
                      f"{(r['outer_loop'] - 1) * r['inner_loop']} network epochs) takes {r['seconds_per_iteration']} s "
                      f"here, so DC's 1000 iterations would take {1000 * r['seconds_per_iteration'] / 3600:.0f} hours "
                      f"on this CPU; the {r['minutes']:g}-minute run did {r['iterations']} of them.")
    md += _init_comparison(runs)
    if prof is not None:
        md += ["", "## Where an iteration's time goes (MNIST, DC's ConvNet, float32, `benchmarks/dc.py profile`)", "",
               f"Load average before {prof['loadavg_before'][0]}, after {prof['loadavg_after'][0]}; `seconds` is "
               "the best of the calls after the first (which compiles).", "",
               markdown_table(prof["rows"], ["what", "first_call_s", "seconds", "note"])]
    md += ["", "## Random real images under DC's protocol", "",
           markdown_table(rand_table, list(rand_table[0]) if rand_table else ["dataset"]), "",
           "Published: DC (arXiv:2006.05929) Table 1; its random baselines are the same ConvNet trained on "
           "random real images. Runs with `--dsa` compare with DSA (arXiv:2102.08259) Table 1."]
    write_results("dc", {"benchmark": "dc", "rows": rows, "machine": machine, "versions": versions()}, "\n".join(md))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run")
    r.add_argument("--dataset", default="mnist")
    r.add_argument("--ipc", type=int, default=1)
    r.add_argument("--minutes", type=float, default=40.0)
    r.add_argument("--seeds", type=int, default=5)
    r.add_argument("--val-every", type=int, default=25)
    r.add_argument("--dsa", action="store_true")
    r.add_argument("--init", default="real")
    r.add_argument("--batch-real", type=int, default=256)
    r.add_argument("--keep", type=Path, default=None)
    q = sub.add_parser("random")
    q.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist"])
    q.add_argument("--ipcs", nargs="+", type=int, default=[1, 10])
    q.add_argument("--seeds", type=int, default=5)
    sub.add_parser("render")
    p = sub.add_parser("profile")
    p.add_argument("--batch-real", type=int, default=256)
    args = ap.parse_args(argv)
    if args.what == "run":
        run(args)
    elif args.what == "random":
        random(args)
    elif args.what == "profile":
        profile(args)
    else:
        render(load_json(RESULTS / "dc.json")["rows"])


if __name__ == "__main__":
    main()
