"""The logical backend with the real LVM tools on a loop device this test creates."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from client.storage import StorageClient
from services.storage.service import StorageService, StorageSettings
from shared.api.storage import BuildMode, PoolState, VolRef
from tests.integration.loopdev import attached_loop

pytestmark = pytest.mark.integration
HOST = "lvm-host"
VG = "virtbustestvg"


def _device_mapper() -> bool:
    try:
        os.close(os.open("/dev/mapper/control", os.O_RDWR))
    except OSError:
        return False
    return True


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    tools = ("pvcreate", "vgcreate", "vgchange", "vgs", "lvs")
    with attached_loop(tmp_path, 64 << 20, tools) as device:
        try:
            yield device
        finally:
            subprocess.run(["vgremove", "-f", VG], capture_output=True)
            subprocess.run(["pvremove", "-ff", "-y", device], capture_output=True)


@pytest.fixture
async def storage(nats_url: str, nc: NATS, tmp_path: Path) -> AsyncIterator[StorageClient]:
    settings = StorageSettings(nats_url=nats_url, state_dir=tmp_path / "state", host=HOST)
    async with StorageService(settings):
        yield StorageClient(nc, HOST)


POOL_XML = (
    "<pool type='logical'><name>{vg}</name><source><device path='{dev}'/></source>"
    "<target><path>/dev/{vg}</path></target></pool>"
)


async def test_logical_pool_lifecycle(storage: StorageClient, loop_device: str) -> None:
    await storage.pool_define(POOL_XML.format(vg=VG, dev=loop_device))
    await storage.pool_build(VG)  # pvcreate + vgcreate
    await storage.pool_start(VG)  # vgchange -aly
    info = await storage.pool_info(VG)
    assert info.state is PoolState.RUNNING
    assert 56 << 20 <= info.capacity <= 64 << 20 and info.available == info.capacity
    await storage.pool_destroy(VG)  # vgchange -aln
    await storage.pool_delete(VG)  # vgremove + pvremove
    assert subprocess.run(["vgs", VG], capture_output=True).returncode != 0
    await storage.pool_undefine(VG)


async def test_logical_volumes(storage: StorageClient, loop_device: str) -> None:
    if not _device_mapper():
        pytest.skip("the kernel has no usable device-mapper (/dev/mapper/control), so no LVs")
    await storage.pool_create(POOL_XML.format(vg=VG, dev=loop_device), BuildMode.BUILD)
    vol = await storage.vol_create(
        VG, "<volume><name>lv0</name><capacity unit='M'>8</capacity></volume>"
    )
    assert vol.path == f"/dev/{VG}/lv0" and vol.type == "block"
    await storage.pool_refresh(VG)
    assert [v.name for v in await storage.vol_list(VG)] == ["lv0"]
    await storage.vol_delete(VolRef(pool=VG, name="lv0"))
    await storage.pool_destroy(VG)
