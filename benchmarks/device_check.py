"""How kdistill runs on this machine: one command, on a CPU or an accelerator, that installs nothing.

It reports the JAX version, ``jax.default_backend()``, the devices (platform, kind, count) and whether
float64 is enabled, then times, on random MNIST-shaped data (28x28x1 float32 standard-normal images,
10 classes, centred one-hot labels, fixed seeds; nothing is downloaded), one step of each iterative
method at its published size and one SGD step of a finite network:

- ``rfad``: one RFAD step (``kdistill.methods.rfad_method``) whose training draw is RFAD's paper setting,
  8 random ConvNets of width 256 (``rf-convnet:models=8,width=256,depth=3,stem=0``), with 1280 target
  images per step, at ipc 10; every timed step is a new window (new networks, the target batch's
  features recomputed), as in a run with ``redraw_every`` 1, the default;
- ``dc``: one DC iteration (``kdistill.methods.dc_method``) at ipc 10 with DC's defaults: outer_loop 10,
  inner_loop 50, batch_real 256 (a fresh ConvNet, 10 matching rounds over 2560 real images per class,
  and the network's training on the synthetic set between rounds);
- ``kip``: one KIP step (``kdistill.methods.kip_method``) at ipc 10 with KIPSettings' learning rate,
  ridge, loss and target batch (5000). KIP registers no kernel of its own (the CLI falls back to
  ``linear`` and ``kdistill.distill`` to ``fcnn``, both trivial), so the kernel is KIP's FC NTK,
  ``fc-ntk``, what ``benchmarks/kip.py --defaults`` runs (``--kip-kernel`` to change it);
- ``finite``: one SGD step of KIP's finite ConvNet at width 1024 (``kdistill.evaluate.train`` with
  ``finite_settings("convnet-kip", width=1024, epochs=1, batch_size=B)`` on B images: one epoch is one
  step), B = 256 by default (``--finite-batch``; on a 2-core CPU this step takes minutes).

Each method runs in its registered precision (``kdistill methods``: float32 for rfad and dc, float64 for
kip), as ``kdistill distill --precision auto`` does, unless ``--precision`` says otherwise; the finite
network trains in float32 always. The target batches are built as the driver (``run_iterative``) builds
them: a pool of random images (``--pool``, 55000 like MNIST's training set less 5000 held out), the
class-balanced sampler's indices for the step, the initial support set from ``real_init``; the batches are
built and on the device before each call's clock starts. For every row, ``compile_s`` is the first
call's seconds (compilation and one step) and ``step_s`` the median of ``--repeats`` further calls, each
forced to finish (``jax.block_until_ready``). The finite step's FLOP are its 3x3 convolutions' (forward,
input and weight gradients: 3 x ``rfad_speed.convnet_flops``, as ``nets_speed.py`` counts a step), given
as a rate and as a fraction of a float32 GEMM rate measured in the same run (``nets_speed.gemm_gflops``: a
jitted 2048 x 2048 ``jnp.dot`` on the default device, at the start and at the end; fractions are of the
start's). On an accelerator, each row also records the device's peak bytes in use so far
(``device.memory_stats()``). A row that fails (out of memory, say) is recorded with its error and the
others still run; the exit status is then 1.

A line is printed as soon as each row is measured, and the results files are rewritten after every row
(``"finished": false`` until the last), so a run that is killed keeps what it finished.

``--quick`` shrinks every size for a smoke run on a CPU (well under 2 minutes on 2 cores): RFAD 2
networks of width 32 and 128 targets, DC ipc 1 with outer/inner loops 2/1 and batch_real 32, KIP 200
targets, the ConvNet at width 64 and batch 16, a pool of 2000 images; any size flag given overrides it.

Usage:
  CPU:  .venv/bin/python benchmarks/device_check.py --quick
        .venv/bin/python benchmarks/device_check.py --only rfad,kip --repeats 3
  GPU:  .venv/bin/pip install -U "jax[cuda12]"
        .venv/bin/python benchmarks/device_check.py
        (the same code runs on the GPU, JAX's default device; nothing else to change)

Writes benchmarks/results/device_check.json and device_check.md. Never run by the tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table, write_results  # noqa: E402
from rfad_speed import convnet_flops  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from kdistill._machine import machine_info, versions  # noqa: E402
from kdistill.data import one_hot  # noqa: E402
from kdistill.evaluate import finite_settings, train  # noqa: E402
from kdistill.kernels import from_spec  # noqa: E402
from kdistill.methods import KIPSettings, RFADSettings, dc_method, get_method, kip_method, rfad_method  # noqa: E402
from kdistill.methods.iterative import Batch, class_balanced_sampler, real_init  # noqa: E402

CASES = ("rfad", "dc", "kip", "finite")
SHAPE = (28, 28, 1)
CLASSES = 10

# Sizes: the published ones, and --quick's. None for the DC loops: DC's own for the ipc.
FULL = dict(pool=55_000, rfad_models=8, rfad_width=256, rfad_targets=1280, rfad_ipc=10, dc_ipc=10, dc_outer=None,
            dc_inner=None, dc_batch_real=256, kip_ipc=10, kip_targets=KIPSettings().target_batch, finite_width=1024,
            finite_batch=256)
QUICK = dict(pool=2000, rfad_models=2, rfad_width=32, rfad_targets=128, rfad_ipc=10, dc_ipc=1, dc_outer=2,
             dc_inner=1, dc_batch_real=32, kip_ipc=10, kip_targets=200, finite_width=64, finite_batch=16)


# --- the uses of private modules, one small function each ----------------------------------------------

def _dc_loops(ipc: int) -> tuple[int, int]:
    """DC's (outer_loop, inner_loop) at ``ipc`` (DC's table; not exported by ``kdistill.methods``)."""
    from kdistill.methods._dc import dc_loops

    return dc_loops(ipc)


def _gemm_gflops() -> float | None:
    """float32 GEMM GFLOP/s on the default device (``nets_speed.gemm_gflops``), or None when ``nets_speed``
    cannot be imported (it reaches into private modules of ``kdistill``)."""
    try:
        from nets_speed import gemm_gflops
    except ImportError as e:
        print(f"(no GEMM reference: importing benchmarks/nets_speed.py failed: {e})", flush=True)
        return None
    return gemm_gflops()


# --- data and batches, as the driver makes them ---------------------------------------------------------

@dataclasses.dataclass
class Pool:
    """A target pool of random MNIST-shaped images, balanced labels and their centred one-hot rows."""

    x: np.ndarray
    labels: np.ndarray
    y: np.ndarray

    def astype(self, dtype) -> Pool:
        return Pool(self.x.astype(dtype), self.labels, self.y.astype(dtype))


def make_pool(n: int, seed: int = 0) -> Pool:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *SHAPE), dtype=np.float32)
    labels = rng.permutation(np.arange(n) % CLASSES)
    return Pool(x, labels, one_hot(labels, CLASSES, dtype=np.float32))


def initial_support(pool: Pool, ipc: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The driver's default start: class-balanced real images of the pool, centred one-hot labels."""
    x0, y0 = real_init(pool.x, pool.labels, num_classes=CLASSES, ipc=ipc, key=jax.random.key(seed))
    return np.asarray(x0, pool.x.dtype), np.asarray(y0, pool.x.dtype)


