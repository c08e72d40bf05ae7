"""`kdistill compare RUN_DIR...`: many runs in one table, grouped over seeds, and one HTML page.

Three real runs on digits (random ipc 1 with seeds 0 and 1 in a seeds folder as `distill --seeds N` writes
it, analytic linear ipc 1), made once; the grouped numbers are checked against NumPy on the summaries. The
last test renders the page in headless Chromium (skipped where it is missing, except in CI, like
tests/test_report.py) and checks that both plots decoded and drew.
"""

import base64
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from kdistill.errors import InvalidInputError
from kdistill.report import collect_runs, compare_html, group_runs, write_compare_html
from kdistill.runs import record_finite_result

from _helpers import colour_count, error_line, run_cli
from test_report import CHROMIUM, needs_chromium

PNG = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """root/seeds/seed-0, root/seeds/seed-1 (random, linear, ipc 1) and root/analytic (analytic, linear, ipc 1)."""
    root = tmp_path_factory.mktemp("compare")
    for out, args in ((root / "seeds" / "seed-0", ["--method", "random", "--seed", "0"]),
                      (root / "seeds" / "seed-1", ["--method", "random", "--seed", "1"]),
                      (root / "analytic", ["--method", "analytic", "--kernel", "linear"])):
        r = run_cli("distill", "--dataset", "digits", "--ipc", "1", "--no-full", *args, "--out", out)
        assert r.exit_code == 0, r.output
    return root


def _summary(d):
    return json.loads((d / "summary.json").read_text())


def test_groups_are_mean_and_std_over_seeds_as_numpy_computes_them(root, tmp_path):
    seeds = tmp_path / "seeds"
    shutil.copytree(root / "seeds", seeds)
    for i, acc in enumerate((0.5, 0.7)):  # as `evaluate --model fc` stores it (only `mean` is read)
        record_finite_result(seeds / f"seed-{i}", "fc", {"mean": acc, "std": 0.01, "seeds": 2})
    runs = collect_runs([seeds, root / "analytic"], on_skip=pytest.fail)
    groups = group_runs(runs, on_note=pytest.fail)
    assert [(g.method, g.seeds) for g in groups] == [("analytic", (0,)), ("random", (0, 1))]
    random = groups[1]
    s = [_summary(seeds / f"seed-{i}") for i in (0, 1)]
    acc = np.array([x["test_accuracy"] for x in s])
    assert random.test_accuracy == (pytest.approx(acc.mean(), abs=1e-15), pytest.approx(acc.std(), abs=1e-15), 2)
    assert acc.std() > 0  # two seeds, two different random sets
    fc = np.array([x["finite"]["fc"]["mean"] for x in s])
    assert random.finite["fc"][:2] == (pytest.approx(fc.mean()), pytest.approx(fc.std()))
    secs = np.array([x["seconds"]["distill"] for x in s])
    assert random.distill_seconds[:2] == (pytest.approx(secs.mean()), pytest.approx(secs.std()))
    assert random.baseline is None  # `random` has no random-real baseline of its own
    a = _summary(root / "analytic")
    assert groups[0].test_accuracy == (a["test_accuracy"], 0.0, 1)
    assert groups[0].baseline.mean == a["baseline"]["test_accuracy"]
    # the command prints both, in percent; --json has the same numbers as fractions
    r = run_cli("compare", seeds, root / "analytic", "--json", tmp_path / "c.json")
    assert r.exit_code == 0, r.output
    assert f"{100 * acc.mean():.2f} ± {100 * acc.std():.2f}%" in r.stdout
    assert f"{100 * fc.mean():.2f} ± {100 * fc.std():.2f}%" in r.stdout and "fc acc" in r.stdout
    assert f"{100 * a['test_accuracy']:.2f}%" in r.stdout and "3 runs" in r.stdout
    doc = json.loads((tmp_path / "c.json").read_text())
    row = next(g for g in doc["groups"] if g["method"] == "random")
    assert row["test_accuracy"] == {"mean": pytest.approx(acc.mean()), "std": pytest.approx(acc.std()), "n": 2}
    assert row["seeds"] == [0, 1] and row["baseline"] is None


