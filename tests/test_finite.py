"""Finite-network transfer evaluation (kdistill.evaluate._finite, _models) and `kdistill evaluate --model`.

Everything runs on digits (8x8) with tiny widths and few epochs; the settings are
shared between tests so that each jitted step compiles once per model.
"""

import dataclasses
import json
import shutil
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from _helpers import error_line, run_cli, tiny_digits
from kdistill import io
from kdistill._io import DistilledSet
from kdistill.data import load, one_hot
from kdistill.errors import InvalidInputError
from kdistill.evaluate import (
    MODELS,
    accuracy,
    finite_accuracy,
    finite_evaluate_file,
    finite_settings,
    make_model,
    train,
    train_and_evaluate,
    training_targets,
)
from kdistill.evaluate import finite_record_key, merge_finite_results, resolve_augment
from kdistill.nets import augment_batch
from kdistill.nets import crop_flip as _crop_flip
from kdistill.nets import dc_augment as _dc_augment

# One tiny configuration per model that fits 20 digits images exactly.
TINY = {
    "convnet": dict(width=8, depth=2, epochs=30, lr=0.2),
    "convnet-kip": dict(width=16, depth=2, epochs=400, lr=0.3),  # a given lr: no NTK estimate here
    "convnet-frepo": dict(width=8, depth=2, epochs=60, lr=0.03, warmup=10, augment="none"),  # Adam, warm-up, cosine
    "convnet-rfad": dict(width=8, depth=2, epochs=60, lr=1.0, val_every=0),  # centred, no validation here
    "fc": dict(width=32, epochs=30, lr=0.1),
    "mlp": dict(epochs=30, lr=0.1),
}


@pytest.fixture(scope="module")
def digits():
    return load("digits")


@pytest.fixture(scope="module")
def tiny(digits):
    """20 standardized digits images (2 per class) with centred one-hot labels, and the test set."""
    return tiny_digits(digits)[:5]


@pytest.mark.parametrize("model", sorted(TINY))
def test_every_model_overfits_a_tiny_set_and_is_deterministic(model, tiny):
    x, y, cls, _, _ = tiny
    s = finite_settings(model, **TINY[model])
    a = train(x, y, s, seed=1)
    assert a.losses.shape == (s.epochs,) and a.losses[-1] < a.losses[0]
    assert a.accuracy(x, cls) == 1.0  # train accuracy 100%
    b = train(x, y, s, seed=1)
    for pa, pb in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(pa), np.asarray(pb))
        assert np.asarray(pa).dtype == np.float32
    np.testing.assert_array_equal(a.losses, b.losses)
    c = train(x, y, s, seed=2)
    assert any(not np.array_equal(pa, pc) for pa, pc in zip(jax.tree.leaves(a.params), jax.tree.leaves(c.params)))


def test_models_shapes_and_names():
    key = jax.random.key(0)
    net = make_model("convnet", width=4)  # shapes only (jax.eval_shape): nothing is compiled
    params = jax.eval_shape(lambda k: net.init(k, (8, 8, 1), 10), key)
    assert params["head"]["w"].shape == (4, 10)  # 8 -> 4 -> 2 -> 1 after three 2x2 pools
    assert [b["w"].shape for b in params["blocks"]] == [(3, 3, 1, 4), (3, 3, 4, 4), (3, 3, 4, 4)]
    assert "stem" not in params and "scale" in params["blocks"][0]
    kip = make_model("convnet-kip", width=4, depth=2)
    kparams = jax.eval_shape(lambda k: kip.init(k, (8, 8, 3), 5), key)
    assert kparams["stem"]["w"].shape == (3, 3, 3, 4) and "scale" not in kparams["blocks"][0]
    assert kparams["head"]["w"].shape == (2 * 2 * 4, 5)
    out = jax.eval_shape(kip.apply, kparams, jax.ShapeDtypeStruct((7, 8, 8, 3), np.float32))
    assert out.shape == (7, 5) and out.dtype == np.float32
    assert make_model("convnet-kip").width == 1024 and make_model("convnet").width == 128
    with pytest.raises(InvalidInputError, match="too small"):
        make_model("convnet", depth=4).init(key, (8, 8, 1), 10)
    with pytest.raises(InvalidInputError, match="valid models: convnet, convnet-kip, convnet-frepo, convnet-rfad, mlp, fc, alexnet, vgg11, resnet18"):
        make_model("resnet50")
    with pytest.raises(InvalidInputError, match="valid models"):
        finite_settings("resnet50")
    with pytest.raises(InvalidInputError, match="fixed depth"):
        make_model("resnet18", depth=34)
    with pytest.raises(InvalidInputError, match="width"):
        finite_settings("convnet", width=0)
    with pytest.raises(InvalidInputError, match="schedule"):
        finite_settings("convnet", schedule="linear")


