"""`dvc plots show` renders offline: the template inlines Vega (no CDN) and real headless Chromium draws the chart.

The template is plots/offline/template.html, written by `make install` from the npm packages
pinned in plots/offline/package.json (see plots/offline/build_template.py); .dvc/config points
`plots.html_template` at it.
"""

from __future__ import annotations

import configparser
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = ROOT / "plots" / "offline"
TEMPLATE = OFFLINE / "template.html"
LIBRARIES = ("vega", "vega-lite", "vega-embed")
CDN_SCRIPT = re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"']?\s*(https?:)?//", re.IGNORECASE)
WIDTH, HEIGHT = 1000, 700


def _template_text() -> str:
    assert TEMPLATE.is_file(), f"{TEMPLATE} is missing: `make install` builds it (plots/offline/build_template.py)"
    text = TEMPLATE.read_text(encoding="utf8")
    assert "cdn.jsdelivr" not in text, f"{TEMPLATE} is the CDN fallback: npm was missing when it was built"
    return text


def test_template_is_configured_pinned_and_has_no_cdn() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    assert (ROOT / ".dvc" / config["plots"]["html_template"]).resolve() == TEMPLATE  # relative to .dvc/
    text = _template_text()
    assert "{plot_divs}" in text
    assert "{scripts}" not in text  # DVC fills {scripts} with its CDN <script src> tags
    assert not CDN_SCRIPT.search(text)
    pins = json.loads((OFFLINE / "package.json").read_text())["dependencies"]
    lock = json.loads((OFFLINE / "package-lock.json").read_text())["packages"]
    for name in LIBRARIES:
        assert re.fullmatch(r"\d+\.\d+\.\d+", pins[name]), f"{name} is not pinned to one version"
        assert lock[f"node_modules/{name}"]["version"] == pins[name]
        assert f"<script>/* {name}@{pins[name]} */" in text


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("Chromium is not installed and could not be (make test installs it with apt-get where it can)")


def _dvc(repo: Path, *args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _screenshot(page: Path, png: Path, profile: Path) -> None:
    """Real headless Chromium, with every host name unresolvable: a CDN script cannot load."""
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
        f"--window-size={WIDTH},{HEIGHT}",
        f"--screenshot={png}",
        page.as_uri(),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert png.is_file(), f"no screenshot (rc {result.returncode}): {result.stderr[-2000:]}"


def _pixels(png: Path) -> tuple[int, list[tuple[int, int]]]:
    """Non-white pixel count, and (x, y) of the saturated ones (the plotted line; axes and text are grey)."""
    from PIL import Image

    with Image.open(png) as image:
        rgb = image.convert("RGB")
    width, raw = rgb.width, rgb.tobytes()
    data = list(zip(raw[0::3], raw[1::3], raw[2::3], strict=True))
    non_white = sum(1 for r, g, b in data if min(r, g, b) < 235)
    coloured = [(i % width, i // width) for i, (r, g, b) in enumerate(data) if max(r, g, b) - min(r, g, b) > 60]
    return non_white, coloured


@pytest.mark.slow
def test_dvc_plots_show_renders_a_chart_offline(tmp_path: Path) -> None:
    _chromium()  # skip early, before building anything
    repo = tmp_path / "repo"
    repo.mkdir()
    _dvc(repo, "init", "--no-scm", "-q")
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")  # the project's plots.html_template
    (repo / "plots" / "offline").mkdir(parents=True)
    _template_text()
    shutil.copy(TEMPLATE, repo / "plots" / "offline" / "template.html")
    rows = "".join(f"{step}\t{100 + 10 * math.sin(step / 6) + step / 4:.3f}\n" for step in range(80))
    (repo / "equity.tsv").write_text("step\tequity\n" + rows)
    (repo / "dvc.yaml").write_text("plots:\n  - equity.tsv:\n      x: step\n      y: equity\n")

    _dvc(repo, "plots", "show")  # plain: no --html-template, the config's template
    page = repo / "dvc_plots" / "index.html"
    html = page.read_text(encoding="utf8")
    assert not CDN_SCRIPT.search(html), "the plots page loads a script over the network"
    assert "vegaEmbed(" in html and "<script>/* vega@" in html

    png = tmp_path / "offline.png"
    _screenshot(page, png, tmp_path / "profile")
    non_white, coloured = _pixels(png)
    assert non_white > 2000, f"the offline plots page is blank ({non_white} non-white pixels)"
    xs = {x for x, _ in coloured}
    ys = {y for _, y in coloured}
    assert len(coloured) > 300, f"no coloured line drawn ({len(coloured)} coloured pixels)"
    # The curve crosses ~300 columns; the smoothing slider and the legend swatch alone cover < 150.
    assert len(xs) > 250 and max(ys) - min(ys) > 100, "the coloured pixels do not span a line chart"

    # Control: DVC's default page (Vega from the CDN) stays blank here, so the check above can fail.
    from dvc_render.html import PAGE_HTML

    default = tmp_path / "default.html"
    default.write_text(PAGE_HTML)
    _dvc(repo, "plots", "show", "--html-template", str(default), "-o", "cdn_plots")
    control = tmp_path / "cdn.png"
    _screenshot(repo / "cdn_plots" / "index.html", control, tmp_path / "profile-cdn")
    assert _pixels(control)[0] < 200
