"""``kdistill evaluate``: a distilled-set file's test accuracy by KRR, or by finite networks trained on it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._common import DATASET_HELP, _data_dir_option, _load_dataset, _parse_reg, _pct


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dataset", "dataset_name", default=None,
              help=DATASET_HELP + " [default: the dataset recorded beside FILE (run.json or sidecar)]; a different "
                   "one than recorded is refused.")
@click.option("--kernel", default=None, help="Kernel spec (default: the one in the file's sidecar).")
@click.option("--reg", default=None,
              help="Relative ridge, or 'auto': chosen on held-out training images as distill --reg auto does "
                   "(--val-size, at most a fifth of the training set) [default: the sidecar's, else 1e-6; closed-form "
                   "sets use the ridge they were built for].")
@click.option("--preprocess", type=click.Choice(["none", "standardize", "zca"]), default=None,
              help="Preprocessing for files without stored preprocessing (e.g. KIP's released sets).")
@click.option("--model", default=None,
              help="Train this finite network on the set instead of KRR (kdistill.nets), each under its published "
                   "protocol: convnet (DC's ConvNet: width 128, instance norm), mlp (DC's: 2 x 128), alexnet (no "
                   "norm), vgg11 and resnet18 (instance norm; DC's and DC-BENCH's) all under DC's protocol (cross-entropy, "
                   "SGD lr 0.01 momentum 0.9 weight decay 5e-4, lr x0.1 at half, batch 256, DC's augmentation on "
                   "MNIST); convnet-kip (KIP's: width 1024, no norm, NTK parameterisation, MSE on the stored "
                   "labels, lr 0.5 cosine); convnet-frepo (FRePo's: 128/256/512 channels, no norm, MSE on the "
                   "stored labels, Adam lr 3e-4 with 500 warm-up steps then cosine, FRePo's steps by set size, FRePo's "
                   "augmentation); convnet-rfad (RFAD's: width 1024, no norm, trained centred on its initial "
                   "output, full batch, SGD momentum 0.9 at a constant lr, MSE on the labels over RFAD's label scale, "
                   "up to 20000 steps, the best of validations every 100 steps on 5000 held-out training images; "
                   "lr, label scale and weight decay RFAD's for the dataset and set size); fc (an MLP 2 x 256, DC's "
                   "protocol with a cosine lr).")
@click.option("--seeds", type=int, default=None, help="--model: train with seeds 0..SEEDS-1 [default: 5].")
@click.option("--add", is_flag=True,
              help="--model: keep the networks already recorded in the run's summary.json for this model and these "
                   "settings (seeds 0..K-1) and train only seeds K..SEEDS-1; the record then holds all SEEDS (with "
                   "K >= SEEDS nothing is trained and the record is printed as it is).")
@click.option("--epochs", type=int, default=None,
              help="--model: epochs [default: 300; convnet-frepo: FRePo's steps by set size, 1000 for 10 images; "
                   "its first 500 steps are the warm-up; convnet-rfad: 20000 steps at most].")
@click.option("--width", type=int, default=None,
              help="--model: channels / hidden units; alexnet, vgg11 and resnet18 scale all layers from their first "
                   "[default: convnet 128, convnet-kip 1024, convnet-frepo 128 (doubling per block), convnet-rfad "
                   "1024 (128 is the affordable stand-in on a CPU), mlp 128, fc 256, "
                   "alexnet 128, vgg11 64, resnet18 64].")
@click.option("--lr", "lr", type=float, default=None,
              help="--model: learning rate [default: convnet-kip 0.5, convnet-frepo 3e-4 (Adam), convnet-rfad "
                   "RFAD's for the dataset and set size (1e-3 or 1e-2 on MNIST), every other model 0.01].")
@click.option("--augment", type=click.Choice(["auto", "none", "dc", "crop-flip", "dsa", "frepo"]), default=None,
              help="--model: augmentation while training: DC's crop/scale/rotate (dc), shift + flip (crop-flip), "
                   "DSA's six families (dsa), FRePo's milder five (frepo), or auto, each protocol's own: dc on MNIST "
                   "for the models DC trains (all but convnet-kip, convnet-frepo, convnet-rfad and fc), frepo for "
                   "convnet-frepo, "
                   "none elsewhere; digit "
                   "datasets are never flipped [default: auto].")
@click.option("--loss", type=click.Choice(["xent", "mse", "mse-mean"]), default=None,
              help="--model: the training loss: cross-entropy (learned labels as softmax(labels / "
                   "--label-temperature)), MSE on the stored labels (half the squared error summed over classes), "
                   "or mse-mean (the mean over classes, PyTorch's MSELoss, RFAD's) [default: the protocol's: mse for "
                   "convnet-kip and convnet-frepo, mse-mean for convnet-rfad, xent for the others].")
@click.option("--label-temperature", type=float, default=None,
              help="--model with xent: T of softmax(labels / T) for learned (real-valued) labels [default: 0.5, "
                   "the best of a measured sweep; 0.1 before 2026-12-07].")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of a sentence.")
@_data_dir_option
def evaluate(file, dataset_name, kernel, reg, preprocess, model, seeds, add, epochs, width, lr, augment, loss,
             label_temperature, as_json, data_dir):
    """Test accuracy of any distilled-set file on a dataset's full test set: KRR, or with --model a
    finite network trained on the set (mean ± std over seeds, also stored in FILE's run summary.json under
    the model's name, plus the given settings that differ from its protocol's)."""
    if model is None:
        from ..errors import InvalidInputError

        given = [f"--{n}" for n, v in (("seeds", seeds), ("add", add or None), ("epochs", epochs), ("width", width),
                                       ("lr", lr), ("augment", augment), ("loss", loss),
                                       ("label-temperature", label_temperature)) if v is not None]
        if given:
            raise InvalidInputError(f"{', '.join(given)} apply to finite-network evaluation only; add --model")
        from ..evaluate import evaluate_file

        dataset_name, data_dir = _recorded_dataset(file, dataset_name, data_dir)
        res = evaluate_file(file, _load_dataset(dataset_name, data_dir), kernel=kernel,
                            reg=None if reg is None else _parse_reg(reg), preprocess=preprocess)
        if as_json:
            click.echo(json.dumps(res))
        else:
            click.echo(f"{file}: KRR test accuracy {_pct(res['test_accuracy'])} on {res['dataset']} "
                       f"({res['n_test']} test images, kernel {res['kernel']}, reg {res['reg']:g}, m={res['m']})")
        return
    if reg is not None:
        from ..errors import InvalidInputError

        raise InvalidInputError("--kernel and --reg apply to KRR evaluation only; drop them or drop --model")
    dataset_name, data_dir = _recorded_dataset(file, dataset_name, data_dir)
    _evaluate_finite(file, dataset_name, kernel, reg, preprocess, model, 5 if seeds is None else seeds, epochs,
                     width, lr, augment, as_json, data_dir, add=add, loss=loss, label_temperature=label_temperature)


def _same_dataset(a: str, b: str) -> bool:
    from ..data import canonical_name
    from ..errors import KDistillError

    try:
        return canonical_name(a) == canonical_name(b)
    except KDistillError:  # a path to the user's own arrays: the same file (or at least the same name)
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve() or Path(a).stem == Path(b).stem


def _recorded_dataset(file: Path, given: str | None, data_dir):
    """The dataset to evaluate ``file`` on: ``given``, else the one recorded beside it; a given one that
    differs from the record is refused (a set evaluated on the wrong data scores near chance)."""
    from .. import io
    from ..errors import InvalidInputError

    if not file.exists():  # before the record: a mistyped path is reported as such, not as a missing dataset
        raise InvalidInputError(f"{file}: no such file")
    recorded, recorded_dir, record = None, None, None
    run_file = file.parent / "run.json"
    if run_file.exists() and (file.parent / "distilled.npz").resolve() == file.resolve():
        try:
            doc = json.loads(run_file.read_text())
            recorded, recorded_dir, record = doc.get("dataset"), doc.get("data_dir"), run_file
        except (ValueError, UnicodeDecodeError, AttributeError):
            recorded = None
    if recorded is None and io.sidecar_path(file).exists():
        recorded, record = io.load(file).meta.get("dataset"), io.sidecar_path(file)
    if given is None:
        if not isinstance(recorded, str):
            raise InvalidInputError(f"{file} records no dataset (no run.json or sidecar beside it); pass --dataset")
        return _recorded_path(recorded, record), data_dir if data_dir is not None else recorded_dir
    if isinstance(recorded, str) and not _same_dataset(given, recorded):
        raise InvalidInputError(f"{file} was distilled from {recorded!r}, not {given!r}; evaluate it on its own "
                                "dataset (drop --dataset)")
    return given, data_dir


def _recorded_path(recorded: str, record: Path) -> str:
    """A dataset named in ``record`` (run.json or a sidecar): a registry name as it is; a path to the user's
    own arrays relative to the record's folder (not to the current one), and one that is missing is an
    error that says where the path came from."""
    from ..data import canonical_name
    from ..errors import InvalidInputError, KDistillError

    try:
        canonical_name(recorded)
        return recorded
    except KDistillError:
        pass
    path = Path(recorded).expanduser()
    if not path.is_absolute():
        path = record.parent / path
    if not path.exists():
        raise InvalidInputError(f"{record} records the dataset {recorded!r}, which is not a dataset name and not a "
                                f"file (looked for {path}); pass --dataset NAME_OR_PATH")
    return str(path)


def _recorded_networks(file: Path, key: str) -> dict | None:
    """The finite result recorded as ``key`` in the summary.json of ``file``'s run folder (None: none yet), for
    ``evaluate --add``; a file outside a run folder has nowhere to keep one."""
    from ..errors import CorruptFileError, InvalidInputError

    summary_path = file.parent / "summary.json"
    if not summary_path.exists():
        raise InvalidInputError(f"--add keeps networks recorded in a run's summary.json; {file.parent} has none "
                                "(drop --add)")
    try:
        summary = json.loads(summary_path.read_text())
    except (ValueError, UnicodeDecodeError):
        summary = None
    if not isinstance(summary, dict):
        raise CorruptFileError(f"{summary_path} is not a JSON object; --add cannot read the recorded networks "
                               "(drop --add)")
    finite = summary.get("finite")
    old = finite.get(key) if isinstance(finite, dict) else None
    if old is not None and not (isinstance(old, dict) and isinstance(old.get("accuracies"), list)):
        raise CorruptFileError(f"{summary_path}: the record {key!r} is not a finite result; --add cannot use it "
                               "(drop --add to evaluate afresh)")
    return old


def _evaluate_finite(file, dataset_name, kernel, reg, preprocess, model, seeds, epochs, width, lr, augment, as_json,
                     data_dir, add=False, **overrides):
    from ..errors import CorruptFileError, InvalidInputError
    from ..evaluate import check_addable, finite_evaluate_file, finite_file_settings, finite_record_key
    from ..evaluate import finite_settings, merge_finite_results
    from ..runs import record_finite_result, refresh_report

    if kernel is not None or reg is not None:
        raise InvalidInputError("--kernel and --reg apply to KRR evaluation only; drop them or drop --model")
    if not 1 <= seeds <= 1000:
        raise InvalidInputError(f"--seeds must be in 1 .. 1000, got {seeds}")
    finite_settings(model, epochs=epochs, width=width, lr=lr, **overrides)  # bad settings fail before the data
    dataset = _load_dataset(dataset_name, data_dir)
    # an evaluation under other settings than the protocol's is recorded beside the protocol's, not in its place
    key = finite_record_key(model, dataset.name, epochs=epochs, width=width, lr=lr, augment=augment, **overrides)
    given = dict(epochs=epochs, width=width, lr=lr, augment=augment, preprocess=preprocess, **overrides)
    old = _recorded_networks(file, key) if add else None
    have = 0
    if old is not None:  # the networks on record must be of this evaluation: checked before any training
        try:
            have = check_addable(old, {**finite_file_settings(file, dataset, model=model, **given), "file": str(file)})
        except InvalidInputError as e:
            raise InvalidInputError(f"--add: {key!r} in {file.parent / 'summary.json'}: {e}") from None
    if have >= seeds:
        click.echo(f"note: {key!r} already records {have} networks (--seeds {seeds}); nothing trained, the record "
                   "is printed as it is", err=True)
        res = old
    else:
        if have:
            click.echo(f"adding seeds {have}..{seeds - 1} to the {have} recorded as {key!r}", err=True)
        res = finite_evaluate_file(file, dataset, model=model, seeds=seeds - have, first_seed=have,
                                   progress=not as_json, **given)
        if old is not None:
            try:
                res = merge_finite_results(old, res)
            except InvalidInputError as e:
                raise InvalidInputError(f"--add: {e}; the {seeds - have} new networks were not recorded "
                                        f"(accuracies {res['accuracies']})") from None
    try:
        summary_path = record_finite_result(file.parent, key, res)
    except CorruptFileError as e:  # a summary.json that is not a JSON object: the result is printed only
        click.echo(f"note: {e}", err=True)
        summary_path = None
    if summary_path is not None:
        res["summary"], res["recorded_as"] = str(summary_path), key
    if res["diverged_seeds"]:
        click.echo(f"note: training diverged (loss NaN/inf) for seeds {res['diverged_seeds']}; the images may be "
                   "far outside the usual input scale, or the learning rate too high for them", err=True)
    if as_json:
        click.echo(json.dumps(res))
    else:
        s = res["settings"]
        click.echo(f"{file}: {model} test accuracy {100 * res['mean']:.2f} ± {100 * res['std']:.2f}% on "
                   f"{res['dataset']} over {res['seeds']} seeds ({res['epochs']} epochs, width {s['width']}, "
                   f"augment {s['augment']}, labels: {res['label_mode']}, "
                   f"{res['seconds_per_seed']:.1f} s per seed, m={res['m']})")
        if summary_path is not None:
            click.echo(f"recorded in {summary_path} as {key!r}")
    if summary_path is not None:  # keep the run's report (if it has one) in step
        refresh_report(file.parent)
