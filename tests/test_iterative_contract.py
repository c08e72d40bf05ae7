"""The contract every registered iterative method keeps, parametrised from the registry.

A method registered with ``kdistill.methods.iterative.register_iterative`` (or ``register_method(...,
iterative=True)``) is run here with its own ``smoke`` options on three classes of ``digits`` (what the contract
checks does not depend on the number of classes; DC's step compiles in a third of the time), with no test
written for it:

- deterministic for a fixed seed;
- interrupted (KeyboardInterrupt) or SIGKILLed right after a checkpoint, then resumed, it ends where an
  uninterrupted run ends (images, labels, losses, validations), in float32; the driver's float64 state comes
  back too (KIP and the toy: the float64 compile of every method would cost the suite half a minute and test
  the same driver code); a checkpoint written by an earlier kdistill (KIP's, from before settings-class
  registration) still resumes;
- the starting set is validated (step 0) and kept unless a step beats it; patience stops it and a resume
  stays stopped; a time limit stops it with a checkpoint;
- a damaged checkpoint, one written with other settings, and one with forged bookkeeping are refused in
  one line;
- its options round-trip through ``run.json`` and through the CLI's strings.

The plug-ins in ``tests/plugins/`` (a toy method in one file) are registered for these tests only.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from _helpers import error_line, three_digits, whole_and_resumed
from kdistill.cli import cli
from kdistill.data import load
from kdistill.errors import CorruptFileError, InvalidInputError
from kdistill.methods import RunConfig, get_method, methods, resolve_options, unregister_method
from kdistill.methods.iterative import CHECKPOINT, DriverSettings, load_checkpoint, save_checkpoint
from kdistill.runs import read_run_json, run_to_dir

PLUGINS = sorted((Path(__file__).parent / "plugins").glob("*.py"))


def load_plugins() -> set[str]:
    """Import every plug-in file afresh (each registers its methods); returns the names registered."""
    before = set(methods())
    for path in PLUGINS:
        spec = importlib.util.spec_from_file_location(f"kdistill_plugin_{path.stem}_{uuid.uuid4().hex}", path)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    return set(methods()) - before


_PLUGIN_NAMES = load_plugins()
ITERATIVE = sorted(name for name, m in methods().items() if m.iterative)
for _name in _PLUGIN_NAMES:  # registered only while a test of this module runs (other modules list methods)
    unregister_method(_name)


@pytest.fixture(autouse=True)
def plugins():
    names = load_plugins()
    yield
    for name in names:
        unregister_method(name)


@pytest.fixture(scope="module")
def digits():
    return three_digits()


def config(name: str, precision: str = "float32", **options) -> RunConfig:
    """The method's smoke run on digits, with a checkpoint every step (the stops below are at step 2)."""
    m = get_method(name)
    return RunConfig(method=name, kernel=m.smoke_kernel, ipc=2, seed=3, full_reference=False, baseline=False,
                     val_size=100, precision=precision, options={**m.smoke, "checkpoint_every": 1, **options})


def assert_same_run(full: Path, cut: Path, precision: str) -> None:
    """A resumed run equals the uninterrupted one: the state comes back bit for bit and the steps after it
    compute the same things, so only summation order inside a library could make them differ."""
    tol = 1e-9 if precision == "float64" else 1e-6
    a, b = np.load(full / "distilled.npz"), np.load(cut / "distilled.npz")
    np.testing.assert_allclose(b["images"], a["images"], rtol=0, atol=tol)
    np.testing.assert_allclose(b["labels"], a["labels"], rtol=0, atol=tol)
    ha, hb = (json.loads((d / "history.json").read_text()) for d in (full, cut))
    assert hb["step"] == ha["step"] and len(ha["step"]) > 2
    np.testing.assert_allclose(hb["loss"], ha["loss"], rtol=tol)
    assert hb["val_step"] == ha["val_step"] and len(ha["val_step"]) >= 2
    np.testing.assert_allclose(hb["val_accuracy"], ha["val_accuracy"], rtol=0, atol=tol)
    # the final state too, learned whatever set was kept (the starting set when no step beat it)
    ca, cb = (load_checkpoint(d / CHECKPOINT)[0] for d in (full, cut))
    states = sorted(k for k in ca if k.startswith("state_"))
    assert states and sorted(k for k in cb if k.startswith("state_")) == states
    for k in states:
        np.testing.assert_allclose(cb[k], ca[k], rtol=tol, atol=tol, err_msg=k)


