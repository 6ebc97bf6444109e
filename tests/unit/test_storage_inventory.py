"""The storage service's disk inventory and block-job preparation, and the CLI's
virsh-shaped pieces: images a disk uses and their volume users, disks and layers
named as virsh names them, destination checks and XML, bandwidth and progress as
virsh reads and prints them, and generation-ordered inventory updates in KV."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.cli.blockjob_cmds import UsageError, _info_text, bandwidth_bytes, print_xml
from client.cli.blockjob_wait import progress_text
from client.storage_jobs import disk_rows
from services.storage.disks.destinations import check_local_destination, destination_xml, volume_xml
from services.storage.disks.index import (
    BACKING,
    MIRROR,
    SOURCE,
    DiskIndex,
    DomainDisks,
    commit_layers,
    disk_images,
    layer_position,
)
from services.storage.disks.store import DiskStore
from shared.api.blockjob import DiskInventory, JobType
from shared.api.storage_jobs import BlockJobInfo
from shared.conf.disk import parse_disk
from shared.conf.disk_source import StorageType
from shared.util.errors import ErrorCode, VirtError
from shared.util.ledger import Ledger
from shared.util.ledger_state import LedgerState
from tests.conftest import ConnectAs

#: A copy running on vda (a qcow2 on a raw base) into a qcow2 file.
COPYING = """<disk type='file' device='disk'>
  <driver name='qemu' type='qcow2'/>
  <source file='/img/top.qcow2' index='2'/>
  <backingStore type='file' index='1'>
    <format type='raw'/>
    <source file='/img/base.raw'/>
    <backingStore/>
  </backingStore>
  <mirror type='file' file='/img/copy.qcow2' format='qcow2' job='copy' ready='yes'>
    <format type='qcow2'/>
    <source file='/img/copy.qcow2' index='3'/>
    <backingStore/>
  </mirror>
  <target dev='vda' bus='virtio'/>
  <alias name='virtio-disk0'/>
</disk>
"""

VOLUME = """<disk type='volume' device='disk'>
  <driver name='qemu' type='raw'/>
  <source pool='data' volume='v1'/>
  <target dev='vdb' bus='virtio'/>
</disk>
"""

NETWORK = """<disk type='network' device='cdrom'>
  <driver name='qemu' type='raw'/>
  <source protocol='nbd' name='export'>
    <host name='example.org' port='10809'/>
  </source>
  <target dev='sda' bus='scsi'/>
</disk>
"""

EMPTY = """<disk type='file' device='cdrom'>
  <target dev='hdc' bus='ide'/>
