"""KIP and Label Solve: gradients, fixed points, optimality, determinism, kill-and-resume."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdistill.data import fit_preprocessor, load, one_hot
from kdistill.distill._checkpoint import load_checkpoint, save_checkpoint
from kdistill.distill._kip import KIPSettings, kip, kip_loss
from kdistill.distill._label_solve import label_loss, label_solve
from kdistill.distill._sampling import class_balanced_sampler
from kdistill.errors import CorruptFileError, InvalidInputError
from kdistill.kernels import from_spec


@pytest.fixture(scope="module")
def digits():
    ds = load("digits")
    prep = fit_preprocessor(ds.x_train)
    return ds, prep.apply(ds.x_train).astype(np.float64)


def _small(rng, m=6, b=15, k=3, shape=(3, 3, 2)):
    x_s = rng.normal(size=(m, *shape))
    y_s = one_hot(np.arange(m) % k, k, dtype=np.float64)
    x_t = rng.normal(size=(b, *shape))
    y_t = one_hot(rng.integers(0, k, b), k, dtype=np.float64)
    return x_s, y_s, x_t, y_t


# fc-ntk is left out here: on the diagonal K(x, x) rounding puts the correlation at 1 - 1e-16, where
# J0 has an infinite slope, so a finite difference is noise (its own tests check its gradient).
@pytest.mark.parametrize("spec", ["rbf:gamma=0.1", "fc-nngp:depth=2", "linear"])
def test_kip_gradient_matches_finite_differences(spec, rng):
    kernel = from_spec(spec)
    x_s, y_s, x_t, y_t = _small(rng)

    def f(xs, ys):
        return kip_loss(kernel.fn, xs, ys, x_t, y_t, reg=1e-2)[0]

    gx, gy = jax.grad(f, argnums=(0, 1))(jnp.asarray(x_s), jnp.asarray(y_s))
    eps = 1e-6
    for arr, grad, argnum in ((x_s, gx, 0), (y_s, gy, 1)):
        d = rng.normal(size=arr.shape)
        args_p = [x_s, y_s]
        args_m = [x_s, y_s]
        args_p[argnum] = arr + eps * d
        args_m[argnum] = arr - eps * d
        fd = (float(f(*args_p)) - float(f(*args_m))) / (2 * eps)
        assert float(jnp.sum(grad * d)) == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_loss_vanishes_when_support_is_target(rng):
    kernel = from_spec("rbf:gamma=0.1")
    x_s, y_s, _, _ = _small(rng, m=12)
    loss, acc = kip_loss(kernel.fn, x_s, y_s, x_s, y_s, reg=1e-10)
    assert float(loss) < 1e-12 and float(acc) == 1.0
    loss_other, _ = kip_loss(kernel.fn, x_s, y_s, x_s, y_s[::-1], reg=1e-10)
    assert float(loss_other) > 0.1


def test_label_solve_minimises_the_loss(rng):
    kernel = from_spec("fc-ntk:depth=1")
    x_s, _, x_t, y_t = _small(rng, m=6, b=60)
    y_star = label_solve(kernel, x_s, x_t, y_t, reg=1e-4, chunk_size=17)  # chunking must not matter
    best = label_loss(kernel, x_s, y_star, x_t, y_t, reg=1e-4)
    for _ in range(5):
        worse = label_loss(kernel, x_s, y_star + 1e-3 * rng.normal(size=y_star.shape), x_t, y_t, reg=1e-4)
        assert worse > best
    # and it is the least-squares solution computed directly
    k_ss = np.asarray(kernel(x_s, x_s))
    a = k_ss + 1e-4 * np.trace(k_ss) / 6 * np.eye(6)
    b = np.linalg.lstsq(np.asarray(kernel(x_t, x_s)), y_t, rcond=None)[0]
    np.testing.assert_allclose(y_star, a @ b, rtol=1e-6, atol=1e-8)


def test_label_solve_beats_one_hot_on_digits(digits):
    ds, x = digits
    kernel = from_spec("rbf")
    idx = np.concatenate([np.flatnonzero(ds.y_train == c)[:2] for c in range(10)])
    y = one_hot(ds.y_train, 10, dtype=np.float64)
    solved = label_solve(kernel, x[idx], x, y)
    assert label_loss(kernel, x[idx], solved, x, y) < label_loss(kernel, x[idx], y[idx], x, y)


def test_sampler_is_balanced_and_a_function_of_step():
    labels = np.repeat(np.arange(4), [50, 60, 70, 80])
    s = class_balanced_sampler(labels, 40, num_classes=4, seed=1)
    a, b = s(3), s(3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(s(3), s(4))
    assert np.bincount(labels[a], minlength=4).tolist() == [10, 10, 10, 10]
    assert len(class_balanced_sampler(labels, 10_000, num_classes=4, seed=0)(0)) == 260


def test_kip_improves_and_is_deterministic(digits):
    ds, x = digits
    kernel = from_spec("rbf")
    settings = KIPSettings(steps=30, lr=0.01, target_batch=300, val_every=10, val_size=300, checkpoint_every=0,
                           learn_labels=True)
    r1 = kip(kernel.fn, x, ds.y_train, num_classes=10, ipc=1, seed=0, settings=settings)
    r2 = kip(kernel.fn, x, ds.y_train, num_classes=10, ipc=1, seed=0, settings=settings)
    np.testing.assert_array_equal(r1.images, r2.images)
    np.testing.assert_array_equal(r1.labels, r2.labels)
    assert r1.history["loss"][-1] < r1.history["loss"][0]
    assert r1.best_val_accuracy == max(r1.history["val_accuracy"])


def test_kip_runs_with_convnet_ntk(digits):
    ds, x = digits
    kernel = from_spec("convnet-ntk:depth=1")
    settings = KIPSettings(steps=3, target_batch=50, val_every=0, val_size=0, checkpoint_every=0)
    r = kip(kernel.fn, x, ds.y_train, num_classes=10, ipc=1, seed=0, settings=settings)
    assert r.images.shape == (10, 8, 8, 1) and np.all(np.isfinite(r.images))
    assert len(r.history["loss"]) == 3 and np.all(np.isfinite(r.history["loss"]))


def test_patience_stops_early(digits):
    ds, x = digits
    settings = KIPSettings(steps=200, lr=1e-9, target_batch=100, val_every=1, val_size=200, patience=2,
                           checkpoint_every=0)
    r = kip(from_spec("rbf").fn, x, ds.y_train, num_classes=10, ipc=1, seed=0, settings=settings)
    assert r.stopped_early and r.steps_run < 200


def test_corrupt_or_foreign_checkpoint_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"a": np.arange(5.0)}, {"step": 3, "fingerprint": {"x": 1}})
    arrays, meta = load_checkpoint(path, fingerprint={"x": 1})
    assert meta["step"] == 3 and arrays["a"].tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(InvalidInputError, match="different settings"):
        load_checkpoint(path, fingerprint={"x": 2})
    data = path.read_bytes()
    (tmp_path / "partial.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match="corrupt or partial"):
        load_checkpoint(tmp_path / "partial.npz")
    # same length, one array byte flipped: only the checksum can notice
    raw = bytearray(data)
    pos = raw.find(np.arange(5.0).tobytes()) + 9
    raw[pos] ^= 0xFF
    (tmp_path / "flipped.npz").write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError):
        load_checkpoint(tmp_path / "flipped.npz")


KIP_ARGS = ["distill", "--dataset", "digits", "--method", "kip", "--kernel", "rbf", "--ipc", "3", "--steps", "300",
            "--target-batch", "600", "--val-every", "25", "--val-size", "300", "--checkpoint-every", "10",
            "--learn-labels", "--no-full", "--seed", "5"]


def _exe():
    return os.path.join(os.path.dirname(sys.executable), "kdistill")


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run([_exe(), *KIP_ARGS, "--out", str(full)], check=True, capture_output=True)
    proc = subprocess.Popen([_exe(), *KIP_ARGS, "--out", str(killed)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt, step_at_kill = killed / "checkpoint.npz", None
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists():
            try:
                step_at_kill = load_checkpoint(ckpt)[1]["step"]
            except (CorruptFileError, InvalidInputError):
                step_at_kill = None
            if step_at_kill and step_at_kill >= 30:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert 30 <= step_at_kill < 300 and not (killed / "summary.json").exists()
    r = subprocess.run([_exe(), "distill", "--resume", str(killed)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a, b = np.load(full / "distilled.npz"), np.load(killed / "distilled.npz")
    np.testing.assert_allclose(b["images"], a["images"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(b["labels"], a["labels"], atol=1e-6, rtol=0)
    ha = json.loads((full / "history.json").read_text())
    hb = json.loads((killed / "history.json").read_text())
    assert hb["step"] == ha["step"] and np.allclose(hb["loss"], ha["loss"], rtol=1e-9)


def test_resume_refuses_a_damaged_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = [a if a != "300" else "20" for a in KIP_ARGS]
    subprocess.run([_exe(), *args, "--out", str(out)], check=True, capture_output=True)
    data = (out / "checkpoint.npz").read_bytes()
    (out / "checkpoint.npz").write_bytes(data[: len(data) - 200])
    r = subprocess.run([_exe(), "distill", "--resume", str(out)], capture_output=True, text=True)
    assert r.returncode == 2 and "checkpoint" in r.stderr and len(r.stderr.strip().splitlines()) == 1
