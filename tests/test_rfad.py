"""RFAD (Loo et al. 2022) on the driver: cached window features, held batches, resume, errors."""

import dataclasses
import functools
import json

import jax
import numpy as np
import pytest

from kdistill.data import load
from kdistill.errors import InvalidInputError
from kdistill.kernels import from_spec
from kdistill.methods import RunConfig
from kdistill.runs import run_to_dir
from kdistill.methods.iterative import run_iterative
from kdistill.methods.iterative._driver import DriverSettings
from kdistill.methods.iterative import krr_predictions
from kdistill.methods._rfad import _predictions, rfad_features, rfad_method

pytestmark = pytest.mark.usefixtures("x64_module")

SPEC = "rf-convnet:models=2,width=8,depth=2"


def test_feature_space_predictions_equal_the_keyed_kernels_and_so_do_their_gradients():
    """What a step computes from cached target features is KIP's prediction with the kernel of the same draw."""
    kernel = from_spec(SPEC)
    feats = rfad_features(kernel)
    rng = np.random.default_rng(0)
    x_s, x_t = rng.normal(size=(4, 8, 8, 1)), rng.normal(size=(6, 8, 8, 1))
    y_s = np.eye(4)[:, :3] - 1 / 3
    key = jax.random.key(7)
    phi_t = feats(x_t, key=key)

    def ours(x):
        return _predictions(feats(x, key=key), y_s, phi_t, 5e-3).sum()

    def kip(x):
        return krr_predictions(functools.partial(kernel.keyed, key), x, y_s, x_t, reg=5e-3).sum()

    np.testing.assert_allclose(ours(x_s), kip(x_s), rtol=1e-10)
    np.testing.assert_allclose(jax.grad(ours)(x_s), jax.grad(kip)(x_s), rtol=1e-8, atol=1e-12)


def test_batches_are_held_for_a_window_and_the_networks_change_between_windows():
    ds = load("digits")
    kernel = from_spec(SPEC)
    method = rfad_method(kernel, lr=0.01, reg=5e-3, redraw_every=3, seed=0)
    seen = []

    def spy(state, batch):
        seen.append((batch.step, tuple(np.asarray(batch.indices))))
        return method.step(state, batch)

    spied = dataclasses.replace(method, step=spy)
    settings = DriverSettings(steps=7, target_batch=40, val_every=0, val_size=100, checkpoint_every=0, hold_batch=3)
    run_iterative(spied, ds.x_train, ds.y_train, num_classes=10, ipc=1, seed=0, settings=settings)
    batches = [b for _, b in seen]
    assert batches[0] == batches[1] == batches[2] and batches[3] == batches[4] == batches[5]
    assert batches[2] != batches[3] and batches[5] != batches[6]
    feats = rfad_features(kernel)
    x = ds.x_train[:3].astype(np.float64)
    base = jax.random.fold_in(jax.random.key(0), 0x72666164)
    assert not np.allclose(feats(x, key=jax.random.fold_in(base, 0)), feats(x, key=jax.random.fold_in(base, 1)))


def _config(**opts):
    options = dict(steps=9, target_batch=60, val_every=3, checkpoint_every=2, redraw_every=3, learn_labels=True)
    options.update(opts)
    return RunConfig(method="rfad", kernel=SPEC, ipc=1, seed=3, full_reference=False, baseline=False, val_size=100,
                     options=options)


def test_rfad_learns_on_digits_and_refuses_kernels_without_random_features(tmp_path):
    ds = load("digits")
    res, summary = run_to_dir(tmp_path / "run", ds, _config(steps=30, val_every=10, checkpoint_every=0,
                                                            learn_labels=False), dataset_ref="digits")
    history = res.history
    assert np.mean(history["loss"][-5:]) < np.mean(history["loss"][:5])  # Platt loss goes down
    assert "log_temp" in history and summary["method_info"]["best_step"] > 0
    with pytest.raises(InvalidInputError) as exc:
        run_to_dir(tmp_path / "bad", ds, RunConfig(method="rfad", kernel="rbf", ipc=1, full_reference=False,
                                                   baseline=False, options={"steps": 2}), dataset_ref="digits")
    assert "rf-convnet" in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "bad" / "summary.json").exists()


