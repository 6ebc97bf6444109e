"""The disk backend with the real parted on a loop device this test creates."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from client.storage import StorageClient
from services.storage.service import StorageService, StorageSettings
from shared.api.storage import BuildMode, PoolState
from shared.util.errors import VirtError
from tests.integration.loopdev import attached_loop

pytestmark = pytest.mark.integration
HOST = "disk-host"


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    with attached_loop(tmp_path, 32 << 20, ("parted",)) as device:
        yield device


@pytest.fixture
async def storage(nats_url: str, nc: NATS, tmp_path: Path) -> AsyncIterator[StorageClient]:
    settings = StorageSettings(nats_url=nats_url, state_dir=tmp_path / "state", host=HOST)
    async with StorageService(settings):
        yield StorageClient(nc, HOST)


async def test_disk_pool_label_and_partitions(storage: StorageClient, loop_device: str) -> None:
    await storage.pool_define(
        f"<pool type='disk'><name>d</name><source><device path='{loop_device}'/>"
        "<format type='dos'/></source><target><path>/dev</path></target></pool>"
    )
    await storage.pool_build("d")  # parted DEV mklabel --script msdos
    label = subprocess.run(
        ["parted", "-m", loop_device, "print", "--script"], capture_output=True, text=True
    ).stdout
    assert ":msdos:" in label
    await storage.pool_start("d")
    info = await storage.pool_info("d")
    assert info.state is PoolState.RUNNING and info.capacity == 32 << 20
    assert await storage.vol_list("d") == []
    subprocess.run(
        ["parted", loop_device, "mkpart", "--script", "primary", "1MiB", "9MiB"], check=True
    )
    await storage.pool_refresh("d")
    [part] = await storage.vol_list("d")
    name = os.path.basename(loop_device) + "p1"
    assert (part.name, part.capacity, part.type) == (name, 8 << 20, "block")
    assert (await storage.pool_info("d")).allocation == 8 << 20
    await storage.pool_destroy("d")
    await storage.pool_undefine("d")


async def test_build_refuses_a_labelled_disk_unless_overwriting(
    storage: StorageClient, loop_device: str
) -> None:
    subprocess.run(["parted", loop_device, "mklabel", "--script", "gpt"], check=True)
    await storage.pool_define(
        f"<pool type='disk'><name>d</name><source><device path='{loop_device}'/>"
        "<format type='dos'/></source><target><path>/dev</path></target></pool>"
    )
    with pytest.raises(VirtError, match="different label format present"):
        await storage.pool_build("d")
    await storage.pool_build("d", BuildMode.OVERWRITE)
    with pytest.raises(VirtError, match="Disk label already formatted using 'dos'"):
        await storage.pool_build("d", BuildMode.NO_OVERWRITE)
