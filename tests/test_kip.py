"""KIP and Label Solve: gradients, fixed points, optimality, determinism, the driver, kill-and-resume."""

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _helpers import error_line, run_cli
from kdistill import krr
from kdistill.data import fit_preprocessor, load, one_hot
from kdistill.errors import CorruptFileError, InvalidInputError
from kdistill.kernels import from_spec
from kdistill.methods import KIPSettings, kip, kip_loss, label_solve
from kdistill.methods.iterative import class_balanced_sampler
from kdistill.methods.iterative._checkpoint import load_checkpoint, save_checkpoint
from kdistill.methods._label_solve import label_loss

REFERENCE = Path(__file__).parent / "reference" / "kip_pre_driver_losses.json"


@pytest.fixture(scope="module")
def digits():
    ds = load("digits")
    prep = fit_preprocessor(ds.x_train)
    return ds, prep.apply(ds.x_train).astype(np.float64)


@pytest.mark.parametrize("case", ["rbf_learn_labels", "fc_ntk_label_solve", "rbf_noise_init"])
def test_driver_reproduces_pre_driver_losses(digits, case, x64):
    """KIP on the iterative driver takes the same steps as the hand-written loop it replaced
    (values recorded from commit 958e43d by tests/reference/make_kip_pre_driver_losses.py)."""
    ds, x = digits
    ref = json.loads(REFERENCE.read_text())["cases"][case]
    kw = dict(ref["settings"])
    # the old defaults for the settings the reference did not give
    kw = {"lr": 0.01, **kw}
    r = kip(from_spec(ref["kernel"]).fn, x, ds.y_train, num_classes=10, ipc=2, seed=3, settings=KIPSettings(**kw))
    loss = np.asarray(r.history["loss"])
    # The reference was recorded on another CPU model. Rounding differs in the last bits between CPUs (SIMD
    # widths change summation orders), and Adam divides each pixel's step by that pixel's own gradient
    # scale, so pixels whose gradient is at rounding level take full steps in a direction rounding picks:
    # the runs agree to 1e-8 for their first 5 steps, then drift (measured on an AVX-512 EPYC against
    # the recording: 1e-6 at step 5, 1.5e-4 by step 30; their image sums, dominated by those pixels, by 15%).
    np.testing.assert_allclose(loss[:5], ref["loss"][:5], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(loss, ref["loss"], rtol=2e-3, atol=1e-9)
    one_image = 1.0 / krr.effective_val_size(kw["val_size"], x.shape[0])  # validation holds at most a fifth
    # the driver now validates the starting set too (step 0), which the recording had no entry for
    assert r.history["val_step"][0] == 0 and r.history["val_accuracy"][0] < max(ref["val_accuracy"])
    np.testing.assert_allclose(r.history["val_accuracy"][1:], ref["val_accuracy"], atol=1.01 * one_image)
    best = dict(zip(r.history["val_step"][1:], ref["val_accuracy"]))  # a flipped image may move the best to a tie
    assert r.best_step == ref["best_step"] or best[r.best_step] >= best[ref["best_step"]] - 1.01 * one_image
    assert float(np.abs(r.labels).sum()) == pytest.approx(ref["labels_sum_abs"], rel=1e-3)
    if np.allclose(loss, ref["loss"], rtol=1e-6, atol=1e-9):  # no drift (fc-ntk here): the images agree too
        assert float(np.sum(r.images)) == pytest.approx(ref["images_sum"], rel=1e-6)


def _small(rng, m=6, b=15, k=3, shape=(3, 3, 2)):
    x_s = rng.normal(size=(m, *shape))
    y_s = one_hot(np.arange(m) % k, k, dtype=np.float64)
    x_t = rng.normal(size=(b, *shape))
    y_t = one_hot(rng.integers(0, k, b), k, dtype=np.float64)
    return x_s, y_s, x_t, y_t


# fc-ntk is left out here: on the diagonal K(x, x) rounding puts the correlation at 1 - 1e-16, where
# J0 has an infinite slope, so a finite difference is noise (its own tests check its gradient).
@pytest.mark.parametrize("spec", ["rbf:gamma=0.1", "fc-nngp:depth=2", "linear"])
def test_kip_gradient_matches_finite_differences(spec, rng, x64):
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
    (a, wa), (b, _) = s(3, None), s(3, None)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(s(3, None)[0], s(4, None)[0])
    assert np.bincount(labels[a], minlength=4).tolist() == [10, 10, 10, 10]
    assert len(np.unique(a)) == 40 and wa.tolist() == [1.0] * 40
    assert len(class_balanced_sampler(labels, 10_000, num_classes=4, seed=0)(0, None)[0]) == 260


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


def _numpy_loss(kernel, x_s, y_s, x_t, y_t, reg):
    """KIP's loss from kernel matrices with NumPy/SciPy (independent of the JAX loss)."""
    k_ss = krr.kernel_matrix(kernel, x_s, x_s)
    k_ts = krr.kernel_matrix(kernel, x_t, x_s)
    lam = reg * np.trace(k_ss) / len(x_s)
    pred = k_ts @ np.linalg.solve(k_ss + lam * np.eye(len(x_s)), y_s)
    return 0.5 * np.mean(np.sum((y_t - pred) ** 2, axis=1))


@pytest.mark.slow
def test_kip_runs_with_convnet_ntk(digits):
    """The first recorded loss is the loss of the initial set on the first batch (computed independently),
    and the steps move the images."""
    ds, x = digits
    kernel = from_spec("convnet-ntk:depth=1")
    seen = {}

    def init(xp, labels, *, kernel, num_classes, ipc, key):
        idx = np.array([np.flatnonzero(labels == c)[0] for c in range(num_classes)])
        seen["x0"], seen["y0"] = xp[idx], one_hot(labels[idx], num_classes, dtype=np.float64)
        return seen["x0"], seen["y0"]

    def sampler(step, state):
        seen.setdefault("batches", []).append(np.arange(20) + step)
        return np.arange(20) + step, np.ones(20)

    settings = KIPSettings(steps=3, val_every=0, val_size=0, checkpoint_every=0, reg=1e-3)
    r = kip(kernel, x, ds.y_train, num_classes=10, ipc=1, seed=0, settings=settings, init=init, sampler=sampler)
    pool_x, pool_y = x, one_hot(ds.y_train, 10, dtype=np.float64)  # val_size 0: the pool is the training set
    b0 = seen["batches"][0]
    expected = _numpy_loss(kernel, seen["x0"], seen["y0"], pool_x[b0], pool_y[b0], 1e-3)
    assert r.history["loss"][0] == pytest.approx(expected, rel=1e-6)
    assert r.images.shape == (10, 8, 8, 1) and not np.allclose(r.images, seen["x0"])


def test_custom_sampler_weights_enter_the_loss(digits, x64):
    """A sampler's weights scale each example's term: weights 2 double the MSE of the same batch."""
    ds, x = digits
    kernel = from_spec("rbf")
    fixed = np.arange(0, 300, 3)
    runs = {}
    for w in (1.0, 2.0):
        settings = KIPSettings(steps=1, val_every=0, val_size=0, checkpoint_every=0)
        runs[w] = kip(kernel, x, ds.y_train, num_classes=10, ipc=1, seed=0, settings=settings,
                      sampler=lambda step, state, w=w: (fixed, np.full(fixed.size, w)))
    assert runs[2.0].history["loss"][0] == pytest.approx(2 * runs[1.0].history["loss"][0], rel=1e-12)


def test_noise_init_matches_pool_statistics(digits, x64):
    ds, x = digits
    settings = KIPSettings(steps=1, init="noise", val_every=0, val_size=0, checkpoint_every=0)
    r = kip(from_spec("rbf"), x, ds.y_train, num_classes=10, ipc=30, seed=0, settings=settings)
    x0 = r.init_images.reshape(300, -1)
    # 300 Gaussian draws per pixel with the pool's mean and std: within a few standard errors
    np.testing.assert_allclose(x0.mean(0), x.reshape(len(x), -1).mean(0), atol=4 * x.std() / np.sqrt(300))
    assert np.corrcoef(x0.std(0), x.reshape(len(x), -1).std(0))[0, 1] > 0.9
    assert not any(np.allclose(x0[0], row) for row in x.reshape(len(x), -1))  # not real images


def test_label_solve_every_sets_the_labels_of_that_step(digits, x64):
    ds, x = digits
    kernel = from_spec("fc-nngp:depth=1")
    batch = np.arange(0, 400, 2)
    settings = KIPSettings(steps=1, label_solve_every=1, val_every=0, val_size=0, checkpoint_every=0, lr=1e-12)
    r = kip(kernel, x, ds.y_train, num_classes=10, ipc=1, seed=0, settings=settings,
            sampler=lambda step, state: (batch, np.ones(batch.size)))
    expected = label_solve(kernel, r.init_images, x[batch], one_hot(ds.y_train[batch], 10, dtype=np.float64),
                           reg=settings.reg)
    np.testing.assert_allclose(r.labels, expected, rtol=1e-6, atol=1e-8)


def test_corrupt_or_foreign_checkpoint_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"a": np.arange(5.0)}, {"step": 3, "fingerprint": {"x": 1}})
    arrays, meta = load_checkpoint(path, fingerprint={"x": 1})
    assert meta["step"] == 3 and arrays["a"].tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(InvalidInputError, match="different settings"):
        load_checkpoint(path, fingerprint={"x": 2})
    data = path.read_bytes()
    (tmp_path / "partial.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match="partial.npz: is a damaged or truncated .npz"):
        load_checkpoint(tmp_path / "partial.npz")
    # same length, one array byte flipped: only the checksum can notice
    raw = bytearray(data)
    pos = raw.find(np.arange(5.0).tobytes()) + 9
    raw[pos] ^= 0xFF
    (tmp_path / "flipped.npz").write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError):
        load_checkpoint(tmp_path / "flipped.npz")
    # the checksum covers the metadata too: a forged step is refused
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["__meta__"].tobytes())
    meta["step"] = -50
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "forged.npz", **arrays)
    with pytest.raises(CorruptFileError, match="checksum"):
        load_checkpoint(tmp_path / "forged.npz")


