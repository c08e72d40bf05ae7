"""The method layer: registry and CLI generated from it, losses, the executor seam, the public API."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kdistill
from _helpers import error_line, run_cli
from kdistill import krr
from kdistill.data import load, one_hot
from kdistill.errors import InvalidInputError, SpecError
from kdistill.kernels import from_spec
from kdistill.methods import (MethodOutput, Option, RunConfig, get_method, methods, register_method, resolve_options,
                              unregister_method)
from kdistill.methods.iterative import platt
from kdistill.runs import run


@pytest.fixture
def toy():
    """A toy method in a few lines: the first ``ipc`` images of each class, shifted by --shift."""

    @register_method("toy", doc="first images of every class, shifted", options=[
        Option("shift", float, 0.0, "added to every pixel", min=-5, max=5),
        Option("repeat", int, 1, "copies of each image", min=1, max=3),
        Option("flip", bool, False, "negate the images"),
    ])
    def _toy(ctx, opts):
        idx = np.concatenate([np.flatnonzero(ctx.labels == c)[: ctx.config.ipc] for c in range(ctx.num_classes)])
        x = ctx.x_train[idx] + opts["shift"]
        x = -x if opts["flip"] else x
        return MethodOutput(np.repeat(x, opts["repeat"], axis=0), np.repeat(ctx.targets[idx], opts["repeat"], axis=0),
                            {"shift": opts["shift"], "test_accuracy": "must not overwrite the run's"})

    yield "toy"
    unregister_method("toy")


def test_toy_method_is_listed_helped_validated_and_run(toy, tmp_path):
    r = run_cli("methods")
    assert r.exit_code == 0 and "toy" in r.stdout and "first images of every class" in r.stdout
    flat = " ".join(r.stdout.split())
    assert "--shift: added to every pixel [default: 0.0; >= -5; <= 5]" in r.stdout
    assert "default: 4000" in flat and "one of mse|platt" in flat  # defaults, choices and ranges are shown
    r = run_cli("distill", "--method", "toy", "--help")
    assert r.exit_code == 0
    assert "--shift" in r.stdout and "--repeat" in r.stdout and "--flip" in r.stdout
    assert "--learn-labels" not in r.stdout  # only the chosen method's options
    assert "--learn-labels" in run_cli("distill", "--help").stdout  # all of them without --method

    base = ["distill", "--dataset", "digits", "--method", "toy", "--ipc", "2", "--no-full", "--out", str(tmp_path)]
    for bad, needle in ((["--shift", "9"], "--shift must be >= -5 and <= 5, got 9.0"),
                        (["--shift", "nan"], "--shift must be a finite number"),
                        (["--repeat", "1.5"], "--repeat must be an integer"),
                        (["--lr", "0.1"], "--lr applies to --method dc / frepo / kip / rcig / rfad only, not toy")):
        line = error_line(run_cli(*base, *bad))
        assert needle in line, line
    assert not (tmp_path / "summary.json").exists()

    r = run_cli(*base, "--shift", "0.5", "--repeat", "2", "--flip")
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["config"]["options"] == {"shift": 0.5, "repeat": 2, "flip": True}
    assert json.loads((tmp_path / "run.json").read_text())["config"]["options"] == s["config"]["options"]
    assert s["method_info"] == {"shift": 0.5, "test_accuracy": "must not overwrite the run's"}
    assert isinstance(s["test_accuracy"], float)  # the method's fields live under method_info
    ds = kdistill.load_set(tmp_path / "distilled.npz")
    assert ds.images.shape == (40, 8, 8, 1)
    np.testing.assert_array_equal(ds.images[0], ds.images[1])


def test_resolve_options_rejects_unknown_and_bad_values():
    with pytest.raises(InvalidInputError, match="has no option bogus; its options: .*lr"):
        resolve_options("kip", {"bogus": 1})
    with pytest.raises(InvalidInputError, match="--steps must be >= 1"):
        resolve_options("kip", {"steps": 0})
    with pytest.raises(InvalidInputError, match="--learn-labels must be true or false"):
        resolve_options("kip", {"learn_labels": "maybe"})
    with pytest.raises(InvalidInputError, match="--init must be one of real, noise"):
        resolve_options("kip", {"init": "kmeans"})
    with pytest.raises(SpecError, match="unknown method 'nope'"):
        get_method("nope")
    assert resolve_options("analytic", {"lambda_s": "0.5xbound"})["lambda_s"] == "0.5xbound"
    assert resolve_options("kip", {"steps": "7"})["steps"] == 7


@pytest.mark.slow  # (the float64 pass only: suite time)
def test_every_registered_closed_form_method_runs_and_is_deterministic():
    """Contract: every method returns a valid set (shapes, finite, m = ipc * k) and the same set for a fixed seed
    (iterative methods: tests/test_iterative_contract.py), with its registration's smoke options and kernel."""
    ds = load("digits")
    for name, m in methods().items():
        if m.iterative:
            continue
        cfg = RunConfig(method=name, ipc=2, kernel=m.smoke_kernel or "rbf", seed=1, full_reference=False,
                        options=m.smoke)
        a, b = run(ds, cfg), run(ds, cfg)
        assert a.distilled.images.shape == (20, 8, 8, 1) and a.distilled.labels.shape == (20, 10), name
        assert np.all(np.isfinite(a.distilled.images)), name
        np.testing.assert_array_equal(a.distilled.images, b.distilled.images)
        np.testing.assert_array_equal(a.distilled.labels, b.distilled.labels)


