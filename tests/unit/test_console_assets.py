"""scripts/console_assets.py without npm: a registry tarball is unpacked only when it matches
the lockfile's integrity hash, and never outside its folder."""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from console_assets import unpack_checked  # noqa: E402


def tarball(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def test_a_matching_tarball_is_unpacked_without_its_package_prefix(tmp_path: Path) -> None:
    data = tarball({"package/dist/x.min.js": b"js", "package/LICENSE": b"MIT"})
    unpack_checked(data, sri(data), tmp_path / "uplot")
    assert (tmp_path / "uplot" / "dist" / "x.min.js").read_bytes() == b"js"
    assert (tmp_path / "uplot" / "LICENSE").read_bytes() == b"MIT"


def test_a_tarball_that_does_not_match_the_lockfile_writes_nothing(tmp_path: Path) -> None:
    data = tarball({"package/dist/x.min.js": b"js"})
    other = tarball({"package/dist/x.min.js": b"evil"})
    with pytest.raises(RuntimeError, match="integrity mismatch"):
        unpack_checked(other, sri(data), tmp_path / "uplot")
    assert not (tmp_path / "uplot").exists()


def test_a_path_leaving_the_folder_is_refused(tmp_path: Path) -> None:
    data = tarball({"package/../../escape.js": b"x"})
    with pytest.raises(RuntimeError, match="unsafe path"):
        unpack_checked(data, sri(data), tmp_path / "uplot")
    assert not (tmp_path / "escape.js").exists()
