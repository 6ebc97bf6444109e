"""The agent's pure parts: inventory disks from a live chain, the domain XML rewrite,
choosing commit/pull layers as virsh names them, and the block-job contract."""

from __future__ import annotations

import pytest

from agents.qemu.hypervisor import Layer, LiveDisk
from agents.qemu.inventory import chain_source, domain_disks, live_disk, rewrite_disk, source_for
from agents.qemu.jobs import _commit_layers, _layer_index
from agents.qemu.qemu_domain import node_names, qdev_alias, qemu_job_id
from shared.api.blockjob import (
    CommitCommand,
    CopyCommand,
    JobType,
    Phase,
    destination_source,
    job_status,
    parse_command,
    status_detail,
    status_event_id,
)
from shared.conf.disk import format_disk
from shared.conf.disk_mirror import DiskMirror, MirrorJob, MirrorState
from shared.conf.disk_source import StorageFormat, StorageSource, StorageType
from shared.util.errors import VirtError

DOMAIN = """<domain type='qemu'>
  <name>db</name>
  <!-- kept as written -->
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/img/top.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/img/data.raw'/>
      <target dev='vdb' bus='virtio'/>
      <alias name='virtio-disk1'/>
    </disk>
  </devices>
</domain>
"""


def _layer(node: str, path: str, fmt: StorageFormat) -> Layer:
    return Layer(node, StorageSource(type=StorageType.FILE, path=path, format=fmt), 1 << 20)


CHAIN = LiveDisk(
    "virtio-disk0",
    (
        _layer("top", "/img/top.qcow2", StorageFormat.QCOW2),
        _layer("mid", "/img/mid.qcow2", StorageFormat.QCOW2),
        _layer("base", "/img/base.raw", StorageFormat.RAW),
    ),
)


def test_live_disk_carries_the_chain_with_indexes() -> None:
    disk = domain_disks(DOMAIN)[0][1]
    text = format_disk(live_disk(disk, CHAIN, None), active=True)
    assert "<source file='/img/top.qcow2' index='3'/>" in text
    assert "<backingStore type='file' index='2'>" in text
    assert "<backingStore type='file' index='1'>" in text
    assert "<source file='/img/base.raw'/>" in text  # a layer's index is on <backingStore>
    assert text.count("<backingStore/>") == 1
    assert "<alias name='virtio-disk0'/>" in text


def test_live_disk_mirror_is_numbered_after_the_chain() -> None:
    disk = domain_disks(DOMAIN)[0][1]
    dest = StorageSource(type=StorageType.FILE, path="/img/copy.qcow2", format=StorageFormat.QCOW2)
    mirror = DiskMirror(source=dest, job=MirrorJob.COPY, ready=MirrorState.YES)
    text = format_disk(live_disk(disk, CHAIN, mirror), active=True)
    assert "<mirror type='file' file='/img/copy.qcow2' format='qcow2' job='copy' ready='yes'>" in (
        text
    )
    assert "<source file='/img/copy.qcow2' index='4'/>" in text


def test_chain_source_ends_with_the_terminator() -> None:
    source = chain_source(CHAIN.chain[2:])
    assert source.path == "/img/base.raw"
    assert source.backing_store is not None and source.backing_store.is_terminator


def test_rewrite_keeps_the_rest_of_the_document() -> None:
    disk = domain_disks(DOMAIN)[0][1]
    pivoted = LiveDisk("virtio-disk0", (_layer("copy", "/img/copy.qcow2", StorageFormat.QCOW2),))
    out = rewrite_disk(DOMAIN, "virtio-disk0", source_for(disk, pivoted))
    assert "<!-- kept as written -->" in out
    assert "      <source file='/img/copy.qcow2' index='1'/>\n" in out
    assert "/img/top.qcow2" not in out
    assert out.split("<disk")[2] == DOMAIN.split("<disk")[2]  # the other disk untouched
    assert rewrite_disk(DOMAIN, "no-such-alias", disk) == DOMAIN


def test_layers_named_as_virsh_names_them() -> None:
    assert _layer_index("/img/mid.qcow2", "vda", CHAIN) == 1
    assert _layer_index("vda[1]", "vda", CHAIN) == 2
    assert _layer_index("3", "vda", CHAIN) == 0
    with pytest.raises(VirtError, match="could not find image 'vda\\[7\\]'"):
        _layer_index("vda[7]", "vda", CHAIN)


def test_commit_defaults() -> None:
    def layers(**kw: object) -> tuple[str, str]:
        command = CommitCommand.model_validate({"job_id": "j", "domain": "d", "disk": "vda", **kw})
        top, base = _commit_layers(command, CHAIN)
        return top.node, base.node

    assert layers() == ("top", "base")
    assert layers(shallow=True) == ("top", "mid")
    assert layers(top="/img/mid.qcow2") == ("mid", "base")
    with pytest.raises(VirtError):
        layers(top="/img/mid.qcow2", base="/img/top.qcow2")


def test_qemu_names_are_deterministic() -> None:
    assert qemu_job_id("copy.1") == "vbj-copy.1"
    fmt, proto = node_names("copy.1")
    assert (fmt, proto) == node_names("copy.1") and len(fmt) <= 31 and fmt != proto
    assert qdev_alias("/machine/peripheral/virtio-disk0/virtio-backend") == "virtio-disk0"
    assert qdev_alias("scsi0-0-0-0") == "scsi0-0-0-0"


def test_contract_round_trip_and_names() -> None:
    dest = "<disk type='block'><driver type='raw'/><source dev='/dev/vg/copy'/></disk>"
    copy = CopyCommand(job_id="c1", domain="d", disk="vda", destination=dest, shallow=True)
    assert parse_command(copy.model_dump(mode="json")) == copy
    source = destination_source(dest)
    assert (source.type, source.path, source.format) == (
        StorageType.BLOCK,
        "/dev/vg/copy",
        StorageFormat.RAW,
    )
    with pytest.raises(ValueError):
        parse_command({"kind": "copy", "job_id": "-bad", "domain": "d", "disk": "vda"})


@pytest.mark.parametrize(
    ("job_type", "phase", "detail", "status_code"),
    [
        (JobType.COPY, Phase.READY, "Block Copy for vda ready", 3),
        (JobType.ACTIVE_COMMIT, Phase.PIVOTED, "Active Block Commit for vda completed", 0),
        (JobType.COMMIT, Phase.FAILED, "Block Commit for vda failed", 1),
        (JobType.PULL, Phase.CANCELLED, "Block Pull for vda canceled", 2),
    ],
)
def test_status_as_virsh_prints_it(
    job_type: JobType, phase: Phase, detail: str, status_code: int
) -> None:
    status = job_status("j", "d", "vda", job_type, phase)
    assert status_detail(status) == detail
    assert status.status_code == status_code
    assert status_event_id(status) == f"blockjob-j-{phase.value}"


def test_progress_detail() -> None:
    status = job_status("j", "d", "vda", JobType.COPY, Phase.PROGRESS, cur=45, end=100)
    assert status_detail(status) == "Block Copy: [ 45 %]"
    assert status.status is None and status_event_id(status) == "blockjob-j-progress-45-100"