def test_platt_loss_value_and_gradient(rng):
    pred = rng.normal(size=(7, 4))
    y = one_hot(rng.integers(0, 4, 7), 4, dtype=np.float64)
    w = rng.uniform(0.5, 2, 7)
    log_temp = 0.3
    # hand computation with NumPy
    z = np.exp(log_temp) * pred
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    expected = np.mean(w * -logp[np.arange(7), y.argmax(1)])
    with jax.enable_x64(True):
        value = platt(jnp.asarray(pred), jnp.asarray(y), jnp.asarray(w), {"log_temp": jnp.asarray(log_temp)})
        assert float(value) == pytest.approx(expected, rel=1e-12)
        f = lambda p, t: platt(p, jnp.asarray(y), jnp.asarray(w), {"log_temp": t})  # noqa: E731
        gp, gt = jax.grad(f, argnums=(0, 1))(jnp.asarray(pred), jnp.asarray(log_temp))
        eps, d = 1e-6, rng.normal(size=pred.shape)
        fd = (float(f(pred + eps * d, log_temp)) - float(f(pred - eps * d, log_temp))) / (2 * eps)
        assert float(jnp.sum(gp * d)) == pytest.approx(fd, rel=1e-6)
        fd_t = (float(f(pred, log_temp + eps)) - float(f(pred, log_temp - eps))) / (2 * eps)
        assert float(gt) == pytest.approx(fd_t, rel=1e-6)


def test_kip_with_platt_loss_learns_the_temperature():
    ds = load("digits")
    cfg = RunConfig(method="kip", ipc=1, kernel="rbf", full_reference=False,
                    options={"steps": 20, "target_batch": 200, "val_every": 0, "loss": "platt", "lr": 0.05})
    r = run(ds, cfg)
    h = r.history
    assert h["log_temp"][0] != h["log_temp"][-1] and h["loss"][-1] < h["loss"][0]


@pytest.mark.slow  # (the float64 pass only: suite time)
def test_redraw_every_needs_random_features_and_changes_the_kernel():
    ds = load("digits")
    base = {"steps": 3, "target_batch": 100, "val_every": 0}
    with pytest.raises(InvalidInputError, match="redraw_every needs a random-feature kernel"):
        run(ds, RunConfig(method="kip", ipc=1, kernel="rbf", full_reference=False,
                          options={**base, "redraw_every": 1}))
    spec = "rf-fc:models=2,width=32,depth=1"
    fixed = run(ds, RunConfig(method="kip", ipc=1, kernel=spec, full_reference=False, options=base))
    redrawn = [run(ds, RunConfig(method="kip", ipc=1, kernel=spec, full_reference=False,
                                 options={**base, "redraw_every": 1})) for _ in range(2)]
    assert redrawn[0].history["loss"] == redrawn[1].history["loss"]  # a function of (seed, step)
    assert not np.allclose(fixed.history["loss"], redrawn[0].history["loss"])


class _CountingExecutor(kdistill.LocalExecutor):
    """Records every map call: proves the block computations go through the seam."""

    def __init__(self):
        self.calls = []

    def map(self, fn, *rows, **kw):
        self.calls.append((fn.__name__, len(rows[0]), kw.get("block_size")))
        return super().map(fn, *rows, **kw)