def test_runs_that_differ_in_a_setting_are_not_grouped(root, tmp_path):
    for i, init in enumerate(("noise", "noise", "real")):
        d = tmp_path / f"a{i}"
        shutil.copytree(root / "analytic", d)
        run = json.loads((d / "run.json").read_text())
        run["config"]["options"]["init"] = init
        run["config"]["seed"] = i
        run["config"]["options"]["checkpoint_every"] = i  # not a setting of the result: still grouped
        (d / "run.json").write_text(json.dumps(run))
        s = _summary(d)
        s["seed"] = i
        (d / "summary.json").write_text(json.dumps(s))
    groups = group_runs(collect_runs([tmp_path / "a0", tmp_path / "a1", tmp_path / "a2"]))
    assert sorted((g.label, g.seeds) for g in groups) == [("init=noise", (0, 1)), ("init=real", (2,))]
    r = run_cli("compare", tmp_path / "a0", tmp_path / "a1", tmp_path / "a2")
    assert r.exit_code == 0 and "init=real" in r.stdout and "settings" in r.stdout


def test_globs_and_a_seeds_folder_expand(root):
    r = run_cli("compare", root / "seeds")
    assert r.exit_code == 0, r.output
    assert "2 runs" in r.stdout and "seed-0" in r.stdout and "seed-1" in r.stdout and not r.stderr
    r = run_cli("compare", f"{root}/*")  # quoted: the shell did not expand it; seeds/ is a folder of runs
    assert r.exit_code == 0, r.output
    assert "3 runs" in r.stdout and "analytic" in r.stdout and not r.stderr
    r = run_cli("compare", f"{root}/s*", root / "seeds" / "seed-0")  # a run named twice is counted once
    assert r.exit_code == 0 and "2 runs" in r.stdout and not r.stderr


def test_damaged_and_foreign_folders_are_skipped_with_one_line_warnings(root, tmp_path):
    bad = {"notjson": "{not json", "array": "[1, 2]", "wrongtype": None, "percent": None}
    for name, text in bad.items():
        d = tmp_path / name
        shutil.copytree(root / "analytic", d)
        if text is None:
            s = _summary(d)
            s.update({"ipc": "one"} if name == "wrongtype" else {"test_accuracy": 93.1})  # a percent, not a fraction
            text = json.dumps(s)
        (d / "summary.json").write_text(text)
    (tmp_path / "empty").mkdir()
    unfinished = tmp_path / "unfinished"
    shutil.copytree(root / "analytic", unfinished)
    (unfinished / "summary.json").unlink()
    r = run_cli("compare", root / "analytic", *(tmp_path / n for n in [*bad, "empty", "unfinished", "missing"]))
    assert r.exit_code == 0, r.output
    warnings = r.stderr.strip().splitlines()
    assert all(w.startswith("warning: ") and w.endswith("; skipped") for w in warnings), warnings
    assert len(warnings) == 7, warnings
    for name in [*bad, "empty", "unfinished", "missing"]:
        assert sum(f"/{name}" in w for w in warnings) == 1, (name, warnings)
    assert "1 run" in r.stdout and "ipc is not an integer" in r.stderr and "not valid JSON" in r.stderr
    # nothing usable: one line, exit 2
    r = run_cli("compare", tmp_path / "notjson", tmp_path / "empty")
    line = error_line(r)
    assert "no finished runs" in line and "notjson" in line and "empty" in line
    assert "matches nothing" in error_line(run_cli("compare", tmp_path / "nothing-here-*"))
    with pytest.raises(InvalidInputError):
        compare_html([])