KIP_ARGS = ["distill", "--dataset", "digits", "--method", "kip", "--kernel", "rbf", "--ipc", "3", "--steps", "120",
            "--target-batch", "600", "--val-every", "25", "--val-size", "300", "--checkpoint-every", "10",
            "--learn-labels", "--no-full", "--seed", "5"]


# The killed run: the library with a checkpoint hook that SIGKILLs its own process right after the
# checkpoint of step 10 is on disk (a known step, whatever the host's speed).
KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from kdistill.data import load
    from kdistill.methods import RunConfig
    from kdistill.runs import run_to_dir
    out, precision = sys.argv[1], sys.argv[2]
    opts = dict(steps=30, target_batch=600, val_every=10, checkpoint_every=10, learn_labels=True)
    config = RunConfig(method="kip", kernel="rbf", ipc=3, seed=5, full_reference=False, baseline=False,
                       precision=precision, val_size=300, options=opts)
    def hook(step):
        if step == 10:
            os.kill(os.getpid(), signal.SIGKILL)
    run_to_dir(out, load("digits"), config, dataset_ref="digits", on_checkpoint=hook)
""")


@pytest.fixture(scope="module")
def short_kip_run(tmp_path_factory):
    """A finished 20-step KIP run through the CLI; tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("short") / "run"
    # no baseline: the tests resume it, never read its references
    r = run_cli(*[a if a != "120" else "20" for a in KIP_ARGS], "--no-baseline", "--out", str(out))
    assert r.exit_code == 0, r.output
    return out


