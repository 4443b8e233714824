"""Build the console's third-party front-end files: `npm ci` of the pinned package.json and
package-lock.json in src/thinghub/faces/console/assets/, then copy what the console serves
into src/thinghub/faces/console/static/vendor/ (gitignored; shipped in the wheel).

Run by the package build (setup.py's build_py, so `pip install .` and `pip install -e .` do
it) and by `make console-assets`. It needs the npm registry at build time (as pip needs PyPI);
with npm installed it runs `npm ci`, without it (a fresh machine with only Python) it downloads
each locked package's tarball from the registry itself and checks it against the lockfile's
`integrity` hash before unpacking. The server never fetches anything at run time. Nothing is
done when the vendor folder already holds the files built from the same lockfile (a stamp
keeps its SHA-256).

    python3 scripts/console_assets.py [--force]
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSOLE = Path("src") / "thinghub" / "faces" / "console"
NPM_CI_TIMEOUT_S = 300
REGISTRY = os.environ.get("NPM_CONFIG_REGISTRY", "https://registry.npmjs.org").rstrip("/")
DOWNLOAD_TIMEOUT_S = 60
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
        RuntimeError: `npm ci` fails, or a downloaded package does not match the lockfile.
    """
    assets = root / CONSOLE / "assets"
    vendor = root / CONSOLE / "static" / "vendor"
    digest = _digest(assets)
    stamp = vendor / STAMP
    complete = all((vendor / name).is_file() for _, name in FILES)
    if not force and complete and stamp.is_file() and stamp.read_text().strip() == digest:
        return vendor
    with tempfile.TemporaryDirectory(prefix="thinghub-console-") as work:
        modules = Path(work) / "node_modules"
        npm = shutil.which("npm")
        if npm is not None:
            _npm_ci(npm, assets, Path(work))
        else:
            _download_locked(assets / "package-lock.json", modules)
        vendor.mkdir(parents=True, exist_ok=True)
        for source, name in FILES:
            shutil.copyfile(modules / source, vendor / name)
    stamp.write_text(digest + "\n")
    return vendor


def _npm_ci(npm: str, assets: Path, work: Path) -> None:
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(assets / name, work / name)
    done = subprocess.run(  # noqa: S603 - npm from PATH, fixed arguments
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=NPM_CI_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"npm ci for the console failed:\n{done.stdout}{done.stderr}")


def _download_locked(lockfile: Path, modules: Path) -> None:
    """Without npm: every package of the lockfile from the registry, integrity-checked."""
    packages = json.loads(lockfile.read_text())["packages"]
    for key, entry in packages.items():
        if not key.startswith("node_modules/"):
            continue
        name = key.removeprefix("node_modules/")
        url = entry.get("resolved") or (
            f"{REGISTRY}/{name}/-/{name.rsplit('/', 1)[-1]}-{entry['version']}.tgz"
        )
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310
            data = response.read()
        unpack_checked(data, entry["integrity"], modules / name)


def unpack_checked(tarball: bytes, integrity: str, dest: Path) -> None:
    """Unpack an npm tarball (`package/...`) into `dest` once its bytes match the lockfile's
    Subresource Integrity string (`sha512-<base64>`); a mismatch or a path leaving `dest` is
    an error and nothing is written."""
    algorithm, _, expected = integrity.partition("-")
    if algorithm not in ("sha512", "sha384", "sha256"):
        raise RuntimeError(f"unsupported integrity {integrity[:16]!r}")
    actual = base64.b64encode(hashlib.new(algorithm, tarball).digest()).decode()
    if actual != expected:
        raise RuntimeError(f"integrity mismatch for {dest.name}: {algorithm}-{actual}")
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        members = []
        for member in archive.getmembers():
            if not member.isfile():
                continue
            relative = Path(member.name).relative_to("package")
            if ".." in relative.parts or relative.is_absolute():
                raise RuntimeError(f"unsafe path in {dest.name}: {member.name}")
            members.append((member, relative))
        for member, relative in members:
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None
            target.write_bytes(source.read())


if __name__ == "__main__":
    print(build_assets(force="--force" in sys.argv[1:]))
