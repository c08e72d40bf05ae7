"""Speed of RFAD's random-ConvNet features on this CPU (groundwork for issue 12's defaults).

For the random ConvNet behind ``rf-convnet`` (depth 3: [3x3 conv 'same', ReLU, 2x2 average pool] per
layer, features after the last pool; RFAD's architecture without normalisation) on 28x28x1 images:
images per second of the forward pass (one network, float32, a block of images, best of the repeats
after a compiling call) at several widths, the network's FLOPs per image (2 per multiply-add of the
convolutions; pooling and ReLU ignored), and the fraction of this machine's GEMM rate that reaches
(a float32 NumPy matrix product measured in the same run). Also the seconds of one RFAD step at the
published settings (8 networks of width 256, 4 x 1280 target images: forward only, a lower bound)
extrapolated from the measured rate, and the same for the CPU settings listed.

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

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from kdistill._machine import machine_info, versions  # noqa: E402
from kdistill.kernels import from_spec  # noqa: E402


def convnet_flops(width: int, depth: int = 3, hw: int = 28, channels: int = 1) -> float:
    """Multiply-adds x 2 of the 3x3 'same' convolutions of one image (each layer then halves h and w)."""
    flops, c_in, size = 0.0, channels, hw
    for _ in range(depth):
        flops += 2.0 * size * size * 9 * c_in * width
        c_in, size = width, size // 2
    return flops


def gemm_rate(n: int = 2048) -> float:
    """float32 FLOP/s of a NumPy (n x n) @ (n x n) product."""
    return 2.0 * n**3 / matmul_seconds(n, n, n, np.float32)


def images_per_second(width: int, images: int, repeats: int) -> tuple[float, float]:
    """(images/s of one network's features, first call's seconds) on random 28x28x1 float32 images."""
    kernel = from_spec(f"rf-convnet:models=1,width={width},depth=3")
    x = jnp.asarray(np.random.default_rng(1).standard_normal((images, 28, 28, 1), dtype=np.float32))
    t = time.perf_counter()
    kernel.features(x).block_until_ready()
    first = time.perf_counter() - t
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        kernel.features(x).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return images / best, first


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", nargs="+", type=int, default=[32, 64, 128, 256])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    load_before = os.getloadavg()
    rate = gemm_rate()
    rows = []
    for width in args.widths:
        per_s, first = images_per_second(width, args.images, args.repeats)
        flops = convnet_flops(width)
        row = {"width": width, "images_per_s": per_s, "gflop_per_image": flops / 1e9,
               "gflop_per_s": per_s * flops / 1e9, "fraction_of_gemm": per_s * flops / rate,
               "first_call_s": first}
        # one step's target forward passes: 8 networks x 5120 images (published), 2 x 1280 (a CPU setting)
        row["published_step_forward_s"] = 8 * 5120 / per_s
        row["cpu_step_forward_s_2x1280"] = 2 * 1280 / per_s
        rows.append(row)
        print(row, flush=True)
    mach = machine_info()
    out = {"machine": mach, "versions": versions(), "argv": sys.argv[1:], "gemm_float32_gflop_per_s": rate / 1e9,
           "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "rows": rows}
    md = ["# RFAD random-ConvNet features: speed on this CPU", "",
          f"Machine: {mach['cpu']}, {mach['cores']} cores, JAX {mach['jax_backend']}. Command: "
          "`.venv/bin/python benchmarks/rfad_speed.py`. One network (depth 3, 28x28x1 images, float32), "
          f"{args.images} images per call, best of {args.repeats} calls after the compiling one. GEMM: a float32 "
          f"2048^3 NumPy product in the same run, {rate / 1e9:.0f} GFLOP/s. Load average "
          f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after.", "",
          "`published_step_forward_s`: the forward passes alone of one step at RFAD's published settings "
          "(8 networks of width 256 on 4 x 1280 target images), a lower bound of its step time; "
          "`cpu_step_forward_s_2x1280`: 2 networks on 1280 target images.", "",
          markdown_table(rows, ["width", "images_per_s", "gflop_per_image", "gflop_per_s", "fraction_of_gemm",
                                "first_call_s", "published_step_forward_s", "cpu_step_forward_s_2x1280"])]
    js, mdp = write_results("rfad_speed", out, "\n".join(md))
    print(f"wrote {js} and {mdp}")


if __name__ == "__main__":
    main()