@pytest.mark.slow  # (the float64 pass only: suite time)
def test_block_computations_go_through_the_executor(rng, x64):
    ex = _CountingExecutor()
    kernel = from_spec("fcnn:depth=1")
    x = rng.normal(size=(50, 2, 2, 1))
    y = one_hot(rng.integers(0, 3, 50), 3, dtype=np.float64)
    k = krr.kernel_matrix(kernel, x, x[:7], block_size=8, executor=ex)
    np.testing.assert_allclose(k, np.asarray(kernel(x, x[:7])), rtol=1e-6)
    stats = krr.accumulate(kernel.features, x, y, chunk_size=16, executor=ex)
    phi = np.asarray(kernel.features(x), dtype=np.float64)
    np.testing.assert_allclose(stats.gram, phi.T @ phi, rtol=1e-6)
    model = krr.fit(kernel, x[:10], y[:10], reg=1e-3, executor=ex)
    np.testing.assert_allclose(krr.predict(kernel, model, x, block_size=9, executor=ex),
                               krr.predict(kernel, model, x), rtol=1e-12)
    kdistill.methods.label_solve(kernel, x[:5], x, y, chunk_size=11, executor=ex)
    krr.select_support(kernel, x[:6], y[:6], x[6:], y[6:], executor=ex)
    names = [c[0] for c in ex.calls]
    assert names == ["_kernel_block", "_stats_block", "_kernel_block", "_predict_block", "_normal_equations_block",
                     "_kernel_block", "_kernel_block", "_kernel_block"]
    assert [c[2] for c in ex.calls][:5] == [8, 16, 2048, 9, 11]


@pytest.mark.slow  # (the float64 pass only: suite time)
def test_public_distill_on_mnist_like_arrays_matches_the_pipeline():
    ds = load("digits")
    s = kdistill.distill(ds.x_train[..., 0], ds.y_train, method="analytic", kernel="fcnn", ipc=1,
                         x_test=ds.x_test[..., 0], y_test=ds.y_test)
    assert s.pixels().shape == (10, 8, 8) and s.images.shape == (10, 8, 8, 1)
    assert s.classes == list(range(10)) and list(s.class_labels()) == list(range(10))
    # the same run through the pipeline on the Dataset: the same set and accuracy
    ref = run(ds, RunConfig(method="analytic", kernel="fcnn", ipc=1, full_reference=False))
    assert s.summary["test_accuracy"] == pytest.approx(ref.summary["test_accuracy"], abs=1e-12)
    np.testing.assert_array_equal(s.images, ref.distilled.images)
    assert s.summary["method_info"]["weight_cosine"] > 1 - 1e-6
    # .pixels() undoes the standardisation exactly: re-applying it gives .images back
    mean, std = ds.x_train.mean(), ds.x_train.std()
    np.testing.assert_allclose((s.pixels() - mean) / std, s.images[..., 0], rtol=1e-4, atol=1e-4)


def test_public_distill_on_flat_rows_standardises_each_feature():
    ds = load("digits")
    flat = ds.x_train.reshape(len(ds.x_train), -1)
    s = kdistill.distill(flat, ds.y_train, method="analytic", kernel="fcnn", ipc=1)
    assert s.pixels().shape == (10, 64) and s.images.shape == (10, 1, 1, 64)
    mean, std = flat.mean(0), flat.std(0)
    std = np.where(std > 0, std, 1.0)  # constant features keep std 1
    np.testing.assert_allclose((s.pixels() - mean) / std, s.images.reshape(10, 64), rtol=1e-4, atol=1e-3)


def test_public_distill_without_test_set_and_with_string_labels(tmp_path):
    before = jax.config.jax_enable_x64
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (60, 3)), rng.normal(4, 1, (60, 3))])
    y = np.repeat(["cat", "dog"], 60)
    s = kdistill.distill(x, y, method="kip", kernel="rbf", ipc=2, steps=5, target_batch=40, val_every=0,
                         precision="float32")
    assert jax.config.jax_enable_x64 is before
    assert s.summary["test_accuracy"] is None and s.summary["precision"] == "float32"
    assert sorted(s.class_labels().tolist()) == ["cat", "cat", "dog", "dog"]
    path = s.save(tmp_path / "set.npz")
    again = kdistill.load_set(path)
    np.testing.assert_array_equal(again.images, s.images)
    assert again.classes == ["cat", "dog"] and again.pixels().shape == (4, 3)
    with pytest.raises(InvalidInputError, match="x has 120 samples but y has 3 labels"):
        kdistill.distill(x, y[:3])
    with pytest.raises(InvalidInputError, match="has no option stepz"):
        kdistill.distill(x, y, method="kip", stepz=3)