def test_page_escapes_strings_from_run_folders(root, tmp_path):
    d = tmp_path / "hostile"
    shutil.copytree(root / "analytic", d)
    s = _summary(d)
    s["method"] = HOSTILE
    s["kernel"] = "[red]markup[/red] $x^2$ \x1b[2J"  # rich markup, matplotlib maths, a terminal escape
    s["dataset"] = "<b>digits</b>"
    (d / "summary.json").write_text(json.dumps(s))
    out = tmp_path / "page.html"
    r = run_cli("compare", d, root / "seeds", "--html", out)
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert "<script" not in text and "onerror=alert" not in text.replace("onerror=alert(2)&gt;", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in text
    assert "&lt;b&gt;digits&lt;/b&gt;" in text and "<b>" not in text
    assert text.count("<img") == 2  # the two plots, nothing planted
    pngs = [base64.b64decode(m) for m in PNG.findall(text)]
    assert len(pngs) == 2 and all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    assert "src=\"http" not in text  # self-contained
    # the terminal shows the strings as text: markup not applied, no escape sequence passed through
    assert "[red]markup[/red]" in r.stdout and "\x1b" not in r.stdout


def test_existing_files_are_replaced_only_when_compare_wrote_them(root, tmp_path):
    page = tmp_path / "notes.html"
    page.write_text("<p>my notes</p>")
    r = run_cli("compare", root / "seeds", "--html", page)
    assert "not written by kdistill compare" in error_line(r) and not r.stdout  # refused before any table
    assert page.read_text() == "<p>my notes</p>"
    assert run_cli("compare", root / "seeds", "--html", page, "--force").exit_code == 0
    assert "kdistill compare" in page.read_text()
    assert run_cli("compare", root / "analytic", "--html", page).exit_code == 0  # its own page: replaced
    assert "1 run in 1 group" in page.read_text()
    assert run_cli("compare", root / "seeds", "--json", tmp_path / "c.json").exit_code == 0
    assert run_cli("compare", root / "seeds", "--json", tmp_path / "c.json").exit_code == 0
    error_line(run_cli("compare", root / "seeds", "--json", page))  # a compare page is not a compare JSON


@needs_chromium
def test_page_renders_with_both_plots_in_headless_chromium(root, tmp_path):
    from matplotlib.image import imread

    assert CHROMIUM is not None, "CI=true but Chromium is missing; .ci/run installs it with apt-get"
    page = write_compare_html(collect_runs([root]), tmp_path / "compare.html")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    # every image decoded: a copy of the page with a script that records each image's natural size
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", (
        "<script>addEventListener('load', () => document.body.setAttribute('data-sizes', "
        "[...document.images].map(i => i.naturalWidth + 'x' + i.naturalHeight).join(' ')))</script></body>")))
    dom = subprocess.run(flags + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    sizes = re.search(r'data-sizes="([^"]*)"', dom.stdout)
    assert sizes, dom.stderr[-2000:]
    dims = [tuple(map(int, s.split("x"))) for s in sizes.group(1).split()]
    assert len(dims) == 2 and all(w > 300 and h > 200 for w, h in dims), dims
    # the screenshot: a page with text and two plots (matplotlib's anti-aliased lines: many colours)
    shot = tmp_path / "shot.png"
    proc = subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1280,1400", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr[-2000:]
    rgb = (np.asarray(imread(shot))[..., :3] * 255).round().astype(np.uint8)
    assert rgb.shape[:2] == (1400, 1280)
    assert colour_count(rgb) > 50
    assert (rgb.max(axis=2) < 64).mean() > 0.001 and (rgb.min(axis=2) > 240).mean() > 0.3
    # coloured plot marks (the lines' blue and orange; the page itself has no colour): about 240 pixels
    # for this page's three points with error bars, none when the images do not draw
    saturated = (rgb.max(axis=2).astype(int) - rgb.min(axis=2)) > 80
    assert saturated.sum() > 100, saturated.sum()


def test_a_refused_json_target_leaves_no_html_written(root, tmp_path):
    """--html A --json B where B may not be replaced: refused in one line before A is written."""
    (tmp_path / "mine.json").write_text('{"not": "compare"}')
    r = run_cli("compare", root, "--html", tmp_path / "page.html", "--json", tmp_path / "mine.json")
    assert "was not written by kdistill compare" in error_line(r)
    assert not (tmp_path / "page.html").exists() and (tmp_path / "mine.json").read_text() == '{"not": "compare"}'
