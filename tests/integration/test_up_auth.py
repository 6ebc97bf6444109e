"""``virtbus up`` is authenticated: root's CLI finds its credentials, anyone else
is refused at once, and each role can do only what it may."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import site
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.util.natsserver import free_port
from tests.integration.blockjob_stack import read_until
from tests.integration.cli import virtbus

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
RUNUSER = shutil.which("runuser") or ""
POOL = "<pool type='dir'><name>evil</name><target><path>/etc/evilpool</path></target></pool>"


@pytest.fixture
async def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """``virtbus up`` whose state folder is the default one of this environment
    (``VIRTBUS_STATE_DIR``), as root's CLI would find ``/var/lib/virtbus``."""
    state = tmp_path / "state"
    monkeypatch.setenv("VIRTBUS_STATE_DIR", str(state))
    for name in ("VIRTBUS_CREDS", "VIRTBUS_CREDS_DIR", "VIRTBUS_NATS_URL", "NATS_URL"):
        monkeypatch.delenv(name, raising=False)
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "client.cli.main", "up", "--nats-port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        await read_until(proc.stdout, "virtbus is up", 90)
        yield f"nats://127.0.0.1:{port}"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 40) == 0


def _python_for(user: str) -> list[str] | None:
    """A command line running this checkout's Python as ``user``: this interpreter
    when ``user`` may run it, else the system's of the same version with this
    virtualenv's packages on its path."""
    candidates = [[sys.executable], ["/usr/bin/python3"]]
    for command in candidates:
        probe = subprocess.run(
            [RUNUSER, "-u", user, "--", *command, "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True, text=True, cwd="/", check=False,
        )  # fmt: skip
        if probe.returncode == 0 and probe.stdout.strip() == str(tuple(sys.version_info[:2])):
            return command
    return None


async def test_root_cli_needs_no_credential_flags(stack: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    listed = await virtbus(stack, "secret-list")
    assert listed.rc == 0, listed.err
    assert "UUID" in listed.out
    # The credentials: one file per role, root's only (no 'virtbus' group here).
    for role in ("admin", "readonly", "secret", "storage"):
        mode = stat.S_IMODE((state / "creds" / f"{role}.creds").stat().st_mode)
        assert mode & 0o077 in (0, 0o040), (role, oct(mode))
    assert stat.S_IMODE((state / "nats" / "nats-server.conf").stat().st_mode) == 0o600
    # `virtbus creds ROLE` hands an external tool a URL for one role.
    readonly = (await virtbus(stack, "creds", "readonly")).out.strip()
    assert readonly.startswith("nats://virtbus-readonly:")
    assert (await virtbus(readonly, "secret-list")).rc == 0
    pool = tmp_path / "pool.xml"
    pool.write_text(POOL)
    refused = await virtbus(readonly, "pool-define", str(pool))
    assert refused.rc == 1
    assert "access denied" in refused.err
    # ... or a file for --creds.
    creds_file = tmp_path / "ro.creds"
    assert (await virtbus(stack, "creds", "readonly", "--file", str(creds_file))).rc == 0
    assert stat.S_IMODE(creds_file.stat().st_mode) == 0o600
    assert (await virtbus(stack, "--creds", str(creds_file), "secret-list")).rc == 0


@pytest.mark.skipif(os.geteuid() != 0 or not RUNUSER, reason="needs root and runuser")
async def test_unprivileged_user_gets_an_authentication_error(stack: str) -> None:
    python = _python_for("nobody")
    if python is None:
        pytest.skip("no Python of this version that user nobody may run")
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{ROOT}:{site.getsitepackages()[0]}",
        "VIRTBUS_NATS_URL": stack,
        "VIRTBUS_STATE_DIR": os.environ["VIRTBUS_STATE_DIR"],
        "HOME": "/nonexistent",
    }
    # nobody can read the pool's XML, from a file of its own
    xml = tempfile.NamedTemporaryFile("w", suffix=".xml", dir="/tmp")  # noqa: SIM115
    xml.write(POOL)
    xml.flush()
    os.chmod(xml.name, 0o644)
    for command in (["secret-list"], ["pool-define", xml.name]):
        proc = await asyncio.create_subprocess_exec(
            RUNUSER, "-u", "nobody", "--", *python, "-m", "client.cli.main", *command,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, cwd="/",
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode == 1, (command, out, err)
        assert err.decode().startswith("error: authentication failed: "), err
    xml.close()
    assert not Path("/etc/evilpool").exists()