def test_long_loops_print_plain_progress_lines_off_a_terminal(capsys):
    from kdistill._progress import track

    assert list(track(range(3), total=3, description="kernel blocks", every=0.0)) == [0, 1, 2]
    lines = capsys.readouterr().err.splitlines()
    assert [ln.split("  ")[0] for ln in lines] == ["kernel blocks 1/3", "kernel blocks 2/3", "kernel blocks 3/3"]
    assert all("elapsed" in ln and "eta" in ln for ln in lines)
    assert list(track(range(3), total=3, description="quiet", every=3600.0)) == [0, 1, 2]
    assert capsys.readouterr().err == ""  # short loops stay silent


def test_registration_errors_are_caught_when_a_method_is_registered():
    def noop(ctx, opts):
        return None

    with pytest.raises(RuntimeError, match="--seed, a flag of kdistill distill"):
        register_method("bad1", doc="x", options=[Option("seed", int, 0, "")])(noop)
    with pytest.raises(RuntimeError, match="--init is option 'init' of"):
        register_method("bad2", doc="x", options=[Option("start", str, "a", "", flag="--init")])(noop)
    with pytest.raises(RuntimeError, match="must default to False"):
        register_method("bad3", doc="x", options=[Option("on", bool, True, "")])(noop)
    with pytest.raises(InvalidInputError):
        register_method("bad4", doc="x", options=[Option("n", int, 0, "", min=1)])(noop)
    assert not {"bad1", "bad2", "bad3", "bad4"} & set(methods())


def test_failed_run_leaves_the_earlier_run_json(tmp_path):
    base = ["distill", "--dataset", "digits", "--ipc", "1", "--no-full", "--out", str(tmp_path)]
    assert run_cli(*base, "--method", "random").exit_code == 0
    before = {f: (tmp_path / f).read_bytes() for f in ("run.json", "summary.json", "distilled.npz")}
    error_line(run_cli(*base, "--method", "kip", "--kernel", "rbf", "--redraw-every", "1", "--steps", "2"))
    assert {f: (tmp_path / f).read_bytes() for f in before} == before


def test_distiller_returns_floats_for_integer_input():
    from kdistill import Distiller

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(40, 3)) * 30).astype(int) + np.repeat([[0], [100]], 20, axis=0)
    x_s, y_s = Distiller(kernel="linear", ipc=2).fit_resample(x, np.repeat([0, 1], 20))
    assert x_s.dtype == np.float64 and not np.allclose(x_s, np.round(x_s))


def test_summary_has_the_random_baseline_and_per_class_accuracy():
    ds = load("digits")
    kip_run = run(ds, RunConfig(method="kip", ipc=2, kernel="rbf", full_reference=False,
                                options={"steps": 3, "target_batch": 100, "val_every": 0})).summary
    random_run = run(ds, RunConfig(method="random", ipc=2, kernel="rbf", full_reference=False)).summary
    # the baseline is exactly what `--method random` at the same ipc, kernel and seed reports
    assert kip_run["baseline"]["test_accuracy"] == random_run["test_accuracy"]
    assert kip_run["baseline"]["per_class_accuracy"] == random_run["per_class_accuracy"]
    assert random_run["baseline"] is None  # no baseline for the baseline itself
    counts = np.bincount(ds.y_test, minlength=10)
    per = np.array(kip_run["per_class_accuracy"])
    assert float(per @ counts / counts.sum()) == pytest.approx(kip_run["test_accuracy"], abs=1e-12)
    off = run(ds, RunConfig(method="kip", ipc=2, kernel="rbf", full_reference=False, baseline=False,
                            options={"steps": 3, "target_batch": 100, "val_every": 0})).summary
    assert off["baseline"] is None and "baseline" not in off["seconds"]


def test_an_init_or_sampler_registered_after_the_methods_is_among_their_choices():
    """Choices are resolved when options are listed or checked, not frozen when a method module is imported."""
    from kdistill.methods.iterative import INITS, SAMPLERS, class_balanced_sampler, real_init

    INITS["late-init"], SAMPLERS["late-sampler"] = real_init, class_balanced_sampler
    try:
        got = resolve_options("kip", {"init": "late-init", "sampler": "late-sampler"})
        assert got["init"] == "late-init" and got["sampler"] == "late-sampler"
        assert "late-init" in get_method("rfad").option("init").describe()
        assert "late-sampler" in run_cli("methods").stdout
    finally:
        del INITS["late-init"], SAMPLERS["late-sampler"]
    with pytest.raises(InvalidInputError, match="--init must be one of real, noise"):
        resolve_options("kip", {"init": "late-init"})
