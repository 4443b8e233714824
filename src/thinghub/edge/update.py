"""Updates: fetch a version (URL template) or take a local file, check its SHA-256, install.

`POST /api/update?file=/abs/path` installs a file already on the gateway;
`?version=V` downloads `update.url_template` with `{version}` = V (no parameter: `latest`).
The expected digest is the `sha256` query parameter, else the `.sha256` file beside the update
(`sha256sum` format, as release pages publish them); with neither the update is refused. The
install command (`update.install_command`, `{file}` and `{version}` substituted) must exit 0.
The version then reported is `update.version_command`'s last word when configured, else the
requested version, else the version in the file's name.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from thinghub import __version__

from .config import UpdateSettings
from .state import EdgeState

__all__ = ["UpdateError", "UpdateResult", "Updater"]

logger = logging.getLogger(__name__)

#: Bytes of a command's output kept for an error message.
OUTPUT_TAIL = 400
#: Seconds a version command may take.
VERSION_COMMAND_TIMEOUT_S = 30
_VERSION_IN_NAME = re.compile(r"-(\d+(?:\.\d+)+(?:[-.+]?[A-Za-z0-9]+)*?)(?:-py\d.*)?\.[A-Za-z]+$")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class UpdateError(Exception):
    """The update was refused or failed; `status` and `field` for the API's answer."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


@dataclass(frozen=True, slots=True)
class UpdateResult:
    version: str
    previous: str
    sha256: str


def _digest_of(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def _parse_sidecar(text: str) -> str | None:
    first = text.strip().split()
    return first[0].lower() if first and _HEX64.fullmatch(first[0]) else None


class Updater:
    def __init__(self, settings: UpdateSettings, data_dir: Path, state: EdgeState) -> None:
        self.settings = settings
        self.dir = data_dir / "updates"
        self.state = state
        self._lock = asyncio.Lock()

    async def current_version(self) -> str:
        if self.settings.version_command:
            version = await self._version_from_command()
            if version:
                return version
        return self.state.installed_version or __version__

    async def _version_from_command(self) -> str | None:
        try:
            code, out = await self._run(self.settings.version_command, VERSION_COMMAND_TIMEOUT_S)
        except UpdateError as exc:
            logger.warning("update: version command: %s", exc.message)
            return None
        words = out.split()
        return words[-1] if code == 0 and words else None

    async def update(
        self, *, version: str | None, file: str | None, sha256: str | None
    ) -> UpdateResult:
        if version is not None and file is not None:
            raise UpdateError(400, "give version or file, not both", "version")
        if sha256 is not None and not _HEX64.fullmatch(sha256):
            raise UpdateError(400, "sha256 is 64 hex digits", "sha256")
        if not self.settings.install_command:
            raise UpdateError(501, "no update.install_command is configured on this edge")
        async with self._lock:
            previous = await self.current_version()
            if file is not None:
                path, expected = await asyncio.to_thread(self._local, file, sha256)
                wanted = None
            else:
                wanted = version or "latest"
                path, expected = await self._download(wanted, sha256)
            actual = await asyncio.to_thread(_digest_of, path)
            if actual != expected.lower():
                raise UpdateError(
                    400, f"sha256 of {path.name} is {actual}, expected {expected}", "sha256"
                )
            command = [
                part.replace("{file}", str(path)).replace("{version}", wanted or "")
                for part in self.settings.install_command
            ]
            logger.info("update: installing %s (sha256 %s)", path, actual)
            code, out = await self._run(command, self.settings.timeout_s)
            if code != 0:
                raise UpdateError(
                    422, f"the install command exited {code}: {out[-OUTPUT_TAIL:].strip()}"
                )
            new = await self._version_from_command() if self.settings.version_command else None
            if new is None:
                match = _VERSION_IN_NAME.search(path.name)
                new = (
                    wanted
                    if wanted not in (None, "latest")
                    else (match.group(1) if match else path.name)
                )
            self.state.set_installed_version(new)
            logger.info("update: now at version %s (was %s)", new, previous)
            return UpdateResult(new, previous, actual)

    def _local(self, file: str, sha256: str | None) -> tuple[Path, str]:
        path = Path(file)
        if not path.is_absolute():
            raise UpdateError(400, f"file {file!r} is not an absolute path", "file")
        if not path.is_file():
            raise UpdateError(404, f"file {file!r} does not exist", "file")
        if sha256 is not None:
            return path, sha256
        sidecar = path.with_name(path.name + ".sha256")
        try:
            expected = _parse_sidecar(sidecar.read_text())
        except OSError:
            expected = None
        if expected is None:
            raise UpdateError(
                400, f"no digest: give sha256=... or put {sidecar.name} beside the file", "sha256"
            )
        return path, expected

    async def _download(self, version: str, sha256: str | None) -> tuple[Path, str]:
        template = self.settings.url_template
        if template is None:
            raise UpdateError(
                501, "no update.url_template is configured: update with ?file=/path instead"
            )
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}", version):
            raise UpdateError(400, f"version {version!r} is not a version string", "version")
        url = template.replace("{version}", version)
        if urlsplit(url).scheme not in ("http", "https", "file"):
            raise UpdateError(501, f"update.url_template gives {url!r}: not http(s) or file")
        self.dir.mkdir(parents=True, exist_ok=True)
        name = Path(urlsplit(url).path).name or f"update-{version}"
        target = self.dir / name
        if sha256 is None:
            text = await asyncio.to_thread(self._fetch_text, url + ".sha256")
            sha256 = _parse_sidecar(text or "")
            if sha256 is None:
                raise UpdateError(
                    400, f"no digest: give sha256=... or publish {name}.sha256", "sha256"
                )
        await asyncio.to_thread(self._fetch_file, url, target)
        return target, sha256

    def _fetch_text(self, url: str) -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=self.settings.timeout_s) as response:  # noqa: S310 - scheme checked
                return str(response.read(4096).decode("utf-8", "replace"))
        except OSError:
            return None

    def _fetch_file(self, url: str, target: Path) -> None:
        partial = target.with_name(target.name + ".part")
        try:
            with (
                urllib.request.urlopen(url, timeout=self.settings.timeout_s) as response,  # noqa: S310
                partial.open("wb") as out,
            ):
                size = 0
                while chunk := response.read(1 << 16):
                    size += len(chunk)
                    if size > self.settings.max_bytes:
                        raise UpdateError(
                            413, f"{url} is over update.max_bytes ({self.settings.max_bytes})"
                        )
                    out.write(chunk)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise UpdateError(502, f"fetching {url} failed: {exc}", "version") from exc
        except UpdateError:
            partial.unlink(missing_ok=True)
            raise
        shutil.move(partial, target)

    @staticmethod
    async def _run(command: list[str] | tuple[str, ...], timeout_s: float) -> tuple[int, str]:
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
            )
        except OSError as exc:
            raise UpdateError(422, f"cannot run {command[0]!r}: {exc.strerror}") from exc
        try:
            async with asyncio.timeout(timeout_s):
                out, _ = await process.communicate()
        except TimeoutError as exc:
            process.kill()
            await process.wait()
            raise UpdateError(422, f"{command[0]!r} took over {timeout_s} s") from exc
        return int(process.returncode or 0), out.decode("utf-8", "replace")
