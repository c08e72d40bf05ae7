"""The ``kdistill`` command line: parse, call the library, print, write files.

Every error caused by input (a :class:`~kdistill.errors.KDistillError`) is printed
as one line on stderr and exits with status 2.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import warnings
from pathlib import Path

import click

from .errors import KDistillError

DATASET_HELP = "digits, mnist, fashion_mnist, cifar10, cifar100, svhn, or a path to an .npz of your own arrays"


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KDistillError as e:
            click.echo(f"error: {_one_line(str(e))}", err=True)
            sys.exit(2)
        except click.UsageError as e:  # click's own (unknown flag, bad int): one line too, not a usage block
            _usage_error(e)
        except OSError as e:  # disk full, permissions, a file vanished: the system's reason, one line
            from ._atomic import describe_os_error

            click.echo(f"error: {_one_line(describe_os_error(e))}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo(f"interrupted{ctx.meta.get('kdistill_interrupt_hint', '')}", err=True)
            sys.exit(128 + _SIGNAL.get("number", 2))  # 130 for Ctrl-C, 143 for SIGTERM

    def make_context(self, info_name, args, parent=None, **extra):
        bare = not args  # (click consumes args while parsing)
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:  # options of the group itself (kdistill --bogus)
            if bare and e.ctx is not None:  # a bare `kdistill`: the help, as --help would print it
                click.echo(e.ctx.get_help())
                sys.exit(0)
            _usage_error(e)


def _usage_error(e: click.UsageError):
    where = " ".join(e.ctx.command_path.split()[1:]) if e.ctx is not None else ""
    hint = f"; see kdistill {where + ' ' if where else ''}--help"
    click.echo(f"error: {_one_line(e.format_message()).rstrip('.')}{hint}", err=True)
    sys.exit(2)


def _one_line(s: str) -> str:
    return " ".join(s.split())


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kdistill")
@click.pass_context
def cli(ctx) -> None:
    """Dataset distillation with kernel ridge regression."""
    from ._precision import precision_scope

    # Kernel values in float64 for this command only (KRR is ill-conditioned at small reg); the
    # caller's JAX setting comes back when the command ends. `distill --precision` sets a run's own.
    ctx.with_resource(precision_scope("float64"))


def _data_dir_option(f):
    return click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Where dataset files live (default: $KDISTILL_DATA, else ~/.cache/kdistill).")(f)


@cli.command()
@_data_dir_option
def datasets(data_dir):
    """List every dataset, whether it is available here, and from where."""
    from rich.console import Console
    from rich.table import Table

    from .data import availability

    table = Table(title="datasets")
    for col in ("name", "available", "source / how to get it"):
        table.add_column(col)
    for st in availability(data_dir=data_dir):
        table.add_row(st.name, "yes" if st.available else "no",
                      st.source if st.available else f"{st.how_to_get} (looked in: {', '.join(st.looked_in)})")
    Console(width=160).print(table)


@cli.command()
def kernels():
    """List every kernel family, its parameters and defaults (spec syntax: name:key=value,...)."""
    from rich.console import Console
    from rich.table import Table

    from .kernels import families

    table = Table(title="kernels")
    for col in ("spec name", "parameters: default (type, range): meaning", "what it is"):
        table.add_column(col)
    for name, fam in sorted(families().items()):
        alias = name != fam.name
        params = "\n".join(p.describe(k) + (f": {p.doc}" if p.doc else "") for k, p in fam.params.items()) or "-"
        table.add_row(name, "alias of " + fam.name if alias else params, "" if alias else fam.doc)
    Console(width=max(Console().width, 140)).print(table)


@cli.command()
@click.argument("dataset")
@_data_dir_option
def download(dataset, data_dir):
    """Download a dataset's official files into --data-dir (needs internet; md5-checked)."""
    from ._atomic import check_writable_dir
    from .data import download as _download
    from .data import resolve_data_dir

    check_writable_dir(resolve_data_dir(data_dir), what="--data-dir")
    for p in _download(dataset, data_dir=data_dir, progress=True):
        click.echo(str(p))


