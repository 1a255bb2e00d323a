"""The interactive page of hyperr1.viz in a real headless browser (Debian's chromium).

The page reads ``#hover=<concept>`` / ``#click=<concept>`` from its URL and dispatches that mouse
event on the concept's point after drawing, so ``chromium --dump-dom`` shows what a user would see:
the tooltip after a hover, the re-centred disk after a click. Skipped when chromium is missing
(.ci/run installs it).
"""

import os
import re
import shutil
import subprocess

import matplotlib.image
import pytest
import torch

from hyperr1.hierarchy import Hierarchy
from hyperr1.viz import to_panel, write_html

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(BROWSER is None, reason="chromium is not installed (apt-get install chromium)")

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--virtual-time-budget=5000",
]


def chromium(tmp_path, url: str, *extra: str) -> str:
    """Run headless chromium on ``url`` with a fresh profile under ``tmp_path``; returns stdout."""
    env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": "disabled:"}  # no session bus in CI: don't wait for one
    cmd = [BROWSER, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *extra, url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The page of a 40-node tree laid out on the disk, one panel."""
    h = Hierarchy.balanced_tree(3, 3)
    pts = []
    for v in h.nodes:  # each node on the ray of its subtree's sector, radius growing with depth
        digits = [int(d) for d in v.split(".")[1:]]
        lo, width = 0.0, 2 * torch.pi
        for d in digits:
            width /= 3
            lo += d * width
        r = torch.tanh(torch.tensor(0.9 * len(digits)))
        pts.append([r * torch.cos(torch.tensor(lo + width / 2)), r * torch.sin(torch.tensor(lo + width / 2))])
    x = torch.tensor(pts, dtype=torch.float64)
    path = tmp_path_factory.mktemp("page") / "tree.html"
    write_html([to_panel(x, h, c=1.0, title="tree")], h, path, title="a 40-node tree", labels=10)
    return h, path


def test_points_render_and_hover_names_the_concept(page, tmp_path):
    h, path = page
    dom = chromium(tmp_path, f"{path.as_uri()}#hover=n0.1.2", "--dump-dom")
    points = re.findall(r'<circle[^>]*class="pt"[^>]*>', dom)
    assert len(points) == len(h.nodes)  # the script drew every concept
    assert len(re.findall(r"<text[^>]*class=\"lab\"", dom)) == 10
    tip = re.search(r'<div id="tip" style="([^"]*)">([^<]*)</div>', dom)
    assert tip is not None and "display: block" in tip.group(1)
    assert tip.group(2) == "n0.1.2 (depth 2)"


def test_click_recentres_the_disk(page, tmp_path):
    h, path = page
    dom = chromium(tmp_path, f"{path.as_uri()}#click=n0.2", "--dump-dom")
    assert "centre: n0.2" in dom
    i = h.index["n0.2"]
    point = re.search(rf'<circle cx="([^"]+)" cy="([^"]+)"[^>]*class="pt" data-i="{i}"', dom)
    assert point is not None
    assert abs(float(point.group(1))) < 1e-6 and abs(float(point.group(2))) < 1e-6  # moved to the origin


def test_screenshot_shows_the_disk(page, tmp_path):
    _, path = page
    shot = tmp_path / "screenshot.png"
    chromium(tmp_path, f"{path.as_uri()}#hover=n0.1", f"--screenshot={shot}", "--window-size=900,800")
    assert shot.stat().st_size > 5_000
    img = matplotlib.image.imread(shot)[..., :3]  # (H, W, 3) in [0, 1]
    assert img.shape[0] >= 700 and img.shape[1] >= 800
    non_white = (img < 0.9).any(-1).mean()
    assert 0.005 < non_white < 0.5  # the disk, its edges and points, on a mostly white page
    colours = {tuple(p) for p in (img.reshape(-1, 3)[::7] * 255).round().astype(int).tolist()}
    assert len(colours) > 30  # depth colours and anti-aliased arcs, not a blank or one-colour page