def test_the_plugin_registers_and_is_in_the_contract():
    assert _PLUGIN_NAMES == {"toy"} and "toy" in ITERATIVE and {"kip", "rfad", "dc"} <= set(ITERATIVE)
    assert all(get_method(n).smoke for n in ITERATIVE), "every iterative method declares smoke options"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kip", "toy"])
def test_interrupt_then_resume_equals_uninterrupted_in_float64(name, digits, tmp_path):
    full, cut = whole_and_resumed(tmp_path, digits, config(name, "float64"), 2)
    assert_same_run(full, cut, "float64")
    assert json.loads((cut / "summary.json").read_text())["precision"] == "float64"


KILL = f"""
import importlib.util, os, signal, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
for i, path in enumerate(sys.argv[3:]):
    spec = importlib.util.spec_from_file_location(f"plugin{{i}}", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
from _helpers import three_digits
from kdistill.methods import RunConfig
from kdistill.runs import run_to_dir
def hook(step):
    if step == 2:
        os.kill(os.getpid(), signal.SIGKILL)
run_to_dir(sys.argv[1], three_digits(), RunConfig(**eval(sys.argv[2])), dataset_ref="digits", on_checkpoint=hook)
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", ITERATIVE)
def test_deterministic_and_an_interrupt_or_a_sigkill_then_resume_equals_uninterrupted_in_float32(name, digits,
                                                                                                  tmp_path):
    cfg = config(name, "float32")
    full, cut = whole_and_resumed(tmp_path, digits, cfg, 2)  # KeyboardInterrupt, in this process
    assert_same_run(full, cut, "float32")
    first = np.load(full / "distilled.npz")
    assert first["images"].shape == (6, 8, 8, 1) and first["labels"].shape == (6, 3)
    assert np.all(np.isfinite(first["images"]))
    killed = tmp_path / "killed"
    # determinism: the killed run recomputes the first steps from the same seed in another process, and the
    # resumed one the rest in a third; both must land on this run's set, curve and final state
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    proc = subprocess.run([sys.executable, "-c", KILL, str(killed), repr(fields), *map(str, PLUGINS)],
                          capture_output=True, text=True, env=dict(os.environ, JAX_ENABLE_X64="0"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert load_checkpoint(killed / CHECKPOINT)[1]["step"] == 2 and not (killed / "summary.json").exists()
    run_to_dir(killed, digits, cfg, dataset_ref="digits", resume=True)
    assert_same_run(full, killed, "float32")
    assert json.loads((killed / "summary.json").read_text())["precision"] == "float32"


def _constant_validation(monkeypatch):
    """Every validation scores 0.5: the first is the best, the next ones bring no gain (patience's case)."""
    from kdistill.methods.iterative import _register

    real = _register.run_iterative
    monkeypatch.setattr(_register, "run_iterative",
                        lambda method, *a, **k: real(dataclasses.replace(method, validate=lambda *v: 0.5), *a, **k))


@pytest.mark.parametrize("name", ITERATIVE)
def test_patience_stops_and_a_resume_stays_stopped_and_a_time_limit_stops(name, digits, tmp_path, monkeypatch):
    _constant_validation(monkeypatch)
    # checkpoints every 1000 steps: the one a stop leaves is written because the run stopped
    cfg = config(name, steps=12, val_every=1, patience=2, checkpoint_every=1000)
    with pytest.warns(RuntimeWarning, match="beat the starting set"):
        first, _ = run_to_dir(tmp_path / "p", digits, cfg, dataset_ref="digits")
    info = first.summary["method_info"]
    # the starting set is validated (step 0) and no later validation beats it: two without gain stop the run
    assert info["stop_reason"] == "patience" and info["steps_run"] == 2 and info["best_step"] == 0
    np.testing.assert_array_equal(first.distilled.images, first.init_images)
    assert load_checkpoint(tmp_path / "p" / CHECKPOINT)[1]["step"] == 2
    again, _ = run_to_dir(tmp_path / "p", digits, cfg, dataset_ref="digits", resume=True)
    assert again.summary["method_info"]["steps_run"] == 2 and again.summary["method_info"]["stop_reason"] == "patience"
    np.testing.assert_array_equal(again.distilled.images, first.distilled.images)

    timed, _ = run_to_dir(tmp_path / "t", digits, dataclasses.replace(config(name, steps=50, checkpoint_every=1000),
                                                                      time_limit=1e-9), dataset_ref="digits")
    assert timed.summary["method_info"]["stop_reason"] == "time_limit"
    assert timed.summary["method_info"]["steps_run"] == 1 and load_checkpoint(tmp_path / "t" / CHECKPOINT)[1]["step"] == 1


@pytest.fixture
def stopped_run(digits, tmp_path):
    """A run stopped right after its checkpoint of step 2 (its directory, its config)."""
    def build(name):
        cfg = config(name)
        out = tmp_path / name

        def stop(step):
            if step == 2:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run_to_dir(out, digits, cfg, dataset_ref="digits", on_checkpoint=stop)
        return out, cfg

    return build


def _refused(error, out, digits, cfg, match):
    with pytest.raises(error, match=match) as e:
        run_to_dir(out, digits, cfg, dataset_ref="digits", resume=True)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ITERATIVE)