</disk>
"""


def _inventory(*disks: str, generation: int = 1, domain: str = "web1") -> DiskInventory:
    return DiskInventory(host="h1", domain=domain, disks=list(disks), generation=generation)


# --- what a disk uses -------------------------------------------------------------------------


def test_a_disk_uses_its_chain_and_its_mirror() -> None:
    disk = parse_disk(COPYING, active=True)
    used = [(i.role, i.index, i.path) for i in disk_images(disk)]
    assert used == [
        (SOURCE, 2, "/img/top.qcow2"),
        (BACKING, 1, "/img/base.raw"),
        (MIRROR, 3, "/img/copy.qcow2"),
    ]


def test_volume_users_by_path_and_by_pool_volume() -> None:
    index = DiskIndex("h1")
    assert not index.any_users()
    index.put(_inventory(COPYING, VOLUME))
    assert index.any_users()
    index.put(_inventory(COPYING.replace("vda", "vdc"), domain="db1"))
    users = index.users("/img//base.raw")
    assert sorted((u.domain, u.disk, u.role) for u in users) == [
        ("db1", "vdc", BACKING),
        ("web1", "vda", BACKING),
    ]
    [volume_user] = index.users(None, "data", "v1")
    assert (volume_user.domain, volume_user.disk, volume_user.role) == ("web1", "vdb", SOURCE)
    assert volume_user.label() == "web1/vdb"
    index.remove("db1")
    assert [u.domain for u in index.users("/img/base.raw")] == ["web1"]
    assert index.users("/img/other.raw") == []
    index.remove("web1")
    assert not index.any_users()


def test_a_disk_is_found_by_target_or_source_path() -> None:
    entry = DomainDisks.parse(_inventory(COPYING, VOLUME))
    assert entry.disk("vdb")[0] == 1
    assert entry.disk("/img/top.qcow2")[0] == 0
    assert entry.disk_xml("vda") == ("vda", COPYING)
    with pytest.raises(VirtError) as caught:
        entry.disk("vdz")
    assert str(caught.value) == "invalid argument: disk 'vdz' not found in domain"
    with pytest.raises(VirtError) as unknown:
        DiskIndex("h1").get("nope")
    assert str(unknown.value) == "Domain not found: no domain with matching name 'nope'"


def test_an_unreadable_disk_leaves_the_others() -> None:
    entry = DomainDisks.parse(_inventory("<disk type='bogus'/>", VOLUME))
    assert [d.target.dev for d in entry.disks] == ["vdb"]
    assert entry.disk_xml("vdb") == ("vdb", VOLUME)


# --- layers ------------------------------------------------------------------------------------


def test_layers_named_as_virsh_names_them() -> None:
    disk = parse_disk(COPYING, active=True)
    assert layer_position(disk, "/img/base.raw") == 1
    assert layer_position(disk, "vda[1]") == 1
    assert layer_position(disk, "2") == 0
    with pytest.raises(VirtError) as caught:
        layer_position(disk, "vda[7]")
    assert "could not find image 'vda[7]' in chain for 'vda'" in str(caught.value)


def test_commit_layers() -> None:
    disk = parse_disk(COPYING, active=True)
    assert commit_layers(disk, None, None, shallow=False) == (0, 1)
    assert commit_layers(disk, None, None, shallow=True) == (0, 1)
    with pytest.raises(VirtError) as caught:
        commit_layers(disk, "/img/base.raw", None, shallow=False)
    assert str(caught.value) == (
        "invalid argument: top '/img/base.raw' in chain for 'vda' has no backing file"
    )


# --- destinations ------------------------------------------------------------------------------


def test_destination_xml_as_virsh_builds_it() -> None:
    assert destination_xml(StorageType.FILE, "/img/c.qcow2", "qcow2") == (
        "<disk type='file'>\n  <source file='/img/c.qcow2'/>\n  <driver type='qcow2'/>\n</disk>\n"
    )
    assert destination_xml(StorageType.BLOCK, "/dev/sdz", None) == (
        "<disk type='block'>\n  <source dev='/dev/sdz'/>\n</disk>\n"
    )
    assert print_xml("/img/c.qcow2", "qcow2", False) == destination_xml(
        StorageType.FILE, "/img/c.qcow2", "qcow2"
    )


def test_local_destination_checks(tmp_path: Path) -> None:
    existing = tmp_path / "full.img"
    existing.write_bytes(b"x")
    check_local_destination("vda", str(tmp_path / "new.img"), reuse=False, blockdev=False)
    check_local_destination("vda", str(existing), reuse=True, blockdev=False)
    with pytest.raises(VirtError) as exists:
        check_local_destination("vda", str(existing), reuse=False, blockdev=False)
    assert exists.value.code is ErrorCode.CONFIG_UNSUPPORTED
    assert str(exists.value) == (
        "unsupported configuration: external destination file for disk vda already exists "
        f"and is not a block device: {existing}"
    )
    with pytest.raises(VirtError) as missing:
        check_local_destination("vda", str(tmp_path / "gone.img"), reuse=True, blockdev=False)
    assert str(missing.value) == (
        f"missing destination file for disk vda: {tmp_path / 'gone.img'}: No such file or directory"
    )
    with pytest.raises(VirtError) as not_block:
        check_local_destination("vda", str(existing), reuse=True, blockdev=True)
    assert not_block.value.code is ErrorCode.INVALID_ARG


def test_new_volume_for_a_shallow_copy_sits_on_the_backing_image() -> None:
    disk = parse_disk(COPYING, active=True)
    assert volume_xml("c.qcow2", 8388608, "qcow2", disk.source) == (
        "<volume>\n  <name>c.qcow2</name>\n  <capacity>8388608</capacity>\n"
        "  <target>\n    <format type='qcow2'/>\n  </target>\n"
        "  <backingStore>\n    <path>/img/base.raw</path>\n    <format type='raw'/>\n"
        "  </backingStore>\n</volume>\n"
    )
    assert "backingStore" not in volume_xml("c.raw", 1024, None, None)


# --- the CLI's virsh shapes ------------------------------------------------------------------


def test_bandwidth_as_virsh_reads_it() -> None:
    assert bandwidth_bytes(None, False) == 0
    assert bandwidth_bytes("10", False) == 10 << 20
    assert bandwidth_bytes("10", True) == 10
    assert bandwidth_bytes("64M", False) == 64 << 20
    assert bandwidth_bytes("1500K", False) == 1 << 20  # rounded down to MiB/s
    assert bandwidth_bytes("1500K", True) == 1500 * 1024
    assert bandwidth_bytes("-1", False) == 0
    with pytest.raises(UsageError) as caught:
        bandwidth_bytes("fast", False)
    assert str(caught.value) == (
        "Scaled numeric value 'fast' for <--bandwidth> option is malformed or out of range"
    )


def test_progress_as_virsh_prints_it() -> None:
    assert progress_text("Block Copy", 45, 100) == "\rBlock Copy: [ 45 %]"
    assert progress_text("Block Copy", 9999, 10000) == "\rBlock Copy: [ 99 %]"
    assert progress_text("Block Copy", 0, 0) == "\rBlock Copy: [100 %]"
    assert progress_text("Block commit", 100, 100) == "\rBlock commit: [100 %]"


def test_blockjob_info_lines() -> None:
    job = BlockJobInfo(
        job_id="j1", host="h1", domain="web1", disk="vda", type=JobType.COPY,
        type_code=2, cur=50, end=200, bandwidth=1 << 20,
    )  # fmt: skip
    err, out = _info_text(job, raw=False, in_bytes=False)
    assert err == "\rBlock Copy: [ 25 %]"
    assert out == "    Bandwidth limit: 1048576 bytes/s (1.000 MiB/s)\n"
    assert _info_text(job, raw=True, in_bytes=False) == (
        "",
        " type=Block Copy\n bandwidth=1\n cur=50\n end=200\n",
    )


def test_domblklist_rows_read_as_virsh_reads_them() -> None:
    rows = disk_rows(_inventory(COPYING, VOLUME, NETWORK, EMPTY))
    assert [(r["type"], r["device"], r["target"], r["source"]) for r in rows] == [
        ("file", "disk", "vda", "/img/top.qcow2"),
        ("volume", "disk", "vdb", "v1"),
        ("network", "cdrom", "sda", "export"),
        ("file", "cdrom", "hdc", "-"),
    ]


# --- the inventory in KV -----------------------------------------------------------------------


@pytest.mark.integration
async def test_inventory_kept_by_generation(connect_as: ConnectAs) -> None:
    nc = await connect_as("test")
    ledger = Ledger(nc, nc.jetstream(), "test", "h1")
    await ledger.open()
    store = DiskStore(LedgerState(ledger), "h1")
    assert await store.save_inventory(_inventory(VOLUME, generation=2))
    assert not await store.save_inventory(_inventory(COPYING, generation=1))
    assert not await store.save_inventory(_inventory(COPYING, generation=2))
    assert await store.save_inventory(_inventory(COPYING, generation=2), same_ok=True)
    [held] = await store.inventories()
    assert held.disks == [COPYING] and held.generation == 2
    assert not await store.delete_inventory("web1", 1)
    assert await store.delete_inventory("web1", 3)
    assert await store.inventories() == []
    assert await store.claim("web1", "vda", "job1") is None
    assert await store.claim("web1", "vda", "job2") == "job1"
    await store.release("web1", "vda", "job2")  # not the holder: kept
    assert await store.claim("web1", "vda", "job3") == "job1"
    await store.release("web1", "vda", "job1")
    assert await store.claim("web1", "vda", "job3") is None
