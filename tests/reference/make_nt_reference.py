"""Regenerate ``nt_values.npz`` and ``nt_versions.json``: reference NTK/NNGP values from neural-tangents.

The test suite only *reads* the stored values (``tests/test_kernels_neural.py``);
this script is not run by it. neural-tangents pins an old JAX, so it runs in its
own virtual environment::

    python3.11 -m venv /tmp/ntenv
    /tmp/ntenv/bin/pip install jax==0.5.3 jaxlib==0.5.3 frozendict==2.5.1 numpy scipy
    /tmp/ntenv/bin/pip install --no-deps neural-tangents==0.6.5
    /tmp/ntenv/bin/python tests/reference/make_nt_reference.py   # from the repository root

With case names as arguments (``... make_nt_reference.py convnet_nostem_d2``) only those
cases are computed, and the other cases' stored values and metadata are kept as they are.

Every case stores its inputs (NHWC, drawn from ``np.random.default_rng`` with a
fixed seed) and ``K(x1, x2)``, ``K(x1, x1)`` for both the NTK and the NNGP, all in
float64 (``jax_enable_x64``). Keys in the ``.npz`` are ``"<case>/<name>"`` with
names ``x1, x2, ntk12, ntk11, nngp12, nngp11``; the architecture of each case is
in ``nt_versions.json`` under ``"cases"``.

Architectures (stax, parameterization ``'ntk'``, the width 512 is irrelevant for
the infinite-width kernels):

* ``fc``: ``serial(*[Dense(512, W_std, b_std), Relu()] * depth, Dense(1, W_std, b_std))``
  on flattened inputs;
* ``convnet``: ``serial(Conv(512, (3, 3), padding='SAME', W_std, b_std), Relu(),
  *[Conv(512, (3, 3), padding='SAME'), Relu(), AvgPool((2, 2), strides=(2, 2))] * depth,
  Flatten(), Dense(1, W_std, b_std))``;
* ``convnet_nostem``: the same without the first ``Conv, Relu`` (DC's / RFAD's ConvNet without
  normalisation; ``convnet-*:stem=0``): ``serial(*[Conv(512, (3, 3), padding='SAME', W_std, b_std),
  Relu(), AvgPool((2, 2), strides=(2, 2))] * depth, Flatten(), Dense(1, W_std, b_std))``.
"""

from __future__ import annotations

import json
import math
import pathlib
import platform
import sys
import types

sys.modules.setdefault("neural_tangents.experimental", types.ModuleType("neural_tangents.experimental"))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import neural_tangents  # noqa: E402
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
SQRT2 = math.sqrt(2.0)

# name: (architecture, depth, w_std, b_std, (n1, n2), image shape (h, w, c), seed)
CASES = {
    "fc_d1": ("fc", 1, SQRT2, 0.1, (4, 3), (2, 5, 1), 0),
    "fc_d3": ("fc", 3, SQRT2, 0.1, (4, 3), (2, 5, 1), 1),
    "fc_d2_custom": ("fc", 2, 1.5, 0.3, (4, 3), (1, 1, 10), 2),
    "convnet_d1_custom": ("convnet", 1, 1.2, 0.4, (3, 2), (6, 6, 2), 3),
    "convnet_d2": ("convnet", 2, SQRT2, 0.1, (4, 3), (8, 8, 3), 4),
    "convnet_d3": ("convnet", 3, SQRT2, 0.1, (4, 3), (8, 8, 3), 5),
    "convnet_d2_odd": ("convnet", 2, SQRT2, 0.1, (3, 2), (10, 6, 2), 6),
    "convnet_d3_mnist": ("convnet", 3, SQRT2, 0.1, (2, 2), (28, 28, 1), 7),
    "convnet_nostem_d2": ("convnet_nostem", 2, SQRT2, 0.1, (3, 2), (8, 8, 3), 8),
    "convnet_nostem_d3_mnist": ("convnet_nostem", 3, SQRT2, 0.1, (2, 2), (28, 28, 1), 9),
    "convnet_nostem_d1_odd_custom": ("convnet_nostem", 1, 1.2, 0.4, (3, 2), (7, 5, 2), 10),
}


def architecture(arch: str, depth: int, w_std: float, b_std: float):
    if arch == "fc":
        layers = [stax.Flatten()]
        for _ in range(depth):
            layers += [stax.Dense(512, W_std=w_std, b_std=b_std), stax.Relu()]
        layers += [stax.Dense(1, W_std=w_std, b_std=b_std)]
    else:
        conv = lambda: stax.Conv(512, (3, 3), padding="SAME", W_std=w_std, b_std=b_std)  # noqa: E731
        layers = [conv(), stax.Relu()] if arch == "convnet" else []
        for _ in range(depth):
            layers += [conv(), stax.Relu(), stax.AvgPool((2, 2), strides=(2, 2))]
        layers += [stax.Flatten(), stax.Dense(1, W_std=w_std, b_std=b_std)]
    return stax.serial(*layers)


def main(names: list[str]) -> None:
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; known: {', '.join(CASES)}")
    out: dict[str, np.ndarray] = {}
    meta = {}
    if names:  # keep every other case as stored
        with np.load(HERE / "nt_values.npz") as old:
            out.update({k: old[k] for k in old.files if k.split("/")[0] not in names})
        meta = {k: v for k, v in json.loads((HERE / "nt_versions.json").read_text())["cases"].items()
                if k not in names}
    for name, (arch, depth, w_std, b_std, (n1, n2), shape, seed) in CASES.items():
        if names and name not in names:
            continue
        rng = np.random.default_rng(seed)
        x1 = rng.standard_normal((n1, *shape))
        x2 = rng.standard_normal((n2, *shape))
        _, _, kernel_fn = architecture(arch, depth, w_std, b_std)
        kernel_fn = jax.jit(kernel_fn, static_argnames="get")
        out[f"{name}/x1"] = x1
        out[f"{name}/x2"] = x2
        for get in ("ntk", "nngp"):
            out[f"{name}/{get}12"] = np.asarray(kernel_fn(jnp.asarray(x1), jnp.asarray(x2), get=get))
            out[f"{name}/{get}11"] = np.asarray(kernel_fn(jnp.asarray(x1), None, get=get))
        assert all(v.dtype == np.float64 for v in out.values())
        meta[name] = {"arch": arch, "depth": depth, "w_std": w_std, "b_std": b_std,
                      "n1": n1, "n2": n2, "image_shape": list(shape), "seed": seed}
        print(f"{name}: ntk12[0, 0] = {out[f'{name}/ntk12'][0, 0]:.10g}")
    np.savez_compressed(HERE / "nt_values.npz", **out)
    versions = {
        "neural_tangents": neural_tangents.__version__,
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "dtype": "float64",
        "parameterization": "ntk",
        "cases": {k: meta[k] for k in CASES if k in meta},
    }
    (HERE / "nt_versions.json").write_text(json.dumps(versions, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
