"""The README's Python and command-line examples and the docstring examples run, so they cannot rot."""

import doctest
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

import kdistill
import kdistill._api
import kdistill._estimators
import kdistill._precision
import kdistill._suggest
import kdistill.kernels._spec
import kdistill.methods._registry

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_blocks_run_and_print_what_they_say(capsys):
    """Every README python block runs; a printed line documented in a trailing ``# ...`` comment
    must be what the block prints (numbers included), so the README cannot drift."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        capsys.readouterr()
        before = set(kdistill.methods.methods())
        try:
            exec(compile(code, "README.md", "exec"), {})
        finally:
            for name in set(kdistill.methods.methods()) - before:  # the "Adding a method" example
                kdistill.methods.unregister_method(name)
        printed = capsys.readouterr().out.splitlines()
        claims = readme_claims(code)
        assert len(printed) >= len(claims)
        for claim, line in zip(claims, printed):
            assert claim_holds(claim, line), (claim, line)


# A README python line ``print(...)  # CLAIM; comment`` promises that the line it prints starts with CLAIM.
# Numbers in CLAIM must be printed exactly, except ``X ± T``: any number within T of X (results of an
# optimisation, whose last digits differ between CPU models).
_NUMBER = r"-?\d+(?:\.\d+)?"


def readme_claims(code: str) -> list[str]:
    """The claims of a README python block's print lines, in order (the comment up to its first ``;``)."""
    return [m.group(1).split(";")[0].strip() for m in re.finditer(r"^print\(.*\)\s*#\s*(.*)$", code, re.M)]


def claim_holds(claim: str, line: str) -> bool:
    pattern, bounds, pos = "", [], 0
    for m in re.finditer(rf"({_NUMBER})\s*±\s*({_NUMBER})", claim):
        pattern += re.escape(claim[pos:m.start()]) + f"({_NUMBER})"
        bounds.append((float(m.group(1)), float(m.group(2))))
        pos = m.end()
    match = re.match(pattern + re.escape(claim[pos:]), line)
    return bool(match) and all(abs(float(got) - want) <= tol + 1e-12
                               for got, (want, tol) in zip(match.groups(), bounds))


def test_readme_claims_with_a_tolerance_accept_rounding_and_refuse_more():
    """Each README claim ``X ± T``, printed as X moved in its last digits, still holds; moved by more than T it
    fails; the exact claims fail when any digit changes."""
    text = (ROOT / "README.md").read_text()
    claims = [c for code in re.findall(r"```python\n(.*?)```", text, flags=re.S) for c in readme_claims(code)]
    tolerant = [c for c in claims if "±" in c]
    assert tolerant and len(claims) > len(tolerant)
    for claim in claims:
        m = re.search(rf"({_NUMBER})\s*±\s*({_NUMBER})", claim)
        if m is None:  # exact: the claim as printed holds, one digit more or less does not
            assert claim_holds(claim, claim + " and more")
            last = re.findall(r"\d", claim)[-1]
            i = claim.rindex(last)
            assert not claim_holds(claim, claim[:i] + str((int(last) + 1) % 10) + claim[i + 1:])
            continue
        want, tol = float(m.group(1)), float(m.group(2))
        decimals = len(m.group(1).split(".")[1]) if "." in m.group(1) else 0
        for moved, holds in ((want + 10 ** -decimals * 2, True), (want - tol / 2, True),
                             (want + 2 * tol, False), (want - 1.5 * tol, False)):
            line = claim[:m.start()] + f"{moved:.{decimals}f}" + claim[m.end():]
            assert claim_holds(claim, line) is holds, (claim, line)


def test_readme_quick_start_is_the_two_commands():
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make demo" in quick and "make test" in quick
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("module", [kdistill.kernels._spec, kdistill._precision, kdistill._api,
                                    kdistill.methods._registry, kdistill._estimators, kdistill, kdistill._suggest])
def test_docstring_examples(module):
    failures, tried = doctest.testmod(module)
    assert tried > 0 and failures == 0


