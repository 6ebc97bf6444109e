"""The fs backend for real: mkfs and mount of a loop device this test creates."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from client.storage import StorageClient
from services.storage.pools.backends.fs import is_mounted
from services.storage.service import StorageService, StorageSettings
from shared.api.storage import BuildMode, PoolState, VolRef
from shared.util.errors import ErrorCode, VirtError
from tests.integration.loopdev import attached_loop

pytestmark = pytest.mark.integration
HOST = "fs-host"


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    with attached_loop(tmp_path, 64 << 20, ("mkfs.ext4",)) as device:
        try:
            yield device
        finally:
            subprocess.run(["umount", "-l", device], capture_output=True)


@pytest.fixture
async def storage(nats_url: str, nc: NATS, tmp_path: Path) -> AsyncIterator[StorageClient]:
    settings = StorageSettings(nats_url=nats_url, state_dir=tmp_path / "state", host=HOST)
    async with StorageService(settings):
        yield StorageClient(nc, HOST)


def fs_pool(device: str, target: Path) -> str:
    return (
        "<pool type='fs'><name>loopfs</name>"
        f"<source><device path='{device}'/><format type='ext4'/></source>"
        f"<target><path>{target}</path></target></pool>"
    )


async def test_fs_pool_on_loop_device(
    storage: StorageClient, loop_device: str, tmp_path: Path
) -> None:
    target = tmp_path / "mnt"
    await storage.pool_define(fs_pool(loop_device, target))
    await storage.pool_build("loopfs", BuildMode.NO_OVERWRITE)
    with pytest.raises(VirtError) as err:
        await storage.pool_build("loopfs", BuildMode.NO_OVERWRITE)
    assert err.value.code is ErrorCode.STORAGE_POOL_BUILT
    assert f"Device '{loop_device}' already formatted using 'ext4'" in err.value.message
    await storage.pool_start("loopfs")
    assert is_mounted(loop_device, str(target))
    info = await storage.pool_info("loopfs")
    assert info.state is PoolState.RUNNING and 40 << 20 < info.capacity <= 64 << 20
    vol = await storage.vol_create(
        "loopfs",
        "<volume><name>d.qcow2</name><capacity unit='M'>8</capacity>"
        "<target><format type='qcow2'/></target></volume>",
    )
    assert vol.path == f"{target}/d.qcow2"
    assert "lost+found" in [v.name for v in await storage.vol_list("loopfs")]
    await storage.pool_destroy("loopfs")
    assert not is_mounted(loop_device, str(target))
    # Mounted behind the service's back: starting is refused, as libvirt refuses it.
    subprocess.run(["mount", loop_device, str(target)], check=True)
    with pytest.raises(VirtError, match=f"Target '{target}' is already mounted"):
        await storage.pool_start("loopfs")
    subprocess.run(["umount", str(target)], check=True)
    await storage.pool_start("loopfs")
    names = [v.name for v in await storage.vol_list("loopfs")]
    assert "d.qcow2" in names
    await storage.vol_delete(VolRef(pool="loopfs", name="d.qcow2"))
    await storage.pool_destroy("loopfs")
    await storage.pool_delete("loopfs")
    assert not target.exists()
    await storage.pool_undefine("loopfs")
