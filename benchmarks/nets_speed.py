"""Speed of kdistill's finite ConvNets on this CPU, before and after ``kdistill.nets.conv3x3``'s formulations.

Rows (float32, random 28x28x1 images, 10 classes):

- ``sgd_step``: one SGD step (forward, backward, ``optax.chain(add_decayed_weights(5e-4), sgd(0.01,
  momentum=0.9))`` update) of DC's ConvNet (width 128, depth 3, instance norm, batch 256) and of KIP's ConvNet
  (stem conv, depth 3, no norm, NTK parameterisation; width 256 at batch 256, width 1024 at ``--kip1024-batch``,
  32 by default: at batch 256 one step is about 4 TFLOP, minutes on 2 cores);
- ``dc_match_round``: one of DC's gradient-matching rounds on 10 classes at ipc 1 and 10 (each class's real
  batch of 256 through DC's ConvNet, forward and backward, and the double backward of the matching distance on
  the synthetic side); a DC iteration at ipc 10 is 10 such rounds plus 500 training steps on the 100 images;
- ``rfad_features`` / ``rfad_gradient``: images per second through the random networks of RFAD's default kernel
  (``rf-convnet:models=16,width=64,depth=3,stem=0``, 256 images): the features, and the gradient of the sum of
  their squares with respect to the images (what an RFAD step differentiates).

Each row is timed with ``formulation="xla"`` (``lax.conv_general_dilated`` and XLA's own gradients: the code
before ``kdistill.nets``) and ``"auto"`` (the default now), compiled ahead of time, then timed in interleaved
rounds (median), so that a change of load hits both alike. FLOP counts are the 3x3 convolutions' multiply-adds
x 2 (x 3 for a step: forward, input and weight gradients; the first layer's input gradient is counted though
not needed), and each rate is given as a fraction of this machine's float32 GEMM rate (a jitted ``jnp.dot``
of two 2048 x 2048 matrices) measured at the start and the end of the same run.

PyTorch: when a PyTorch environment is beside the project (``make torch-env`` builds ``.venv-torch``; or
``--torch PYTHON``), each ``sgd_step`` row also times the same network's step in PyTorch
(``benchmarks/torch_nets.py``, eager, in a process of its own started with ``--serve``): one PyTorch step after
the ``xla`` and ``auto`` calls of every round, so that all three share a round's load (the PyTorch process waits
on its stdin while JAX runs, and JAX waits for its answer). ``torch_s`` is its median and ``auto_vs_torch`` =
``torch_s / auto_s`` (above 1: kdistill faster); the two networks' parameter counts must agree. Without the
environment those columns say n/a.

Usage:  .venv/bin/python benchmarks/nets_speed.py [--rounds 3] [--kip1024-batch 32] [--skip-1024]
                                                  [--only sgd_step,dc_match_round,rfad] [--torch PYTHON]
Writes benchmarks/results/nets_speed.json and nets_speed.md: the whole file, except that with ``--only`` the rows
of the parts left out are carried over from the file's previous contents (each such row keeps the date, command
and GEMM rate of the run that measured it, and the table says which rows those are).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, gemm_gflops, load_json, markdown_table, write_results  # noqa: E402
from rfad_speed import convnet_flops  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from kdistill._machine import machine_info, versions  # noqa: E402
from kdistill.evaluate import make_model  # noqa: E402
from kdistill.kernels import from_spec  # noqa: E402

FORMULATIONS = ("xla", "auto")
RFAD_SPEC = "rf-convnet:models=16,width=64,depth=3,stem=0"
PARTS = ("sgd_step", "dc_match_round", "rfad")  # --only's names; "rfad" is the rfad_features and rfad_gradient rows
REPO = Path(__file__).resolve().parent.parent
TORCH_NETS = Path(__file__).resolve().parent / "torch_nets.py"
DEFAULT_TORCH = REPO / ".venv-torch" / "bin" / "python"  # what `make torch-env` builds


def conv_gflop(width: int, depth: int, stem: bool) -> float:
    """GFLOP of one 28x28x1 image's 3x3 convolutions (forward)."""
    return convnet_flops(width, depth, stem=int(stem)) / 1e9