def test_a_damaged_foreign_or_forged_checkpoint_is_refused(name, digits, stopped_run, tmp_path):
    out, cfg = stopped_run(name)
    path = out / CHECKPOINT
    good = path.read_bytes()
    arrays, meta = load_checkpoint(path)
    meta = {k: v for k, v in meta.items() if k != "checksum"}

    leaf = max((a for k, a in arrays.items() if k.startswith("state_")), key=lambda a: a.nbytes)
    at = good.find(np.ascontiguousarray(leaf).tobytes())
    assert at >= 0 and leaf.nbytes >= 32
    raw = bytearray(good)
    raw[at + leaf.nbytes // 2] ^= 0xFF  # one byte inside the method's largest state array
    path.write_bytes(bytes(raw))
    _refused(CorruptFileError, out, digits, cfg, "fails its checksum|cannot be decoded|cannot be read")

    fp = meta["fingerprint"]
    own = fp[name]  # the method's own settings, recorded by the registration
    settings = get_method(name).settings
    assert set(own) == set(settings.__dataclass_fields__) - set(DriverSettings.__dataclass_fields__) and own, \
        "every field of the method's own is in the fingerprint"
    for forged in ({"seed": fp["seed"] + 1}, {name: dict(own, **{next(iter(own)): "forged"})},
                   {"kernel": "rbf:gamma=0.5"}):
        save_checkpoint(path, arrays, dict(meta, fingerprint=dict(fp, **forged)))
        _refused(InvalidInputError, out, digits, cfg, "different settings")

    for best in (float("nan"), 1.5, float("inf")):
        save_checkpoint(path, arrays, dict(meta, best_acc=best))
        _refused(InvalidInputError, out, digits, cfg, "best accuracy")

    path.write_bytes(good)  # the genuine checkpoint still resumes
    res, _ = run_to_dir(out, digits, cfg, dataset_ref="digits", resume=True)
    assert res.summary["method_info"]["steps_run"] == cfg.options["steps"]


@pytest.mark.parametrize("name", ITERATIVE)
def test_options_round_trip_through_run_json_and_the_cli(name, digits, tmp_path):
    cfg = config(name)
    result, _ = run_to_dir(tmp_path / "r", digits, cfg, dataset_ref="digits")
    _, _, recorded = read_run_json(tmp_path / "r")
    resolved = resolve_options(name, cfg.options)
    assert dict(recorded.options) == resolved == result.summary["config"]["options"]
    as_cli = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in resolved.items()}
    assert resolve_options(name, as_cli) == resolved
    m = get_method(name)
    assert set(resolved) == {o.name for o in m.options if o.default is not None or o.name in cfg.options}


