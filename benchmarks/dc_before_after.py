"""DC on MNIST at ipc 10, before and after the finite-network rework (issue 27): seconds per iteration and the
same result.

"Before" is the code at ``--before-rev`` (default ``8ff248d``: XLA's convolutions, the hand-written SGD, the
networks in ``kdistill.evaluate``), checked out with ``git worktree`` into ``--before-dir`` and imported
through ``PYTHONPATH``; "after" is this checkout (``kdistill.nets``: ``conv3x3``'s per-layer backward,
optax's SGD). Each runs in its own process, one after the other (never at the same time), the same
``kdistill.distill(mnist, method="dc", ipc=10, steps=N, val_every=0, seed=0)`` with DC's defaults (10 rounds
and 50 network epochs per iteration at ipc 10, 256 real images per class and round).

Recorded per version: the seconds of each iteration, from the start of its network to the end of its last
round (the first includes compilation; the others are the steady state), the matching distance of every round (10 per iteration: the loss curve), the KRR test
accuracy of the set after N iterations (the summary's, ``linear`` kernel, DC's default) and, with
``--convnet-seeds S``, the test accuracy of DC's ConvNet trained on it (DC's protocol, 300 epochs). The
comparison: per-iteration speed-up and the largest relative difference of the first 20 round values.

Usage:  .venv/bin/python benchmarks/dc_before_after.py [--iterations 2] [--convnet-seeds 1]
            [--before-rev 8ff248d] [--before-dir /tmp/kdistill-before]
Writes benchmarks/results/dc_before_after.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def child(args) -> None:
    """One version's run; prints one JSON line."""
    import kdistill
    import kdistill.methods._dc as dc
    from kdistill.data import load

    rounds, starts, ends = [], [], []
    match_step, fresh = dc._match_step, dc._fresh

    def timed_fresh(*a, **k):  # called once at the start of every iteration
        starts.append(time.perf_counter())
        return fresh(*a, **k)

    def recorded_match(*a, **k):  # an iteration ends with its last round (no network training after it)
        out = match_step(*a, **k)
        rounds.append(float(out[2]))  # waits for the round
        ends.append(time.perf_counter())
        return out

    dc._fresh, dc._match_step = timed_fresh, recorded_match
    ds = load(args.dataset)
    t0 = time.perf_counter()
    s = kdistill.distill(ds.x_train, ds.y_train, method="dc", ipc=args.ipc, steps=args.iterations, val_every=0,
                         seed=0, x_test=ds.x_test, y_test=ds.y_test)
    end = time.perf_counter()
    per = len(rounds) // max(len(starts), 1)
    iters = [ends[(i + 1) * per - 1] - t for i, t in enumerate(starts)]
    out = {"iteration_seconds": [round(v, 2) for v in iters], "round_values": rounds, "kdistill": kdistill.__file__,
           "krr_test_accuracy": s.summary.get("test_accuracy"), "total_seconds": round(end - t0, 1)}
    if args.convnet_seeds:
        import tempfile

        from kdistill.evaluate import finite_evaluate_file

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "dc.npz"
            s.save(path)
            r = finite_evaluate_file(path, ds, model="convnet", seeds=args.convnet_seeds)
        out["convnet"] = {"mean": r["mean"], "accuracies": r["accuracies"], "seconds": r["seconds"]}
    print("RESULT " + json.dumps(out), flush=True)


