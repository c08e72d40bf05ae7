"""FRePo (neural feature regression with a model pool, Zhou et al. 2022) and RCIG (convexified implicit
gradients, Loo et al. 2023) on this CPU (issues 30 and 31): the two model-pool methods share FRePo's evaluation
protocol (RCIG's is FRePo's at lr 1e-4), so one script measures both (``--method``, default frepo).

Rows merged into benchmarks/results/<method>.json (a row with the same key is replaced) and rendered to
<method>.md with the machine, seconds and load averages:

- ``run``: one ``kdistill distill --method <method>`` per training seed, each in its own process with
  ``--learn-time-limit`` (its defaults unless ``--extra`` adds flags), then the kept set under DC's protocol
  (``kdistill evaluate --model convnet``) and FRePo's (``--model convnet-frepo``, with and without its
  augmentation; for rcig also RCIG's, FRePo's at lr 1e-4; ``--protocols`` to choose), ``--eval-seeds`` networks
  each; the row holds the mean +- std over the training seeds of each seed's mean, and every number. A seed
  already in the row (same key and ``--extra``, and every requested evaluation under today's augmentation
  and label temperature with at least ``--eval-seeds`` networks) is kept unless ``--redo``, or ``--reuse`` finds
  its run folder; so is a seed whose run folder is gone and whose evaluations differ from today's only by the
  label temperature, with a warning (it has ``convnet/T0.1`` where ``convnet`` is asked for). A row under the
  same key with another ``--extra`` stops the run unless ``--redo``. Seeds are matched by flags, not code version:
  when a default changes, the rows made under the old one should name it in their ``extra``. The row is written
  after every seed. ``--reuse`` evaluates a finished run folder again, keeping the evaluations on record (in
  frepo.json with at least ``--eval-seeds`` networks, or made by ``kdistill evaluate`` with at least
  ``--eval-seeds`` networks and recorded in the run folder's summary.json) made with the same settings (lr, loss, label
  temperature, training length, width, depth and augmentation as ``kdistill evaluate`` with those flags gives
  today), and the distillation's seconds, load and GEMM rate. Every evaluation is made in the run folder, whose
  summary.json records it under its own name (the model plus the settings given that differ from its protocol's:
  ``convnet (label temperature 0.1)``), so one recorded there with fewer networks grows to ``--eval-seeds`` by
  ``kdistill evaluate --add`` (only the missing seeds are trained; all of them if it refuses the record).
  Evaluations made before 2026-12-07 other than a model's own protocol were made on scratch copies and are not
  in the run folders: they are made again when asked for with more networks.
- ``random``: class-balanced random real images under FRePo's protocol, kept in frepo.json for both methods
  (DC's protocol's random rows are in dc.json, measured by ``benchmarks/dc.py random``; they are shown beside
  these).

Usage:
  .venv/bin/python benchmarks/frepo.py run --dataset mnist --ipc 1 --minutes 60 [--seeds 3] [--eval-seeds 2]
        [--tag NAME --extra "--target-batch 256 --lr 0.003"] [--keep runs/bench]
  .venv/bin/python benchmarks/frepo.py random --datasets mnist fashion_mnist --ipcs 1 10 [--seeds 3]
  .venv/bin/python benchmarks/frepo.py profile      # seconds per step by target batch, and per validation
  .venv/bin/python benchmarks/frepo.py render
  .venv/bin/python benchmarks/frepo.py --method rcig run|profile|render ...   # the same for RCIG (rcig.json)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, evaluate_in_run, load_and_gemm, load_json, markdown_table, merged_rows  # noqa: E402
from _common import OLD_TEMPERATURE_MARK, old_temperature, old_temperature_note, write_results  # noqa: E402
from _common import kdistill_cli as _kdistill  # noqa: E402

from kdistill._machine import machine_info, versions  # noqa: E402
from kdistill.evaluate._finite import DEFAULT_LABEL_TEMPERATURE  # noqa: E402

# Published finite ConvNet accuracies (%). FRePo: arXiv:2206.00719 Table 1 as recalled; not confirmed here (the
# stored copy of the paper is its abstract only). DC: DC's README Table 1 (confirmed, benchmarks/dc.py).
# KIP->NN: Table 2 of the anonymous NeurIPS 2021 submission draft of arXiv:2107.13034 (a stored copy; the camera-ready
# table was not found and may differ; benchmarks/notes/finite_protocols.md). RFAD: not confirmed for MNIST/Fashion-MNIST.
PUBLISHED = {
    "FRePo (unconfirmed)": {("mnist", 1): 93.0, ("mnist", 10): 98.6, ("fashion_mnist", 1): 75.6,
                            ("fashion_mnist", 10): 86.2},
    "DC": {("mnist", 1): 91.7, ("mnist", 10): 97.4, ("fashion_mnist", 1): 70.5, ("fashion_mnist", 10): 82.3},
    "KIP->NN (submission draft)": {("mnist", 1): 90.1, ("mnist", 10): 97.5, ("fashion_mnist", 1): 73.8,
                                   ("fashion_mnist", 10): 86.8},
}
# RCIG: as recalled (MNIST, Fashion-MNIST) in issue 31, not confirmed here; CIFAR-10's 53.9 / 69.1 / 73.5 are quoted
# by a later paper's table.
PUBLISHED_RCIG = {"RCIG (unconfirmed)": {("mnist", 1): 94.7, ("mnist", 10): 98.9, ("fashion_mnist", 1): 79.8,
                                         ("fashion_mnist", 10): 88.5}}
METHOD = "frepo"  # set from --method
TITLES = {"frepo": "FRePo", "rcig": "RCIG"}
RUN_KEY = ("kind", "dataset", "ipc", "minutes", "tag")
RANDOM_KEY = ("kind", "dataset", "ipc", "model", "augment")
PROFILE_KEY = ("kind", "what")
# evaluation name -> (kdistill evaluate flags, column): DC's protocol, FRePo's, and FRePo's without augmentation
PROTOCOLS = {"convnet": (["--model", "convnet"], "DC's protocol %"),
             "convnet-frepo": (["--model", "convnet-frepo"], "FRePo's protocol %"),
             "convnet-frepo/none": (["--model", "convnet-frepo", "--augment", "none"], "FRePo's, no augmentation %"),
             "convnet-frepo/lr1e-4": (["--model", "convnet-frepo", "--lr", "1e-4"], "RCIG's protocol %"),
             # DC's protocol with one setting changed (``--protocols`` names them; shown in their own table): which
             # of its differences from FRePo's and RCIG's protocols costs a set with learned labels its accuracy
             "convnet/none": (["--model", "convnet", "--augment", "none"], "no augmentation"),
             "convnet/frepo-aug": (["--model", "convnet", "--augment", "frepo"], "FRePo's augmentation"),
             "convnet/mse": (["--model", "convnet", "--loss", "mse"], "MSE on the stored labels"),
             "convnet/T1": (["--model", "convnet", "--label-temperature", "1"], "softmax(labels / 1)"),
             "convnet/T0.3": (["--model", "convnet", "--label-temperature", "0.3"], "softmax(labels / 0.3)"),
             # the default label temperature until 2026-12-07 (evaluations made then were moved here from "convnet")
             "convnet/T0.1": (["--model", "convnet", "--label-temperature", "0.1"], "softmax(labels / 0.1)"),
             "convnet/1000ep": (["--model", "convnet", "--epochs", "1000"], "1000 epochs, DSA's and DM's")}
VARIANTS = [m for m in PROTOCOLS if m.startswith("convnet/")]
"""DC's protocol, one setting changed at a time (not in the main table)."""
OWN = {"frepo": ["convnet", "convnet-frepo", "convnet-frepo/none"],
       "rcig": ["convnet", "convnet-frepo/lr1e-4", "convnet-frepo/none"]}
