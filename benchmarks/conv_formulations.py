"""Speed of 3x3 'same' convolutions on this CPU: XLA's against GEMM formulations (``kdistill.nets.conv3x3``).

For each layer shape (n, h, w, c_in -> c_out), float32, random data, the seconds of

- ``forward``: y = conv(x, w), formulations ``xla`` (lax.conv_general_dilated), ``patches`` (the 9 shifted
  copies of the zero-padded input concatenated on channels, one (n h w, 9 c_in) x (9 c_in, c_out) GEMM) and
  ``taps`` (9 GEMMs of the shifted copies, summed);
- ``input_grad``: dL/dx = conv^T(g) alone, ``xla`` (XLA's transpose of its conv) and ``col2im`` (the patch
  gradient g @ W^T, (n h w, 9 c_in), its 9 blocks added back at their shifts);
- ``weight_grad``: dL/dw alone, ``xla`` (XLA's transpose), ``patches`` (patches^T @ g, one GEMM) and ``taps``
  (9 GEMMs x_k^T @ g, one shifted slice at a time);
- ``value_and_grad``: of L = <conv(x, w), g> with respect to x and w (forward + both products), formulations
  ``xla``, ``patches``, ``taps`` (plain autodiff through each) and ``auto`` (conv3x3's default: by layer
  shape, plain XLA or a custom VJP that picks each backward product's formulation);

with the achieved GFLOP/s (2 n h w 9 c_in c_out per product, 3 products for value_and_grad), the fraction of
this machine's float32 GEMM rate (a jitted jnp.dot of two 2048 x 2048 matrices, measured at the start and the
end of the same run) and the ratio to ``xla`` for the same product. Also the compiled value_and_grad's
temporary memory (XLA's memory analysis), which shows the 9x patch buffer.

Timing: every function is compiled ahead of time, called once (warm-up), then called in rounds that
interleave all of a shape's functions, so that a change of load hits all formulations alike; the median of
the rounds is reported. Shapes whose warm-up round took long get fewer rounds (``--budget`` seconds of timed
rounds per shape, at least one). The load average is recorded before, after every shape and at the end.

Usage:  .venv/bin/python benchmarks/conv_formulations.py [--repeats 3] [--budget 25] [--wide] [--nets]
        [--shapes 256x14x14x128x128 ...]
Writes benchmarks/results/conv_formulations.json and conv_formulations.md.

Time: the default list took about 7 minutes of wall clock on 2026-12-04 with a test suite sharing the 2
cores (load average 5; 562 s with ``--nets``, using 536 s of CPU time), which suggests 4 to 5 minutes
on a quiet machine; 28x28 256 -> 256 takes the largest part.

``--wide`` adds 28x28 1024 -> 1024 at batch 32 (about 5 more minutes at that load: ~6 s per forward call,
~12 s for XLA's weight gradient, ~25 s for its value_and_grad);
``--nets`` adds value_and_grad of two whole networks (DC's ConvNet without norm, width 128; KIP's ConvNet,
width 256, stem + 3 blocks) on 256 images, ``xla`` against ``auto`` (about 2 more minutes).
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import gemm_gflops, markdown_table, write_results  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from kdistill._machine import machine_info, versions  # noqa: E402
from kdistill.nets import _conv as C  # noqa: E402
from kdistill.nets import conv3x3  # noqa: E402

SHAPES = [  # (n, h, w, c_in, c_out): DC's ConvNet (width 128) then KIP's (width 256), MNIST 28x28x1
    (256, 28, 28, 1, 128), (256, 28, 28, 128, 128), (256, 14, 14, 128, 128), (256, 7, 7, 128, 128),
    (256, 28, 28, 1, 256), (256, 28, 28, 256, 256), (256, 14, 14, 256, 256), (256, 7, 7, 256, 256),
]
WIDE = [(32, 28, 28, 1024, 1024)]
GEMM_N = 2048


def _lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return machine_info()["cpu"]
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return machine_info()["cpu"]


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _call(fn, args) -> float:
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t


def _input_grad_xla(g, w):
    x = jax.ShapeDtypeStruct(g.shape[:-1] + (w.shape[2],), g.dtype)
    return jax.linear_transpose(lambda v: C._conv_xla(v, w), x)(g)[0]


def layer_functions(n, h, w, c_in, c_out):
    """{(product, formulation): (compiled function, args, flops)} for one layer shape, on random data."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, h, w, c_in), dtype=np.float32))
    k = jnp.asarray(rng.standard_normal((3, 3, c_in, c_out), dtype=np.float32))
    g = jnp.asarray(rng.standard_normal((n, h, w, c_out), dtype=np.float32))
    flops = 2.0 * n * h * w * 9 * c_in * c_out
    table = {}
    for name in ("xla", "patches", "taps"):
        table["forward", name] = (lambda a, b, f=name: conv3x3(a, b, formulation=f), (x, k), flops)
    table["input_grad", "xla"] = (_input_grad_xla, (g, k), flops)
    table["input_grad", "col2im"] = (C._input_grad_col2im, (g, k), flops)
    for name, fn in C._WEIGHT_GRAD.items():
        table["weight_grad", name] = (fn, (x, g), flops)
    for name in ("xla", "patches", "taps", "auto"):
        def loss(a, b, t, f=name):
            return jnp.vdot(conv3x3(a, b, formulation=f), t)
        table["value_and_grad", name] = (jax.value_and_grad(loss, (0, 1)), (x, k, g), 3 * flops)
    return {key: (jax.jit(fn).lower(*args).compile(), args, fl) for key, (fn, args, fl) in table.items()}