def _load_dataset(name: str, data_dir, download_: bool = False):
    from ._progress import status
    from .data import load

    with status(f"loading {name}"):
        return load(name, data_dir=data_dir, download=download_)


def _timed_load(name, data_dir, download_: bool = False):
    """The dataset, and the seconds spent before loading it (``startup``: interpreter, imports, arguments)
    and loading it (``load_data``), for the summary's breakdown."""
    from ._machine import process_seconds

    startup = process_seconds()
    t = time.perf_counter()
    dataset = _load_dataset(name, data_dir, download_)
    timings = {"load_data": time.perf_counter() - t}
    if startup is not None:
        timings = {"startup": startup, **timings}
    return dataset, timings


def _print_table(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in rows[0]:
        table.add_column(col, justify="right" if col not in ("dataset", "method", "kernel") else "left")
    for r in rows:
        table.add_row(*[str(v) for v in r.values()])
    Console(width=max(Console().width, 130)).print(table)


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def summary_rows(summary: dict) -> list[dict]:
    """The short result table printed after a run."""
    sec = summary["seconds"]
    return [{
        "dataset": summary["dataset"],
        "method": summary["method"],
        "kernel": summary["kernel"],
        "ipc": summary["ipc"],
        "distilled acc": _pct(summary["test_accuracy"]),
        "random real acc": _pct((summary.get("baseline") or {}).get("test_accuracy")),
        "full-data acc": _pct(summary["full_test_accuracy"]),
        "distill s": f"{sec.get('distill', 0):.2f}",
        "total s": f"{sec.get('total', 0):.2f}",
    }]


def _parse_reg(value: str) -> float | str:
    from .errors import InvalidInputError

    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise InvalidInputError(f"--reg must be 'auto' or a number, got {value!r}") from None


_OPT_PREFIX = "m__"  # click destination of method options: m__<option name>


def _method_params() -> list[click.Option]:
    """One click option per method-option flag in the registry (values checked by the registry)."""
    from .methods._registry import cli_flags

    params = []
    for flag, opt in sorted(cli_flags().items()):
        decls = [flag, _OPT_PREFIX + opt.name]
        if opt.type is bool:
            params.append(click.Option(decls, is_flag=True, default=None, help=opt.help))
        else:
            params.append(click.Option(decls, default=None, help=opt.describe(), metavar=opt.type.__name__.upper()))
    return params


class _DistillCommand(click.Command):
    """``distill`` with the method options of the registry: all are parsed (so a wrong one gets our
    one-line error), and ``--method NAME --help`` shows NAME's options only."""

    def parse_args(self, ctx, args):
        for i, a in enumerate(args):
            if a == "--method" and i + 1 < len(args):
                ctx.meta["kdistill_method"] = args[i + 1]
            elif a.startswith("--method="):
                ctx.meta["kdistill_method"] = a.split("=", 1)[1]
        return super().parse_args(ctx, args)

    def get_params(self, ctx):
        return [*self.params, *_method_params(), self.get_help_option(ctx)]

    def format_options(self, ctx, formatter):
        from .methods import methods

        common = [p.get_help_record(ctx) for p in self.params]
        common.append(self.get_help_option(ctx).get_help_record(ctx))
        with formatter.section("Options"):
            formatter.write_dl([r for r in common if r])
        chosen = ctx.meta.get("kdistill_method")
        shown = [methods()[chosen]] if chosen in methods() else sorted(methods().values(), key=lambda m: m.name)
        for m in shown:
            rows = [(o.cli_flag + ("" if o.type is bool else f" {o.type.__name__.upper()}"), o.describe())
                    for o in m.options]
            with formatter.section(f"Options of --method {m.name}: {m.doc}"):
                formatter.write_dl(rows or [("(none)", "")])


def _method_options(method: str, given: dict) -> dict:
    """The given method options (not None) by option name; a flag of another method is an error."""
    from .errors import InvalidInputError
    from .methods import get_method, methods

    known = {o.name for o in get_method(method).options}
    options = {}
    for dest, value in given.items():
        name = dest[len(_OPT_PREFIX):]
        if value is None:
            continue
        if name not in known:
            owners = sorted(m.name for m in methods().values() if any(o.name == name for o in m.options))
            flag = next(o.cli_flag for m in methods().values() for o in m.options if o.name == name)
            raise InvalidInputError(f"{flag} applies to --method {' / '.join(owners)} only, not {method}")
        options[name] = value
    return options


@cli.command(cls=_DistillCommand)
@click.option("--dataset", "dataset_name", default=None, help=DATASET_HELP)
@click.option("--method", default="random", show_default=True,
              help="A registered method (kdistill methods lists them with their options).")
@click.option("--ipc", type=int, default=10, show_default=True, help="Images per class.")
@click.option("--kernel", default=None,
              help="Kernel spec, e.g. linear, rbf:gamma=0.01, fcnn, fc-ntk:depth=3, convnet-ntk (kdistill kernels) "
                   "[default: the method's own (kdistill methods), else linear].")
@click.option("--out", type=click.Path(file_okay=False), default=None, callback=lambda c, p, v: _out_arg(v),
              help="Output directory [default: runs/<dataset>-<method>-ipc<N>, with -2, -3, ... appended when "
                   "that exists].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds every random choice of the run.")
@click.option("--preprocess", type=click.Choice(["none", "standardize", "zca"]), default="standardize",
              show_default=True, help="Input preprocessing (zca: KIP's layer norm + ZCA).")
@click.option("--reg", default="auto", show_default=True,
              help="Relative ridge of the model trained on the distilled set (lam = reg * tr(K)/m), or 'auto': "
                   "chosen on --val-size held-out training images (kip and label-solve: 1e-6, used for training "
                   "too).")
@click.option("--val-size", type=int, default=5000, show_default=True,
              help="Held-out training images (at most a fifth of the training set): --reg auto chooses the ridge on "
                   "them and iterative methods validate on them to keep their best step. The summary records the "
                   "number used.")
@click.option("--full/--no-full", default=True, show_default=True,
              help="Also train on the whole training set for comparison (analytic fits it anyway: W is its input).")
@click.option("--max-dual-n", type=int, default=None, help="Largest n for a dual full-data model (default 10000).")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also evaluate random real images at the same ipc and kernel (the baseline papers report).")
@click.option("--resume", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Continue the run in this directory from its last checkpoint (every other setting comes from "
                   "its run.json).")
@click.option("--force", is_flag=True,
              help="Replace the earlier run in --out (only once the new run has succeeded; a failed run leaves "
                   "it as it was).")
@click.option("--precision", type=click.Choice(["auto", "float64", "float32"]), default="auto", show_default=True,
              help="Kernel values in float64, or float32 (about 2x faster; KIP with fc-ntk was as stable in our "
                   "tests); auto: float32 for rfad (random networks; see benchmarks/results/rfad.md), float64 for "
                   "the other methods. Images, and so KIP's support set and Adam state, stay float32 like the data; ridge "
                   "solves always run in float64. Recorded in run.json; --resume keeps it.")
@click.option("--download", "download_", is_flag=True, help="Download the dataset's missing official files into --data-dir before loading (needs internet).")
@click.option("--workers", type=int, default=None,
              help="Run the block computations and steps on a local Dask cluster of N worker processes "
                   "(needs kdistill[distributed]; docs/distributed.md). Allowed with --resume.")
@click.option("--scheduler", default=None,
              help="Run them on the Dask cluster whose scheduler is at tcp://HOST:PORT (started with `dask "
                   "scheduler`, workers with `dask worker tcp://HOST:PORT`). Allowed with --resume.")
@_data_dir_option
def distill(dataset_name, method, ipc, kernel, out, seed, preprocess, reg, val_size, full, max_dual_n, baseline, resume,
            force, precision, download_, workers, scheduler, data_dir, **method_values):
    """Distil a dataset; writes OUT/run.json, distilled.npz (+ .json sidecar), summary.json, distilled.png and
    report.html (iterative methods: history.json and checkpoint.npz too; sets that start from real images:
    init_vs_distilled.png).

    Options after the common ones belong to one method each; `kdistill distill --method NAME --help`
    shows NAME's.
    """
    from ._distributed import executor_scope
    from .errors import InvalidInputError
    from .evaluate import MAX_DUAL_N
    from .kernels import from_spec
    from .methods import RunConfig, get_method, read_run_json, run_to_dir

    ctx = click.get_current_context()
    if workers is not None and scheduler is not None:
        raise InvalidInputError("give --workers N (a local cluster) or --scheduler ADDRESS (a running one), not both")
    if resume is not None:
        dataset_ref, saved_dir, config = read_run_json(resume)
        given = [p.opts[0] for p in ctx.command.get_params(ctx)
                 if p.name not in ("resume", "download_", "workers", "scheduler") and p.name in ctx.params
                 and ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise InvalidInputError(f"--resume continues the recorded run; drop {', '.join(given)} (its settings "
                                    f"are in {resume / 'run.json'})")
        if not get_method(config.method).iterative:
            raise InvalidInputError(f"{resume} holds {_a(config.method)} run, which has no steps to continue; start a "
                                    "new run instead")
        _interrupt_hint(ctx, resume, config)
        dataset, timings = _timed_load(dataset_ref, saved_dir, download_)
        with executor_scope(workers=workers, scheduler=scheduler) as executor:
            _, summary = run_to_dir(resume, dataset, config, resume=True, progress=True, timings=timings,
                                    executor=executor)
        out = resume
    else:
        if dataset_name is None:
            raise InvalidInputError("--dataset is required (or --resume DIR to continue a run)")
        if out is None:
            out = _default_out(dataset_name, method, ipc)
        kernel = kernel if kernel is not None else (get_method(method).kernel or "linear")
        if ipc < 1:
            raise InvalidInputError(f"--ipc must be >= 1, got {ipc}")
        if not 0 <= seed < 2**32:
            raise InvalidInputError(f"--seed must be in 0 .. 4294967295, got {seed}")
        if max_dual_n is not None and max_dual_n < 0:
            raise InvalidInputError(f"--max-dual-n must be >= 0, got {max_dual_n}")
        _check_out(out, force)
        from_spec(kernel)  # fail on a bad spec before loading data
        options = _method_options(method, method_values)
        from .methods import resolve_options

        resolve_options(method, options)  # fail on bad option values before loading data
        config = RunConfig(method=method, ipc=ipc, kernel=kernel, seed=seed, preprocess=preprocess,
                           reg=_parse_reg(reg), val_size=val_size, full_reference=full, precision=precision,
                           baseline=baseline,
                           max_dual_n=MAX_DUAL_N if max_dual_n is None else max_dual_n, options=options)
        _interrupt_hint(ctx, out, config)
        with executor_scope(workers=workers, scheduler=scheduler) as executor:
            dataset, timings = _timed_load(dataset_name, data_dir, download_)
            _, summary = run_to_dir(out, dataset, config, dataset_ref=dataset_name, data_dir=data_dir, force=force,
                                    progress=True, timings=timings, executor=executor)
    _print_table(summary_rows(summary), f"kdistill distill -> {out}")
    if summary.get("full_test_accuracy_note"):
        click.echo(f"note: full-data accuracy {summary['full_test_accuracy_note']}")


def _a(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def _out_arg(value: str | None) -> Path | None:
    """--out as a Path; an empty string is refused (Path('') would be the current directory)."""
    from .errors import InvalidInputError

    if value is None:
        return None
    if not value.strip():
        raise InvalidInputError("--out is empty; give a path such as runs/mnist-kip")
    return Path(value)


def _interrupt_hint(ctx, out: Path, config) -> None:
    """What Ctrl-C (or SIGTERM) prints: iterative runs can be resumed from their checkpoint."""
    from .methods import get_method

    if get_method(config.method).iterative:
        ctx.find_root().meta["kdistill_interrupt_hint"] = (
            f"; if a checkpoint was written, kdistill distill --resume {out} continues the run")


def _check_out(out: Path, force: bool) -> None:
    """Cheap checks of --out before any data is loaded (run_to_dir checks again under its lock)."""
    from .methods._rundir import check_out_folder

    check_out_folder(out, force=force)


def _default_out(dataset: str, method: str, ipc: int) -> Path:
    """``runs/<dataset>-<method>-ipc<N>`` (the file's stem for your own arrays), never an existing folder."""
    name = Path(dataset).stem if dataset.endswith(".npz") else dataset
    base = Path("runs") / f"{name}-{method}-ipc{ipc}"
    out, i = base, 1
    while out.exists():
        i += 1
        out = base.with_name(f"{base.name}-{i}")
    return out


@cli.command(name="methods")
def methods_cmd():
    """List every distillation method, what it does and its options (types, defaults, ranges)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from .methods import methods

    table = Table(title="methods (kdistill distill --method NAME; --method NAME --help for its options)")
    for col in ("method", "what it is", "options"):
        table.add_column(col)
    for name, m in sorted(methods().items()):
        opts = "\n".join(f"{o.cli_flag}: {o.describe()}" for o in m.options) or "-"
        own = [f"default --kernel {m.kernel}"] if m.kernel else []
        own += [f"default --precision {m.precision}"] if m.precision != "float64" else []
        table.add_row(escape(name), escape(" ".join([m.doc, *(f"({x})" for x in own)])), escape(opts))
    Console(width=max(Console().width, 160)).print(table)


@cli.command()
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
                   "labels, lr 0.5 cosine); fc (an MLP 2 x 256, DC's protocol with a cosine lr).")
@click.option("--seeds", type=int, default=None, help="--model: train with seeds 0..SEEDS-1 [default: 5].")
@click.option("--epochs", type=int, default=None, help="--model: epochs [default: 300].")
@click.option("--width", type=int, default=None,
              help="--model: channels / hidden units; alexnet, vgg11 and resnet18 scale all layers from their first "
                   "[default: convnet 128, convnet-kip 1024, mlp 128, fc 256, alexnet 128, vgg11 64, resnet18 64].")
@click.option("--lr", "lr", type=float, default=None,
              help="--model: SGD learning rate [default: convnet-kip 0.5, every other model 0.01].")
@click.option("--augment", type=click.Choice(["auto", "none", "dc", "crop-flip", "dsa"]), default=None,
              help="--model: augmentation while training: DC's crop/scale/rotate (dc), shift + flip (crop-flip), "
                   "DSA's six families (dsa), or auto, DC's protocol: dc on MNIST for the models DC trains (all but "
                   "convnet-kip and fc), none elsewhere; digit "
                   "datasets are never flipped [default: auto].")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of a sentence.")
@_data_dir_option
def evaluate(file, dataset_name, kernel, reg, preprocess, model, seeds, epochs, width, lr, augment, as_json,
             data_dir):
    """Test accuracy of any distilled-set file on a dataset's full test set: KRR, or with --model a
    finite network trained on the set (mean ± std over seeds, also stored in FILE's run summary.json)."""
    if model is None:
        from .errors import InvalidInputError

        given = [f"--{n}" for n, v in (("seeds", seeds), ("epochs", epochs), ("width", width), ("lr", lr),
                                       ("augment", augment)) if v is not None]
        if given:
            raise InvalidInputError(f"{', '.join(given)} apply to finite-network evaluation only; add --model")
        from .evaluate import evaluate_file

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
        from .errors import InvalidInputError

        raise InvalidInputError("--kernel and --reg apply to KRR evaluation only; drop them or drop --model")
    dataset_name, data_dir = _recorded_dataset(file, dataset_name, data_dir)
    _evaluate_finite(file, dataset_name, kernel, reg, preprocess, model, 5 if seeds is None else seeds, epochs,
                     width, lr, augment, as_json, data_dir)


def _same_dataset(a: str, b: str) -> bool:
    from .data import canonical_name
    from .errors import KDistillError

    try:
        return canonical_name(a) == canonical_name(b)
    except KDistillError:  # a path to the user's own arrays: the same file (or at least the same name)
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve() or Path(a).stem == Path(b).stem


def _recorded_dataset(file: Path, given: str | None, data_dir):
    """The dataset to evaluate ``file`` on: ``given``, else the one recorded beside it; a given one that
    differs from the record is refused (a set evaluated on the wrong data scores near chance)."""
    from . import io
    from .errors import InvalidInputError

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
    from .data import canonical_name
    from .errors import InvalidInputError, KDistillError

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


def _evaluate_finite(file, dataset_name, kernel, reg, preprocess, model, seeds, epochs, width, lr, augment, as_json,
                     data_dir):
    from ._atomic import write_json
    from .errors import InvalidInputError
    from .evaluate import finite_evaluate_file, finite_settings

    if kernel is not None or reg is not None:
        raise InvalidInputError("--kernel and --reg apply to KRR evaluation only; drop them or drop --model")
    if not 1 <= seeds <= 1000:
        raise InvalidInputError(f"--seeds must be in 1 .. 1000, got {seeds}")
    finite_settings(model, epochs=epochs, width=width, lr=lr)  # bad names and settings fail before loading data
    if not file.exists():
        raise InvalidInputError(f"{file}: no such file")
    res = finite_evaluate_file(file, _load_dataset(dataset_name, data_dir), model=model, seeds=seeds, epochs=epochs,
                               width=width, lr=lr, augment=augment, preprocess=preprocess, progress=not as_json)
    summary_path = file.parent / "summary.json"
    if summary_path.exists():
        try:
            summary = json.loads(summary_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            summary = None
        if isinstance(summary, dict):
            finite = summary.get("finite") if isinstance(summary.get("finite"), dict) else {}
            finite[model] = res
            summary["finite"] = finite
            write_json(summary_path, summary)
            res["summary"] = str(summary_path)
        else:
            click.echo(f"note: {summary_path} is not a JSON object; result not recorded there", err=True)
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
    if "summary" in res and (file.parent / "report.html").exists():  # keep the run's report in step
        from .report import write_report

        write_report(file.parent)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False), required=True, callback=lambda c, p, v: _out_arg(v),
              help="PNG to write (a new file or an earlier PNG; never the distilled set itself).")
@click.option("--max-per-row", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="Images per line; a class with more wraps onto further lines (every image is drawn).")
def show(file, out, max_per_row):
    """Draw a distilled set as a PNG grid, one row per class, in pixel space."""
    from . import io
    from ._atomic import check_writable_dir
    from .errors import InvalidInputError
    from .report import image_grid

    if out.suffix.lower() != ".png":
        raise InvalidInputError(f"--out {out} must end in .png (show writes a PNG image)")
    if out.exists() and (out.resolve() in (file.resolve(), io.sidecar_path(file).resolve()) or out.is_dir()):
        raise InvalidInputError(f"--out {out} is the input or a folder; choose a new PNG path")
    if out.exists() and out.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        raise InvalidInputError(f"--out {out} exists and is not a PNG image; choose a new path (show only replaces "
                                "PNGs)")
    check_writable_dir(out.resolve().parent, what=f"--out {out}: its folder")
    ds = io.load(file)
    pixels = ds.to_pixels(ds.images)
    meta = ds.meta
    title = " ".join(str(meta[k]).split(":")[0] for k in ("dataset", "method", "kernel") if k in meta) or None
    ipc = meta.get("ipc") if isinstance(meta.get("ipc"), int) else None
    image_grid(pixels, ds.labels, out, class_names=meta.get("class_names"), max_per_row=max_per_row, title=title,
               ipc=ipc)
    click.echo(str(out))


DEMO = dict(dataset="mnist", method="analytic", ipc=1, kernel="fcnn")


def _check_demo_out(out: Path) -> None:
    """The demo replaces an earlier demo in --out, never another run."""
    from .errors import InvalidInputError

    run_file = out / "run.json"
    if run_file.exists():
        try:
            doc = json.loads(run_file.read_text())
            cfg = doc["config"]
            is_demo = (doc["dataset"], cfg["method"], cfg["ipc"], cfg["kernel"]) == tuple(
                DEMO[k] for k in ("dataset", "method", "ipc", "kernel"))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            is_demo = False
        if not is_demo:
            raise InvalidInputError(f"--out {out} holds another run, not an earlier demo; the demo replaces only its "
                                    "own: choose another --out")
    _check_out(out, force=True)


@cli.command()
@click.option("--out", type=click.Path(file_okay=False), default="runs/demo", show_default=True,
              callback=lambda c, p, v: _out_arg(v),
              help="Output folder (an earlier demo there is replaced once the new one has succeeded).")
@_data_dir_option
def demo(out, data_dir):
    """The quick-start job: distil MNIST and print the result next to random real images and the full-data
    model."""
    from .methods import RunConfig, run_to_dir

    _check_demo_out(out)
    click.echo(f"kdistill demo: {DEMO['method']} method, {DEMO['kernel']} kernel, ipc {DEMO['ipc']} on "
               f"{DEMO['dataset']}")
    dataset, timings = _timed_load(DEMO["dataset"], data_dir)
    click.echo(f"loaded {dataset.name}: {dataset.x_train.shape[0]} train / {dataset.x_test.shape[0]} test "
               f"from {dataset.source}")
    config = RunConfig(method=DEMO["method"], ipc=DEMO["ipc"], kernel=DEMO["kernel"], options={"init": "noise"})
    _, summary = run_to_dir(out, dataset, config, dataset_ref=DEMO["dataset"], data_dir=data_dir, force=True,
                            progress=True, timings=timings)
    _print_table(summary_rows(summary), f"kdistill demo -> {out}")
    click.echo(f"weight cosine cos(W_S, W) = {summary['method_info']['weight_cosine']:.8f}; "
               f"images: {summary['figures']['distilled']}")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
def report(run_dir):
    """Write RUN_DIR/report.html: distilled images, accuracies, timings and training curves in one file.
    A run writes it itself; this rewrites it (e.g. after copying or editing a run)."""
    from .report import write_report

    click.echo(str(write_report(run_dir)))


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Python warnings as one line each: ``warning: ...`` (not a file name and a source line)."""
    click.echo(f"warning: {_one_line(str(message))}", err=True)


_SIGNAL: dict[str, int] = {}


def _terminate(signum, frame):  # SIGTERM (kill, a scheduler's time limit) ends a run like Ctrl-C: cleanly
    _SIGNAL["number"] = signum
    raise KeyboardInterrupt


def main() -> None:
    import os
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    warnings.showwarning = _show_warning
    try:
        rv = cli(prog_name="kdistill", standalone_mode=False)  # --help, --version: their exit code
        sys.stdout.flush()
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        code = 130
    except click.ClickException as e:  # outside a command (e.g. kdistill --bogus): _Group already printed most
        click.echo(f"error: {_one_line(e.format_message())}", err=True)
        code = 2
    except OSError as e:  # stdout itself failed (kdistill kernels > /dev/full, a closed pipe)
        from ._atomic import describe_os_error

        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        click.echo(f"error: cannot write the output ({_one_line(describe_os_error(e))})", err=True)
        code = 2
    else:
        code = rv if isinstance(rv, int) else 0
    sys.exit(code)


if __name__ == "__main__":
    main()