"""The evaluations each method's run makes by default."""


def _merge(row: dict, key: tuple[str, ...], name: str | None = None) -> None:
    name = name or METHOD
    rows = merged_rows(name, row, key)
    if name == METHOD:
        render(rows)


def _rows(name: str | None = None) -> list[dict]:
    path = RESULTS / f"{name or METHOD}.json"
    return load_json(path).get("rows", []) if path.exists() else []


def _mean_std(values) -> dict:
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "std": float(v.std())}


def _augment(flags: list[str], dataset: str) -> str:
    """The augmentation ``kdistill evaluate`` resolves for these flags on this dataset (a recorded evaluation
    under another, such as convnet-frepo's DSA stand-in before FRePo's own, is redone by --reuse)."""
    from kdistill.evaluate import resolve_augment

    given = flags[flags.index("--augment") + 1] if "--augment" in flags else None
    return resolve_augment(given, dataset, flags[flags.index("--model") + 1])[0]


def _current(done: dict, flags: list[str], dataset: str) -> bool:
    """Whether an evaluation on record was made as ``kdistill evaluate <flags>`` trains today: the same augmentation
    and, for learned labels under cross-entropy, the label temperature of today's default unless the flags set it."""
    return done.get("augment") == _augment(flags, dataset) and not old_temperature(done.get("label_mode"),
                                                                                   " ".join(flags))


