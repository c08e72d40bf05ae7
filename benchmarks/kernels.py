"""Speed and memory of the NTK kernels against neural-tangents, side by side in one run.

Measures kernel entries per second (value, and gradient w.r.t. x1) for

- ``fc-ntk`` (depth 3) on a 1000 x 1000 block of MNIST images (random 28x28 if MNIST
  is not installed),
- ``convnet-ntk`` (depth 3) on blocks of 28x28x1 MNIST images and 32x32x3 random images,

for this project and for neural-tangents 0.6.5 (``stax``, the same architectures),
plus ``rf-convnet`` feature-map images per second (project only). Every measurement
runs in its own subprocess, which reports its peak resident memory (``ru_maxrss``)
and the kernel block it computed, so the table also shows how far the two
implementations' values are apart. Inputs are float32 and JAX runs with its
default float32 precision on both sides. The timing is the best of ``--repeats``
calls after a first (compiling) call, whose time is reported separately.

neural-tangents pins an old JAX, so it runs from its own virtual environment::

    python3.11 -m venv /tmp/ntenv
    /tmp/ntenv/bin/pip install jax==0.5.3 jaxlib==0.5.3 frozendict==2.5.1 numpy scipy
    /tmp/ntenv/bin/pip install --no-deps neural-tangents==0.6.5

and this script finds it at ``--nt-python`` (default: ``$KDISTILL_NT_PYTHON`` or
``/tmp/ntenv/bin/python``); without it only the project's numbers are measured.

Usage (from the repository root)::

    .venv/bin/python benchmarks/kernels.py            # about 10 minutes on 2 cores
    .venv/bin/python benchmarks/kernels.py --quick    # smaller blocks, a few minutes

Writes ``benchmarks/results/kernels.json`` (rows + machine) and ``kernels.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEPTH = 3
W_STD, B_STD = math.sqrt(2.0), 0.1


# ----------------------------------------------------------------------------- workers
# A worker computes one kernel block with one implementation and prints one JSON line.
# It must not import kdistill at module level: the neural-tangents worker runs in the
# other virtual environment.


def _nt_kernel_fn(kernel: str):
    import types

    sys.modules.setdefault("neural_tangents.experimental", types.ModuleType("neural_tangents.experimental"))
    from neural_tangents import stax

    if kernel == "fc-ntk":
        layers = [stax.Flatten()]
        for _ in range(DEPTH):
            layers += [stax.Dense(512, W_std=W_STD, b_std=B_STD), stax.Relu()]
        layers += [stax.Dense(1, W_std=W_STD, b_std=B_STD)]
    elif kernel == "convnet-ntk":
        conv = lambda: stax.Conv(512, (3, 3), padding="SAME", W_std=W_STD, b_std=B_STD)  # noqa: E731
        layers = [conv(), stax.Relu()]
        for _ in range(DEPTH):
            layers += [conv(), stax.Relu(), stax.AvgPool((2, 2), strides=(2, 2))]
        layers += [stax.Flatten(), stax.Dense(1, W_std=W_STD, b_std=B_STD)]
    else:
        raise SystemExit(f"neural-tangents has no counterpart of {kernel}")
    _, _, kernel_fn = stax.serial(*layers)
    return lambda a, b: kernel_fn(a, b, "ntk")


def _peak_rss_mib() -> float:
    """Peak resident memory of this process. ``VmHWM`` rather than ``ru_maxrss``:
    Linux carries ru_maxrss over from the parent across fork + exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker(args) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    data = np.load(args.inputs)
    x1 = jnp.asarray(data["x1"][: args.n1])
    x2 = jnp.asarray(data["x2"][: args.n2])
    if args.impl == "nt":
        fn = _nt_kernel_fn(args.kernel)
        features = None
    else:
        from kdistill.kernels import from_spec

        k = from_spec(f"{args.kernel}:depth={DEPTH}")
        fn, features = k.fn, k.features
    if args.mode == "features":
        call = jax.jit(features)
        run = lambda: call(x1)  # noqa: E731
        count = args.n1
    elif args.mode == "grad":
        call = jax.jit(jax.grad(lambda a, b: jnp.sum(fn(a, b))))
        run = lambda: call(x1, x2)  # noqa: E731
        count = args.n1 * args.n2
    else:
        call = jax.jit(fn)
        run = lambda: call(x1, x2)  # noqa: E731
        count = args.n1 * args.n2
    t = time.perf_counter()
    out = jax.block_until_ready(run())
    first = time.perf_counter() - t
    best = math.inf
    for _ in range(args.repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(run())
        best = min(best, time.perf_counter() - t)
    if args.out:
        np.save(args.out, np.asarray(out))
    print(json.dumps({
        "first_call_s": first,
        "seconds": best,
        "count": count,
        "per_second": count / best,
        "peak_rss_mib": _peak_rss_mib(),
        "jax": jax.__version__,
        "dtype": str(out.dtype),
    }))


# ----------------------------------------------------------------------------- driver


def _inputs(path: Path, shape: tuple[int, int, int], n: int, seed: int) -> str:
    """Write ``x1``, ``x2`` (n images each) to ``path``; MNIST for 28x28x1 when installed."""
    import numpy as np

    source = "random normal"
    rng = np.random.default_rng(seed)
    if shape == (28, 28, 1):
        try:
            from kdistill.data import load

            ds = load("mnist")
            imgs = np.asarray(ds.x_train, np.float32)
            imgs = (imgs - imgs.mean()) / imgs.std()
            idx = rng.choice(len(imgs), 2 * n, replace=False)
            x = imgs[idx].reshape(2 * n, *shape)
            source = "MNIST train (standardised)"
        except Exception as e:  # noqa: BLE001 - fall back to random inputs, say so
            print(f"[kernels] MNIST not used ({type(e).__name__}: {e}); random inputs instead", file=sys.stderr)
            x = rng.standard_normal((2 * n, *shape)).astype(np.float32)
    else:
        x = rng.standard_normal((2 * n, *shape)).astype(np.float32)
    np.savez(path, x1=x[:n], x2=x[n:])
    return source


def _run_worker(python: str, impl: str, kernel: str, mode: str, inputs: Path, n1: int, n2: int,
                repeats: int, out: Path | None) -> dict | None:
    cmd = [python, str(Path(__file__).resolve()), "--worker", "--impl", impl, "--kernel", kernel,
           "--mode", mode, "--inputs", str(inputs), "--n1", str(n1), "--n2", str(n2), "--repeats", str(repeats)]
    if out is not None:
        cmd += ["--out", str(out)]
    env = dict(os.environ)
    if impl == "ours":
        env["PYTHONPATH"] = str(HERE.parent / "src") + os.pathsep + env.get("PYTHONPATH", "")
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        print(f"[kernels] {impl} {kernel} {mode} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    return result


def _machine() -> dict:
    try:
        from kdistill._machine import machine_info, versions

        return {**machine_info(), "versions": versions()}
    except ImportError:
        import platform

        return {"cpu": platform.processor(), "cores": os.cpu_count()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nt-python", default=os.environ.get("KDISTILL_NT_PYTHON", "/tmp/ntenv/bin/python"),
                    help="python of the neural-tangents virtual environment")
    ap.add_argument("--quick", action="store_true", help="smaller blocks")
    ap.add_argument("--repeats", type=int, default=2)
    # worker mode (internal)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--impl", choices=["ours", "nt"], help=argparse.SUPPRESS)
    ap.add_argument("--kernel", help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=["value", "grad", "features"], help=argparse.SUPPRESS)
    ap.add_argument("--inputs", help=argparse.SUPPRESS)
    ap.add_argument("--n1", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--n2", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args)
        return 0

    import numpy as np

    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent / "src"))
    from _common import markdown_table, write_results

    have_nt = Path(args.nt_python).exists()
    if not have_nt:
        print(f"[kernels] no neural-tangents python at {args.nt_python}: project numbers only "
              "(see this script's docstring to create it)", file=sys.stderr)
    q = args.quick
    # (kernel, image shape, mode, n1, n2, compare with neural-tangents)
    plan = [
        ("fc-ntk", (28, 28, 1), "value", 1000, 1000, True),
        ("fc-ntk", (28, 28, 1), "grad", 1000, 1000, True),
        ("convnet-ntk", (28, 28, 1), "value", 6 if q else 10, 6 if q else 10, True),
        ("convnet-ntk", (28, 28, 1), "grad", 4 if q else 6, 4 if q else 6, True),
        ("convnet-ntk", (32, 32, 3), "value", 6 if q else 8, 6 if q else 8, True),
        ("convnet-ntk", (32, 32, 3), "grad", 4 if q else 6, 4 if q else 6, True),
        # a bigger block, project only: memory stays flat (tiles), throughput for long runs
        ("convnet-ntk", (28, 28, 1), "value", 16 if q else 32, 16 if q else 32, False),
        ("rf-convnet", (28, 28, 1), "features", 64 if q else 256, 0, False),
        ("rf-convnet", (32, 32, 3), "features", 64 if q else 256, 0, False),
    ]
    rows = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i, (kernel, shape, mode, n1, n2, compare) in enumerate(plan):
            inputs = tmp / f"inputs{i}.npz"
            source = _inputs(inputs, shape, max(n1, n2), seed=i)
            label = f"{kernel} {'x'.join(map(str, shape))} {mode} {n1}x{n2}" if n2 else f"{kernel} {'x'.join(map(str, shape))} {mode} {n1}"
            print(f"[kernels] {label}: project ...", file=sys.stderr, flush=True)
            ours = _run_worker(sys.executable, "ours", kernel, mode, inputs, n1, n2, args.repeats, tmp / "ours.npy")
            nt = None
            if compare and have_nt:
                print(f"[kernels] {label}: neural-tangents ...", file=sys.stderr, flush=True)
                nt = _run_worker(args.nt_python, "nt", kernel, mode, inputs, n1, n2, args.repeats, tmp / "nt.npy")
            diff = None
            if ours and nt:
                a, b = np.load(tmp / "ours.npy"), np.load(tmp / "nt.npy")
                diff = float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
            unit = "images/s" if mode == "features" else "entries/s"
            rows.append({
                "kernel": kernel, "shape": "x".join(map(str, shape)), "mode": mode,
                "block": f"{n1}x{n2}" if n2 else f"{n1}", "inputs": source, "unit": unit,
                "ours_per_s": ours and ours["per_second"], "nt_per_s": nt and nt["per_second"],
                "speedup": (ours["per_second"] / nt["per_second"]) if ours and nt else None,
                "ours_ms_per_item": ours and 1e3 / ours["per_second"], "nt_ms_per_item": nt and 1e3 / nt["per_second"],
                "ours_first_call_s": ours and ours["first_call_s"], "nt_first_call_s": nt and nt["first_call_s"],
                "ours_peak_mib": ours and ours["peak_rss_mib"], "nt_peak_mib": nt and nt["peak_rss_mib"],
                "max_rel_diff": diff, "ours": ours, "nt": nt,
            })
            r = rows[-1]
            print(f"[kernels]   ours {r['ours_per_s']} {unit}, nt {r['nt_per_s']}, diff {diff}", file=sys.stderr, flush=True)

    columns = ["kernel", "shape", "mode", "block", "unit", "ours_per_s", "nt_per_s", "speedup",
               "ours_ms_per_item", "nt_ms_per_item", "ours_peak_mib", "nt_peak_mib",
               "ours_first_call_s", "nt_first_call_s", "max_rel_diff"]
    machine = _machine()
    table = markdown_table(rows, columns)
    md = "\n".join([
        "# Kernel benchmark: kdistill vs neural-tangents 0.6.5",
        "",
        f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores, JAX backend {machine.get('jax_backend')}.",
        "float32 on both sides; depth 3, W_std = sqrt(2), b_std = 0.1; gradients are w.r.t. x1 of sum(K).",
        "per_s = entries (or images) per second, best of the repeated calls after the first;",
        "first_call_s includes compilation; peak_mib = peak resident memory (VmHWM) of the measuring subprocess;",
        "max_rel_diff = max |K_ours - K_nt| / max |K_nt| over the block (or its gradient).",
        "",
        table,
    ])
    machine["loadavg_before_after"] = [load_before, os.getloadavg()]  # a shared machine skews timings
    payload = {"rows": rows, "machine": machine, "nt_python": args.nt_python if have_nt else None,
               "quick": q, "repeats": args.repeats, "depth": DEPTH, "w_std": W_STD, "b_std": B_STD}
    js, mdp = write_results("kernels", payload, md)
    print(md)
    print(f"\nwrote {js} and {mdp}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