def batches(pool: Pool, target_batch: int, seed: int = 0) -> Callable[[int], Batch]:
    """``batch(step)``: the step's target batch as ``run_iterative`` builds it (class-balanced sampler)."""
    sampler = class_balanced_sampler(pool.labels, target_batch, num_classes=CLASSES, seed=seed)

    def batch(step: int) -> Batch:
        idx, weights = sampler(step, None)
        idx = np.asarray(idx)
        b = Batch(jnp.asarray(pool.x[idx]), jnp.asarray(pool.y[idx]),
                  jnp.asarray(np.asarray(weights, dtype=pool.x.dtype)), idx, step, pool.x)
        jax.block_until_ready((b.x, b.y, b.weights))
        return b

    return batch


def iterative_calls(method, pool: Pool, ipc: int, target_batch: int):
    """``(prepare, call)`` for :func:`time_calls`: call i is the method's step i on the driver's batch i,
    continuing from the state the previous call left."""
    x0, y0 = initial_support(pool, ipc)
    holder: dict[str, Any] = {"state": method.init(x0, y0)}
    batch = batches(pool, target_batch)

    def call(b: Batch):
        holder["state"], metrics = method.step(holder["state"], b)
        return holder["state"], metrics

    return batch, call


# --- the rows -----------------------------------------------------------------------------------------

