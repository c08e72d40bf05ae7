"""Per-step KIP losses on digits from the pre-driver implementation (commit 958e43d).

Written before KIP moved onto the iterative driver, to check that the move changed no step:
``git checkout 958e43d && .venv/bin/python tests/reference/make_kip_pre_driver_losses.py OUT.json``
(it uses the old ``kdistill.distill._kip`` API, so it does not run on later commits).
``tests/test_kip.py::test_driver_reproduces_pre_driver_losses`` replays the same cases.
"""
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from kdistill.data import fit_preprocessor, load
from kdistill.distill._kip import KIPSettings, kip
from kdistill.kernels import from_spec

ds = load("digits")
x = fit_preprocessor(ds.x_train).apply(ds.x_train).astype(np.float64)
cases = {
    "rbf_learn_labels": ("rbf", dict(steps=30, lr=0.01, target_batch=300, val_every=10, val_size=300,
                                     checkpoint_every=0, learn_labels=True)),
    "fc_ntk_label_solve": ("fc-ntk:depth=2", dict(steps=30, lr=0.02, target_batch=200, val_every=10, val_size=300,
                                                  checkpoint_every=0, label_solve_every=10)),
    "rbf_noise_init": ("rbf:gamma=0.05", dict(steps=20, lr=0.01, target_batch=250, val_every=5, val_size=200,
                                              checkpoint_every=0, init="noise", learn_labels=True)),
}
out = {"source": "kdistill commit 958e43d (KIP before the iterative driver), digits, standardize, float64, seed 3, ipc 2",
       "cases": {}}
for name, (spec, kw) in cases.items():
    r = kip(from_spec(spec).fn, x, ds.y_train, num_classes=10, ipc=2, seed=3, settings=KIPSettings(**kw))
    out["cases"][name] = {"kernel": spec, "settings": kw, "loss": r.history["loss"],
                          "val_accuracy": r.history["val_accuracy"], "best_step": r.best_step,
                          "images_sum": float(np.sum(r.images)), "labels_sum_abs": float(np.abs(r.labels).sum())}
    print(name, r.history["loss"][:3], r.history["loss"][-1])
json.dump(out, open(sys.argv[1], "w"), indent=1)
