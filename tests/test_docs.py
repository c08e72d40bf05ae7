"""The README's Python example and the docstring examples run, so they cannot rot."""

import doctest
import re
from pathlib import Path

import pytest

import kdistill.kernels._spec

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_block_runs():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        scope: dict = {}
        exec(compile(code, "README.md", "exec"), scope)
        assert 0.9 < scope["result"].summary["test_accuracy"] <= 1.0


def test_readme_quick_start_is_the_two_commands():
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make demo" in quick and "make test" in quick
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("module", [kdistill.kernels._spec])
def test_docstring_examples(module):
    failures, tried = doctest.testmod(module)
    assert tried > 0 and failures == 0
