"""Write the HTML template that makes `dvc plots show` render offline.

DVC's default page loads Vega, Vega-Lite and Vega-Embed from a CDN (its `{scripts}`
placeholder), so ``dvc_plots/index.html`` is blank without internet. This script installs
the three libraries at the versions pinned in ``package.json`` / ``package-lock.json``
(``npm ci`` into the ignored ``node_modules/``) and inlines their ``build/*.min.js`` into
``template.html`` (ignored, ~0.8 MB). ``.dvc/config`` points ``plots.html_template`` at it,
so a plain ``dvc plots show`` uses it. The template has DVC's ``{plot_divs}`` and
``{refresh_tag}`` placeholders but no ``{scripts}``, so DVC's CDN tags are dropped.

Run by ``make install`` (whenever the pins or this script change); by hand:
``python plots/offline/build_template.py [--no-npm]``.

Without npm it writes DVC's own CDN page with a notice instead (plots then need internet,
as before), dated 1970 so that the next ``make install`` tries again.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "template.html"
# Script order matters: Vega-Lite needs Vega, Vega-Embed needs both.
LIBRARIES = (("vega", "vega.min.js"), ("vega-lite", "vega-lite.min.js"), ("vega-embed", "vega-embed.min.js"))
# Text that must not occur inside an inlined script: it would end the <script> element early
# or be substituted by DVC's template filling (str.replace of each placeholder).
FORBIDDEN = ("</script", "<!--", "{plot_divs}", "{scripts}", "{refresh_tag}")
SOURCE_MAP = re.compile(r"\n//# sourceMappingURL=\S+\s*$")

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {{refresh_tag}}
    <title>DVC Plot</title>
    <!--
    Offline page for `dvc plots show` (written by plots/offline/build_template.py; see
    plots/offline/LICENSES.md). Inlined from npm: {versions}.

{licence}
    -->
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""

FALLBACK = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <title>DVC Plot</title>
    {scripts}
</head>
<body>
    <p>These plots load Vega from a CDN because npm was missing when the offline template was
    built: install Node.js/npm and run <code>make install</code> to make them render offline.</p>
    {plot_divs}
</body>
</html>
"""


def pinned_versions(root: Path = HERE) -> dict[str, str]:
    """The exact versions ``package.json`` pins for the three libraries."""
    deps = json.loads((root / "package.json").read_text(encoding="utf8"))["dependencies"]
    return {name: deps[name] for name, _ in LIBRARIES}


def npm_ci(root: Path = HERE) -> None:
    """Install exactly what package-lock.json says into root/node_modules (no install scripts)."""
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm")
    cmd = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
    subprocess.run(cmd, cwd=root, check=True)


def render_template(root: Path = HERE) -> str:
    """The template text, from root/node_modules (which must hold the pinned versions)."""
    modules = root / "node_modules"
    scripts, versions = [], []
    for name, pinned in pinned_versions(root).items():
        package = modules / name
        installed = json.loads((package / "package.json").read_text(encoding="utf8"))["version"]
        if installed != pinned:
            raise RuntimeError(f"{package} is {installed}, package.json pins {pinned}: run npm ci")
        filename = dict(LIBRARIES)[name]
        code = SOURCE_MAP.sub("\n", (package / "build" / filename).read_text(encoding="utf8"))
        for text in FORBIDDEN:
            if text.lower() in code.lower():
                raise RuntimeError(f"{name}/build/{filename} contains {text!r}: it cannot be inlined as is")
        scripts.append(f"    <script>/* {name}@{installed} */\n{code.strip()}\n    </script>")
        versions.append(f"{name}@{installed}")
    # Vega, Vega-Lite and Vega-Embed share this BSD-3-Clause notice (the vega package ships no
    # LICENSE file of its own); the binary-form clause asks for it to travel with the page.
    licence = (modules / "vega-lite" / "LICENSE").read_text(encoding="utf8").strip()
    if "--" in licence:
        raise RuntimeError("licence text cannot go in an HTML comment")
    return PAGE.format(versions=", ".join(versions), licence=licence, scripts="\n".join(scripts))


def write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TEMPLATE, help="where to write the template")
    parser.add_argument("--no-npm", action="store_true", help="use node_modules as it is (no npm ci)")
    args = parser.parse_args(argv)
    if not args.no_npm:
        try:
            npm_ci()
        except FileNotFoundError:
            write(args.out, FALLBACK)
            os.utime(args.out, (0, 0))  # older than its prerequisites: make retries next time
            sys.stderr.write(f"warning: npm not found; wrote {args.out} with DVC's CDN scripts (plots need internet)\n")
            return 0
    write(args.out, render_template())
    pins = ", ".join(f"{name}@{version}" for name, version in pinned_versions().items())
    sys.stdout.write(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB; {pins})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