_FLAG_SETTINGS = {"--lr": ("lr", float), "--loss": ("loss", str), "--label-temperature": ("label_temperature", float),
                  "--epochs": ("epochs", int)}


def _given(flags: list[str]) -> dict:
    """The training settings these ``kdistill evaluate`` flags set (lr, loss, label temperature, epochs)."""
    return {name: cast(flags[flags.index(flag) + 1]) for flag, (name, cast) in _FLAG_SETTINGS.items() if flag in flags}


def _same_settings(done: dict, flags: list[str], dataset: str) -> bool:
    """Whether an evaluation recorded in a run folder's summary.json (the last ``kdistill evaluate`` of its model)
    was made with these flags: learning rate, loss, label temperature, epochs (when set) and augmentation as
    ``kdistill evaluate <flags>`` would train today."""
    from kdistill.evaluate import finite_settings, resolve_epochs

    model = flags[flags.index("--model") + 1]
    want = resolve_epochs(finite_settings(model, **_given(flags)), done["m"]).as_dict()
    got = done["settings"]
    # the label temperature matters only to learned labels under cross-entropy
    softmax = want["loss"] == "xent" and done.get("label_mode", "").startswith("softmax(")
    return (got["augment"] == _augment(flags, dataset) and done["epochs"] == want["epochs"]
            and all(got[k] == want[k] for k in ("lr", "loss", "width", "depth", *(("label_temperature",) * softmax))))


def _record_key(flags: list[str], dataset: str) -> str:
    """The name under which ``kdistill evaluate <flags>`` records its result in a run folder's summary.json."""
    from kdistill.evaluate import finite_record_key

    augment = {"augment": flags[flags.index("--augment") + 1]} if "--augment" in flags else {}
    return finite_record_key(flags[flags.index("--model") + 1], dataset, **_given(flags), **augment)


def _temperature_variants(model: str) -> list[str]:
    """The evaluations of PROTOCOLS that are ``model``'s with the label temperature set (``convnet`` ->
    ``convnet/T1``, ``convnet/T0.3``, ``convnet/T0.1``)."""
    flags = PROTOCOLS[model][0]
    return [name for name, (theirs, _) in PROTOCOLS.items() if "--label-temperature" not in flags
            and theirs[-2:-1] == ["--label-temperature"] and theirs[:-2] == flags]


