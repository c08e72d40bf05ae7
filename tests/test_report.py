"""`kdistill report RUN_DIR`: a self-contained HTML report (images as base64 PNG data URIs).

The last test renders the report in headless Chromium and checks the screenshot
is a real page with pictures in it; it is skipped where Chromium is missing, except in CI (CI=true), which installs it.
"""

import base64
import os
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from _helpers import colour_count, run_cli

from kdistill.errors import CorruptFileError, InvalidInputError
from kdistill.report import report_html, write_report

HISTORY = {"step": [0, 10, 20, 30, 40], "loss": [1.0, 0.5, 0.3, 0.2, 0.15],
           "val_step": [0, 20, 40], "val_accuracy": [0.3, 0.6, 0.7]}
PNG = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
                 if p and Path(p).exists()), None)

# Chromium is a system package (root to install): skipped on a user's machine without it, but CI
# (.ci/run installs it and sets CI=true) must run these tests, so there its absence is a failure.
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="headless Chromium not found (a system package): install it with `apt-get install chromium` "
           "(Debian/Ubuntu) to render the reports; CI installs it and never skips")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    r = run_cli("distill", "--dataset", "digits", "--method", "random", "--ipc", "3", "--kernel", "linear",
                "--no-full", "--out", str(out))
    assert r.exit_code == 0, r.output
    return out


def _pngs(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in PNG.findall(text)]


def test_distill_writes_a_report(run_dir):
    text = (run_dir / "report.html").read_text()
    pngs = _pngs(text)
    assert pngs and all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    assert "kernel (KRR) test accuracy" in text and "Training curves" not in text
    assert "src=\"http" not in text and "src='http" not in text  # self-contained


