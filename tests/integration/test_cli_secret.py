"""The secret commands of the CLI, as a user runs them, against a running service."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.secret.service import SecretService, SecretSettings
from shared.util.natsserver import EmbeddedNats
from tests.integration.cli import virtbus

pytestmark = pytest.mark.integration

UUID = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
DOC = f"""<secret ephemeral='no' private='no'>
  <uuid>{UUID}</uuid>
  <usage type='iscsi'>
    <target>iqn.2026-11.org.example:t1</target>
  </usage>
</secret>
"""


@pytest.fixture
async def url(nats_url: str, tmp_path: Path) -> AsyncIterator[str]:
    settings = SecretSettings(nats_url=nats_url, state_dir=tmp_path / "s")
    async with SecretService(settings):
        yield nats_url


async def test_define_list_values_undefine(url: str, tmp_path: Path) -> None:
    f = tmp_path / "s.xml"
    f.write_text(DOC)
    r = await virtbus(url, "secret-define", str(f))
    assert (r.rc, r.out) == (0, f"Secret {UUID} created\n\n")
    r = await virtbus(url, "secret-list")
    assert r.out.splitlines()[2] == f" {UUID}   iscsi iqn.2026-11.org.example:t1"
    r = await virtbus(url, "secret-set-value", UUID, "c2VjcmV0")
    assert (r.rc, r.out) == (0, "Secret value set\n\n")
    r = await virtbus(url, "secret-get-value", UUID)
    assert r.out == "c2VjcmV0\n"
    r = await virtbus(url, "secret-get-value", "--plain", UUID)
    assert r.out == "secret\n"
    plain = tmp_path / "v"
    plain.write_bytes(b"raw\x00bytes")
    r = await virtbus(url, "secret-set-value", UUID, "--file", str(plain), "--plain")
    assert r.rc == 0
    r = await virtbus(url, "--json", "secret-get-value", UUID)
    assert json.loads(r.out)["value"] == "cmF3AGJ5dGVz"
    r = await virtbus(url, "secret-dumpxml", UUID)
    assert r.out == DOC + "\n"
    r = await virtbus(url, "secret-list", "--ephemeral")
    assert UUID not in r.out
    r = await virtbus(url, "secret-undefine", UUID)
    assert (r.rc, r.out) == (0, f"Secret {UUID} deleted\n\n")


async def test_errors_as_virsh_prints_them(url: str, tmp_path: Path) -> None:
    missing = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
    r = await virtbus(url, "secret-dumpxml", missing)
    assert r.rc == 1 and r.out == "\n"  # virsh's blank line after a failed command
    assert r.err == (
        f"error: failed to get secret '{missing}'\n"
        f"error: Secret not found: no secret with matching uuid '{missing}'\n"
    )
    r = await virtbus(url, "secret-define", str(tmp_path / "nope.xml"))
    assert r.rc == 1 and "Failed to open file" in r.err
    bad = tmp_path / "bad.xml"
    bad.write_text("<secret")
    r = await virtbus(url, "secret-define", str(bad))
    assert r.rc == 1 and r.err.startswith(f"error: Failed to set attributes from {bad}\n")
    big = tmp_path / "big.xml"
    big.write_bytes(b"<secret>" + b" " * (10 * 1024 * 1024) + b"</secret>")
    r = await virtbus(url, "secret-define", str(big))
    assert r.rc == 1 and "larger than" in r.err
    f = tmp_path / "s.xml"
    f.write_text(DOC)
    await virtbus(url, "secret-define", str(f))
    r = await virtbus(url, "secret-set-value", UUID, "%%%")
    # virsh 9.0.0 decodes as glib does (nothing valid here: an empty value)
    assert (r.rc, r.out, r.err) == (
        1,
        "\n",
        "error: Passing secret value as command-line argument is insecure!\n"
        "error: Failed to set secret value\n"
        "error: value in virSecretSetValue must not be NULL\n",
    )


async def test_a_value_the_user_may_not_read_is_access_denied(
    url: str, tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    f = tmp_path / "s.xml"
    f.write_text(DOC)
    await virtbus(url, "secret-define", str(f))
    await virtbus(url, "secret-set-value", UUID, "--file", str(f), "--plain")
    # readonly may list and look up secrets, never read a value: the server's
    # refusal is libvirt's access denied, not a crash or a timeout.
    reader = nats_server.role_url("readonly")
    assert UUID in (await virtbus(reader, "secret-list")).out
    r = await virtbus(reader, "secret-get-value", UUID)
    assert (r.rc, r.out) == (1, "\n")
    assert r.err == (
        "error: access denied: this user may not send to virtbus.v1.secret.value.get\n"
    )


async def test_event_prints_virsh_lines(url: str, tmp_path: Path) -> None:
    f = tmp_path / "s.xml"
    f.write_text(DOC)
    watcher = asyncio.create_task(virtbus(url, "event", "--all", "--loop", "--timeout", "3"))
    await asyncio.sleep(1.0)
    await virtbus(url, "secret-define", str(f))
    await virtbus(url, "secret-undefine", UUID)
    r = await watcher
    assert r.out.splitlines() == [
        f"event 'lifecycle' for secret {UUID}: Defined",
        f"event 'lifecycle' for secret {UUID}: Undefined",
        "event loop timed out",
        "events received: 2",
    ]


async def test_no_server_is_a_clear_error() -> None:
    r = await virtbus("nats://127.0.0.1:1", "secret-list")
    assert r.rc == 1
    assert "error: cannot connect to NATS at nats://127.0.0.1:1" in r.err.splitlines()[-1]