def time_calls(prepare: Callable[[int], Any], call: Callable[[Any], Any], repeats: int) -> tuple[float, list[float]]:
    """(first call's seconds, the next ``repeats`` calls' seconds); ``prepare(i)`` runs off the clock."""
    seconds = []
    for i in range(repeats + 1):
        args = prepare(i)
        t = time.perf_counter()
        jax.block_until_ready(call(args))
        seconds.append(time.perf_counter() - t)
    return seconds[0], seconds[1:]


def rfad_case(s: dict, pool: Pool):
    spec = f"rf-convnet:models={s['rfad_models']},width={s['rfad_width']},depth=3,stem=0"
    d = RFADSettings()
    method = rfad_method(from_spec(spec), lr=d.lr, reg=d.reg, learn_labels=d.learn_labels, loss=d.loss,
                         redraw_every=d.redraw_every, seed=0, draw_models=s["rfad_models"], draw_width=s["rfad_width"])
    size = f"{spec}; ipc {s['rfad_ipc']}, {s['rfad_targets']} targets per step"
    return size, *iterative_calls(method, pool, s["rfad_ipc"], s["rfad_targets"])


def dc_case(s: dict, pool: Pool):
    ipc = s["dc_ipc"]
    outer, inner = _dc_loops(ipc)
    outer = outer if s["dc_outer"] is None else s["dc_outer"]
    inner = inner if s["dc_inner"] is None else s["dc_inner"]
    method = dc_method(num_classes=CLASSES, ipc=ipc, input_shape=SHAPE, outer_loop=outer, inner_loop=inner,
                       batch_real=s["dc_batch_real"], seed=0)
    target_batch = outer * s["dc_batch_real"] * CLASSES  # the driver's batch for DC: outer_loop * batch_real per class
    size = (f"ConvNet width 128; ipc {ipc}, outer_loop {outer}, inner_loop {inner}, batch_real {s['dc_batch_real']} "
            f"({target_batch} real images per step)")
    return size, *iterative_calls(method, pool, ipc, target_batch)


def kip_case(s: dict, pool: Pool):
    d = KIPSettings()
    kernel = from_spec(s["kip_kernel"])
    method = kip_method(kernel, lr=d.lr, reg=d.reg, learn_labels=d.learn_labels, loss=d.loss, seed=0)
    size = f"{kernel.spec}; ipc {s['kip_ipc']}, {s['kip_targets']} targets per step"
    return size, *iterative_calls(method, pool, s["kip_ipc"], s["kip_targets"])


def finite_case(s: dict):
    """One SGD step of KIP's ConvNet: ``train`` on exactly one batch for one epoch. Returns the size, the
    calls and the step's convolution GFLOP."""
    width, b = s["finite_width"], s["finite_batch"]
    settings = finite_settings("convnet-kip", width=width, epochs=1, batch_size=b)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((b, *SHAPE), dtype=np.float32)
    y = one_hot(rng.integers(0, CLASSES, b), CLASSES, dtype=np.float32)
    stem = bool(getattr(settings.net, "stem", True))
    gflop = 3 * convnet_flops(settings.width, settings.depth, stem=int(stem)) * b / 1e9
    size = f"convnet-kip width {settings.width}, depth {settings.depth}; batch {b} ({settings.loss}, SGD)"
    return size, (lambda i: None), (lambda _: train(x, y, settings, seed=0).params), gflop


def precision_of(case: str, flag: str) -> str:
    if case == "finite":
        return "float32"  # train() casts images and labels to float32
    if flag != "auto":
        return flag
    return get_method(case).precision


# --- devices ------------------------------------------------------------------------------------------

def device_info() -> dict:
    devices = jax.devices()
    return {"jax": jax.__version__, "backend": jax.default_backend(), "count": len(devices),
            "local_count": jax.local_device_count(),
            "devices": [{"id": d.id, "platform": d.platform, "kind": d.device_kind} for d in devices],
            "float64_enabled": bool(jax.config.jax_enable_x64)}


