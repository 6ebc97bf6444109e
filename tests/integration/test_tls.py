"""TLS: the embedded server speaks only TLS when given a certificate, services
and clients verify it against the CA, and a client that cannot verify it is
refused."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from client.connection import Client
from services.secret.service import SecretService, SecretSettings
from shared.util import bus
from shared.util.errors import ErrorCode, VirtError
from shared.util.natsserver import EmbeddedNats, TlsFiles
from shared.util.roles import ADMIN

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl"),
]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certificates(folder: Path) -> TlsFiles:
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca = folder / "ca.key", folder / "ca.pem"
    key, csr, cert = folder / "server.key", folder / "server.csr", folder / "server.pem"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-subj", "/CN=virtbus test CA", "-keyout", str(ca_key), "-out", str(ca),
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(cert),
    )  # fmt: skip
    return TlsFiles(cert, key, ca)


@pytest.fixture
async def tls_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats", tls=make_certificates(tmp_path / "pki"))
    monkeypatch.setenv("VIRTBUS_CREDS_DIR", str(server.credentials.folder))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_services_and_clients_verify_the_server(
    tls_server: EmbeddedNats, tmp_path: Path
) -> None:
    assert tls_server.url.startswith("tls://")
    assert tls_server.tls is not None and tls_server.tls.ca is not None
    ca = tls_server.tls.ca
    settings = SecretSettings(nats_url=tls_server.url, state_dir=tmp_path / "s", tls_ca=ca)
    async with SecretService(settings):
        client = await Client.connect(tls_server.role_url(ADMIN), tls_ca=ca)
        try:
            assert await client.secret.list() == []
        finally:
            await client.close()


async def test_a_client_that_cannot_verify_the_server_is_refused(tls_server: EmbeddedNats) -> None:
    # The system's authorities do not know the test CA.
    with pytest.raises(VirtError) as refused:
        await bus.connect(tls_server.role_url(ADMIN), "no-ca", deadline=3)
    assert refused.value.code is ErrorCode.NO_CONNECT
    # Nor does the server speak without TLS.
    plain = tls_server.role_url(ADMIN).replace("tls://", "nats://")
    with pytest.raises(VirtError):
        await bus.connect(plain, "plain", deadline=3)


async def test_the_cli_over_tls_prints_only_its_answer(
    tls_server: EmbeddedNats, tmp_path: Path
) -> None:
    """The CLI's commands, quick path and full client, over TLS: the answer on
    stdout and nothing on stderr (no warning from the TLS transport at close)."""
    assert tls_server.tls is not None and tls_server.tls.ca is not None
    ca = tls_server.tls.ca
    settings = SecretSettings(nats_url=tls_server.url, state_dir=tmp_path / "s", tls_ca=ca)
    env = {**os.environ, "VIRTBUS_TLS_CA": str(ca)}
    url = tls_server.role_url(ADMIN)
    async with SecretService(settings):
        for argv in (["secret-list"], ["status"], ["secret-list", "--no-ephemeral"]) * 3:
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "client.cli.main", "-c", url, *argv],
                env=env,
                capture_output=True,
                text=True,
            )
            assert (done.returncode, done.stderr) == (0, ""), argv
            assert done.stdout.strip(), argv
