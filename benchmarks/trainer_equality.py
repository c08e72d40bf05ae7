"""Does the finite-network rework (issue 27) train DC's ConvNet exactly as before? A bit-for-bit check.

DC's inner loop (DC's ConvNet, width 128, 100 random 28x28 images, 10 classes, SGD lr 0.01 momentum 0.5, one
full batch per epoch) is run for 1 and 50 epochs three ways, each in its own process: the code at
``--before-rev`` (8ff248d: hand-written SGD, XLA's convolutions; a ``git worktree`` in ``--before-dir``, as
``dc_before_after.py`` makes), this checkout with ``KDISTILL_CONV3X3=xla`` (optax's SGD, XLA's
convolutions) and this checkout as it runs by default (optax's SGD, ``conv3x3``'s per-layer backward).
Reported: the largest relative difference of any parameter tensor, ``max |a - b| / max |a|``.

Usage:  .venv/bin/python benchmarks/trainer_equality.py [--before-dir /tmp/kdistill-before]
Writes benchmarks/results/trainer_equality.json and .md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def child(version: str, epochs: int, out: str) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((100, 28, 28, 1), dtype=np.float32))
    t = jnp.asarray(np.repeat(np.eye(10, dtype=np.float32), 10, axis=0))
    key = jax.random.key(3, impl="rbg")
    if version == "before":  # the hand-written loop of 8ff248d's DC
        from kdistill.evaluate import _finite
        from kdistill.evaluate._models import ConvNet

        net = ConvNet(width=128, depth=3)
        params = net.init(jax.random.key(0), (28, 28, 1), 10)
        v = jax.tree.map(jnp.zeros_like, params)
        lr, mom, zero = jnp.float32(0.01), jnp.float32(0.5), jnp.float32(0.0)
        for e in range(epochs):
            idx, m, ks = _finite._epoch_plan(key, e, m=100, batch=100)
            params, v, _ = _finite._step(params, v, x, t, idx[0], m[0], ks[0], lr, mom, zero, net=net, loss="xent",
                                         augment="none")
    else:
        from kdistill import nets

        net = nets.ConvNet(width=128, depth=3)
        params = net.init(jax.random.key(0), (28, 28, 1), 10)
        state = nets.init_optimizer("sgd", params, learning_rate=0.01, momentum=0.5)
        params, _, _ = nets.run_epochs(params, state, x, t, key=key, epochs=epochs, batch=256, net=net, loss="xent")
    np.savez(out, *[np.asarray(p) for p in jax.tree.leaves(params)])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before-dir", type=Path, default=Path("/tmp/kdistill-before"))
    ap.add_argument("--before-rev", default="8ff248d")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child[0], int(args.child[1]), args.child[2])
    import numpy as np

    if not (args.before_dir / "src" / "kdistill").is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(args.before_dir), args.before_rev],
                       check=True)
    variants = {"before": ({"PYTHONPATH": str(args.before_dir / "src")}, "before"),
                "after, KDISTILL_CONV3X3=xla": ({"KDISTILL_CONV3X3": "xla"}, "after"),
                "after (default)": ({}, "after")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for epochs in (1, 50):
            saved = {}
            for label, (env, version) in variants.items():
                out = str(Path(tmp) / f"{len(saved)}_{epochs}.npz")
                subprocess.run([sys.executable, __file__, "--child", version, str(epochs), out], check=True,
                               env={**os.environ, **env}, cwd=ROOT)
                saved[label] = np.load(out)
            base = saved["before"]
            for label in list(variants)[1:]:
                other = saved[label]
                diff = max(float(np.max(np.abs(base[k] - other[k])) / max(float(np.max(np.abs(base[k]))), 1e-30))
                           for k in base.files)
                rows.append({"epochs": epochs, "compared with before": label, "max_relative_difference": diff})
                print(rows[-1], flush=True)
    md = ["# DC's inner-loop training before and after the finite-network rework", "",
          f"Command: `benchmarks/trainer_equality.py`; before = {args.before_rev}. DC's ConvNet (width 128), 100 "
          "random images, SGD lr 0.01 momentum 0.5, one full batch per epoch; the largest relative difference of "
          "any parameter tensor after training.", "",
          markdown_table(rows, ["epochs", "compared with before", "max_relative_difference"])]
    write_results("trainer_equality", {"rows": rows, "before_rev": args.before_rev}, "\n".join(md))


if __name__ == "__main__":
    main()
