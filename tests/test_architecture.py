"""The import structure of src/kdistill (tools/check_imports.py): no cycles, no private names across packages."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import check_imports  # noqa: E402


def test_the_source_tree_has_no_import_cycle_and_no_private_import_across_packages():
    problems = check_imports.check()
    assert problems == [], "\n".join(problems)
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "check_imports.py")], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("imports ok"), r.stdout


def _tree(tmp_path, files: dict[str, str]) -> Path:
    root = tmp_path / "src"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


BASE = {"kdistill/__init__.py": "", "kdistill/a/__init__.py": "from ._x import f\n",
        "kdistill/a/_x.py": "def f():\n    return 1\n", "kdistill/b/__init__.py": "", "kdistill/_shared.py": "",
        "kdistill/b/_y.py": "from .._shared import *\nfrom ..a import f\n"}


def test_a_clean_tree_passes(tmp_path):
    assert check_imports.check(_tree(tmp_path, BASE)) == []


@pytest.mark.parametrize("line,needle", [
    ("from ..a._x import f\n", "imports kdistill.a._x, private to kdistill.a"),
    ("from ..a import _hidden\n", "imports _hidden from kdistill.a, private to kdistill.a"),
    ("import kdistill.a._x\n", "imports kdistill.a._x, private to kdistill.a"),
    ("def g():\n    from ..a._x import f\n", "imports kdistill.a._x, private to kdistill.a"),  # inside a function
])
def test_a_private_import_across_packages_is_found(tmp_path, line, needle):
    problems = check_imports.check(_tree(tmp_path, {**BASE, "kdistill/b/_z.py": line}))
    assert len(problems) == 1 and needle in problems[0] and "b/_z.py" in problems[0], problems


def test_a_cycle_is_found_even_through_a_function_local_import_but_not_under_type_checking(tmp_path):
    files = {**BASE, "kdistill/a/_x.py": "def f():\n    from ..b._y import g\n",
             "kdistill/a/__init__.py": "from ._x import f\nfrom ..b import _y\n"}
    problems = check_imports.check(_tree(tmp_path, {**files, "kdistill/b/__init__.py": "from ._y import f\n"}))
    assert any(p.startswith("import cycle among") and "kdistill.b._y" in p for p in problems), problems
    lazy = {**BASE, "kdistill/a/_x.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from ..b import _y\n"}
    assert check_imports.check(_tree(tmp_path / "t", lazy)) == []


def test_a_cycle_through_a_package_init_and_an_import_in_a_type_checking_else_branch_are_found(tmp_path):
    """``b/_y`` imports ``a.sub``, which runs ``a/__init__`` first; that imports ``b``, whose ``__init__``
    imports ``_y``: an ImportError at run time though no module imports another in a circle."""
    files = {**BASE, "kdistill/a/sub.py": "", "kdistill/a/__init__.py": "from .. import b\n",
             "kdistill/b/__init__.py": "from . import _y\n", "kdistill/b/_y.py": "from ..a import sub\n"}
    problems = check_imports.check(_tree(tmp_path, files))
    assert any(p.startswith("import cycle among") for p in problems), problems
    hidden = {**BASE, "kdistill/b/_z.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    pass\n"
              "else:\n    from ..a._x import f\n"}
    problems = check_imports.check(_tree(tmp_path / "e", hidden))
    assert len(problems) == 1 and "private to kdistill.a" in problems[0], problems