def test_mse_targets_are_the_stored_labels(rng):
    soft = rng.normal(size=(6, 4)).astype(np.float32)
    t, mode = training_targets(soft, "mse")
    np.testing.assert_array_equal(t, soft)
    assert mode == "stored labels (MSE)"


def test_cross_entropy_targets():
    y = np.eye(4, dtype=np.float32)[[0, 2, 3]]
    t, mode = training_targets(y, "xent")
    np.testing.assert_array_equal(t, y)
    assert mode == "one-hot"
    t, mode = training_targets(y - 0.25, "xent")  # mean-centred one-hot (KIP's convention)
    np.testing.assert_array_equal(t, y)
    assert mode == "centred one-hot -> one-hot"
    probs = np.array([[0.7, 0.3, 0.0, 0.0]], np.float32)
    t, mode = training_targets(probs, "xent")
    np.testing.assert_array_equal(t, probs)
    assert mode == "probabilities"
    learned = np.array([[0.6, 0.5, -0.3, -0.8]], np.float32)  # real-valued learned labels: not argmaxed away
    t, mode = training_targets(learned, "xent", temperature=0.1)
    expect = np.exp(learned[0] / 0.1) / np.exp(learned[0] / 0.1).sum()
    np.testing.assert_allclose(t[0], expect, rtol=1e-5)
    assert 0.2 < t[0, 1] < t[0, 0] < 0.8 and mode == "softmax(labels / 0.1)"


def test_mse_network_fits_soft_labels_as_stored(tiny):
    """convnet-kip regresses onto the stored real-valued rows; they are not argmaxed away.

    Soft rows split the mass between the true class c and class c+1 (0.4 each, centred); a network
    trained on them outputs about 0.4 at c+1, one trained on the one-hot rows about -0.1 there.
    """
    x, y, cls, _, _ = tiny
    s = finite_settings("convnet-kip", **TINY["convnet-kip"])
    soft = (0.5 * (y + 0.1) + 0.5 * np.roll(y + 0.1, 1, axis=1) - 0.1).astype(np.float32)
    rows, nxt = np.arange(len(cls)), (cls + 1) % 10
    out_soft = np.asarray(s.net.apply(train(x, soft, s, seed=1).params, x))
    out_hard = np.asarray(s.net.apply(train(x, y, s, seed=1).params, x))
    assert out_soft[rows, nxt].mean() > 0.25 and out_hard[rows, nxt].mean() < 0.1
    assert np.abs(out_soft - soft).mean() < np.abs(out_soft - y).mean()


def test_augment():
    key = jax.random.key(0, impl="rbg")
    rgb = np.arange(2 * 8 * 8 * 3, dtype=np.float32).reshape(2, 8, 8, 3) + 1
    out = np.asarray(_crop_flip(key, rgb))  # shift + flip: every pixel is padding (0) or from the same image
    assert out.shape == rgb.shape
    for i in range(2):
        assert set(np.unique(out[i])) <= set(np.unique(rgb[i])) | {0.0}
    # without flips, each image is a zero-filled shift: a row of the output reads left to right like the input
    row = np.asarray(_crop_flip(key, rgb, flip=False))[:, 4, :, 0]
    for r in row:
        vals = r[r > 0]
        assert np.all(np.diff(vals) > 0)
    gray = np.random.default_rng(0).random((6, 8, 8, 1)).astype(np.float32)  # DC's shift / scale / rotate
    a, b = np.asarray(_dc_augment(key, gray)), np.asarray(_dc_augment(key, gray))
    assert a.shape == gray.shape and a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.allclose(a, gray) and np.all(np.isfinite(a))
    assert a.min() >= gray.min() - 1e-6 and a.max() <= gray.max() + 1e-6  # bilinear: no overshoot
    np.testing.assert_array_equal(np.asarray(augment_batch("none", key, gray)), gray)
    np.testing.assert_array_equal(np.asarray(augment_batch("dc", key, gray)), a)
    with pytest.raises(InvalidInputError, match="unknown augmentation"):
        augment_batch("mixup", key, gray)


