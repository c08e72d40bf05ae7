"""Speed of RFAD's random-ConvNet features on this CPU (groundwork for issue 12's defaults).

For the random ConvNet behind ``rf-convnet`` on 28x28x1 images, depth 3, in both architectures
(stem=0: [3x3 conv 'same', ReLU, 2x2 average pool] x 3, DC's and RFAD's ConvNet without
normalisation; stem=1: KIP's, a full-resolution conv and ReLU first): images per second of the
forward pass (one network, float32, a block of images, best of the repeats after a compiling call)
at several widths, the network's FLOPs per image (2 per multiply-add of the convolutions; pooling
and ReLU ignored), and the fraction of this machine's GEMM rate that reaches (a float32 NumPy matrix
product measured in the same run). Also the seconds of one RFAD step at the published settings
(8 networks of width 256, 4 x 1280 target images: forward only, a lower bound) extrapolated from
the measured rate, and the same for the CPU settings listed.

Second table: the gradient RFAD takes every step (of a function of the support images' features,
100 images through 2 networks of width 64), with the (network, chunk) pieces written out
straight-line (the default) or run in ``lax.map`` (what rf-convnet did before), measured in the
same run.

Usage:  .venv/bin/python benchmarks/rfad_speed.py [--widths 32 64 128 256] [--images 256] [--repeats 3]
Writes benchmarks/results/rfad_speed.json and rfad_speed.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table, matmul_seconds, write_results  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from kdistill._machine import machine_info, versions  # noqa: E402
from kdistill.kernels import from_spec  # noqa: E402


def convnet_flops(width: int, depth: int = 3, hw: int = 28, channels: int = 1, stem: int = 0) -> float:
    """Multiply-adds x 2 of the 3x3 'same' convolutions of one image: the stem conv (if any) at full
    size, then ``depth`` convs each followed by a pool that halves h and w."""
    flops, c_in, size = 0.0, channels, hw
    if stem:
        flops += 2.0 * size * size * 9 * c_in * width
        c_in = width
    for _ in range(depth):
        flops += 2.0 * size * size * 9 * c_in * width
        c_in, size = width, size // 2
    return flops


def gemm_rate(n: int = 2048) -> float:
    """float32 FLOP/s of a NumPy (n x n) @ (n x n) product."""
    return 2.0 * n**3 / matmul_seconds(n, n, n, np.float32)


def _best(fn, repeats: int) -> tuple[float, float]:
    """(best seconds of ``repeats`` calls after the first, first call's seconds)."""
    t = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best, first


def images_per_second(width: int, images: int, repeats: int, stem: int) -> tuple[float, float]:
    """(images/s of one network's features, first call's seconds) on random 28x28x1 float32 images."""
    kernel = from_spec(f"rf-convnet:models=1,width={width},depth=3,stem={stem}")
    x = jnp.asarray(np.random.default_rng(1).standard_normal((images, 28, 28, 1), dtype=np.float32))
    best, first = _best(lambda: kernel.features(x), repeats)
    return images / best, first


def support_gradient_seconds(stem: int, straight: bool, repeats: int) -> float:
    """Seconds of grad_x sum(features(x)^2) for 100 images through 2 networks of width 64 (one RFAD step's
    gradient through the networks), straight-line pieces or lax.map."""
    from kdistill.kernels import _random_features as rf

    x = jnp.asarray(np.random.default_rng(2).standard_normal((100, 28, 28, 1), dtype=np.float32))
    saved = rf._UNROLL_PIECES
    rf._UNROLL_PIECES = saved if straight else 0
    try:
        grad = jax.jit(jax.grad(lambda x_, key: jnp.sum(rf.random_features(
            x_, arch="convnet", models=2, width=64, depth=3, w_std=2**0.5, b_std=0.1, seed=0, key=key, stem=stem)**2)))
        return _best(lambda: grad(x, jax.random.key(1)), repeats)[0]
    finally:
        rf._UNROLL_PIECES = saved


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", nargs="+", type=int, default=[32, 64, 128, 256])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    load_before = os.getloadavg()
    rate = gemm_rate()
    rows = []
    for stem, width in [(stem, width) for stem in (0, 1) for width in args.widths]:
        per_s, first = images_per_second(width, args.images, args.repeats, stem)
        flops = convnet_flops(width, stem=stem)
        row = {"stem": stem, "width": width, "images_per_s": per_s, "gflop_per_image": flops / 1e9,
               "gflop_per_s": per_s * flops / 1e9, "fraction_of_gemm": per_s * flops / rate,
               "first_call_s": first}
        # one step's target forward passes: 8 networks x 5120 images (published), 2 x 1280 (a CPU setting)
        row["published_step_forward_s"] = 8 * 5120 / per_s
        row["cpu_step_forward_s_2x1280"] = 2 * 1280 / per_s
        rows.append(row)
        print(row, flush=True)
    grads = []
    for stem in (0, 1):
        straight = support_gradient_seconds(stem, True, args.repeats)
        mapped = support_gradient_seconds(stem, False, args.repeats)
        grads.append({"stem": stem, "straight_line_s": straight, "lax_map_s": mapped, "speedup": mapped / straight})
        print(grads[-1], flush=True)
    mach = machine_info()
    out = {"machine": mach, "versions": versions(), "argv": sys.argv[1:], "gemm_float32_gflop_per_s": rate / 1e9,
           "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "rows": rows, "gradient_rows": grads}
    md = ["# RFAD random-ConvNet features: speed on this CPU", "",
          f"Machine: {mach['cpu']}, {mach['cores']} cores, JAX {mach['jax_backend']}. Command: "
          "`.venv/bin/python benchmarks/rfad_speed.py`. One network (depth 3, 28x28x1 images, float32), "
          f"{args.images} images per call, best of {args.repeats} calls after the compiling one. GEMM: a float32 "
          f"2048^3 NumPy product in the same run, {rate / 1e9:.0f} GFLOP/s. Load average "
          f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after.", "",
          "`published_step_forward_s`: the forward passes alone of one step at RFAD's published settings "
          "(8 networks of width 256 on 4 x 1280 target images), a lower bound of its step time; "
          "`cpu_step_forward_s_2x1280`: 2 networks on 1280 target images. A fraction_of_gemm above 1 means the "
          "convolutions ran faster than the FLOPs counted here at NumPy's GEMM rate would allow: XLA's CPU "
          "convolutions (oneDNN) can use fewer multiplications than 2 per multiply-add of the direct form "
          "(e.g. Winograd), and a 2048^3 NumPy product is not this CPU's peak.", "",
          markdown_table(rows, ["stem", "width", "images_per_s", "gflop_per_image", "gflop_per_s", "fraction_of_gemm",
                                "first_call_s", "published_step_forward_s", "cpu_step_forward_s_2x1280"]), "",
          "## One step's gradient through the networks (100 images, 2 networks of width 64)", "",
          markdown_table(grads, ["stem", "straight_line_s", "lax_map_s", "speedup"])]
    js, mdp = write_results("rfad_speed", out, "\n".join(md))
    print(f"wrote {js} and {mdp}")


if __name__ == "__main__":
    main()