def test_the_toy_plugin_on_the_cli(tmp_path):
    """The one-file plug-in is listed, has its options in --help, and a bad value exits 2 in one line."""
    runner = CliRunner()
    listed = runner.invoke(cli, ["methods"])
    assert listed.exit_code == 0 and "toy" in listed.stdout and "--step-size" in listed.stdout
    helped = runner.invoke(cli, ["distill", "--method", "toy", "--help"])
    assert helped.exit_code == 0 and "--step-size" in helped.stdout and "--ridge" in helped.stdout
    bad = runner.invoke(cli, ["distill", "--dataset", "digits", "--method", "toy", "--step-size", "-1", "--out",
                              str(tmp_path / "x")])
    assert "--step-size must be > 0 and <= 10, got -1.0" in error_line(bad)
    assert not (tmp_path / "x").exists()


LEGACY = Path(__file__).parent / "reference" / "legacy_runs"


@pytest.mark.parametrize("name", ["kip"])
def test_a_checkpoint_written_before_the_settings_registration_still_resumes(name, tmp_path):
    """A run folder stopped at step 2 of 4 by kdistill 19cd7b3 (whose fingerprint recorded the kernel and not the
    dataset; tests/reference/legacy_runs/README.md) resumes and ends where that version's uninterrupted run
    ended. (DC's, which recorded the dataset and not the kernel, resumed alike when checked by hand; it is not
    kept here because compiling DC's step for its shapes costs 15 s of the suite.)"""
    out = Path(shutil.copytree(LEGACY / name, tmp_path / name))
    (out / "uninterrupted.npz").unlink()
    _, _, cfg = read_run_json(out)
    run_to_dir(out, load("digits"), cfg, dataset_ref="digits", resume=True)
    a, b = np.load(LEGACY / name / "uninterrupted.npz"), np.load(out / "distilled.npz")
    np.testing.assert_allclose(b["images"], a["images"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(b["labels"], a["labels"], rtol=0, atol=1e-4)


def test_a_checkpoint_with_an_earlier_fingerprint_form_is_accepted_and_no_other(tmp_path):
    """DC's checkpoints before settings-class registration recorded the dataset and not the kernel (KIP's and
    RFAD's the other way round, resumed end to end above): both forms are accepted, nothing else."""
    from kdistill.methods.iterative._register import fingerprints

    own = {"lr": 0.1, "outer_loop": 2}
    fp, aliases = fingerprints("dc", own, kernel="rbf", precision="float32", dataset="digits")
    assert {"precision": "float32", "dataset": "digits", "dc": own} in aliases
    assert {"kernel": "rbf", "precision": "float32", "dc": own} in aliases
    path = tmp_path / "c.npz"
    for old in aliases:
        save_checkpoint(path, {"a": np.arange(3.0)}, {"step": 1, "fingerprint": old})
        assert load_checkpoint(path, fingerprint=fp, aliases=aliases)[1]["step"] == 1
        with pytest.raises(InvalidInputError, match="different settings"):
            load_checkpoint(path, fingerprint=fp)
    save_checkpoint(path, {"a": np.arange(3.0)}, {"step": 1, "fingerprint": {"precision": "float32", "dc": own}})
    with pytest.raises(InvalidInputError, match="different settings"):
        load_checkpoint(path, fingerprint=fp, aliases=aliases)


def test_a_settings_field_without_option_is_refused_at_registration_and_hidden_keeps_its_checks():
    from kdistill.methods.iterative import check_settings, hidden, register_iterative

    @dataclasses.dataclass(frozen=True)
    class Bare(DriverSettings):
        rate: float = 0.1  # no option(...): on no command line, yet in the fingerprint

    with pytest.raises(RuntimeError, match=r"Bare.rate is declared without option"):
        register_iterative("bare", Bare, lambda s, ctx: None, doc="x", smoke={})
    assert "bare" not in methods()

    @dataclasses.dataclass(frozen=True)
    class Quiet(DriverSettings):
        sampler: str = hidden("uniform")

    with pytest.raises(InvalidInputError, match="method 'q': sampler must be one of"):
        check_settings(Quiet(sampler="nope"), "q")
