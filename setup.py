"""Only the console's build step; everything else about the package is in pyproject.toml.

build_py first builds the console's front-end files (scripts/console_assets.py: `npm ci` of
a pinned lockfile, copied into the package), so a wheel, an install and an editable install
all carry them and the server fetches nothing at run time.
"""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "scripts"))

from console_assets import build_assets  # noqa: E402


class BuildPyWithConsoleAssets(build_py):
    def run(self) -> None:
        build_assets(ROOT)
        super().run()


setup(cmdclass={"build_py": BuildPyWithConsoleAssets})
