"""The README's Python example and the docstring examples run, so they cannot rot."""

import doctest
import re
from pathlib import Path

import pytest

import kdistill
import kdistill._api
import kdistill._estimators
import kdistill._precision
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
        claims = [m.group(1).split(",")[0].strip() for m in re.finditer(r"^print\(.*\)\s*#\s*(.*)$", code, re.M)]
        assert len(printed) >= len(claims)
        for claim, line in zip(claims, printed):
            assert line.startswith(claim), (claim, line)


def test_readme_quick_start_is_the_two_commands():
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make demo" in quick and "make test" in quick
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("module", [kdistill.kernels._spec, kdistill._precision, kdistill._api,
                                    kdistill.methods._registry, kdistill._estimators, kdistill])
def test_docstring_examples(module):
    failures, tried = doctest.testmod(module)
    assert tried > 0 and failures == 0