def use(formulation: str) -> None:
    """Point every network at ``formulation`` (``kdistill.nets.default_formulation``, read at trace time) and
    drop JAX's caches."""
    os.environ["KDISTILL_CONV3X3"] = formulation
    jax.clear_caches()


def sgd_step(model_name: str, width: int, batch: int):
    """A compiled SGD step ``(params, opt_state, x, y) -> (params, opt_state, loss)`` and its arguments."""
    net = make_model(model_name, width=width)
    params = net.init(jax.random.key(0), (28, 28, 1), 10)
    opt = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.01, momentum=0.9))
    state = opt.init(params)
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((batch, 28, 28, 1), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, 10, batch))

    def loss(p, x_, y_):
        return optax.softmax_cross_entropy_with_integer_labels(net.apply(p, x_), y_).mean()

    def step(p, s, x_, y_):
        value, grads = jax.value_and_grad(loss)(p, x_, y_)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    args = (params, state, x, y)
    return jax.jit(step).lower(*args).compile(), args


def param_count(params) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(params)))


class TorchNet:
    """One network of ``benchmarks/torch_nets.py`` in a process of its own (``--serve``) run by ``python``: built
    and warmed up when started (``info``: its description, parameter count, torch version, threads), then one SGD
    step per :meth:`step`, which returns the step's seconds as the process measured them."""

    def __init__(self, python: str, name: str, width: int, batch: int):
        self._proc = subprocess.Popen([python, str(TORCH_NETS), "--serve", json.dumps([name, width, batch])],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._read()

    def _read(self) -> dict:
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{TORCH_NETS.name} under {self._proc.args[0]} exited with status "
                               f"{self._proc.wait()} (its error is above); rebuild the environment with "
                               "`make torch-env`, or leave PyTorch out with --torch ''")
        return json.loads(line)

    def step(self) -> float:
        self._proc.stdin.write("step\n")
        self._proc.stdin.flush()
        return float(self._read()["seconds"])

    def close(self) -> None:
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _part(row: dict) -> str:
    return "rfad" if row["what"].startswith("rfad") else row["what"]


def carried_rows(parts: list[str]) -> list[dict]:
    """The rows of the parts not in ``parts`` from the previous results file (none if there is none), each with
    ``from_run``: the date, command and start GEMM rate of the run that measured it."""
    path = RESULTS / "nets_speed.json"
    if not path.exists():
        return []
    old = load_json(path)
    run = {"date": old.get("date"), "command": old.get("command", "").strip(),
           "gemm_gflop_per_s": old.get("gemm_gflop_per_s", {}).get("start")}
    return [{**r, "from_run": r.get("from_run", run)} for r in old.get("rows", []) if _part(r) not in parts]


def rfad_fns(images: int):
    kernel = from_spec(RFAD_SPEC)
    x = jnp.asarray(np.random.default_rng(2).standard_normal((images, 28, 28, 1), dtype=np.float32))
    features = jax.jit(lambda x_: kernel.features(x_)).lower(x).compile()
    gradient = jax.jit(jax.grad(lambda x_: jnp.sum(kernel.features(x_) ** 2))).lower(x).compile()
    return features, gradient, (x,)