def _run(label: str, pythonpath: str | None, args) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    cmd = [sys.executable, __file__, "--child", "--iterations", str(args.iterations), "--ipc", str(args.ipc),
           "--dataset", args.dataset, "--convnet-seeds", str(args.convnet_seeds)]
    load = os.getloadavg()
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if p.returncode or line is None:
        raise SystemExit(f"{label} run failed ({p.returncode}):\n{p.stderr[-3000:]}")
    res = json.loads(line[len("RESULT "):])
    expected = Path(pythonpath) if pythonpath else ROOT / "src"
    if not Path(res["kdistill"]).resolve().is_relative_to(expected.resolve()):
        raise SystemExit(f"{label} imported {res['kdistill']}, not the code under {expected}")
    res.update(label=label, wall_seconds=round(time.perf_counter() - t0, 1),
               loadavg_before=[round(v, 2) for v in load], loadavg_after=[round(v, 2) for v in os.getloadavg()])
    print(f"{label}: iterations {res['iteration_seconds']} s, KRR {res['krr_test_accuracy']}, "
          f"convnet {res.get('convnet')}", flush=True)
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--convnet-seeds", type=int, default=1)
    ap.add_argument("--before-rev", default="8ff248d")
    ap.add_argument("--before-dir", type=Path, default=Path("/tmp/kdistill-before"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    from kdistill._machine import machine_info, versions

    if not (args.before_dir / "src" / "kdistill").is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(args.before_dir), args.before_rev],
                       check=True)
    want, have = (subprocess.run(["git", "-C", str(d), "rev-parse", rev], capture_output=True, text=True,
                                 check=True).stdout.strip() for d, rev in ((ROOT, args.before_rev),
                                                                           (args.before_dir, "HEAD")))
    if want != have:
        raise SystemExit(f"{args.before_dir} holds {have[:10]}, not {args.before_rev}; remove it "
                         f"(git worktree remove {args.before_dir}) or pass another --before-dir")
    t0 = time.perf_counter()
    before = _run("before", str(args.before_dir / "src"), args)
    after = _run("after", None, args)
    n = min(20, len(before["round_values"]), len(after["round_values"]))
    a, b = before["round_values"][:n], after["round_values"][:n]
    if not n:
        raise SystemExit("no matching rounds were recorded")
    rel = max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b))
    steady = {r["label"]: (sum(r["iteration_seconds"][1:]) / max(len(r["iteration_seconds"]) - 1, 1)
                           if len(r["iteration_seconds"]) > 1 else r["iteration_seconds"][0]) for r in (before, after)}
    summary = {"before_rev": args.before_rev, "iterations": args.iterations, "ipc": args.ipc, "dataset": args.dataset,
               "steady_seconds_per_iteration": steady,
               "speedup": round(steady["before"] / steady["after"], 3),
               "rounds_compared": n, "max_relative_difference_first_rounds": rel,
               "command": "benchmarks/dc_before_after.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "seconds": round(time.perf_counter() - t0, 1)}
    rows = []
    for r in (before, after):
        rows.append({"version": r["label"], "first_iteration_s": r["iteration_seconds"][0],
                     "steady_iteration_s": round(steady[r["label"]], 2),
                     "krr_test_accuracy": r["krr_test_accuracy"],
                     "convnet_test_accuracy": (r.get("convnet") or {}).get("mean"),
                     "loadavg_before": r["loadavg_before"], "loadavg_after": r["loadavg_after"]})
    curve = [{"round": i + 1, "before": a[i], "after": b[i], "relative_difference": abs(a[i] - b[i]) / max(abs(a[i]), 1e-12)}
             for i in range(n)]
    info = machine_info()
    md = [f"# DC on {args.dataset} at ipc {args.ipc}: before ({args.before_rev}) and after kdistill.nets", "",
          f"Machine: {info.get('cpu', '')}, {info.get('cores', '')} cores, {versions()}. "
          f"Command: `{summary['command']}`. {args.iterations} iterations per version, run one after the other; "
          f"whole run {summary['seconds']} s.", "",
          f"Steady seconds per iteration (iterations after the first): before {steady['before']:.1f}, after "
          f"{steady['after']:.1f} ({summary['speedup']}x). First {n} round values (matching distance per round, "
          f"10 rounds per iteration): largest relative difference {rel:.2e}.", "",
          markdown_table(rows, list(rows[0])), "", markdown_table(curve, list(curve[0]) if curve else [])]
    write_results("dc_before_after", {"summary": summary, "runs": [before, after], "machine": info},
                  "\n".join(md) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