def time_interleaved(fns: dict, repeats: int, budget: float) -> tuple[dict, dict, int]:
    """Warm-up round, then up to ``repeats`` interleaved rounds (fewer if a round would overrun ``budget``
    seconds in all, at least one). Returns ({key: median s}, {key: warm-up s}, rounds)."""
    t0 = time.perf_counter()
    first = {key: _call(fn, args) for key, (fn, args, _) in fns.items()}
    round_s = time.perf_counter() - t0
    rounds = max(1, min(repeats, int(budget // max(round_s, 1e-9))))
    times = {key: [] for key in fns}
    for _ in range(rounds):
        for key, (fn, args, _) in fns.items():
            times[key].append(_call(fn, args))
    return {key: float(np.median(v)) for key, v in times.items()}, first, rounds


def bench_layer(shape, gemm: float, repeats: int, budget: float) -> tuple[list[dict], dict]:
    fns = layer_functions(*shape)
    memory = {key[1]: fn.memory_analysis().temp_size_in_bytes / 2**20 for key, (fn, _, _) in fns.items()
              if key[0] == "value_and_grad"}
    med, first, rounds = time_interleaved(fns, repeats, budget)
    rows = []
    for (product, name), (_, _, flops) in fns.items():
        s = med[product, name]
        rows.append({"shape": "x".join(map(str, shape)), "product": product, "formulation": name,
                     "seconds": s, "warmup_s": first[product, name], "gflop_per_s": flops / s / 1e9,
                     "fraction_of_gemm": flops / s / 1e9 / gemm, "vs_xla": s / med[product, "xla"],
                     "temp_mib": memory.get(name) if product == "value_and_grad" else None, "rounds": rounds})
    plan = C._plan(*shape)
    summary = {"shape": "x".join(map(str, shape)), "auto_plan": "/".join(plan),
               "fwd_patches_over_xla": med["forward", "patches"] / med["forward", "xla"],
               "fwd_taps_over_xla": med["forward", "taps"] / med["forward", "xla"],
               "vg_patches_over_xla": med["value_and_grad", "patches"] / med["value_and_grad", "xla"],
               "vg_taps_over_xla": med["value_and_grad", "taps"] / med["value_and_grad", "xla"],
               "vg_auto_over_xla": med["value_and_grad", "auto"] / med["value_and_grad", "xla"],
               "vg_xla_s": med["value_and_grad", "xla"], "vg_auto_s": med["value_and_grad", "auto"],
               "vg_temp_mib_xla": memory["xla"], "vg_temp_mib_patches": memory["patches"],
               "vg_temp_mib_auto": memory["auto"], "loadavg": _load()}
    return rows, summary


def _net_loss(formulation: str, *, stem: bool, depth: int):
    """Sum of squared outputs of [stem Conv, ReLU] + depth x [Conv, ReLU, AvgPool 2x2] + Dense(10), NTK-scaled."""
    def pool(a):
        n, h, w, c = a.shape
        a = a[:, : h - h % 2, : w - w % 2]
        return a.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))

    def loss(params, x):
        a = x
        for i, k in enumerate(params["convs"]):
            a = jax.nn.relu(conv3x3(a, k, formulation=formulation) * (2.0 / (9 * k.shape[2])) ** 0.5)
            if i > 0 or not stem:
                a = pool(a)
        a = a.reshape(a.shape[0], -1)
        return jnp.sum(jnp.square(a @ params["head"] / a.shape[1] ** 0.5))

    return loss


def bench_nets(repeats: int, budget: float) -> list[dict]:
    rows = []
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((256, 28, 28, 1), dtype=np.float32))
    for name, width, stem, depth in (("DC ConvNet, no norm", 128, False, 3), ("KIP ConvNet", 256, True, 3)):
        chans = [1] + [width] * (depth + stem)
        params = {"convs": [jnp.asarray(rng.standard_normal((3, 3, a, b), dtype=np.float32))
                            for a, b in zip(chans[:-1], chans[1:])],
                  "head": jnp.asarray(rng.standard_normal((3 * 3 * width, 10), dtype=np.float32))}
        fns = {f: (jax.jit(jax.value_and_grad(_net_loss(f, stem=stem, depth=depth), (0, 1))).lower(params, x).compile(),
                   (params, x), 0.0) for f in ("xla", "auto")}
        med, _, rounds = time_interleaved(fns, repeats, budget)
        rows.append({"network": f"{name}, width {width}, 256 x 28x28x1", "xla_s": med["xla"], "auto_s": med["auto"],
                     "auto_over_xla": med["auto"] / med["xla"], "rounds": rounds, "loadavg": _load()})
        print(rows[-1], flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds per shape after the warm-up (default 3)")
    ap.add_argument("--budget", type=float, default=25.0,
                    help="seconds of timed rounds per shape; fewer rounds for slow shapes (default 25)")
    ap.add_argument("--wide", action="store_true", help="add 28x28 1024 -> 1024 at batch 32")
    ap.add_argument("--nets", action="store_true", help="add value_and_grad of two whole ConvNets")
    ap.add_argument("--shapes", nargs="+", metavar="NxHxWxCINxCOUT",
                    help="layer shapes instead of the default list, e.g. 256x14x14x128x128")
    ap.add_argument("--name", default="conv_formulations",
                    help="results file name under benchmarks/results (default conv_formulations); the tiny maps "
                         "of VGG-11's last stage go to conv_formulations_tiny (benchmarks/README.md)")
    args = ap.parse_args(argv)

    started = time.perf_counter()
    load_before = _load()
    gemm_before = gemm_gflops(GEMM_N)
    print(f"GEMM {gemm_before:.0f} GFLOP/s, load {load_before}", flush=True)
    rows, summaries = [], []
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes] if args.shapes else SHAPES
    for shape in shapes + (WIDE if args.wide else []):
        r, s = bench_layer(shape, gemm_before, args.repeats, args.budget)
        rows += r
        summaries.append(s)
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()}, flush=True)
    nets = bench_nets(args.repeats, 4 * args.budget) if args.nets else []
    gemm_after = gemm_gflops(GEMM_N)
    mach = machine_info()
    mach["lscpu_model_name"] = _lscpu_model()
    out = {"machine": mach, "versions": versions(), "command": " ".join([sys.executable] + sys.argv),
           "date": datetime.date.today().isoformat(), "gemm_n": GEMM_N,
           "gemm_float32_gflop_per_s_before": gemm_before, "gemm_float32_gflop_per_s_after": gemm_after,
           "loadavg_before": load_before, "loadavg_after": _load(), "seconds": time.perf_counter() - started,
           "repeats": args.repeats, "budget": args.budget, "summary": summaries, "rows": rows, "nets": nets}
    md = ["# 3x3 'same' convolutions on this CPU: XLA against GEMM formulations", "",
          f"Machine: {mach['lscpu_model_name']}, {mach['cores']} cores, JAX {out['versions'].get('jax')} on "
          f"{mach['jax_backend']}, {out['date']}. Command: `benchmarks/conv_formulations.py "
          f"{' '.join(sys.argv[1:])}`. float32, random data; median of interleaved rounds after a warm-up call "
          f"(`rounds`). GEMM: jitted 2048^3 jnp.dot, {gemm_before:.0f} GFLOP/s before and {gemm_after:.0f} after; "
          f"fractions are of the first. Load average (1, 5, 15 min) {load_before} before, {out['loadavg_after']} "
          f"after: other jobs shared the cores, so compare formulations within a shape, not across runs. "
          f"Whole run {out['seconds']:.0f} s.", "",
          "Shape n x h x w x c_in x c_out. `auto_plan`: forward / input_grad / weight_grad formulations of "
          "conv3x3's default. Ratios below 1: faster than XLA. `vg_temp_mib_*`: XLA's temporary memory of the "
          "compiled value_and_grad.", "",
          markdown_table(summaries, ["shape", "auto_plan", "fwd_patches_over_xla", "fwd_taps_over_xla",
                                     "vg_patches_over_xla", "vg_taps_over_xla", "vg_auto_over_xla", "vg_xla_s",
                                     "vg_auto_s", "vg_temp_mib_xla", "vg_temp_mib_patches", "vg_temp_mib_auto"]),
          "", "## Every product and formulation", "",
          markdown_table(rows, ["shape", "product", "formulation", "seconds", "gflop_per_s", "fraction_of_gemm",
                                "vs_xla", "temp_mib", "warmup_s", "rounds"])]
    if nets:
        md += ["", "## Whole networks: value_and_grad of a sum of squared outputs w.r.t. weights and images", "",
               markdown_table(nets, ["network", "xla_s", "auto_s", "auto_over_xla", "rounds"])]
    js, mdp = write_results(args.name, out, "\n".join(md))
    print(f"wrote {js} and {mdp} in {out['seconds']:.0f} s")


if __name__ == "__main__":
    main()