def _copy_run(src, tmp_path):
    import shutil

    return Path(shutil.copytree(src, tmp_path / "run"))


@pytest.mark.slow
@pytest.mark.xdist_group("short_kip_run")  # one worker builds the fixture (8 s), not two
def test_resume_refuses_changed_settings(short_kip_run, tmp_path):
    out = _copy_run(short_kip_run, tmp_path)
    before = (out / "distilled.npz").read_bytes()
    for extra, named in ((["--steps", "50"], "--steps"), (["--ipc", "7", "--kernel", "linear"], "--ipc, --kernel"),
                         (["--precision", "float32"], "--precision")):
        line = error_line(run_cli("distill", "--resume", str(out), *extra))
        assert f"--resume continues the recorded run; drop {named} " in line
    assert (out / "distilled.npz").read_bytes() == before


@pytest.mark.slow
@pytest.mark.xdist_group("short_kip_run")
def test_resume_refuses_a_damaged_checkpoint(short_kip_run, tmp_path):
    out = _copy_run(short_kip_run, tmp_path)
    data = (out / "checkpoint.npz").read_bytes()
    (out / "checkpoint.npz").write_bytes(data[: len(data) - 200])
    assert "checkpoint" in error_line(run_cli("distill", "--resume", str(out)))


def test_label_solve_with_support_file(tmp_path, x64):
    """--support FILE: the labels are Label Solve's for exactly those images against the whole training set."""
    from kdistill import load_set

    src, out = tmp_path / "src", tmp_path / "ls"
    common = ["--dataset", "digits", "--kernel", "fc-nngp:depth=1", "--ipc", "2", "--no-full", "--reg", "1e-4"]
    r = run_cli("distill", "--method", "random", *common, "--seed", "4", "--out", str(src))
    assert r.exit_code == 0, r.output
    r = run_cli("distill", "--method", "label-solve", *common, "--support",
                str(src / "distilled.npz"), "--out", str(out))
    assert r.exit_code == 0, r.output
    support, solved = load_set(src / "distilled.npz"), load_set(out / "distilled.npz")
    np.testing.assert_array_equal(solved.images, support.images)
    ds = load("digits")
    x = fit_preprocessor(ds.x_train).apply(ds.x_train)
    expected = label_solve(from_spec("fc-nngp:depth=1"), support.images, x, one_hot(ds.y_train, 10), reg=1e-4)
    np.testing.assert_allclose(solved.labels, expected, rtol=1e-4, atol=1e-5)  # stored as float32
    assert not np.allclose(solved.labels, support.labels, atol=1e-2)


