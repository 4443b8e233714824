"""The MQTT reference: a mosquitto subprocess with TLS and password auth on an ephemeral port.

It runs with a generated configuration, never the system service: a TLS listener on
127.0.0.1 with a server certificate from a thinghub CA (so the same load generator trusts it
the same way), `allow_anonymous false` and a password file hashed by `mosquitto_passwd`,
`persistence false` (mosquitto keeps nothing on disk, which is the point of comparing a
persisting hub against it), 20 messages in flight per client like the simulator's window.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.http import START_TIMEOUT_S, STOP_TIMEOUT_S, BenchError
from thinghub.security.ca import (
    CA_FILE,
    SERVER_CERT_FILE,
    SERVER_KEY_FILE,
    CertificateAuthority,
)

__all__ = ["Mosquitto", "mosquitto_server", "mosquitto_version"]

# Where Debian puts the broker; /usr/sbin is not on every user's PATH.
SBIN = Path("/usr/sbin/mosquitto")
# Deep enough that a client's queue never drops a message during a run (the default is 1000).
MAX_QUEUED_MESSAGES = 1_000_000
# The simulator keeps at most 20 QoS 1 messages in flight per device (paho's default).
MAX_INFLIGHT_MESSAGES = 20
PASSWD_TIMEOUT_S = 300


def _binary() -> str:
    found = shutil.which("mosquitto") or (str(SBIN) if SBIN.exists() else None)
    if found is None:
        raise BenchError("mosquitto is not installed: run `bash scripts/install-deps.sh bench`")
    return found


def mosquitto_version() -> str:
    """`mosquitto version 2.0.11`, from `mosquitto -h`."""
    out = subprocess.run([_binary(), "-h"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).splitlines()[:1]
    return first[0].strip() if first else "mosquitto (unknown version)"


@dataclass
class Mosquitto:
    """A running broker: where it listens, which CA file clients trust, its pid."""

    host: str
    port: int
    ca_file: Path
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid


def _free_port(host: str) -> int:
    # mosquitto cannot listen on port 0 (it means a unix socket there), so ask the kernel for
    # a free port and hand it over; the window for a clash is tiny.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _write_passwords(path: Path, users: Mapping[str, str]) -> None:
    """A mosquitto password file: plain `user:password` lines, then hashed in place by -U.

    One `mosquitto_passwd -U` pass hashes every line; calling `-b` once per user would rewrite
    the file each time, quadratic for the 10,000 users of the idle-connection scenario.
    """
    path.write_text("".join(f"{user}:{password}\n" for user, password in users.items()))
    path.chmod(0o600)
    try:
        subprocess.run(
            ["mosquitto_passwd", "-U", str(path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=PASSWD_TIMEOUT_S,
        )
    except FileNotFoundError as exc:
        raise BenchError("mosquitto_passwd is not installed (Debian package mosquitto)") from exc
    except subprocess.CalledProcessError as exc:
        raise BenchError(f"mosquitto_passwd -U failed: {exc.stderr.strip()}") from exc


def _config(work_dir: Path, certs: Path, passwords: Path, host: str, port: int) -> str:
    lines = [
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {passwords}",
        "persistence false",
        f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        "max_connections -1",
        "connection_messages false",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        f"listener {port} {host}",
        f"certfile {certs / SERVER_CERT_FILE}",
        f"keyfile {certs / SERVER_KEY_FILE}",
    ]
    if os.getuid() == 0:
        # As root mosquitto would switch to the `mosquitto` user, which cannot read the key.
        lines.append(f"user {pwd.getpwuid(os.getuid()).pw_name}")
    return "\n".join(lines) + "\n"


def _wait_listening(proc: subprocess.Popen[bytes], host: str, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise BenchError(f"mosquitto exited {proc.returncode}:\n{_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        if time.monotonic() > deadline:
            raise BenchError(f"mosquitto not listening in {START_TIMEOUT_S}s:\n{_tail(log)}")
        time.sleep(0.05)


def _tail(path: Path) -> str:
    try:
        return path.read_text()[-8000:]
    except OSError:
        return ""


@contextlib.contextmanager
def mosquitto_server(work_dir: Path, users: Mapping[str, str]) -> Iterator[Mosquitto]:
    """mosquitto on 127.0.0.1 and a free port, knowing exactly these username/passwords.

    Raises:
        BenchError: mosquitto is missing, or it did not start or stop in time.
    """
    binary = _binary()
    work_dir.mkdir(parents=True, exist_ok=True)
    certs = work_dir / "certs"
    CertificateAuthority.load_or_create(certs, hostnames=["localhost"])
    passwords = work_dir / "passwords"
    _write_passwords(passwords, users)
    host = "127.0.0.1"
    port = _free_port(host)
    conf = work_dir / "mosquitto.conf"
    conf.write_text(_config(work_dir, certs, passwords, host, port))
    log_path = work_dir / "mosquitto.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    try:
        _wait_listening(proc, host, port, log_path)
        yield Mosquitto(host, port, certs / CA_FILE, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
