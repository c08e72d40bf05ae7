"""Helpers shared by the benchmark scripts: timing, result files, machine description."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable

RESULTS = Path(__file__).resolve().parent / "results"


class Timer:
    """``with Timer() as t: ...; t.seconds``"""

    def __enter__(self):
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._t


def fmt(v: Any) -> str:
    """A markdown table cell: floats to 4 decimals (4 significant digits when tiny or huge), None empty."""
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.4f}".rstrip("0").rstrip(".")
    return "" if v is None else str(v)


def markdown_table(rows: Iterable[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(name: str, payload: dict, markdown: str) -> tuple[Path, Path]:
    """Write ``results/<name>.json`` and ``results/<name>.md`` atomically."""
    from kdistill._atomic import write_bytes, write_json

    RESULTS.mkdir(parents=True, exist_ok=True)
    js, md = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    write_json(js, payload)
    write_bytes(md, (markdown + "\n").encode())
    return js, md


def load_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def kdistill_cli(*args: str) -> tuple[float, str]:
    """Run ``kdistill ARGS`` in its own process (this interpreter); ``(seconds, stdout)``, or exit with its
    error output when it fails."""
    import subprocess
    import sys

    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "kdistill.cli", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"kdistill {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return time.perf_counter() - t, out.stdout


def evaluate_in_run(run_dir: Path, *flags: str, seeds: int) -> tuple[float, dict, int]:
    """``kdistill evaluate RUN_DIR/distilled.npz FLAGS --seeds SEEDS --json --add`` in the run folder itself, whose
    summary.json then records the result under its own name (the model, plus the settings given that differ from
    its protocol's, so a variant never replaces the protocol's record). A record of the same evaluation with fewer
    networks grows by the missing seeds only, one with at least SEEDS is returned as it is (nothing trained); a
    record made under other settings (an earlier default) is refused by ``--add`` before any training, and the
    evaluation is then made afresh with every network. ``(seconds, the JSON result, networks trained here)``, the
    seconds those of this call when it trained every network, else the sum of all the networks' own seconds (the
    ones on record included)."""
    summary = Path(run_dir) / "summary.json"
    before = (load_json(summary).get("finite") or {}) if summary.exists() else {}
    cmd = ["evaluate", str(Path(run_dir) / "distilled.npz"), *flags, "--seeds", str(seeds), "--json"]
    try:
        seconds, stdout = kdistill_cli(*cmd, "--add")
    except SystemExit as e:
        if "drop --add" not in str(e):
            raise
        print(f"--add refused, evaluating all {seeds} networks again: {str(e).splitlines()[-1]}", flush=True)
        seconds, stdout = kdistill_cli(*cmd)
        before = {}
    res = json.loads(stdout.strip().splitlines()[-1])
    old = before.get(res.get("recorded_as"), {}).get("accuracies") or []
    kept = len(old) if res["accuracies"][: len(old)] == old else 0
    return (seconds if kept == 0 else sum(res["seconds"])), res, len(res["accuracies"]) - kept


def load_and_gemm() -> tuple[list[float], float]:
    """The load average (1, 5, 15 minutes) and this machine's float32 GEMM rate (:func:`gemm_gflops`, GFLOP/s),
    recorded before a job; the GEMM is measured first, so that the load average is not its own."""
    gemm = round(gemm_gflops(), 1)
    return [round(v, 2) for v in os.getloadavg()], gemm


def merged_rows(name: str, row: dict, key: tuple[str, ...]) -> list[dict]:
    """The rows of ``results/<name>.json`` with ``row`` in the place of the row that has the same ``key``
    fields, or added at the end."""
    path = RESULTS / f"{name}.json"
    rows = load_json(path).get("rows", []) if path.exists() else []
    ident = tuple(row.get(k) for k in key)
    at = next((i for i, r in enumerate(rows) if tuple(r.get(k) for k in key) == ident), len(rows))
    return rows[:at] + [row] + [r for r in rows[at + 1:] if tuple(r.get(k) for k in key) != ident]


OLD_TEMPERATURE_MARK = "†"
FIRST_TEMPERATURE = 0.1
"""The default label temperature of ``kdistill evaluate`` until 2026-12-07."""


def old_temperature_note() -> str:
    """The footnote of a cell marked :data:`OLD_TEMPERATURE_MARK`."""
    from kdistill.evaluate._finite import DEFAULT_LABEL_TEMPERATURE

    return (f"{OLD_TEMPERATURE_MARK} learned labels trained as softmax(labels / T) at a T other than today's "
            f"default {DEFAULT_LABEL_TEMPERATURE:g}, without asking for it: {FIRST_TEMPERATURE:g}, the default of "
            "`kdistill evaluate` until 2026-12-07 (0.5 since; 2.6 to 19.9 points higher on the sets swept in "
            "transfer_ablation.md's label-temperature table). The cell was not re-evaluated: its set's folder is "
            "gone, or it has not been redone.")


def label_temperature(flags: list[str]) -> float:
    """The label temperature ``kdistill evaluate <flags>`` trains learned labels with today."""
    from kdistill.evaluate._finite import DEFAULT_LABEL_TEMPERATURE

    return float(flags[flags.index("--label-temperature") + 1]) if "--label-temperature" in flags \
        else DEFAULT_LABEL_TEMPERATURE


def old_temperature(label_mode: str | None, command: str = "") -> bool:
    """Whether an evaluation trained learned labels at another temperature than its command gives today:
    ``label_mode`` as ``kdistill evaluate`` reports it (``softmax(labels / T)``; other modes never are),
    ``command`` the evaluation's command line or flags (``--label-temperature T``, else today's default)."""
    return (bool(label_mode) and label_mode.startswith("softmax(labels / ")
            and label_mode != f"softmax(labels / {label_temperature(command.split()):g})")


def matmul_seconds(m: int, k: int, n: int, dtype, repeats: int = 5) -> float:
    """Best seconds of a NumPy ``(m, k) @ (k, n)`` product in ``dtype`` (after one warm-up): this machine's
    reference for ratios measured in the same run."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return best


def gemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """float32 GFLOP/s of a jitted ``(n, n) @ (n, n)`` ``jnp.dot`` on JAX's default device, best of ``repeats``
    after a warm-up: the machine's speed, recorded beside results measured on it (the project's 2-core machines
    have differed about 2x between sessions, so a budget in minutes buys different numbers of steps)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
    dot = jax.jit(jnp.dot).lower(a, a).compile()
    dot(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        dot(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best / 1e9