def test_validation_from_cached_features_equals_dual_krr_with_the_fixed_kernel():
    from kdistill import krr

    ds = load("digits")
    kernel = from_spec(SPEC)
    seen = []

    def counting(x):
        seen.append(np.shape(x)[0])
        return kernel.features(x)

    spy = dataclasses.replace(kernel)
    object.__setattr__(spy, "features", counting)  # every call counted (a jitted spy would count traces only)
    method = rfad_method(spy, lr=0.01, reg=5e-3, draw_models=1, draw_width=4)
    x_s, y_s = ds.x_train[:20].astype(np.float64), np.eye(10)[ds.y_train[:20]] - 0.1
    x_val, lab_val = ds.x_train[100:400].astype(np.float64), ds.y_train[100:400]

    def dual(x_v, lab_v, n=20):
        model = krr.fit(kernel, x_s[:n], y_s[:n], reg=5e-3)
        return krr.accuracy(krr.predict(kernel, model, x_v), lab_v)

    assert method.validate(x_s, y_s, x_val, lab_val) == dual(x_val, lab_val)
    assert method.validate(x_s[:10], y_s[:10], x_val, lab_val) == dual(x_val, lab_val, n=10)
    assert seen.count(300) == 1  # the validation images went through the networks once for both calls
    other = x_val[:100].copy()  # another validation set: its own features, not the cached ones
    assert method.validate(x_s, y_s, other, lab_val[:100]) == dual(other, lab_val[:100])
    assert seen.count(100) == 1


def test_draw_models_and_width_set_the_training_networks_of_the_kernels_architecture():
    x = np.random.default_rng(1).normal(size=(3, 8, 8, 1))
    key = jax.random.key(5)
    drawn = rfad_features(from_spec(SPEC), models=3, width=4)(x, key=key)
    same = rfad_features(from_spec("rf-convnet:models=3,width=4,depth=2"))(x, key=key)
    np.testing.assert_array_equal(drawn, same)
    assert drawn.shape == (3, 3 * 4 * 2 * 2 + 1)  # 3 networks, 4 channels on a 2x2 grid after 2 pools, the bias


@pytest.mark.slow  # scopes its own precision: once is enough
def test_precision_auto_is_float32_for_rfad_and_float64_for_the_others(tmp_path):
    ds = load("digits")
    _, auto = run_to_dir(tmp_path / "auto", ds, _config(steps=2, val_every=0, checkpoint_every=0),
                         dataset_ref="digits")
    _, forced = run_to_dir(tmp_path / "f64", ds, dataclasses.replace(
        _config(steps=2, val_every=0, checkpoint_every=0), precision="float64"), dataset_ref="digits")
    _, analytic = run_to_dir(tmp_path / "an", ds, RunConfig(method="analytic", kernel="linear", ipc=1,
                                                            full_reference=False, baseline=False),
                             dataset_ref="digits")
    assert (auto["precision"], forced["precision"], analytic["precision"]) == ("float32", "float64", "float64")
    assert json.loads((tmp_path / "auto" / "run.json").read_text())["config"]["precision"] == "float32"
    with pytest.raises(InvalidInputError) as exc:
        run_to_dir(tmp_path / "bad", ds, dataclasses.replace(_config(steps=1), precision="float16"),
                   dataset_ref="digits")
    assert "auto" in str(exc.value)


@pytest.mark.slow  # scopes its own precision: once is enough
def test_cli_without_kernel_or_precision_uses_rfads_own(tmp_path, monkeypatch):
    """The command line gives rfad its own kernel (the fixed draw validation and the final KRR use) and float32,
    and trains on fewer networks than that draw holds. The run is stopped before it starts: the default
    networks (16 of width 64) take 25 s to compile here; their family is tested in test_kernels_contract.py
    at a small size, and benchmarks/rfad.py runs them."""
    from click.testing import CliRunner

    from kdistill.cli import cli
    from kdistill.methods import resolve_options
    from kdistill.methods._rfad import DEFAULT_KERNEL
    from kdistill.runs import _pipeline

    seen = {}

    def instead(out, dataset, config, **kw):  # what run_to_dir would run, resolved as run() resolves it
        seen["config"] = _pipeline._validate(config, dataset)
        raise KeyboardInterrupt

    monkeypatch.setattr("kdistill.runs.run_to_dir", instead)
    r = CliRunner().invoke(cli, ["distill", "--dataset", "digits", "--method", "rfad", "--ipc", "1", "--out",
                                 str(tmp_path / "run")])
    assert r.exit_code == 130 and "config" in seen, r.output
    config = seen["config"]
    assert from_spec(config.kernel).spec == from_spec(DEFAULT_KERNEL).spec and config.precision == "float32"
    assert resolve_options("rfad", {})["draw_models"] < from_spec(DEFAULT_KERNEL).params[0][1]
    listing = CliRunner().invoke(cli, ["methods"], catch_exceptions=False).output
    assert "default --kernel rf-convnet" in " ".join(listing.split())