# --- The README's command lines ----------------------------------------------------------------
#
# Every `kdistill ...` line in the README's sh/console blocks runs, in README order, in one temporary
# working directory (later commands read earlier runs' folders), and must exit 0. What cannot run
# here as written is shortened by the table below, never skipped: each rule is a regex substitution
# on the command (without the leading `kdistill `), applied in order, and must change at least one
# README command (a rule that no longer matches anything fails the test, so the table cannot rot).
# A README command that fails after its rewrites, or uses an option kdistill does not have (exit 2),
# fails the test.
SHORTEN = [
    (r"--dataset (mnist|fashion_mnist|cifar10)\b", "--dataset digits",
     "MNIST and Fashion-MNIST take ~10 s each to load and fit, CIFAR-10 needs a download: scikit-learn's "
     "digits (1,797 8x8 images) is always installed"),
    (r"--ipc (10|50)\b", "--ipc 2", "100 or 500 images to distil and draw (analytic ipc 50 on digits: ~20 s)"),
    (r"--steps \d+", "--steps 2", "KIP: 400 steps are 13 s on MNIST (README)"),
    (r"^(distill (?!.*--steps).*--method (kip|rfad|dc)\b.*)$", r"\1 --steps 2",
     "KIP's default 4000 steps (17 minutes on MNIST, benchmarks/results/kip.md), RFAD's and DC's hour: 2 steps"),
    (r"^(distill .*--method dc\b.*)$", r"\1 --dc-width 8 --dc-depth 1 --batch-real 8 --val-epochs 2",
     "DC's ConvNet of width 128 on 256 real images per class, trained 300 epochs at each validation: a small one "
     "(its matching step compiles for two classes at once, see the test)"),
    (r"^(distill (?!.*--kernel).*--method rfad\b.*)$", r"\1 --kernel rf-convnet:models=1,width=4,depth=1",
     "RFAD's default fixed kernel (16 networks of width 64) takes ~10 s to compile; tests/test_rfad.py runs "
     "the default once"),
    (r"^(evaluate .*--model \S+.*)$", r"\1 --seeds 1 --epochs 1 --width 4",
     "finite networks: 5 seeds x 300 epochs is an hour or more on a CPU"),
    (r"^(distill (?!.*--no-full).*--method (kip|rfad|dc)\b.*)$", r"\1 --no-full --no-baseline",
     "the iterative runs' references (the full-data model, random real images) compile the kernel at more "
     "shapes; tests/test_budget.py and the methods' own tests run them"),
    (r" --seeds 3\b", " --seeds 2", "two seeds show the grouping as well as three"),
    (r" --workers \d+", "",
     "a local Dask cluster takes ~20 s to start; tests/test_distributed.py runs `distill --workers 2` itself and "
     "compares it with the single-process run"),
    (r"^download \S+$", "download --help",
     "needs internet; the dataset name is checked against the registry's downloadable files instead"),
]
# Besides the rewrites: `kdistill demo` runs on digits (kdistill.cli.DEMO patched; it has no --dataset),
# the file the README assumes a user has (KIP's released set: `images` and `labels`, no sidecar) is
# written first, and $KDISTILL_DATA points into the temporary directory (your cache is not touched).
USER_FILE = "kip_released.npz"


def readme_commands(text: str) -> list[str]:
    """Every `kdistill ...` command in the README's sh/console blocks, in order, without the leading
    ``kdistill``, comments stripped and backslash-continued lines joined."""
    commands = []
    for block in re.findall(r"```(?:sh|console|bash|shell)\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            args = shlex.split(line, comments=True)
            if args[:1] == ["kdistill"]:
                commands.append(shlex.join(args[1:]))
    return commands


def shorten(command: str, used: list[int]) -> str:
    for i, (pattern, replacement, _why) in enumerate(SHORTEN):
        new = re.sub(pattern, replacement, command)
        used[i] += new != command
        command = new
    return command


def test_readme_commands_run(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import kdistill.cli
    from kdistill.data import REGISTRY, load

    commands = readme_commands((ROOT / "README.md").read_text())
    subcommands = {c.split()[0] for c in commands}
    assert subcommands == set(kdistill.cli.cli.commands), "the README shows every subcommand, and only real ones"

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KDISTILL_DATA", str(tmp_path / "data"))
    monkeypatch.setitem(kdistill.cli.DEMO, "dataset", "digits")
    # DC's matching step for two classes at a time, not ten: a fifth of the unrolled program to compile (most
    # of that command's time); test_dc.py::test_classes_beyond_one_group_give_the_same_step shows the grouping changes
    # nothing
    monkeypatch.setattr("kdistill.methods._dc._GROUP", 2)
    digits = load("digits")
    np.savez(USER_FILE, images=digits.x_train[:20], labels=np.eye(10, dtype=np.float32)[digits.y_train[:20]])

    used = [0] * len(SHORTEN)
    for command in commands:
        args = shlex.split(shorten(command, used))
        if command.startswith("download "):
            name = command.split()[1]
            assert name in REGISTRY and REGISTRY[name].files, f"{name} has no official files to download"
        result = CliRunner().invoke(kdistill.cli.cli, args, catch_exceptions=False)
        ran = shlex.join(args)
        assert result.exit_code == 0, (f"README: kdistill {command}", f"ran: kdistill {ran}", result.output)
        if args[0] == "distill" and "--out" in args:
            out = Path(args[args.index("--out") + 1])
            seeds = int(args[args.index("--seeds") + 1]) if "--seeds" in args else 1
            finished = [out / "summary.json"] if seeds == 1 else sorted(out.glob("seed-*/summary.json"))
            assert len(finished) == seeds and all(f.exists() for f in finished), (command, finished)
    unused = [SHORTEN[i][0] for i, n in enumerate(used) if n == 0]
    assert not unused, f"rewrite rules that match no README command (remove them): {unused}"


def test_readme_describes_every_run_file():
    """The README's run-directory table names exactly the files a run may write."""
    from kdistill.runs import RUN_FILES

    section = (ROOT / "README.md").read_text().split("### The run directory", 1)[1].split("\n#", 1)[0]
    named = set(re.findall(r"^\| `([^`]+)` \|", section, flags=re.M))
    assert named == set(RUN_FILES)


def test_readme_describes_every_subcommand():
    """The README's table of subcommands has a row for each one ``kdistill --help`` lists."""
    import kdistill.cli

    section = (ROOT / "README.md").read_text().split("## Command line", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| (`.*?) \|", section, flags=re.M)
    named = {m.split()[0] for row in rows for m in re.findall(r"`([^`]+)`", row)}
    assert set(kdistill.cli.cli.commands) <= named