def test_default_augmentation_is_dcs_protocol():
    """DC's get_daparam: crop/scale/rotate on MNIST, nothing elsewhere; digits are never flipped."""
    assert resolve_augment(None, "mnist") == ("dc", False)
    assert resolve_augment("auto", "fashion_mnist") == ("none", True)
    assert resolve_augment("auto", "cifar10") == ("none", True)
    assert resolve_augment("dsa", "svhn") == ("dsa", False) and resolve_augment("crop-flip", "cifar10") == (
        "crop-flip", True)
    with pytest.raises(InvalidInputError, match="unknown augmentation 'flip'"):
        resolve_augment("flip", "mnist")
    with pytest.raises(InvalidInputError, match="unknown augmentation"):
        finite_settings("convnet", augment="yes")
    # every architecture DC trains gets DC's augmentation on MNIST and DC's protocol; KIP's models do not
    for model in ("mlp", "alexnet", "vgg11", "resnet18"):
        assert resolve_augment("auto", "mnist", model) == ("dc", False)
        s = finite_settings(model)
        assert (s.loss, s.lr, s.momentum, s.weight_decay, s.schedule, s.epochs, s.batch_size) == (
            "xent", 0.01, 0.9, 5e-4, "step", 300, 256)
    assert resolve_augment("auto", "mnist", "convnet-kip") == ("none", False)
    assert finite_settings("resnet18").width == 64 and finite_settings("resnet18", depth=18).depth == 18


def test_train_and_evaluate_and_finite_accuracy(tiny):
    x, y, cls, x_test, y_test = tiny
    kw = TINY["convnet"]
    acc = train_and_evaluate(x, y, x_test, y_test, model="convnet", seed=1, **kw)
    # the same as training with seed 1 and counting correct argmax logits by hand
    s = finite_settings("convnet", **kw)
    trained = train(x, y, s, seed=1)
    logits = np.asarray(jax.jit(s.net.apply)(trained.params, x_test))  # one program, unchunked
    assert logits.shape == (len(y_test), 10)
    assert acc == np.count_nonzero(logits.argmax(axis=1) == y_test) / len(y_test)
    # and in the range of an independent classifier fitted to the same 20 images (1-NN: 0.75)
    nn = KNeighborsClassifier(n_neighbors=1).fit(x.reshape(len(x), -1), cls)
    assert acc > nn.score(x_test.reshape(len(x_test), -1), y_test) - 0.15 > 0.5

    t0 = time.perf_counter()
    res = finite_accuracy(x, y, x_test, y_test, model="convnet", seeds=2, **kw)
    wall = time.perf_counter() - t0
    assert res["seeds"] == 2 and len(res["accuracies"]) == 2 and res["epochs"] == kw["epochs"]
    assert res["accuracies"][1] == acc  # seed 1 again: the same number
    assert res["accuracies"][0] != acc  # seed 0 is another network
    assert res["mean"] == pytest.approx(np.mean(res["accuracies"]), abs=1e-15)
    assert res["std"] == pytest.approx(abs(res["accuracies"][0] - res["accuracies"][1]) / 2, abs=1e-15)
    assert res["final_losses"][1] == float(trained.losses[-1]) and res["diverged_seeds"] == []
    assert (res["m"], res["n_test"], res["model"]) == (20, len(y_test), "convnet")
    assert res["settings"] == s.as_dict() and res["label_mode"] == "centred one-hot -> one-hot"
    # per-seed wall-clock seconds (rounded to ms): their mean is seconds_per_seed, their sum fits in the call
    assert len(res["seconds"]) == 2 and all(v > 0 for v in res["seconds"])
    assert res["seconds_per_seed"] == pytest.approx(np.mean(res["seconds"]), abs=1e-3)
    assert sum(res["seconds"]) <= wall + 1e-3
    # JSON-able as it is: it round-trips to exactly the same values and types
    assert json.loads(json.dumps(res, allow_nan=False)) == res
    with pytest.raises(InvalidInputError, match="test images"):
        train_and_evaluate(x, y, x_test[:, :4], y_test, model="convnet", **kw)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    r = run_cli("distill", "--dataset", "digits", "--method", "random", "--ipc", "2", "--kernel", "linear",
                "--no-full", "--out", str(out), "--seed", "0")
    assert r.exit_code == 0, r.output
    return out


