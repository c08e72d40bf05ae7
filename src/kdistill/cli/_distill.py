"""``kdistill distill``: the common options, one option per method option of the registry, the run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from ._common import (DATASET_HELP, _check_out, _data_dir_option, _out_arg, _parse_reg, _print_table, _timed_load,
                      summary_rows)

_OPT_PREFIX = "m__"  # click destination of method options: m__<option name>


def _method_params() -> list[click.Option]:
    """One click option per method-option flag in the registry (values checked by the registry)."""
    from ..methods import cli_flags

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
        from ..methods import methods

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
    from ..errors import InvalidInputError
    from ..methods import get_method, methods

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


@click.command(cls=_DistillCommand)
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
@click.option("--seeds", type=int, default=1, show_default=True,
              help="Distil N times, with seeds --seed .. --seed+N-1, into OUT/seed-<s> (each a run folder), and print "
                   "mean ± std over them (kdistill compare OUT shows them again). --time-limit is shared: each run "
                   "gets an equal part of what is left when it starts.")
@click.option("--preprocess", type=click.Choice(["none", "standardize", "zca"]), default="standardize",
              show_default=True, help="Input preprocessing (zca: KIP's layer norm + ZCA; on MNIST and "
                   "Fashion-MNIST it lowers the accuracy of ConvNets trained on the set, "
                   "benchmarks/results/transfer_ablation.md).")
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
@click.option("--time-limit", type=float, default=None,
              help="Seconds for the whole run, from the start of the command (default: no limit). Iterative methods "
                   "learn for what is left once evaluating the set is set aside (keeping the best set); the "
                   "baseline and the full-data reference run only if their estimate fits in what remains. A line "
                   "before each phase gives its estimate.")
@click.option("--resume", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Continue the run in this directory from its last checkpoint. Its settings come from its run.json; "
                   "only --time-limit, --full/--no-full and --baseline/--no-baseline may be given again.")
@click.option("--force", is_flag=True,
              help="Replace the earlier run in --out (only once the new run has succeeded; a failed run leaves "
                   "it as it was).")
@click.option("--precision", type=click.Choice(["auto", "float64", "float32"]), default="auto", show_default=True,
              help="Kernel values in float64, or float32 (about 2x faster; KIP with fc-ntk was as stable in our "
                   "tests); auto: the method's own on a CPU (float32 for rfad and dc, see benchmarks/results/rfad.md; "
                   "float64 for the others: kdistill methods says which), float32 for every method on a GPU. Images, and so KIP's support set and Adam state, stay float32 like the data; ridge "
                   "solves always run in float64. Recorded in run.json; --resume keeps it.")
@click.option("--download", "download_", is_flag=True, help="Download the dataset's missing official files into --data-dir before loading (needs internet).")
@click.option("--workers", type=int, default=None,
              help="Run the block computations and steps on a local Dask cluster of N worker processes "
                   "(needs kdistill[distributed]; docs/distributed.md). Allowed with --resume.")
@click.option("--scheduler", default=None,
              help="Run them on the Dask cluster whose scheduler is at tcp://HOST:PORT (started with `dask "
                   "scheduler`, workers with `dask worker tcp://HOST:PORT`). Allowed with --resume.")
@_data_dir_option
def distill(dataset_name, method, ipc, kernel, out, seed, seeds, preprocess, reg, val_size, full, max_dual_n, baseline,
            time_limit, resume, force, precision, download_, workers, scheduler, data_dir, **method_values):
    """Distil a dataset; writes OUT/run.json, distilled.npz (+ .json sidecar), summary.json, distilled.png and
    report.html (iterative methods: history.json and checkpoint.npz too; sets that start from real images:
    init_vs_distilled.png).

    Options after the common ones belong to one method each; `kdistill distill --method NAME --help`
    shows NAME's.
    """
    from ..parallel import executor_scope
    from ..errors import InvalidInputError
    from ..evaluate import MAX_DUAL_N
    from ..kernels import from_spec
    from ..methods import RunConfig, get_method
    from ..runs import RESUME_CHANGES, read_run_json, run_to_dir

    ctx = click.get_current_context()
    if workers is not None and scheduler is not None:
        raise InvalidInputError("give --workers N (a local cluster) or --scheduler ADDRESS (a running one), not both")
    if time_limit is not None and not (0 < time_limit < 1e9):
        raise InvalidInputError(f"--time-limit must be a number of seconds > 0, got {time_limit:g}")
    if resume is not None:
        subs = sorted(resume.glob("seed-*/run.json"))
        if subs and not (resume / "run.json").exists():
            raise InvalidInputError(f"{resume} holds the runs of --seeds; resume each one, e.g. kdistill distill "
                                    f"--resume {subs[0].parent}")
        dataset_ref, saved_dir, config = read_run_json(resume)
        changes = {{"full_reference": "full"}.get(k, k): k for k in RESUME_CHANGES}  # click's name: the setting
        given = {p.name: p for p in ctx.command.get_params(ctx)
                 if p.name not in ("resume", "download_", "workers", "scheduler") and p.name in ctx.params
                 and ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE}
        refused = [p.opts[0] for name, p in given.items() if name not in changes]
        if refused:
            raise InvalidInputError(f"--resume continues the recorded run; drop {', '.join(refused)} (its settings "
                                    f"are in {resume / 'run.json'}; only --time-limit, --full/--no-full and "
                                    "--baseline/--no-baseline may change)")
        if not get_method(config.method).iterative:
            raise InvalidInputError(f"{resume} holds {_a(config.method)} run, which has no steps to continue; start a "
                                    "new run instead")
        config = dataclasses.replace(config, **{changes[k]: ctx.params[k] for k in given if k in changes})
        click.echo(_resume_line(resume, config), err=True)
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
        if not 1 <= seeds <= 10_000 or seed + seeds > 2**32:
            raise InvalidInputError(f"--seeds must be in 1 .. 10000 with --seed + --seeds at most 4294967296, got "
                                    f"{seeds}")
        if max_dual_n is not None and max_dual_n < 0:
            raise InvalidInputError(f"--max-dual-n must be >= 0, got {max_dual_n}")
        if seeds > 1:
            _check_seeds_out(out, seed, seeds, force)
        else:
            _check_out(out, force)
        from_spec(kernel)  # fail on a bad spec before loading data
        options = _method_options(method, method_values)
        from ..methods import resolve_options

        resolve_options(method, options)  # fail on bad option values before loading data
        config = RunConfig(method=method, ipc=ipc, kernel=kernel, seed=seed, preprocess=preprocess,
                           reg=_parse_reg(reg), val_size=val_size, full_reference=full, precision=precision,
                           baseline=baseline, time_limit=time_limit or 0.0,
                           max_dual_n=MAX_DUAL_N if max_dual_n is None else max_dual_n, options=options)
        if seeds > 1:
            _distill_seeds(out, dataset_name, data_dir, download_, config, seeds, force, workers, scheduler)
            return
        _interrupt_hint(ctx, out, config)
        with executor_scope(workers=workers, scheduler=scheduler) as executor:
            dataset, timings = _timed_load(dataset_name, data_dir, download_)
            _, summary = run_to_dir(out, dataset, config, dataset_ref=dataset_name, data_dir=data_dir, force=force,
                                    progress=True, timings=timings, executor=executor)
    _print_result(summary, f"kdistill distill -> {out}")


def _print_result(summary: dict, title: str) -> None:
    """The result table and the notes below it (what was skipped, and what the table alone would hide)."""
    _print_table(summary_rows(summary), title)
    if summary.get("baseline_note"):
        click.echo(f"note: random-real baseline {summary['baseline_note']}")
    if summary.get("full_test_accuracy_note"):
        click.echo(f"note: full-data accuracy {summary['full_test_accuracy_note']}")
    # (summary["warnings"], a set below random real or the starting set kept, were printed as warning lines)


def _seed_dirs(out: Path, seed: int, seeds: int) -> list[Path]:
    return [out / f"seed-{s}" for s in range(seed, seed + seeds)]


def _check_seeds_out(out: Path, seed: int, seeds: int, force: bool) -> None:
    """``--seeds N`` writes OUT/seed-<s>: OUT must be new, empty, or hold only such folders (and each of those
    must be usable, as a single run's --out is)."""
    from ..errors import InvalidInputError

    if out.exists():
        if not out.is_dir():
            raise InvalidInputError(f"--out {out} is a file; --seeds needs a folder")
        if (out / "run.json").exists():
            raise InvalidInputError(f"{out} holds a single run; give --seeds another --out")
        # (a killed seed's run leaves kdistill's own hidden files beside its folder: .seed-N.kdistill-...)
        foreign = sorted(p.name for p in out.iterdir() if not p.name.startswith(("seed-", ".seed-")))
        if foreign:
            raise InvalidInputError(f"{out} holds {', '.join(foreign[:3])}, which --seeds did not write; give "
                                    "another --out")
    for sub in _seed_dirs(out, seed, seeds):
        _check_out(sub, force)


def _distill_seeds(out: Path, dataset_name: str, data_dir, download_: bool, config, seeds: int, force: bool,
                   workers, scheduler) -> None:
    """``--seeds N``: N runs into OUT/seed-<s>, then their mean ± std. A time limit is shared: each run gets an
    equal part of what is left when it starts."""
    import time

    from rich.console import Console

    from ..parallel import executor_scope
    from ..report import collect_runs, group_runs, groups_table
    from ..runs import run_to_dir

    ctx = click.get_current_context()
    with executor_scope(workers=workers, scheduler=scheduler) as executor:
        dataset, timings = _timed_load(dataset_name, data_dir, download_)
        t0, spent = time.perf_counter(), sum(timings.values())  # (the seconds before the runs, counted once)
        for i, sub in enumerate(_seed_dirs(out, config.seed, seeds)):
            cfg = dataclasses.replace(config, seed=config.seed + i)
            if config.time_limit:  # an equal share of what is left for this run and the ones after it
                left = config.time_limit - spent - (time.perf_counter() - t0)
                cfg = dataclasses.replace(cfg, time_limit=max(left / (seeds - i), 1e-3))
            _interrupt_hint(ctx, sub, cfg)
            click.echo(f"seed {cfg.seed} ({i + 1} of {seeds}) -> {sub}", err=True)
            _, summary = run_to_dir(sub, dataset, cfg, dataset_ref=dataset_name, data_dir=data_dir, force=force,
                                    progress=True, timings=timings if i == 0 else None, spent=0.0,
                                    executor=executor)
            _print_result(summary, f"seed {cfg.seed} -> {sub}")
    groups = group_runs(collect_runs(_seed_dirs(out, config.seed, seeds)))
    Console(width=max(Console().width, 130)).print(groups_table(groups, title=f"kdistill distill --seeds {seeds} -> "
                                                                              f"{out}: mean ± std over seeds"))


def _resume_line(run_dir: Path, config) -> str:
    """Where a resumed run continues: its checkpoint's step, best validation so far and seconds so far."""
    from ..methods.iterative import CHECKPOINT, load_checkpoint

    path = run_dir / CHECKPOINT
    if not path.exists():
        from ..errors import InvalidInputError

        raise InvalidInputError(f"nothing to resume: {run_dir} has no {CHECKPOINT} (the run stopped before its first "
                                f"checkpoint); start it again with the same command and --force")
    meta = load_checkpoint(path)[1]  # (a damaged one is refused here, in one line)
    steps = config.options.get("steps")
    best = meta.get("best_acc")
    best = (f", best validation {100 * best:.1f}% at step {meta.get('best_step')}"
            if isinstance(best, (int, float)) and best >= 0 else "")
    return (f"resuming {run_dir} from step {meta.get('step')}{f' of {steps}' if steps else ''} ({CHECKPOINT}{best}, "
            f"{float(meta.get('seconds', 0.0)):.0f} s so far)")


def _a(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def _interrupt_hint(ctx, out: Path, config) -> None:
    """What Ctrl-C (or SIGTERM) prints: iterative runs can be resumed from their checkpoint."""
    from ..methods import get_method

    if get_method(config.method).iterative:
        ctx.find_root().meta["kdistill_interrupt_hint"] = (
            f"; if a checkpoint was written, kdistill distill --resume {out} continues the run")


def _default_out(dataset: str, method: str, ipc: int) -> Path:
    """``runs/<dataset>-<method>-ipc<N>`` (the file's stem for your own arrays), never an existing folder."""
    name = Path(dataset).stem if dataset.endswith(".npz") else dataset
    base = Path("runs") / f"{name}-{method}-ipc{ipc}"
    out, i = base, 1
    while out.exists():
        i += 1
        out = base.with_name(f"{base.name}-{i}")
    return out
