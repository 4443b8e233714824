"""Build the console's third-party front-end files: `npm ci` of the pinned package.json and
package-lock.json in src/thinghub/faces/console/assets/, then copy what the console serves
into src/thinghub/faces/console/static/vendor/ (gitignored; shipped in the wheel).

Run by the package build (setup.py's build_py, so `pip install .` and `pip install -e .` do
it) and by `make console-assets`. It needs node and npm and the npm registry at build time;
the server never fetches anything at run time. Nothing is done when the vendor folder already
holds the files built from the same lockfile (a stamp keeps its SHA-256).

    python3 scripts/console_assets.py [--force]
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSOLE = Path("src") / "thinghub" / "faces" / "console"
NPM_CI_TIMEOUT_S = 300
# What the console serves, from each npm package: (path in node_modules, name in vendor/).
FILES = (
    ("uplot/dist/uPlot.iife.min.js", "uPlot.iife.min.js"),
    ("uplot/dist/uPlot.min.css", "uPlot.min.css"),
    ("uplot/LICENSE", "uPlot.LICENSE"),
)
STAMP = ".package-lock.sha256"


def _digest(assets: Path) -> str:
    sha = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        sha.update((assets / name).read_bytes())
    return sha.hexdigest()


def build_assets(root: Path = ROOT, *, force: bool = False) -> Path:
    """Install the pinned npm packages and copy the served files; returns the vendor folder.

    Raises:
        RuntimeError: npm is missing or `npm ci` fails.
    """
    assets = root / CONSOLE / "assets"
    vendor = root / CONSOLE / "static" / "vendor"
    digest = _digest(assets)
    stamp = vendor / STAMP
    complete = all((vendor / name).is_file() for _, name in FILES)
    if not force and complete and stamp.is_file() and stamp.read_text().strip() == digest:
        return vendor
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            "building the thinghub console needs npm (Debian: apt-get install npm); "
            "scripts/install-deps.sh installs it"
        )
    with tempfile.TemporaryDirectory(prefix="thinghub-console-") as work:
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(assets / name, Path(work) / name)
        done = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=NPM_CI_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"npm ci for the console failed:\n{done.stdout}{done.stderr}")
        vendor.mkdir(parents=True, exist_ok=True)
        for source, name in FILES:
            shutil.copyfile(Path(work) / "node_modules" / source, vendor / name)
    stamp.write_text(digest + "\n")
    return vendor


if __name__ == "__main__":
    print(build_assets(force="--force" in sys.argv[1:]))
