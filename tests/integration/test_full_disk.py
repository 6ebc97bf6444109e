"""Resource exhaustion: a full state filesystem and stream limits give a clear
"no space" error within the client's timeout, store nothing, and everything
works again once there is room, without a restart."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.connection import Client
from services.secret.service import SecretService, SecretSettings
from shared.util import bus
from shared.util.errors import ErrorCode, VirtError
from shared.util.natsserver import EmbeddedNats

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root"),
]

KEY = base64.b64encode(b"k" * 32).decode()


def _secret(name: str) -> str:
    usage = f"<usage type='ceph'><name>{name}</name></usage>"
    return f"<secret ephemeral='no' private='no'>{usage}</secret>"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs of the test's own, unmounted afterwards."""
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path: Path) -> None:
    """Write zeros to ``path`` until the filesystem is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096):
            try:
                while os.write(fd, b"\0" * size) == size:
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)


async def test_full_disk_refuses_clearly_and_recovers(small_fs: Path) -> None:
    server = EmbeddedNats(small_fs / "nats", creds_dir=small_fs.parent / "creds")
    await server.start()
    settings = SecretSettings(
        nats_url=server.url,
        state_dir=small_fs / "secret",
        secret_key=KEY,
        creds=server.credentials.path("secret"),
    )
    try:
        async with SecretService(settings) as service:
            nc = await bus.connect(server.role_url("admin"), "virtbus-test", deadline=10)
            client = Client(nc)
            try:
                kept = await client.secret.define(_secret("before"))
                await client.secret.set_value(kept, b"v1")
                filler = small_fs / "filler"
                _fill(filler)
                refused: list[VirtError] = []
                for i in range(5):
                    with pytest.raises(VirtError) as info:
                        await client.secret.define(_secret(f"full{i}"))
                    refused.append(info.value)
                with pytest.raises(VirtError) as value_refused:
                    await client.secret.set_value(kept, b"v2")
                refused.append(value_refused.value)
                with pytest.raises(VirtError) as undefine_refused:
                    await client.secret.undefine(kept)
                refused.append(undefine_refused.value)
                # Each answered (within the client's timeout) with the cause.
                for err in refused:
                    assert err.code is ErrorCode.SYSTEM_ERROR, err
                    assert "No space left on device" in str(err)
                # Nothing half-made, nothing changed.
                assert [s.uuid for s in await client.secret.list()] == [kept]
                assert await client.secret.get_value(kept) == b"v1"
                # Room again: the same service and server go on.
                filler.unlink()
                again = await client.secret.define(_secret("full0"))
                await client.secret.set_value(kept, b"v3")
                assert await client.secret.get_value(kept) == b"v3"
                assert {s.uuid for s in await client.secret.list()} == {kept, again}
                ledger = service.registry.ledger
                await ledger.wait_forwarded(ledger.last_written)
                events = await _event_details(nc)
                assert events == ["Defined", None, "Defined", None]
            finally:
                await bus.close(nc)
    finally:
        await server.stop()


async def _event_details(nc: object) -> list[str | None]:
    from client.events import subscribe

    got: list[str | None] = []
    async with subscribe(nc, replay=True) as events:  # type: ignore[arg-type]
        async for ev in events:
            got.append(ev.data.detail)
            if len(got) == 4:
                break
    return got


async def test_stream_limit_refuses_clearly_and_recovers(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    settings = SecretSettings(
        nats_url=nats_server.url, state_dir=tmp_path / "secret", secret_key=KEY
    )
    async with SecretService(settings) as service:
        nc = await bus.connect(nats_server.role_url("admin"), "virtbus-test", deadline=10)
        # Limiting a stream is the NATS administrator's doing.
        operator = await bus.connect(nats_server.role_url("operator"), "operator", deadline=10)
        client = Client(nc)
        try:
            await client.secret.define(_secret("a"))
            js = operator.jetstream()
            stream = service.registry.ledger.stream
            info = await js.stream_info(stream)
            config = info.config
            config.max_msgs = info.state.messages
            config.discard = "new"  # type: ignore[assignment]
            await js.update_stream(config)
            with pytest.raises(VirtError) as info_:
                await client.secret.define(_secret("b"))
            assert info_.value.code is ErrorCode.SYSTEM_ERROR
            assert "No space left on device" in str(info_.value)
            assert len(await client.secret.list()) == 1
            config.max_msgs = -1
            await js.update_stream(config)
            await client.secret.define(_secret("b"))
            assert len(await client.secret.list()) == 2
        finally:
            await bus.close(nc)
            await bus.close(operator)