def dc_round(ipc: int, batch_real: int = 256):
    """One DC matching round on MNIST-sized images at ``ipc``: for 10 classes, the gradient of DC's ConvNet on
    a real batch of 256, the synthetic images' gradient and the double backward of the matching distance
    (``kdistill.methods._dc._group_match``, DC's default, what ``benchmarks/dc.py profile`` times)."""
    from kdistill.methods import _dc

    k = 10
    net = make_model("convnet")
    params = net.init(jax.random.key(0), (28, 28, 1), k)
    rng = np.random.default_rng(3)
    real = jnp.asarray(rng.standard_normal((k, batch_real, 28, 28, 1), dtype=np.float32))
    mask = jnp.ones((k, batch_real), jnp.float32)
    xs = real[:, :ipc]
    eye = jnp.eye(k, dtype=jnp.float32)
    keys = jax.vmap(lambda c: jax.random.fold_in(jax.random.key(1), c))(jnp.arange(k))
    args = (params, real, mask, xs, eye, keys)
    fn = jax.jit(functools.partial(_dc._group_match, net=net, families=None)).lower(*args).compile()
    return fn, args


def timed(fn, args) -> float:
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kip1024-batch", type=int, default=32)
    ap.add_argument("--skip-1024", action="store_true", help="leave out KIP's ConvNet at width 1024")
    ap.add_argument("--only", default=",".join(PARTS),
                    help=f"comma-separated parts among {','.join(PARTS)} (default all); the other parts' rows are "
                         "carried over from the previous results file")
    ap.add_argument("--torch", metavar="PYTHON", default=None,
                    help="the Python of a PyTorch environment for the sgd_step rows' PyTorch column (default: "
                         f"{DEFAULT_TORCH.relative_to(REPO)} if it exists, built by `make torch-env`; '' for none)")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if not parts or set(parts) - set(PARTS):
        ap.error(f"--only takes names among {','.join(PARTS)}, got {args.only!r}")
    if args.torch is None:
        args.torch = str(DEFAULT_TORCH) if DEFAULT_TORCH.exists() else ""
    elif args.torch and not (Path(args.torch).is_file() or shutil.which(args.torch)):
        ap.error(f"--torch {args.torch!r}: no such Python (`make torch-env` builds {DEFAULT_TORCH.relative_to(REPO)})")
    carried = carried_rows(parts) if set(parts) != set(PARTS) else []
    t_run = time.perf_counter()
    load_before = os.getloadavg()
    gemm_start = gemm_gflops()

    rfad_images = 256
    cases = [("sgd_step", "convnet", 128, 256, conv_gflop(128, 3, False)),
             ("sgd_step", "convnet-kip", 256, 256, conv_gflop(256, 3, True))]
    if "sgd_step" not in parts:
        cases = []
    elif not args.skip_1024:
        cases.append(("sgd_step", "convnet-kip", 1024, args.kip1024_batch, conv_gflop(1024, 3, True)))
    rf = from_spec(RFAD_SPEC)
    rf_params = dict(rf.params)
    rf_gflop = int(rf_params["models"]) * conv_gflop(int(rf_params["width"]), 3, False)
    rows = []
    torch_info = None
    for what, name, width, batch, gflop in cases:
        compiled, compile_s = {}, {}
        for f in FORMULATIONS:
            use(f)
            t = time.perf_counter()
            compiled[f] = sgd_step(name, width, batch)
            timed(*compiled[f])  # warm-up
            compile_s[f] = time.perf_counter() - t
        params = param_count(compiled["auto"][1][0])
        torch_net = TorchNet(args.torch, name, width, batch) if args.torch else None  # built and warmed up
        torch_seconds = []
        try:
            if torch_net is not None and torch_net.info["params"] != params:
                raise RuntimeError(f"{name} width {width}: PyTorch's network has {torch_net.info['params']} "
                                   f"parameters, kdistill's {params}: not the same network")
            seconds = {f: [] for f in FORMULATIONS}
            for _ in range(args.rounds):
                for f in FORMULATIONS:
                    seconds[f].append(timed(*compiled[f]))
                if torch_net is not None:
                    torch_seconds.append(torch_net.step())
        finally:
            if torch_net is not None:
                torch_net.close()
        row = _row(what, f"{name} width {width}", batch, 3 * gflop * batch, seconds, compile_s, gemm_start)
        row["params"] = params
        row["torch_s"] = row["auto_vs_torch"] = None
        if torch_net is not None:
            torch_info = {k: torch_net.info[k] for k in ("torch", "threads")} | {"python": args.torch}
            row["torch_s"] = float(np.median(torch_seconds))
            row["auto_vs_torch"] = row["torch_s"] / row["auto_s"]
            row.update(torch_params=torch_net.info["params"], torch_rounds_s=torch_seconds,
                       torch_warmup_s=torch_net.info["warmup_s"])
        rows.append(row)
        print(rows[-1], flush=True)
    for ipc in ((1, 10) if "dc_match_round" in parts else ()):
        compiled, compile_s = {}, {}
        for f in FORMULATIONS:
            use(f)
            t = time.perf_counter()
            compiled[f] = dc_round(ipc)
            timed(*compiled[f])
            compile_s[f] = time.perf_counter() - t
        seconds = {f: [] for f in FORMULATIONS}
        for _ in range(args.rounds):
            for f in FORMULATIONS:
                seconds[f].append(timed(*compiled[f]))
        # FLOP: the real side's forward and backward (10 x 256 images), the synthetic side's is small beside it
        rows.append(_row("dc_match_round", f"convnet width 128, ipc {ipc}", 10 * 256, 3 * conv_gflop(128, 3, False)
                         * 10 * 256, seconds, compile_s, gemm_start))
        print(rows[-1], flush=True)
    compiled, compile_s = {}, {}
    for f in (FORMULATIONS if "rfad" in parts else ()):
        use(f)
        t = time.perf_counter()
        feats, grad, xargs = rfad_fns(rfad_images)
        timed(feats, xargs), timed(grad, xargs)
        compiled[f] = (feats, grad, xargs)
        compile_s[f] = time.perf_counter() - t
    for i, what in enumerate(("rfad_features", "rfad_gradient") if "rfad" in parts else ()):
        seconds = {f: [] for f in FORMULATIONS}
        for _ in range(args.rounds):
            for f in FORMULATIONS:
                seconds[f].append(timed(compiled[f][i], compiled[f][2]))
        flop = (1 if i == 0 else 3) * rf_gflop * rfad_images
        rows.append(_row(what, RFAD_SPEC, rfad_images, flop, seconds, compile_s if i == 0 else {}, gemm_start))
        print(rows[-1], flush=True)
    use("auto")
    gemm_end = gemm_gflops()
    load_after = os.getloadavg()
    rows = sorted(rows + carried, key=lambda r: PARTS.index(_part(r)))  # stable: each part's rows keep their order
    payload = {
        "benchmark": "nets_speed",
        "date": datetime.date.today().isoformat(),
        "command": "benchmarks/nets_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(), "versions": versions(),
        "gemm_gflop_per_s": {"start": gemm_start, "end": gemm_end},
        "load_average": {"before": load_before, "after": load_after},
        "torch": torch_info, "parts": parts, "seconds": time.perf_counter() - t_run, "rows": rows,
    }
    cols = ["what", "network", "batch", "gflop", "xla_s", "auto_s", "speedup", "torch_s", "auto_vs_torch",
            "xla_gflop_per_s", "auto_gflop_per_s", "xla_fraction_of_gemm", "auto_fraction_of_gemm", "items_per_s_xla",
            "items_per_s_auto"]
    shown = [{**r, **{c: "n/a" for c in ("torch_s", "auto_vs_torch") if r["what"] == "sgd_step" and r.get(c) is None}}
             for r in rows]
    if any(r["what"] == "sgd_step" and "from_run" not in r for r in rows):
        torch_note = _torch_note(torch_info)
    elif any(r["what"] == "sgd_step" for r in rows):
        torch_note = ("`torch_s`, `auto_vs_torch`: as recorded by the run that measured the sgd_step rows "
                      "(`--only sgd_step` reruns them).")
    else:
        torch_note = ""
    runs = {}
    for r in rows:
        if "from_run" in r:
            runs.setdefault((r["from_run"]["date"], r["from_run"]["command"], r["from_run"]["gemm_gflop_per_s"]),
                            []).append(r["what"])
    carried_note = " ".join(
        f"Rows {', '.join(dict.fromkeys(whats))} are carried over from the run of {date} (`{command}`"
        + (f", GEMM {gemm:.0f} GFLOP/s at its start; their fractions are of that rate)." if gemm else ").")
        for (date, command, gemm), whats in runs.items())
    md = "\n".join([
        "# Finite ConvNets on this CPU: XLA's convolutions (before) against `kdistill.nets.conv3x3` (after)",
        "",
        f"Machine: {payload['machine']['cpu']}, {payload['machine']['cores']} cores, JAX "
        f"{payload['versions'].get('jax')} on {payload['machine']['jax_backend']}, {payload['date']}. Command: "
        f"`{payload['command'].strip()}`. float32. Median of {args.rounds} interleaved rounds after compilation "
        f"and a warm-up call. GEMM (jitted 2048^3 jnp.dot): {gemm_start:.0f} GFLOP/s at the start, "
        f"{gemm_end:.0f} at the end; fractions are of the start's. Load average (1, 5, 15 min) "
        f"{[round(v, 2) for v in load_before]} before, {[round(v, 2) for v in load_after]} after. Whole run "
        f"{payload['seconds']:.0f} s."
        + (f" This run: {', '.join(parts)} (`--only`). {carried_note}".rstrip() if set(parts) != set(PARTS) else ""),
        "",
        "`xla`: lax.conv_general_dilated with XLA's own gradients (the code before `kdistill.nets`); `auto`: "
        "conv3x3's default (XLA's forward, the fastest measured backward product per layer shape, "
        "`benchmarks/results/conv_formulations.md`). `gflop`: the convolutions' FLOP of one call (x3 for a step "
        "or a gradient; for a DC round, the real side's). `items_per_s`: steps (rounds) per second, images per second "
        "for RFAD." + (" " + torch_note if torch_note else ""),
        "",
        markdown_table(shown, cols),
    ])
    write_results("nets_speed", payload, md)
    print(md)