def run(args) -> None:
    if args.seeds < 1 or args.eval_seeds < 1:
        raise SystemExit("--seeds and --eval-seeds must be at least 1")
    extra = shlex.split(args.extra)
    base = Path(tempfile.mkdtemp(prefix=f"kdistill-{METHOD}-")) if args.keep is None else args.keep
    wanted = args.protocols or OWN[METHOD]

    def complete(e: dict, model: str) -> bool:  # a seed's evaluation with at least --eval-seeds networks
        return len(e.get(model, {}).get("accuracies", ())) >= args.eval_seeds

    same_key = [r for r in _rows() if r["kind"] == "run" and all(r.get(k) == v for k, v in (
        ("dataset", args.dataset), ("ipc", args.ipc), ("minutes", args.minutes), ("tag", args.tag)))]
    if same_key and shlex.split(same_key[0].get("extra", "")) != extra and not args.redo:
        raise SystemExit(f"the row {args.dataset} ipc {args.ipc} {args.minutes:g} min tag {args.tag!r} on record was "
                         f"made with --extra {same_key[0].get('extra', '')!r}, not {args.extra!r}: use another --tag, "
                         "or --redo to replace that row")
    on_record = same_key[0] if same_key and not args.redo else {"seeds": []}
    seeds, changed = [], False  # changed: a seed was distilled or evaluated here
    for seed in range(args.seeds):
        out = base / f"{METHOD}_{args.dataset}_ipc{args.ipc}_{args.minutes:g}min_{args.tag}_seed{seed}"
        # kept: a seed on record evaluated by every requested protocol, as it is today, with enough networks
        # (matched by flags, not by code version: after a default changes, the old row's --extra should name it)
        kept = next((e for e in on_record["seeds"] if e["seed"] == seed and all(
            complete(e, model) and _current(e[model], PROTOCOLS[model][0], args.dataset) for model in wanted)), None)
        # a seed whose run folder is gone and whose only stale evaluations were made at an earlier default label
        # temperature (each with an evaluation at a set temperature, such as convnet/T0.1) is kept, not distilled
        # again: it cannot be re-evaluated
        stale = next((e for e in on_record["seeds"] if kept is None and e["seed"] == seed
                      and not (out / "distilled.npz").exists() and all(
                          complete(e, model) and _current(e[model], PROTOCOLS[model][0], args.dataset)
                          or any(complete(e, v) for v in _temperature_variants(model)) for model in wanted)), None)
        if stale is not None:
            print(f"seed {seed}: kept from {METHOD}.json without an evaluation at today's label temperature for "
                  f"{[m for m in wanted if not complete(stale, m)]}: its run folder {out} is gone (--redo distills it "
                  "again)", flush=True)
            kept = stale
        if kept is not None and not (args.reuse and (out / "distilled.npz").exists()):
            if stale is None:
                print(f"seed {seed}: kept from {METHOD}.json (--redo to run it again)", flush=True)
            seeds.append(kept)
            continue
        (load_before, gemm), changed = load_and_gemm(), True
        cmd = ["distill", "--dataset", args.dataset, "--method", METHOD, "--ipc", str(args.ipc), "--seed", str(seed),
               "--learn-time-limit", str(int(args.minutes * 60)), "--no-full", "--no-baseline", "--out", str(out),
               "--force", *extra]
        if args.reuse and (out / "distilled.npz").exists():  # evaluate a finished run again (same command)
            seconds, load_before, gemm = None, None, None
        else:
            seconds, _ = _kdistill(*cmd)
        summary = json.loads((out / "summary.json").read_text())
        history = json.loads((out / "history.json").read_text())
        info = summary["method_info"]
        entry = {"seed": seed, "steps": info["steps_run"], "best_step": info["best_step"],
                 "krr_accuracy": summary["test_accuracy"], "seconds_distill": round(summary["seconds"]["distill"], 1),
                 "process_seconds": None if seconds is None else round(seconds, 1),
                 "loadavg_before": None if load_before is None else [round(v, 2) for v in load_before],
                 "gemm_gflops_before": gemm,
                 "val": list(zip(history.get("val_step", []), history.get("val_accuracy", []))),
                 "command": "kdistill " + " ".join(cmd)}
        old = next((e for r in _rows() if r["kind"] == "run" and all(r.get(k) == v for k, v in (
            ("dataset", args.dataset), ("ipc", args.ipc), ("minutes", args.minutes), ("tag", args.tag)))
            for e in r["seeds"] if e["seed"] == seed), {}) if args.reuse and seconds is None else {}
        entry.update({k: v for k, v in old.items() if "@" in k})  # evaluations superseded earlier
        entry.update({k: v for k, v in old.items() if k in PROTOCOLS and k not in wanted})  # not asked for: kept
        for k in ("process_seconds", "loadavg_before", "gemm_gflops_before"):  # --reuse: the distillation's, on record
            if entry[k] is None and old.get(k) is not None:
                entry[k] = old[k]
        evaluated = False
        recorded = summary.get("finite", {}) if args.reuse and seconds is None else {}
        for model, (flags, _) in PROTOCOLS.items():
            if model not in (args.protocols or OWN[METHOD]):
                continue
            current = model in old and _current(old[model], flags, args.dataset)
            if current and len(old[model]["accuracies"]) >= args.eval_seeds:
                entry[model] = old[model]  # --reuse: this evaluation, under today's protocol, is on record
                continue
            done = recorded.get(_record_key(flags, args.dataset))
            if done and _same_settings(done, flags, args.dataset) \
                    and done["seeds"] >= args.eval_seeds:  # --reuse: made by `kdistill evaluate` in the run folder
                entry[model] = {"mean": done["mean"], "std": done["std"], "accuracies": done["accuracies"],
                                "epochs": done["epochs"], "augment": done["settings"]["augment"],
                                "label_mode": done["label_mode"],
                                "seconds": round(done["seconds_per_seed"] * done["seeds"], 1)}
                continue
            if model in old and not current:  # made under another augmentation or label temperature: superseded
                if old[model]["augment"] != _augment(flags, args.dataset):
                    entry[f"{model}@{old[model]['augment']}"] = old[model]
                else:  # filed as the evaluation at that temperature (convnet/T0.1), else by its label mode
                    at = [v for v in _temperature_variants(model) if not old_temperature(
                        old[model]["label_mode"], " ".join(PROTOCOLS[v][0]))]
                    entry.setdefault(at[0] if at else f"{model}@{old[model]['label_mode']}", old[model])
            evaluated = True
            # in the run folder (its record of this evaluation, if any, grows by the missing networks)
            eval_s, res, _ = evaluate_in_run(out, *flags, seeds=args.eval_seeds)
            entry[model] = {"mean": res["mean"], "std": res["std"], "accuracies": res["accuracies"],
                            "epochs": res["epochs"], "augment": res["settings"]["augment"],
                            "label_mode": res["label_mode"], "seconds": round(eval_s, 1)}
        if evaluated or not old:
            if old.get("loadavg_after") is not None:  # --reuse: the load after the run's first evaluations is kept
                entry["loadavg_after_first"] = old.get("loadavg_after_first", old["loadavg_after"])
            entry["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
        else:  # --reuse with every evaluation on record: so are the loads
            entry.update({k: old[k] for k in ("loadavg_after", "loadavg_after_first") if k in old})
        print(json.dumps({k: v for k, v in entry.items() if k != "val"}), flush=True)
        seeds.append(entry)
        # written after every seed, so an interrupted run keeps the seeds it finished (later seeds of an earlier
        # row with this key are kept too until this run reaches them)
        _merge(_run_row(args, seeds + [e for e in on_record["seeds"] if e["seed"] > seed], on_record), RUN_KEY)
    # seeds on record past --seeds stay in the row
    _merge(_run_row(args, seeds + [e for e in on_record["seeds"] if e["seed"] >= args.seeds], on_record), RUN_KEY)
    if changed and "note" in on_record:
        print(f"the row's note, written for seed(s) {_note_seeds(on_record)}, is kept: edit it in {METHOD}.json "
              "if it should describe the new seeds too", flush=True)


def _note_seeds(row: dict) -> list[int]:
    """The seeds a row's note was written for: those it names, else the row's."""
    return row.get("note_seeds", [e["seed"] for e in row["seeds"]])


def _run_row(args, seeds: list[dict], on_record: dict) -> dict:
    """The row of ``seeds``; the note of the row on record is kept, with the seeds it was written for (seeds run
    again or added later may not be described by it)."""
    note = {"note": on_record["note"], "note_seeds": _note_seeds(on_record)} if "note" in on_record else {}
    return {"kind": "run", "dataset": args.dataset, "ipc": args.ipc, "minutes": args.minutes, "tag": args.tag,
            "extra": shlex.join(shlex.split(args.extra)), "seeds": seeds,
            "krr": _mean_std([s["krr_accuracy"] for s in seeds]),
            **{model: _mean_std([s[model]["mean"] for s in seeds]) for model in PROTOCOLS
               if all(model in s for s in seeds)},  # (--protocols may leave one out)
            **note, "machine": machine_info(), "versions": versions()}


class _RandomRows:
    def __init__(self, model: str):
        self.model = model

    def add(self, r: dict) -> None:
        _merge({"kind": "random", "dataset": r["dataset"], "ipc": r["ipc"], "model": self.model,
                "augment": r["augment"], "epochs": r["epochs"], "seeds": r["seeds"], "mean": r["mean"],
                "std": r["std"], "accuracies": r["accuracies"], "seconds_per_seed": round(r["seconds_per_seed"], 1),
                "loadavg": [round(v, 2) for v in os.getloadavg()], "machine": machine_info()}, RANDOM_KEY, "frepo")


def random(args) -> None:
    from finite import random_real

    random_real(_RandomRows("convnet-frepo"), args.datasets, args.ipcs, args.seeds, "convnet-frepo", None, None,
                "auto")


def profile(args) -> None:
    """Median seconds of one step of the method (defaults but the target batch and, for rcig, ``--cg-steps``) on
    MNIST at ``--ipc`` after two warm-up steps, the target features alone, and one validation (unless
    ``--no-validation``)."""
    import jax
    import jax.numpy as jnp

    from kdistill import nets
    from kdistill.data import load
    from kdistill.methods._frepo import frepo_method
    from kdistill.methods._rcig import RCIGSettings, rcig_method
    from kdistill.methods.iterative import Batch

    ds = load("mnist")
    x = ds.x_train.astype(np.float32)
    x = (x - x.mean()) / x.std()
    y = np.eye(10, dtype=np.float32)[ds.y_train] - 0.1
    idx = np.concatenate([np.flatnonzero(ds.y_train == c)[:args.ipc] for c in range(10)])
    cg = {"inner_steps": args.cg_steps, "hvp_steps": args.cg_steps} if METHOD == "rcig" and args.cg_steps else {}
    build = {"frepo": lambda: frepo_method(num_classes=10, input_shape=x.shape[1:], steps=1000),
             "rcig": lambda: rcig_method(num_classes=10, input_shape=x.shape[1:], **cg)}[METHOD]
    cg_note = f", {args.cg_steps or RCIGSettings().inner_steps} CG steps per solve" if METHOD == "rcig" else ""
    rng = np.random.default_rng(0)

    def median_seconds(fn, repeats=5):
        times = []
        for r in range(repeats + 2):
            t = time.perf_counter()
            jax.block_until_ready(fn(r))
            times.append(time.perf_counter() - t)
        return float(np.median(times[2:]))

    for batch in args.batches:
        load_before, gemm = load_and_gemm()
        method = build()
        box = {"state": method.init(x[idx], y[idx])}

        def one_step(r):
            b = rng.choice(len(x), batch, replace=False)
            box["state"], _ = method.step(box["state"], Batch(x[b], y[b], np.ones(batch, np.float32), b, r))
            return box["state"]["params"]["x"]

        step_s = median_seconds(one_step)
        net = nets.ConvNet(width=128, depth=3, norm="none", widen=2)
        params = jax.tree.map(lambda a: a[0], box["state"]["pool"]["params"])
        features = jax.jit(net.features)
        xb = jnp.asarray(x[:batch])
        feat_s = median_seconds(lambda r: features(params, xb))
        _merge({"kind": "profile", "what": f"step, ipc {args.ipc}, target batch {batch}{cg_note}",
                "seconds": round(step_s, 3),
                "target_features_seconds": round(feat_s, 3), "loadavg_before": [round(v, 2) for v in load_before],
                "gemm_gflops_before": gemm,
                "machine": machine_info()}, PROFILE_KEY)
    if args.no_validation:
        return
    load_before = os.getloadavg()
    x_s, y_s = method.support(box["state"])
    t = time.perf_counter()
    method.validate(x_s, y_s, x[-5000:], ds.y_train[-5000:])
    first = time.perf_counter() - t
    t = time.perf_counter()
    method.validate(x_s, y_s, x[-5000:], ds.y_train[-5000:])
    _merge({"kind": "profile", "what": f"validation, ipc {args.ipc} (1000 Adam steps, 5000 held-out images)",
            "seconds": round(time.perf_counter() - t, 2), "first_call_seconds": round(first, 2),
            "loadavg_before": [round(v, 2) for v in load_before], "machine": machine_info()}, PROFILE_KEY)


def _dc_random() -> dict:
    path = RESULTS / "dc.json"
    rows = load_json(path).get("rows", []) if path.exists() else []
    return {(r["dataset"], r["ipc"]): r for r in rows if r.get("kind") == "random"}


def _pct(d: dict | None, unit: str = "") -> str:
    if not d:
        return ""
    if len(d.get("accuracies", ())) == 1:  # one network: no spread to show
        return f"{100 * d['mean']:.2f}{unit} (1 network)"
    return f"{100 * d['mean']:.2f} ± {100 * d['std']:.2f}{unit}"


def _mark(d: dict | None, model: str) -> str:
    """`` †`` for one seed's evaluation made at an earlier default label temperature than ``model``'s flags give
    today (see :func:`_common.old_temperature_note`), else empty."""
    return f" {OLD_TEMPERATURE_MARK}" if d and old_temperature(d.get("label_mode"), " ".join(PROTOCOLS[model][0])) \
        else ""


def _protocol_cell(r: dict, model: str) -> str:
    """The main table's cell of ``model`` for a row: one seed's mean ± std over its networks, or with several seeds
    the mean ± std of their means. DC's protocol not yet evaluated at today's label temperature shows the
    evaluation at T 0.1 (``convnet/T0.1``), marked."""
    one = r["seeds"][0] if len(r["seeds"]) == 1 else None
    d = one.get(model) if one else r.get(model)
    if d is None and model == "convnet":
        old = one.get("convnet/T0.1") if one else r.get("convnet/T0.1")
        return f"{_pct(old)} {OLD_TEMPERATURE_MARK}" if old else ""
    return _pct(d) + (f" {OLD_TEMPERATURE_MARK}" if d and any(_mark(s.get(model), model) for s in r["seeds"]) else "")


def render(rows: list[dict] | None = None) -> None:
    if rows is None:
        rows = _rows()
    runs = sorted((r for r in rows if r["kind"] == "run"), key=lambda r: (r["dataset"], r["ipc"], r["minutes"], r["tag"]))
    # random real under FRePo's protocol as it is today (a row measured under an earlier augmentation is listed
    # below the table, not beside the sets)
    randoms = [r for r in (rows if METHOD == "frepo" else _rows("frepo")) if r["kind"] == "random"]
    current = {(r["dataset"], r["ipc"]): r for r in randoms
               if r["augment"] == _augment(["--model", "convnet-frepo"], r["dataset"])}
    dc_random = _dc_random()
    published = {**(PUBLISHED_RCIG if METHOD == "rcig" else {}), **PUBLISHED}
    table = []
    for r in runs:
        key = (r["dataset"], r["ipc"])
        table.append({
            "dataset": r["dataset"], "ipc": r["ipc"], "minutes": r["minutes"], "tag": r["tag"],
            "seeds": len(r["seeds"]), "steps": "/".join(str(s["steps"]) for s in r["seeds"]),
            "KRR %": f"{100 * r['krr']['mean']:.2f}" if len(r["seeds"]) == 1 else _pct(r["krr"]),
            "random real, DC's %": _pct(dc_random.get(key)), "random real, FRePo's %": _pct(current.get(key)),
            # one set: the std is over its evaluation networks; several: over the sets' means
            **{col: _protocol_cell(r, model) for model, (_, col) in PROTOCOLS.items()},
            **{name: pub.get(key, "") for name, pub in published.items()},
        })
    shown = [PROTOCOLS[m][1] for m in PROTOCOLS
             if m not in VARIANTS and (m in OWN[METHOD] or any(m in r for r in runs))]
    cols = ["dataset", "ipc", "minutes", "tag", "seeds", "steps", "KRR %", "DC's protocol %", "random real, DC's %",
            *[c for c in shown if c != "DC's protocol %"], "random real, FRePo's %", *published]
    lines = [f"# {TITLES[METHOD]} on a 2-core CPU (issue {30 if METHOD == 'frepo' else 31})", "",
             f"Finite ConvNet test accuracy of `kdistill distill --method {METHOD}` sets: mean ± std over the training "
             "seeds of each set's mean over its evaluation networks (with one training seed: mean ± std over that set's "
             "evaluation networks). DC's protocol: `kdistill evaluate --model "
             f"convnet` (DC's ConvNet, cross-entropy on softmax(labels / {DEFAULT_LABEL_TEMPERATURE:g}), DC's "
             "augmentation on MNIST); FRePo's: "
             "`--model convnet-frepo` (module docstring of kdistill.evaluate). KRR: the run's rf-convnet kernel. "
             "Random real under DC's protocol from dc.json (5 seeds). Published numbers marked unconfirmed could "
             "not be checked against the papers here; DC's are its authors' README table; KIP->NN's are Table 2 of "
             "the NeurIPS 2021 submission draft of arXiv:2107.13034 (the camera-ready table was not found here and "
             "may differ).", "",
             markdown_table(table, cols), ""]
    note_at = len(lines)  # the footnote of the cells marked in any table goes here
    for r in runs:
        lines.append(f"## {r['dataset']} ipc {r['ipc']}, {r['minutes']:g} min, {r['tag']}")
        lines.append("")
        if r.get("extra"):
            lines += [f"Flags beyond the defaults: `{r['extra']}`.", ""]
        if r.get("note"):
            written_for = _note_seeds(r)
            lines += [r["note"] if written_for == [s["seed"] for s in r["seeds"]] else
                      f"(Note written for seed(s) {', '.join(map(str, written_for))}.) {r['note']}", ""]
        for s in r["seeds"]:
            lines.append(f"- seed {s['seed']}: `{s['command']}`: {s['steps']} steps (best {s['best_step']}), "
                         f"{s['seconds_distill']} s, load before {s['loadavg_before'] or 'n/a (evaluated with --reuse)'}"
                         + (f", float32 GEMM {s['gemm_gflops_before']} GFLOP/s before" if s.get("gemm_gflops_before")
                            else "") + ", after the "
                         f"evaluations {s['loadavg_after']}"
                         + (f" (after the run's first evaluations {s['loadavg_after_first']})"
                            if s.get("loadavg_after_first") else "") + "; KRR "
                         f"{100 * s['krr_accuracy']:.2f}%; "
                         + "; ".join(f"{m} {_pct(s[m], '%')} ({s[m]['augment']}, {s[m]['epochs']} epochs, "
                                     f"{s[m]['accuracies']})" for m in PROTOCOLS if m in s)
                         + "".join(f"; superseded: {m} {_pct(s[m], '%')} ({s[m]['accuracies']})" for m in s if "@" in m)
                         + f"; validation {[tuple(v) for v in s['val']]}")
        lines.append("")
    variants = [(r, s) for r in runs for s in r["seeds"] if any(m in s for m in VARIANTS)]
    if variants:
        used = [m for m in VARIANTS if any(m in s for _, s in variants)]
        head = {m: f"{PROTOCOLS[m][1]} (`{' '.join(PROTOCOLS[m][0][2:])}`) %" for m in used}  # label, its flags
        lines += ["## DC's protocol, one setting changed", "",
                  "The same kept sets under `kdistill evaluate --model convnet` with one flag changed (`run ... "
                  "--protocols convnet convnet-frepo/lr1e-4 " + " ".join(used) + " --reuse`): mean ± std over the "
                  "evaluation networks. Beside them the set's "
                  "DC's protocol and RCIG's (FRePo's network and schedule at lr 1e-4, MSE on the stored labels).", "",
                  markdown_table([{"set": f"{r['dataset']} ipc {r['ipc']}, {r['minutes']:g} min, {r['tag']}, seed "
                                   f"{s['seed']}", "DC's protocol %": _pct(s.get("convnet")),
                                   **{head[m]: _pct(s.get(m)) + _mark(s.get(m), m) for m in used},
                                   "RCIG's protocol %": _pct(s.get("convnet-frepo/lr1e-4"))} for r, s in variants],
                                 ["set", "DC's protocol %", *head.values(), "RCIG's protocol %"]), ""]
    profiles = [r for r in rows if r["kind"] == "profile"]
    if profiles:
        lines += [f"## Where the time goes (`benchmarks/frepo.py --method {METHOD} profile`, MNIST, default network)", "",
                  "float32 GEMM GFLOP/s before each row (`gemm_gflops_before`, recorded since 2026-12-06) tells "
                  "machines apart: the project's 2-core machines have differed about 2x in speed between sessions.", "",
                  markdown_table(profiles, ["what", "seconds", "target_features_seconds", "first_call_seconds",
                                            "loadavg_before", "gemm_gflops_before"]), ""]
    if randoms:
        lines += ["## Random real images under FRePo's protocol", "",
                  markdown_table([{"dataset": v["dataset"], "ipc": v["ipc"], "mean %": _pct(v), "seeds": v["seeds"],
                                   "augment": v["augment"], "epochs": v["epochs"], "s per seed": v["seconds_per_seed"],
                                   "load": v["loadavg"]}
                                  for v in sorted(randoms, key=lambda v: (v["dataset"], v["ipc"], v["augment"]))],
                                 ["dataset", "ipc", "mean %", "seeds", "augment", "epochs", "s per seed", "load"]), ""]
    if any(OLD_TEMPERATURE_MARK in line for line in lines):
        lines[note_at:note_at] = [
            old_temperature_note() + " In the first table such a cell is the row's `convnet/T0.1` evaluation, shown "
            "where not every seed has one at today's temperature; `run` with the row's flags, `--protocols convnet` "
            "and `--reuse` re-evaluates the seeds whose run folders are kept.", ""]
    write_results(METHOD, {"rows": rows}, "\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=sorted(TITLES), default="frepo")
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
    r.add_argument("--protocols", nargs="+", default=None, choices=list(PROTOCOLS),
                   help="the evaluations to run (default: the method's three, OWN; FRePo's protocol takes about 17 "
                        "minutes per network at ipc 10 here)")
    r.add_argument("--redo", action="store_true", help="replace the row on record under this key (dataset, ipc, "
                   "minutes, tag): its seeds are distilled again; without it a seed on record with the same --extra "
                   "and evaluations is kept (with --reuse: unless its run folder under --keep holds its set), and "
                   "a row with another --extra is an error")
    r.add_argument("--reuse", action="store_true", help="a seed whose run folder under --keep holds a finished set "
                   "is evaluated, not distilled again (its distillation's seconds, load and GEMM rate are those "
                   "on record, if any)")
    q = sub.add_parser("random")
    q.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist"])
    q.add_argument("--ipcs", nargs="+", type=int, default=[1, 10])
    q.add_argument("--seeds", type=int, default=3)
    f = sub.add_parser("profile")
    f.add_argument("--batches", nargs="+", type=int, default=[256, 1024])
    f.add_argument("--ipc", type=int, default=1)
    f.add_argument("--cg-steps", type=int, default=0,
                   help="rcig: conjugate-gradient steps of both solves (0: the defaults)")
    f.add_argument("--no-validation", action="store_true", help="time the steps only")
    sub.add_parser("render")
    args = p.parse_args()
    global METHOD
    METHOD = args.method
    {"run": run, "random": random, "profile": profile, "render": lambda a: render()}[args.cmd](args)


if __name__ == "__main__":
    main()