@pytest.mark.slow  # (the float64 pass only: suite time)
def test_progress_lines_when_output_is_not_a_terminal(tmp_path):
    """`kdistill distill ... > log.txt` keeps progress: a line per validation with step, loss and accuracy."""
    r = run_cli("distill", "--dataset", "digits", "--method", "kip", "--kernel", "rbf", "--ipc", "1",
                "--steps", "20", "--target-batch", "200", "--val-every", "10", "--no-full",
                "--out", str(tmp_path / "o"))  # stdout and stderr captured: not terminals
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("kip step")]
    assert [ln.split()[2] for ln in lines] == ["0/20", "10/20", "20/20"]  # the starting set, then every 10
    h = json.loads((tmp_path / "o" / "history.json").read_text())
    assert f"val {100 * h['val_accuracy'][0]:.1f}%" in lines[0]
    assert f"val {100 * h['val_accuracy'][1]:.1f}%" in lines[1] and "loss " in lines[1] and "eta " in lines[1]


@pytest.mark.slow
def test_resume_of_a_copied_run_from_another_directory_leaves_the_original_alone(tmp_path, monkeypatch):
    """--resume DIR resolves everything inside DIR: a copy resumed from elsewhere finishes, the original stays."""
    import shutil

    orig = tmp_path / "orig"
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(orig), "float64"], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    before = (orig / "checkpoint.npz").read_bytes()
    shutil.copytree(orig, tmp_path / "copy")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the killed run was another process: this one holds none of its state
    r = run_cli("distill", "--resume", "../copy")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "copy" / "history.json").read_text())["step"] == list(range(30))
    assert (orig / "checkpoint.npz").read_bytes() == before and not (orig / "summary.json").exists()


class _CountingSampler:
    """A sampler with a cache (how often each pool example was drawn): batches favour rare examples,
    so an exact resume needs the cache, which the driver checkpoints through state_dict()."""

    def __init__(self, n):
        self.counts = np.zeros(n)

    def __call__(self, step, state):
        idx = np.sort(np.argsort(self.counts, kind="stable")[:50])
        self.counts[idx] += 1 + step % 3
        return idx, np.ones(idx.size)

    def state_dict(self):
        return {"counts": self.counts.copy()}

    def load_state_dict(self, d):
        self.counts = np.asarray(d["counts"], dtype=float).copy()


def test_a_samplers_own_state_is_checkpointed_and_restored(digits, tmp_path):
    ds, x = digits
    settings = KIPSettings(steps=12, target_batch=50, val_every=0, val_size=0, checkpoint_every=4)
    n = len(x)
    full = kip(from_spec("rbf"), x, ds.y_train, num_classes=10, ipc=1, seed=0, settings=settings,
               sampler=_CountingSampler(n))

    class Crash(Exception):
        pass

    def crash_at_8(step):
        if step == 8:
            raise Crash

    with pytest.raises(Crash):
        kip(from_spec("rbf"), x, ds.y_train, num_classes=10, ipc=1, seed=0, settings=settings,
            sampler=_CountingSampler(n), checkpoint=tmp_path / "c.npz", on_checkpoint=crash_at_8)
    (tmp_path / "c8.npz").write_bytes((tmp_path / "c.npz").read_bytes())
    resumed = kip(from_spec("rbf"), x, ds.y_train, num_classes=10, ipc=1, seed=0, settings=settings,
                  sampler=_CountingSampler(n), checkpoint=tmp_path / "c.npz", resume=True)
    assert resumed.history["loss"] == full.history["loss"]
    np.testing.assert_array_equal(resumed.images, full.images)

    class Forgetful(_CountingSampler):  # the same sampler, but its cache is not restored
        def load_state_dict(self, d):
            pass

    lost = kip(from_spec("rbf"), x, ds.y_train, num_classes=10, ipc=1, seed=0, settings=settings,
               sampler=Forgetful(n), checkpoint=tmp_path / "c8.npz", resume=True)
    assert lost.history["loss"][8:] != full.history["loss"][8:]


@pytest.mark.parametrize("spec", ["rf-fc:models=2,width=16,depth=1,seed=4", "rf-convnet:models=2,width=8,depth=1,seed=4"])
def test_keyed_random_features_at_the_spec_key_equal_the_kernel(spec, rng):
    kernel = from_spec(spec)
    x1, x2 = rng.normal(size=(3, 8, 8, 1)), rng.normal(size=(2, 8, 8, 1))
    np.testing.assert_allclose(kernel.keyed(jax.random.key(4), x1, x2), kernel(x1, x2), rtol=1e-6, atol=1e-7)
    other = np.asarray(kernel.keyed(jax.random.key(5), x1, x2))
    assert not np.allclose(other, np.asarray(kernel(x1, x2)), rtol=1e-3)