def test_cli_evaluate_model_writes_summary(run_dir):
    before = json.loads((run_dir / "summary.json").read_text())
    kw = TINY["fc"]
    r = run_cli("evaluate", str(run_dir / "distilled.npz"), "--dataset", "digits", "--model", "fc", "--width",
                str(kw["width"]), "--epochs", str(kw["epochs"]), "--seeds", "2", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["model"] == "fc" and res["seeds"] == 2 and res["mean"] == pytest.approx(np.mean(res["accuracies"]))
    # the CLI passes the settings through: the same numbers as the Python API
    api = finite_evaluate_file(run_dir / "distilled.npz", load("digits"), model="fc", seeds=2, width=kw["width"],
                               epochs=kw["epochs"])
    assert res["accuracies"] == api["accuracies"] and res["settings"] == api["settings"]
    # DC's protocol: digits (not MNIST) are not augmented, and never flipped
    assert res["preprocess"] == "standardize" and res["settings"]["augment"] == "none"
    assert res["settings"]["flip"] is False
    after = json.loads((run_dir / "summary.json").read_text())
    key = f"fc (epochs {kw['epochs']}, width {kw['width']})"  # not fc's protocol: recorded under what differs
    assert res["recorded_as"] == key and after["finite"][key]["accuracies"] == res["accuracies"]
    assert "fc" not in after["finite"]
    for k, v in before.items():  # existing keys untouched
        assert after[k] == v
    assert "Finite networks trained on the distilled set" in (run_dir / "report.html").read_text()  # refreshed
    # the KRR path and its --json output are unchanged
    r = run_cli("evaluate", str(run_dir / "distilled.npz"), "--dataset", "digits", "--json")
    assert r.exit_code == 0 and "test_accuracy" in json.loads(r.stdout)


def test_cli_evaluate_add_trains_only_the_missing_networks(run_dir, tmp_path):
    """--add keeps the networks on record and trains the rest: the record then equals one evaluation of all the
    seeds (same accuracies), with the recorded network's own seconds (it was not trained again)."""
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    f, kw = str(run / "distilled.npz"), TINY["fc"]
    common = ["--dataset", "digits", "--model", "fc", "--width", str(kw["width"]), "--epochs", str(kw["epochs"]),
              "--json"]
    key = f"fc (epochs {kw['epochs']}, width {kw['width']})"
    whole = json.loads(run_cli("evaluate", f, *common, "--seeds", "3").stdout)
    one = json.loads(run_cli("evaluate", f, *common, "--seeds", "1").stdout)  # replaces the record with one network
    assert one["accuracies"] == whole["accuracies"][:1]
    r = run_cli("evaluate", f, *common, "--seeds", "3", "--add")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert "adding seeds 1..2" in r.stderr and "first_seed" not in res
    assert res["accuracies"] == whole["accuracies"] and res["seeds"] == 3
    assert (res["mean"], res["std"]) == (pytest.approx(whole["mean"]), pytest.approx(whole["std"]))
    assert res["seconds"][0] == one["seconds"][0] and len(res["seconds"]) == len(res["final_losses"]) == 3
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finite"][key]["accuracies"] == whole["accuracies"]
    # enough on record: nothing is trained, the record is what is printed
    r = run_cli("evaluate", f, *common, "--seeds", "2", "--add")
    assert "nothing trained" in r.stderr and json.loads(r.stdout)["accuracies"] == whole["accuracies"]
    # a record made under other settings (a protocol default changed since) is refused before any training
    summary["finite"][key]["settings"]["momentum"] = 0.5
    (run / "summary.json").write_text(json.dumps(summary))
    before = (run / "summary.json").read_bytes()
    line = error_line(run_cli("evaluate", f, *common, "--seeds", "4", "--add"))
    assert "momentum 0.5 recorded, 0.9 now" in line and "drop --add" in line
    assert (run / "summary.json").read_bytes() == before
    # a file outside a run folder has no record to add to; elsewhere --add is a finite-network option
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(run / "distilled.npz", lone / "distilled.npz")
    shutil.copy(run / "distilled.json", lone / "distilled.json")
    assert "drop --add" in error_line(run_cli("evaluate", str(lone / "distilled.npz"), *common, "--add"))
    assert "--add" in error_line(run_cli("evaluate", f, "--dataset", "digits", "--add"))


def test_merge_refuses_results_that_are_not_one_evaluation():
    base = {"model": "fc", "seeds": 2, "accuracies": [0.5, 0.6], "seconds": [1.0, 1.0], "final_losses": [0.1, None],
            "settings": {"lr": 0.1, "shape": (1, 2)}, "m": 20, "epochs": 3}
    new = {**base, "seeds": 1, "first_seed": 2, "accuracies": [0.7], "seconds": [2.0], "final_losses": [0.2],
           "settings": {"lr": 0.1, "shape": [1, 2]}}  # as read back from JSON: the same settings
    merged = merge_finite_results(base, new)
    assert merged["accuracies"] == [0.5, 0.6, 0.7] and merged["diverged_seeds"] == [1]
    assert merged["mean"] == pytest.approx(0.6) and merged["std"] == pytest.approx(np.std([0.5, 0.6, 0.7]))
    assert merged["seconds_per_seed"] == pytest.approx(4 / 3) and "first_seed" not in merged
    with pytest.raises(InvalidInputError, match="not 2"):
        merge_finite_results(base, {**new, "first_seed": 1})
    with pytest.raises(InvalidInputError, match="differs in settings"):
        merge_finite_results(base, {**new, "settings": {"lr": 0.2, "shape": [1, 2]}})
    with pytest.raises(InvalidInputError, match="differs in m"):
        merge_finite_results(base, {**new, "m": 30})
    with pytest.raises(InvalidInputError, match="one entry per network for seeds"):
        merge_finite_results({**base, "first_seed": 3}, new)
    with pytest.raises(InvalidInputError, match="one entry per network for seeds"):  # a list short of the seeds
        merge_finite_results({**base, "seconds": [1.0]}, new)
    with pytest.raises(InvalidInputError, match="one entry per network in the lists"):  # a list the record lacks
        merge_finite_results(base, {**new, "lrs": [0.1]})
    with pytest.raises(InvalidInputError, match=r"file \(a.npz recorded, b.npz now\)"):
        merge_finite_results({**base, "file": "run/a.npz"}, {**new, "file": "b.npz"})


def test_finite_record_key_names_what_differs_from_the_protocol():
    assert finite_record_key("convnet") == "convnet"
    # given settings equal to the protocol's (augment as resolved for the dataset) leave the name as it is
    assert finite_record_key("convnet", "mnist", epochs=300, width=128, lr=0.01, augment="dc", loss="xent",
                             label_temperature=0.5) == "convnet"
    assert finite_record_key("convnet-frepo", "mnist", augment="auto", loss="mse", lr=3e-4) == "convnet-frepo"
    assert finite_record_key("convnet", "mnist", augment="none") == "convnet (augment none)"
    assert finite_record_key("convnet", "cifar10", augment="none") == "convnet"  # DC's protocol: none off MNIST
    assert finite_record_key("convnet", "mnist", label_temperature=0.3, loss="mse", lr=1e-3) == \
        "convnet (lr 0.001, loss mse, label temperature 0.3)"
    # the temperature before 2026-12-07 is recorded beside today's default, not in its place
    assert finite_record_key("convnet", "mnist", label_temperature=0.1) == "convnet (label temperature 0.1)"
    assert finite_record_key("convnet-frepo", lr=1e-4, epochs=1000) == "convnet-frepo (epochs 1000, lr 0.0001)"
    # protocols that set lr per set (from the NTK, from RFAD's table): a given lr is always another protocol
    assert finite_record_key("convnet-kip", lr=0.5) == "convnet-kip (lr 0.5)"
    assert finite_record_key("convnet-rfad", "mnist", lr=1e-3) == "convnet-rfad (lr 0.001)"
    with pytest.raises(InvalidInputError, match="unknown finite-network settings"):
        finite_record_key("convnet", seeds=3)
    with pytest.raises(InvalidInputError):
        finite_record_key("no-such-net")


def test_cli_evaluate_convnet_frepo_runs_frepos_protocol(run_dir):
    r = run_cli("evaluate", str(run_dir / "distilled.npz"), "--dataset", "digits", "--model", "convnet-frepo", "--width",
                "4", "--epochs", "3", "--seeds", "1", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    s = res["settings"]
    assert (res["epochs"], s["optimizer"], s["loss"], s["augment"], s["flip"], s["warmup"]) == \
        (3, "adam", "mse", "frepo", False, 500)
    assert res["label_mode"] == "stored labels (MSE)" and 0 <= res["mean"] <= 1


def test_cli_evaluate_loss_and_label_temperature(run_dir):
    f, kw = str(run_dir / "distilled.npz"), TINY["fc"]
    common = ("--dataset", "digits", "--model", "fc", "--width", str(kw["width"]), "--epochs", str(kw["epochs"]),
              "--seeds", "1", "--json")
    before = json.loads((run_dir / "summary.json").read_text()).get("finite", {})
    r = run_cli("evaluate", f, *common, "--loss", "mse")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    # recorded beside the run's other evaluations, none of which it replaces
    after = json.loads((run_dir / "summary.json").read_text())["finite"]
    key = f"fc (epochs {kw['epochs']}, width {kw['width']}, loss mse)"
    assert res["recorded_as"] == key and after[key]["settings"]["loss"] == "mse"
    assert {k: v for k, v in after.items() if k != key} == {k: v for k, v in before.items() if k != key}
    api = finite_evaluate_file(run_dir / "distilled.npz", load("digits"), model="fc", seeds=1, width=kw["width"],
                               epochs=kw["epochs"], loss="mse")
    assert res["settings"]["loss"] == "mse" and res["label_mode"] == "stored labels (MSE)"
    assert res["accuracies"] == api["accuracies"]
    # learned (real-valued) labels: the temperature reaches the training targets
    learned = io.load(f)
    learned = dataclasses.replace(learned, labels=learned.labels * 0.8 + 0.05)
    soft = run_dir.parent / "learned.npz"
    io.save(soft, learned)
    r = run_cli("evaluate", str(soft), *common, "--label-temperature", "0.1")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    api = finite_evaluate_file(soft, load("digits"), model="fc", seeds=1, width=kw["width"], epochs=kw["epochs"],
                               label_temperature=0.1)
    default = finite_evaluate_file(soft, load("digits"), model="fc", seeds=1, width=kw["width"], epochs=kw["epochs"])
    assert res["label_mode"] == "softmax(labels / 0.1)" and res["accuracies"] == api["accuracies"]
    assert default["label_mode"] == "softmax(labels / 0.5)" and default["final_losses"] != res["final_losses"]
    assert "label_temperature" in error_line(run_cli("evaluate", f, *common, "--label-temperature", "0"))
    assert "--loss" in error_line(run_cli("evaluate", f, "--dataset", "digits", "--loss", "mse"))


def test_cli_evaluate_bad_model_and_mismatch(run_dir, tmp_path):
    f = str(run_dir / "distilled.npz")
    line = error_line(run_cli("evaluate", f, "--dataset", "digits", "--model", "resnet50"))
    assert "resnet50" in line and "convnet, convnet-kip, convnet-frepo, convnet-rfad, mlp, fc, alexnet, vgg11, resnet18" in line
    line = error_line(run_cli("evaluate", f, "--dataset", "digits", "--seeds", "3"))
    assert "--model" in line
    line = error_line(run_cli("evaluate", f, "--dataset", "digits", "--model", "convnet", "--seeds", "0"))
    assert "--seeds" in line
    big = DistilledSet(images=np.zeros((10, 28, 28, 1), np.float32), labels=one_hot(np.arange(10), 10))
    io.save(tmp_path / "mnist_shaped.npz", big)
    line = error_line(run_cli("evaluate", str(tmp_path / "mnist_shaped.npz"), "--dataset", "digits", "--model",
                            "convnet"))
    assert "(28, 28, 1)" in line and "(8, 8, 1)" in line and "wrong --dataset" in line
    with pytest.raises(InvalidInputError, match="wrong --dataset"):
        finite_evaluate_file(tmp_path / "mnist_shaped.npz", load("digits"), model="convnet")
    three = DistilledSet(images=np.zeros((3, 8, 8, 1), np.float32), labels=one_hot(np.arange(3), 3))
    io.save(tmp_path / "three.npz", three)
    line = error_line(run_cli("evaluate", str(tmp_path / "three.npz"), "--dataset", "digits", "--model", "fc"))
    assert "3 classes" in line