def memory_stats() -> dict | None:
    """The first device's memory counters (bytes), where the backend gives them (not on a CPU)."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - backends without the call
        return None
    if not stats:
        return None
    return {k: int(stats[k]) for k in ("peak_bytes_in_use", "bytes_in_use", "bytes_limit") if k in stats}


# --- output -------------------------------------------------------------------------------------------

COLUMNS = ["what", "precision", "compile_s", "step_s", "gflop", "gflop_per_s", "fraction_of_gemm", "peak_gib",
           "size"]


def _fmt(v, width: int) -> str:
    if v is None:
        s = "-"
    elif isinstance(v, float):
        s = f"{v:.4g}"
    else:
        s = str(v)
    return s.ljust(width)


WIDTHS = [7, 9, 10, 10, 8, 11, 16, 9, 0]


def print_header() -> None:
    print(" ".join(_fmt(c, w) for c, w in zip(COLUMNS, WIDTHS)), flush=True)


def print_row(row: dict) -> None:
    if row.get("error"):
        print(f"{_fmt(row['what'], WIDTHS[0])} FAILED: {row['error']}", flush=True)
        return
    print(" ".join(_fmt(row.get(c), w) for c, w in zip(COLUMNS, WIDTHS)), flush=True)


def settings_from(args) -> dict:
    s = dict(QUICK if args.quick else FULL)
    for k in s:
        v = getattr(args, k)
        if v is not None:
            s[k] = v
    s["kip_kernel"] = args.kip_kernel or get_method("kip").kernel or "fc-ntk"
    return s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes for a CPU smoke run (well under 2 minutes)")
    ap.add_argument("--only", default=",".join(CASES), help=f"comma-separated rows among {','.join(CASES)}")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls after the first (median reported)")
    ap.add_argument("--precision", choices=("auto", "float32", "float64"), default="auto",
                    help="precision of the method steps (auto: each method's own)")
    g = ap.add_argument_group("sizes (default: the published ones, or --quick's)")
    g.add_argument("--pool", type=int, help="target pool images (55000; quick 2000)")
    g.add_argument("--rfad-models", type=int, help="networks per RFAD draw (8; quick 2)")
    g.add_argument("--rfad-width", type=int, help="their width (256; quick 32)")
    g.add_argument("--rfad-targets", type=int, help="RFAD target images per step (1280; quick 128)")
    g.add_argument("--rfad-ipc", type=int, help="RFAD images per class (10)")
    g.add_argument("--dc-ipc", type=int, help="DC images per class (10; quick 1)")
    g.add_argument("--dc-outer", type=int, help="DC outer_loop (DC's for the ipc: 10 at ipc 10; quick 2)")
    g.add_argument("--dc-inner", type=int, help="DC inner_loop (DC's for the ipc: 50 at ipc 10; quick 1)")
    g.add_argument("--dc-batch-real", type=int, help="DC real images per class and round (256; quick 32)")
    g.add_argument("--kip-ipc", type=int, help="KIP images per class (10)")
    g.add_argument("--kip-targets", type=int, help="KIP target images per step (5000; quick 200)")
    g.add_argument("--kip-kernel", help="KIP's kernel spec (fc-ntk)")
    g.add_argument("--finite-width", type=int, help="KIP ConvNet width (1024; quick 64)")
    g.add_argument("--finite-batch", type=int, help="its SGD batch (256; quick 16)")
    args = ap.parse_args(argv)
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = sorted(set(only) - set(CASES))
    if unknown or not only:
        ap.error(f"--only takes names among {','.join(CASES)}, got {args.only!r}")
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    s = settings_from(args)

    t_run = time.perf_counter()
    load_before = os.getloadavg()
    devices = device_info()
    print(f"JAX {devices['jax']}, backend {devices['backend']}, {devices['count']} device(s): "
          f"{', '.join(sorted({d['kind'] for d in devices['devices']}))}; float64 enabled: "
          f"{devices['float64_enabled']}", flush=True)
    gemm_start = _gemm_gflops()
    if gemm_start is not None:
        print(f"float32 GEMM (jitted 2048^3 jnp.dot): {gemm_start:.1f} GFLOP/s", flush=True)
    command = "benchmarks/device_check.py " + " ".join(argv if argv is not None else sys.argv[1:])
    payload = {"benchmark": "device_check", "date": datetime.date.today().isoformat(), "command": command.strip(),
               "machine": machine_info(), "versions": versions(), "devices": devices, "settings": s,
               "repeats": args.repeats, "precision": args.precision,
               "gemm_gflop_per_s": {"start": gemm_start, "end": None},
               "load_average": {"before": load_before, "after": None}, "rows": [], "finished": False}
    rows = payload["rows"]
    print_header()
    pool = make_pool(s["pool"]) if set(only) & {"rfad", "dc", "kip"} else None
    for case in CASES:
        if case not in only:
            continue
        precision = precision_of(case, args.precision)
        row: dict[str, Any] = {"what": case, "precision": precision}
        try:
            with jax.enable_x64(precision == "float64"):
                gflop = None
                if case == "finite":
                    size, prepare, call, gflop = finite_case(s)
                else:
                    data = pool.astype(np.float64 if precision == "float64" else np.float32)
                    size, prepare, call = {"rfad": rfad_case, "dc": dc_case, "kip": kip_case}[case](s, data)
                row["size"] = size
                first, seconds = time_calls(prepare, call, args.repeats)
            step = float(np.median(seconds))
            row.update(compile_s=first, step_s=step, step_seconds=seconds, gflop=gflop)
            if gflop is not None:
                row["gflop_per_s"] = gflop / step
                row["fraction_of_gemm"] = gflop / step / gemm_start if gemm_start else None
        except Exception as e:  # noqa: BLE001 - record the failure, run the other rows
            row["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:500]
            row["traceback"] = traceback.format_exc()
        mem = memory_stats()
        if mem:
            row["memory_bytes"] = mem
            if "peak_bytes_in_use" in mem:
                row["peak_gib"] = mem["peak_bytes_in_use"] / 2**30
        rows.append(row)
        print_row(row)
        payload["seconds"] = time.perf_counter() - t_run
        write_results("device_check", payload, render(payload))

    payload["gemm_gflop_per_s"]["end"] = _gemm_gflops() if gemm_start is not None else None
    payload["load_average"]["after"] = os.getloadavg()
    payload["seconds"] = time.perf_counter() - t_run
    payload["finished"] = True
    js, md = write_results("device_check", payload, render(payload))
    print(f"wrote {js} and {md} ({payload['seconds']:.0f} s)", flush=True)
    return 1 if any(r.get("error") for r in rows) else 0


def render(p: dict) -> str:
    m, d = p["machine"], p["devices"]
    gemm = p["gemm_gflop_per_s"]
    gemm_text = "not measured"
    if gemm["start"] is not None:
        gemm_text = f"{gemm['start']:.0f} GFLOP/s at the start"
        gemm_text += "" if gemm["end"] is None else f", {gemm['end']:.0f} at the end"
    after = p["load_average"]["after"]
    kinds = ", ".join(sorted({x["kind"] for x in d["devices"]}))
    failed = [r for r in p["rows"] if r.get("error")]
    lines = [
        "# How kdistill runs on this machine (`benchmarks/device_check.py`)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; JAX {d['jax']} on {d['backend']} ({d['count']} device(s): "
        f"{kinds}), float64 enabled by default: {d['float64_enabled']}; {p['date']}. Command: `{p['command']}`."
        f"{'' if p['finished'] else ' **Unfinished run: the rows it completed.**'}",
        "",
        f"Random MNIST-shaped data (28x28x1, 10 classes). `compile_s`: the first call (compilation and one step); "
        f"`step_s`: median of {p['repeats']} further calls. `gflop`: the finite step's 3x3 convolutions (forward "
        f"and both gradients); its rate as a fraction of a float32 GEMM (jitted 2048^3 `jnp.dot`): {gemm_text}. "
        f"Load average (1, 5, 15 min) {[round(v, 2) for v in p['load_average']['before']]} before"
        f"{'' if after is None else f', {[round(v, 2) for v in after]} after'}. Whole run "
        f"{p.get('seconds', 0):.0f} s.",
        "",
        markdown_table(p["rows"], COLUMNS),
    ]
    if failed:
        lines += ["", "Failed rows:", ""] + [f"- `{r['what']}`: {r['error']}" for r in failed]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