def test_report_with_history_and_finite_results(run_dir, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(run_dir, d)
    (d / "history.json").write_text(json.dumps(HISTORY))
    s = json.loads((d / "summary.json").read_text())
    s["finite"] = {"convnet": {"mean": 0.8123, "std": 0.0101, "accuracies": [0.80, 0.82], "seeds": 2, "epochs": 300,
                               "seconds_per_seed": 12.5, "label_mode": "one-hot", "settings": {"width": 128}}}
    (d / "summary.json").write_text(json.dumps(s))
    r = run_cli("report", str(d))
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(d / "report.html")
    text = (d / "report.html").read_text()
    assert text.startswith("<!DOCTYPE html>")
    pngs = _pngs(text)
    assert len(pngs) >= 2  # distilled images + curves
    assert "Training curves" in text and 'alt="training curves"' in text
    assert "81.23 ± 1.01%" in text and "convnet" in text and "12.5" in text
    # the Accuracy table holds the kernel's number and the network's side by side, the network's under it
    accuracy = text.split("<h2>Accuracy</h2>", 1)[1].split("</table>", 1)[0]
    krr = accuracy.index("kernel (KRR) test accuracy")
    assert krr < accuracy.index("finite network convnet, test accuracy (mean ± std over 2 seeds)") < \
        accuracy.index("81.23 ± 1.01%")
    from matplotlib.image import imread
    import io

    curves = imread(io.BytesIO(pngs[-1]))
    assert curves.shape[0] > 200 and curves.shape[1] > 500


def test_report_errors(tmp_path, run_dir):
    with pytest.raises(InvalidInputError, match="no such run directory"):
        report_html(tmp_path / "missing")
    with pytest.raises(InvalidInputError, match="neither summary.json nor distilled.npz"):
        report_html(tmp_path)
    r = run_cli("report", str(tmp_path / "missing"))
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error: ")
    d = tmp_path / "bad"
    shutil.copytree(run_dir, d)
    (d / "history.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="history.json"):
        write_report(d)
    # a history without usable series gives a note instead of a plot
    (d / "history.json").write_text(json.dumps({"step": [], "loss": []}))
    assert "holds no step/loss" in report_html(d)


@needs_chromium
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    from matplotlib.image import imread

    assert CHROMIUM is not None, "CI=true but Chromium is missing; .ci/run installs it with apt-get"

    d = tmp_path / "run"
    shutil.copytree(run_dir, d)
    (d / "history.json").write_text(json.dumps(HISTORY))
    html = write_report(d)
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,1600",
           html.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr[-2000:]
    img = imread(shot)
    assert img.shape[:2] == (1600, 1200)
    rgb = (np.asarray(img)[..., :3] * 255).round().astype(np.uint8)
    assert rgb.std() > 10  # not a blank page
    colours = colour_count(rgb)
    assert colours > 50, colours  # text alone is a few grey levels; embedded images add many
    # the page has dark pixels (text, digits) and large white areas (background)
    assert (rgb.max(axis=2) < 64).mean() > 0.001 and (rgb.min(axis=2) > 240).mean() > 0.3


@pytest.fixture(scope="module")
def three_reports(tmp_path_factory):
    """The issue's three reports: (a) analytic ipc 1, (b) KIP ipc 10 with learned labels and a finite network,
    (c) ipc 50."""
    root = tmp_path_factory.mktemp("three")
    cmds = {
        "a": ["--method", "analytic", "--ipc", "1", "--kernel", "fcnn"],
        "b": ["--method", "kip", "--kernel", "fc-ntk", "--ipc", "10", "--learn-labels", "--steps", "12",
              "--target-batch", "200", "--val-every", "4", "--val-size", "200", "--no-full"],
        "c": ["--method", "random", "--ipc", "50", "--kernel", "linear", "--no-full"],
    }
    for name, args in cmds.items():
        r = run_cli("distill", "--dataset", "digits", *args, "--out", str(root / name))
        assert r.exit_code == 0, r.output
    r = run_cli("evaluate", str(root / "b" / "distilled.npz"), "--model", "fc", "--seeds", "1", "--epochs", "2",
                "--width", "16")
    assert r.exit_code == 0, r.output
    return root


def _grid_png(text: str) -> np.ndarray:
    from matplotlib.image import imread
    import io

    m = re.search(r'<img alt="distilled images" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert m, "no distilled-image grid"
    return imread(io.BytesIO(base64.b64decode(m.group(1))))


@pytest.mark.xdist_group("three_reports")  # with the next test: one worker builds the fixture (8 s), not two
@pytest.mark.parametrize("name,m,lines", [("a", 10, 1), ("b", 100, 10), ("c", 500, 20)])
def test_report_shows_every_image_baseline_per_class_and_curves(three_reports, name, m, lines):
    text = (three_reports / name / "report.html").read_text()
    assert f"All {m} images" in text
    grid = _grid_png(text)
    # every image drawn: (a) one line of 10 classes, (b) 10 per class on one line each, (c) 50 per class wrap
    # onto 2 lines of 25 (cutting at 20 per class, as before, gives 10 lines: half the height); an image is
    # at least 0.6 in at 80 dpi = 48 px
    assert grid.shape[0] >= lines * 48, grid.shape
    per_class = re.search(r"<h2>Per-class test accuracy</h2><table>(.*?)</table>", text).group(1)
    assert per_class.count("<tr>") == 11  # header + 10 classes
    if name in ("a", "b"):
        assert "random real images, same ipc and kernel (baseline)" in text and "<th>random real</th>" in text
    if name == "b":
        assert 'alt="training curves"' in text
        assert 'alt="learned labels"' in text and "initialised for" in text
        assert "<h2>Finite networks trained on the distilled set</h2>" in text
        assert "<td>fc (epochs 2, width 16)</td>" in text  # recorded under the settings that differ from fc's
    else:
        assert 'alt="learned labels"' not in text


@needs_chromium
@pytest.mark.xdist_group("three_reports")
def test_three_reports_render_in_headless_chromium(three_reports, tmp_path):
    from matplotlib.image import imread

    assert CHROMIUM is not None, "CI=true but Chromium is missing; .ci/run installs it with apt-get"
    keep = os.environ.get("KDISTILL_SCREENSHOTS")  # a folder: keep the screenshot to look at it
    shot = (Path(keep) if keep else tmp_path) / "reports-abc.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    # one Chromium for the three (a launch is seconds): each report in a frame of its own 1280 x 3000 window,
    # side by side, as if it were the page
    frames = "".join(f'<iframe src="{(three_reports / n / "report.html").resolve().as_uri()}" '
                     'style="width:1280px;height:3000px;border:0;display:block;float:left"></iframe>' for n in "abc")
    side = tmp_path / "side.html"
    side.write_text(f'<!doctype html><html><body style="margin:0;width:3840px">{frames}</body></html>')
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--allow-file-access-from-files", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
           "--window-size=3840,3000", side.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr[-2000:]
    whole = (np.asarray(imread(shot))[..., :3] * 255).round().astype(np.uint8)
    assert whole.shape[:2] == (3000, 3840)
    for i, name in enumerate("abc"):
        rgb = whole[:, 1280 * i:1280 * (i + 1)]
        colours = colour_count(rgb)
        assert colours > 50, (name, colours)  # embedded images, not only text
        # the grid sits inside the 1100-px column: no figure wider than the page (no horizontal overflow)
        right = rgb[:, 1195:1260]  # between the 1100-px column and the scrollbar
        assert (right.min(axis=2) > 240).mean() > 0.99, name


# image_grid drawn from known images: read the PNG back and find every image where the layout puts it.
# Each image of `_marked` has green 1 and its own constant blue, (i + 1) * 10 / 255: no background (white),
# text (grey), frame (red) or note (red or grey) pixel has green 255 with a blue that low, so an image is found
# by its blue value alone; its red channel is a random pattern, compared pixel for pixel.


def _marked(m: int, h: int = 8, w: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.empty((m, h, w, 3), np.float32)
    x[..., 0] = rng.integers(0, 256, (m, h, w)) / 255
    x[..., 1] = 1.0
    x[..., 2] = ((np.arange(m) + 1) * 10 / 255)[:, None, None]
    return x


def _read_png(path) -> np.ndarray:
    from matplotlib.image import imread

    return np.rint(np.asarray(imread(path))[..., :3] * 255).astype(np.int64)


def _find(png: np.ndarray, shown: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) screen pixels of the image ``shown: (h, w, 3)`` in [0, 1] as drawn; asserts
    it is drawn whole, each of its pixels a square of a whole number of screen pixels."""
    blue = int(np.rint(shown[0, 0, 2] * 255))
    mask = (png[..., 1] == 255) & (png[..., 2] == blue)
    ys, xs = np.nonzero(mask)
    assert len(ys), f"no image with blue {blue} in the PNG"
    t, l, b, r = ys.min(), xs.min(), ys.max() + 1, xs.max() + 1
    assert mask[t:b, l:r].all(), "the image is not one solid rectangle"
    h, w = shown.shape[:2]
    s = (b - t) // h
    assert s >= 1 and (b - t, r - l) == (h * s, w * s), ((b - t, r - l), (h, w))
    want = np.kron(np.rint(shown[..., 0] * 255).astype(np.int64), np.ones((s, s), np.int64))
    np.testing.assert_array_equal(png[t:b, l:r, 0], want)
    return int(t), int(l), int(b), int(r)


def _places(boxes: dict[int, tuple[int, int, int, int]]) -> dict[int, tuple[int, int]]:
    """(line, column) of each image: the rank of its top among the distinct tops, of its left among the lefts."""
    tops = sorted({b[0] for b in boxes.values()})
    lefts = sorted({b[1] for b in boxes.values()})
    return {i: (tops.index(b[0]), lefts.index(b[1])) for i, b in boxes.items()}


def _has_text(png: np.ndarray) -> bool:
    return bool((png.max(axis=2) < 128).any())  # dark pixels: black text (images here have green 255)


def test_image_grid_draws_each_image_in_its_class_line_wrapped_after_max_per_row(tmp_path):
    from kdistill.report import image_grid

    x = _marked(15)
    cls = np.random.default_rng(1).permutation(np.repeat(np.arange(3), 5))  # classes interleaved in the set
    labels = np.eye(3)[cls]
    png = _read_png(image_grid(x, labels, tmp_path / "g.png", class_names=["ant", "bee", "cat"], max_per_row=2))
    boxes = {i: _find(png, x[i]) for i in range(15)}
    places = _places(boxes)
    # 5 images a class at 2 a line: 3 lines a class, in class order; in set order within a class
    for c in range(3):
        for j, i in enumerate(np.flatnonzero(cls == c)):
            assert places[i] == (3 * c + j // 2, j % 2), (c, j, i)
    # the class name at the left of the class's first line only
    left = min(b[1] for b in boxes.values())
    for i, (line, col) in places.items():
        if col == 0:
            t, _, b, _ = boxes[i]
            assert _has_text(png[t:b, :left - 3]) == (line % 3 == 0), line
    # one line a class: 3 lines instead of 9, a PNG shorter by at least 6 image heights
    short = _read_png(image_grid(x, labels, tmp_path / "s.png", class_names=["ant", "bee", "cat"], max_per_row=5))
    cell = boxes[0][2] - boxes[0][0]
    assert _find(short, x[0])[2] - _find(short, x[0])[0] == cell  # same image size
    assert short.shape[0] <= png.shape[0] - 6 * cell, (short.shape, png.shape)
    assert sorted(set(_places({i: _find(short, x[i]) for i in range(15)}).values())) == \
        [(line, col) for line in range(3) for col in range(5)]


def test_image_grid_puts_classes_in_columns_when_few_images_per_class(tmp_path):
    from kdistill.report import image_grid

    x = _marked(8)
    cls = np.array([0, 1, 2, 3, 3, 2, 1, 0])  # 2 a class: the classes become columns, 3 a band
    png = _read_png(image_grid(x, np.eye(4)[cls], tmp_path / "c.png", class_names=["ant", "bee", "cat", "dog"],
                               max_per_row=3))
    boxes = {i: _find(png, x[i]) for i in range(8)}
    places = _places(boxes)
    for c in range(4):
        first = None
        for j, i in enumerate(np.flatnonzero(cls == c)):
            assert places[i] == (2 * (c // 3) + j, c % 3), (c, j, i)
            first = i if j == 0 else first
        t, l, _, r = boxes[first]
        assert _has_text(png[max(0, t - 20):t - 2, l:r]), c  # the class name above its column, in both bands
    assert not _has_text(png[:, :min(b[1] for b in boxes.values()) - 3])  # no line titles at the left


def test_image_grid_explicit_rows_in_the_given_order(tmp_path):
    from kdistill.report import image_grid

    x = _marked(5)
    rows = [("top", np.array([2, 0])), ("none", np.array([], dtype=int)), ("bottom", np.array([1, 3, 4]))]
    png = _read_png(image_grid(x, np.zeros((5, 1)), tmp_path / "r.png", rows=rows, max_per_row=2))
    boxes = {i: _find(png, x[i]) for i in range(5)}
    assert _places(boxes) == {2: (0, 0), 0: (0, 1), 1: (1, 0), 3: (1, 1), 4: (2, 0)}
    left = min(b[1] for b in boxes.values())
    named = [_has_text(png[boxes[i][0]:boxes[i][2], :left - 3]) for i in (2, 1, 4)]
    assert named == [True, True, False]  # "top", "bottom", and the line "bottom" wraps onto
    with pytest.raises(InvalidInputError, match="no images"):
        image_grid(x, np.zeros((5, 1)), tmp_path / "e.png", rows=[("none", np.array([], dtype=int))])
    assert not (tmp_path / "e.png").exists()


def test_image_grid_frames_rescaled_images_in_red_not_clipped_ones(tmp_path):
    from matplotlib.colors import to_rgb

    from kdistill.report import image_grid

    red = np.rint(np.array(to_rgb("tab:red")) * 255)
    x = _marked(4)
    plain = _read_png(image_grid(x, np.ones((4, 1)), tmp_path / "plain.png"))
    reddish = (plain[..., 0] > 150) & (plain[..., 1] < 120) & (plain[..., 2] < 120)
    assert not reddish.any()  # nothing red when every image lies in [0, 1]

    x[1, 0, 0, 0] = 0.0  # image 1 spans [0, 1] exactly, so min-max rescaling 4 x - 1 gives it back
    y = x.copy()
    y[1] = 4 * x[1] - 1  # far outside [0, 1]: rescaled
    y[2] = 1.08 * x[2] - 0.04  # a little outside: clipped
    png = _read_png(image_grid(y, np.ones((4, 1)), tmp_path / "g.png"))
    boxes = {i: _find(png, np.clip(y[i], 0, 1) if i != 1 else x[1]) for i in range(4)}
    assert _places(boxes) == {i: (0, i) for i in range(4)}
    for i, (t, l, b, r) in boxes.items():
        ring = np.concatenate([png[t - 1, l - 1:r + 1], png[b, l - 1:r + 1], png[t:b, l - 1], png[t:b, r]])
        if i == 1:
            assert (ring == red).all(), i  # the red frame right around the rescaled image
        else:
            assert (ring == 255).all(), i  # white around the others, the clipped one too
    header = png[:min(b[0] for b in boxes.values()) - 3]
    assert ((header[..., 0] > 150) & (header[..., 1] < 120) & (header[..., 2] < 120)).any()  # the red note


def test_image_grid_notes_learned_labels_above_the_images(tmp_path):
    from kdistill.report import image_grid

    x = _marked(12)
    onehot = np.eye(3)[np.arange(12) // 4]
    learned = onehot * 0.8 + 0.05 * np.random.default_rng(0).normal(size=onehot.shape)
    learned[0] = [0.1, 0.2, 0.9]  # its argmax drifted to class 2; still drawn with class 0, where it started
    tops = {}
    for name, labels in (("onehot", onehot), ("learned", learned)):
        png = _read_png(image_grid(x, labels, tmp_path / f"{name}.png", ipc=4))
        boxes = {i: _find(png, x[i]) for i in range(12)}
        assert _places(boxes) == {i: (i // 4, i % 4) for i in range(12)}  # grouped by the initial class
        tops[name] = min(b[0] for b in boxes.values())
        assert _has_text(png[:tops[name] - 3]) == (name == "learned"), name  # the (grey) note, nothing else
    assert tops["learned"] - tops["onehot"] >= 20  # one more header line (0.3 in at 80 dpi)


def test_image_grid_cost_grows_far_slower_than_the_number_of_images(tmp_path):
    """One Axes per image made 500 MNIST-sized images cost ~60x as much as 10 (3.7 s against 0.06 s on a
    loaded 2-core machine); one mosaic pasted pixel for pixel costs ~7x (0.08 s against 0.011 s: the PNG is
    ~30x larger). A ratio, measured in one process, does not depend on the machine's speed."""
    import time

    from kdistill.report import image_grid

    rng = np.random.default_rng(0)
    x = np.zeros((500, 28, 28, 1), np.float32)
    for i, (r, c) in enumerate(rng.integers(2, 18, (500, 2))):  # a bright patch on black, like a digit
        x[i, r:r + 8, c:c + 8] = rng.random((8, 8, 1))
    x[::7] *= 3  # some rescaled, with red frames
    labels = np.eye(10)[np.arange(500) // 50]
    image_grid(x[:10], labels[:10], tmp_path / "warm.png")  # imports, font cache

    def seconds(m: int) -> float:
        t = time.perf_counter()
        image_grid(x[::500 // m], labels[::500 // m], tmp_path / f"{m}.png", max_per_row=25, title="timing")
        return time.perf_counter() - t

    t10, t500 = [], []
    for _ in range(3):  # interleaved, best of 3: robust to other load on the machine
        t10.append(seconds(10))
        t500.append(seconds(500))
    ratio = min(t500) / min(t10)
    print(f"image_grid: 10 images {min(t10):.3f} s, 500 images {min(t500):.3f} s, ratio {ratio:.1f}")
    assert ratio < 20, (t10, t500)