def _torch_note(info) -> str:
    if info is None:
        return ("`torch_s`, `auto_vs_torch` (the same step in PyTorch): n/a, no PyTorch environment was found; "
                "`make torch-env` builds `.venv-torch`, which this script then uses (`--only sgd_step` reruns these "
                "rows alone and keeps the others).")
    python = info["python"]
    if Path(python).is_absolute() and Path(python).is_relative_to(REPO):  # not resolved: a venv's python is a link
        python = str(Path(python).relative_to(REPO))
    return (f"`torch_s`: the same SGD step in PyTorch {info['torch']} (`benchmarks/torch_nets.py` under `{python}`; "
            f"eager, NCHW, {info['threads']} threads; the same parameter count as kdistill's network, checked; "
            "KIP's NTK scales applied to the weights), in a process of its own, timed in the same rounds: each round "
            "runs xla, auto, then one PyTorch step (that process waits while JAX runs), after one untimed PyTorch "
            "warm-up step. `auto_vs_torch`: torch_s / auto_s (above 1: kdistill faster).")


def _row(what, network, batch, flop_gflop, seconds, compile_s, gemm):
    xla, auto = (float(np.median(seconds[f])) for f in FORMULATIONS)
    per_item = batch if what.startswith("rfad") else 1
    return {"what": what, "network": network, "batch": batch, "gflop": flop_gflop, "xla_s": xla, "auto_s": auto,
            "speedup": xla / auto, "xla_gflop_per_s": flop_gflop / xla, "auto_gflop_per_s": flop_gflop / auto,
            "xla_fraction_of_gemm": flop_gflop / xla / gemm, "auto_fraction_of_gemm": flop_gflop / auto / gemm,
            "items_per_s_xla": per_item / xla, "items_per_s_auto": per_item / auto,
            "rounds_s": seconds, "compile_and_warmup_s": compile_s}


if __name__ == "__main__":
    main()
