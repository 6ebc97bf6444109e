"""The domain <disk> kind: golden disks (mirrors old and new, network sources, backing
chains), libvirt's refusals, domain-level steps, and round-trip properties."""

from __future__ import annotations

import pytest

from agents.qemu.disk_postparse import parse_qemu_disk
from shared.conf.disk import format_disk, pivot, start_mirror
from shared.conf.disk_address import AddressType
from shared.conf.disk_domain import domain_disk_elements
from shared.conf.disk_mirror import MirrorJob, MirrorState
from shared.conf.disk_model import DiskBus
from shared.conf.disk_source import StorageFormat, StorageSource, StorageType
from shared.conf.disk_source_net import NetProtocol
from shared.util.errors import ErrorCode, ErrorDomain, VirtError
from tests.conformance.qemu.domain import parse_domain_disks
from tests.conformance.qemu.pci_devices import LEGACY

# A live disk in the middle of a block copy to a qcow2 file that has a raw backing image.
COPYING = """<disk type='block' device='disk'>
  <driver name='qemu' type='raw' cache='none' io='native'/>
  <source dev='/dev/vg0/guest-root' index='3'/>
  <backingStore/>
  <mirror type='file' file='/srv/copies/root.qcow2' format='qcow2' job='copy' ready='yes'>
    <format type='qcow2'/>
    <source file='/srv/copies/root.qcow2' index='5'/>
    <backingStore type='block' index='6'>
      <format type='raw'/>
      <source dev='/dev/vg0/guest-base'/>
      <backingStore/>
    </backingStore>
  </mirror>
  <target dev='vda' bus='virtio'/>
  <serial>root-0001</serial>
  <alias name='virtio-disk0'/>
  <address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/>
</disk>
"""

COPYING_INACTIVE = """<disk type='block' device='disk'>
  <driver name='qemu' type='raw' cache='none' io='native'/>
  <source dev='/dev/vg0/guest-root'/>
  <backingStore/>
  <target dev='vda' bus='virtio'/>
  <serial>root-0001</serial>
  <address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/>
</disk>
"""


def test_new_form_mirror_round_trips_in_live_form() -> None:
    disk = parse_qemu_disk(COPYING, active=True)
    assert disk.mirror is not None
    assert disk.mirror.job is MirrorJob.COPY and disk.mirror.ready is MirrorState.YES
    assert disk.mirror.source.index == 5
    assert format_disk(disk, active=True) == COPYING


def test_inactive_form_drops_mirror_index_and_alias() -> None:
    assert format_disk(parse_qemu_disk(COPYING, active=False), active=False) == COPYING_INACTIVE
    # a live model written in persistent form loses the same things
    assert format_disk(parse_qemu_disk(COPYING, active=True), active=False) == COPYING_INACTIVE


def test_old_form_mirror_is_read_and_written_in_the_current_form() -> None:
    old = """<disk type='file' device='disk'>
  <source file='/images/app.img'/>
  <mirror file='/images/app-copy.img' format='qcow2' ready='pivot'/>
  <target dev='vdb' bus='virtio'/>
</disk>"""
    disk = parse_qemu_disk(old, active=True)
    assert disk.mirror is not None and disk.mirror.source.type is StorageType.FILE
    assert format_disk(disk, active=True) == (
        "<disk type='file' device='disk'>\n"
        "  <driver name='qemu' type='raw'/>\n"
        "  <source file='/images/app.img'/>\n"
        "  <mirror type='file' file='/images/app-copy.img' format='qcow2' job='copy'"
        " ready='pivot'>\n"
        "    <format type='qcow2'/>\n"
        "    <source file='/images/app-copy.img'/>\n"
        "  </mirror>\n"
        "  <target dev='vdb' bus='virtio'/>\n"
        "</disk>\n"
    )


def test_old_form_mirror_without_format_defaults_to_raw() -> None:
    disk = parse_qemu_disk(
        "<disk type='block'><source dev='/dev/sdz'/><mirror file='/dev/sdy'/>"
        "<target dev='hdb' bus='ide'/></disk>",
        active=True,
    )
    assert disk.mirror is not None and disk.mirror.source.format is StorageFormat.RAW
    assert "<mirror type='file' file='/dev/sdy' format='raw' job='copy'>" in format_disk(
        disk, active=True
    )


def test_active_commit_mirror_has_no_old_form_attributes() -> None:
    live = """<disk type='file' device='disk'>
  <driver name='qemu' type='qcow2'/>
  <source file='/vm/top.qcow2' index='1'/>
  <backingStore type='file' index='2'>
    <format type='qcow2'/>
    <source file='/vm/base.qcow2'/>
    <backingStore/>
  </backingStore>
  <mirror type='file' job='active-commit'>
    <format type='qcow2'/>
    <source file='/vm/base.qcow2' index='2'/>
  </mirror>
  <target dev='vdc' bus='virtio'/>
</disk>
"""
    assert format_disk(parse_qemu_disk(live, active=True), active=True) == live


def test_pivot_makes_the_mirror_the_source() -> None:
    disk = pivot(parse_qemu_disk(COPYING, active=True))
    assert disk.mirror is None
    assert disk.source.type is StorageType.FILE and disk.source.path == "/srv/copies/root.qcow2"
    chain = disk.source.chain()
    assert [s.path for s in chain] == ["/srv/copies/root.qcow2", "/dev/vg0/guest-base"]
    text = format_disk(disk, active=True)
    assert "<disk type='file' device='disk'>" in text
    assert "<driver name='qemu' type='qcow2' cache='none' io='native'/>" in text
    with pytest.raises(VirtError) as info:
        pivot(disk)
    assert info.value.code is ErrorCode.OPERATION_INVALID


def test_start_mirror_refuses_a_second_job() -> None:
    disk = parse_qemu_disk(COPYING_INACTIVE, active=False)
    dest = StorageSource(type=StorageType.FILE, path="/dst.qcow2", format=StorageFormat.QCOW2)
    copying = start_mirror(disk, dest, MirrorJob.COPY)
    assert "<mirror type='file' file='/dst.qcow2' format='qcow2' job='copy'>" in format_disk(
        copying, active=True
    )
    with pytest.raises(VirtError) as info:
        start_mirror(copying, dest, MirrorJob.COPY)
    assert info.value.code is ErrorCode.BLOCK_COPY_ACTIVE


RBD = """<disk type='network' device='disk'>
  <driver name='qemu' type='raw' discard='unmap'/>
  <auth username='cinder'>
    <secret type='ceph' usage='ceph-pool'/>
  </auth>
  <source protocol='rbd' name='volumes/vm-17-root'>
    <host name='mon1.example.net' port='6789'/>
    <host name='mon2.example.net'/>
    <snapshot name='golden'/>
    <config file='/etc/ceph/alt.conf'/>
    <encryption format='luks' engine='librbd'>
      <secret type='passphrase' uuid='0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f'/>
    </encryption>
  </source>
  <target dev='vdd' bus='virtio'/>
</disk>
"""


def test_rbd_keeps_disk_level_auth_and_splits_pool_and_image() -> None:
    disk = parse_qemu_disk(RBD, active=False)
    net = disk.source.network
    assert net is not None and net.protocol is NetProtocol.RBD
    assert (net.volume, net.path) == ("volumes", "vm-17-root")
    assert disk.auth_on_disk and not disk.encryption_on_disk
    assert net.hosts[1].port is None  # rbd has no default port
    assert format_disk(disk, active=False) == RBD


def test_network_protocol_children_and_default_ports() -> None:
    https = """<disk type='network' device='cdrom'>
  <source protocol='https' name='/isos/install.iso' query='token=abc'>
    <host name='mirror.example.org'/>
    <ssl verify='no'/>
    <cookies>
      <cookie name='session'>"x-42"</cookie>
    </cookies>
    <readahead size='65536'/>
    <timeout seconds='10'/>
  </source>
  <target dev='sda' bus='sata'/>
</disk>"""
    text = format_disk(parse_qemu_disk(https, active=False), active=False)
    assert "<host name='mirror.example.org' port='443'/>" in text
    assert "<cookie name='session'>&quot;x-42&quot;</cookie>" in text
    assert "<address type='drive' controller='0' bus='0' target='0' unit='0'/>" in text
    assert "<readonly/>" in text


def test_nbd_unix_socket_nfs_identity_and_iscsi_lun() -> None:
    nbd = parse_qemu_disk(
        "<disk type='network'><source protocol='nbd' tls='yes'>"
        "<host transport='unix' socket='/run/nbd.sock'/></source>"
        "<target dev='vde' bus='virtio'/></disk>",
        active=False,
    )
    assert "<source protocol='nbd' tls='yes'>" in format_disk(nbd, active=False)
    assert "<host transport='unix' socket='/run/nbd.sock'/>" in format_disk(nbd, active=False)
    nfs = parse_qemu_disk(
        "<disk type='network'><source protocol='nfs' name='/export/disk.img'>"
        "<host name='filer'/><identity user='qemu' group='kvm'/></source>"
        "<target dev='vdf'/></disk>",
        active=False,
    )
    assert "<identity user='qemu' group='kvm'/>" in format_disk(nfs, active=False)
    assert nfs.target.bus is DiskBus.VIRTIO
    iscsi = parse_qemu_disk(
        "<disk type='network' device='lun'><source protocol='iscsi' "
        "name='iqn.2026-01.net.example:store'><host name='san'/>"
        "<initiator><iqn name='iqn.2026-01.net.example:host'/></initiator></source>"
        "<target dev='sdb' bus='scsi'/></disk>",
        active=False,
    )
    text = format_disk(iscsi, active=False)
    assert "name='iqn.2026-01.net.example:store/0'" in text
    assert "<host name='san' port='3260'/>" in text
    assert "<initiator>\n      <iqn name='iqn.2026-01.net.example:host'/>\n    </initiator>" in text


BACKING = """<disk type='file' device='disk'>
  <driver name='qemu' type='qcow2'/>
  <source file='/vm/overlay.qcow2' index='4'/>
  <backingStore type='network' index='3'>
    <format type='qcow2'>
      <metadata_cache>
        <max_size unit='bytes'>1048576</max_size>
      </metadata_cache>
    </format>
    <source protocol='gluster' name='vol/base.qcow2'>
      <host name='gluster1' port='24007'/>
    </source>
    <backingStore type='block' index='2'>
      <format type='raw'/>
      <source dev='/dev/mapper/golden'/>
      <backingStore/>
    </backingStore>
  </backingStore>
  <target dev='vdg' bus='virtio'/>
</disk>
"""


def test_backing_chain_with_indexes() -> None:
    disk = parse_qemu_disk(BACKING, active=True)
    assert [s.index for s in disk.source.chain()] == [4, 3, 2]
    assert disk.source.chain()[1].metadata_cache_max_size == 1048576
    assert format_disk(disk, active=True) == BACKING
    inactive = format_disk(parse_qemu_disk(BACKING, active=False), active=False)
    assert "index=" not in inactive


def test_metadata_cache_units_are_scaled_to_bytes() -> None:
    disk = parse_qemu_disk(
        "<disk type='file'><driver name='qemu' type='qcow2'><metadata_cache>"
        "<max_size unit='KiB'>2</max_size></metadata_cache></driver>"
        "<source file='/a.qcow2'/><target dev='vda' bus='virtio'/></disk>",
        active=False,
    )
    assert "<max_size unit='bytes'>2048</max_size>" in format_disk(disk, active=False)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "<source pool='default' volume='data.img' mode='host'/>",
            "<source pool='default' volume='data.img' mode='host'/>",
        ),
        (
            "<source type='pci' namespace='1'><address domain='0x0000' bus='0x05' "
            "slot='0x00' function='0x0'/></source>",
            "<source type='pci' managed='yes' namespace='1'>",
        ),
        (
            "<source type='unix' path='/run/vhost.sock'><reconnect enabled='yes' "
            "timeout='5'/></source>",
            "<reconnect enabled='yes' timeout='5'/>",
        ),
        (
            "<source file='/a.img'><slices><slice type='storage' offset='512' size='1024'/>"
            "</slices><seclabel model='dac' relabel='no'/></source>",
            "<slice type='storage' offset='512' size='1024'/>",
        ),
    ],
)
def test_other_source_types(source: str, expected: str) -> None:
    kind = {"pool": "volume", "type='pci'": "nvme", "unix": "vhostuser"}
    disk_type = next((v for k, v in kind.items() if k in source), "file")
    doc = f"<disk type='{disk_type}'>{source}<target dev='vdh' bus='virtio'/></disk>"
    assert expected in format_disk(parse_qemu_disk(doc, active=False), active=False)


def test_defaults_the_qemu_driver_fills_in() -> None:
    disk = parse_qemu_disk(
        "<disk device='cdrom'><target dev='hdd'/></disk>", active=False
    )  # an empty CD-ROM on the second IDE bus
    assert format_disk(disk, active=False) == (
        "<disk type='file' device='cdrom'>\n"
        "  <driver name='qemu' type='raw'/>\n"
        "  <target dev='hdd' bus='ide'/>\n"
        "  <readonly/>\n"
        "  <address type='drive' controller='0' bus='1' target='0' unit='1'/>\n"
        "</disk>\n"
    )
    scsi = parse_qemu_disk(
        "<disk type='file'><source file='/x'/><target dev='sdj' bus='scsi'/></disk>",
        active=False,
    )
    assert scsi.info.address is not None and (
        scsi.info.address.controller,
        scsi.info.address.unit,
    ) == (1, 2)


def test_encryption_on_disk_element_stays_there_and_gets_the_qemu_engine() -> None:
    disk = parse_qemu_disk(
        "<disk type='file'><driver name='qemu' type='qcow2'/><source file='/e.qcow2'/>"
        "<target dev='vda' bus='virtio'/><encryption format='luks'>"
        "<secret type='passphrase' usage='/e.qcow2'/></encryption></disk>",
        active=False,
    )
    text = format_disk(disk, active=False)
    assert text.index("<encryption format='luks' engine='qemu'>") > text.index("<target")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("<disk type='file'><source file='/a'/></disk>", "missing target information"),
        ("<disk type='bogus'><target dev='vda'/></disk>", "attribute 'type'"),
        (
            "<disk><driver type='qcow2'/><source file='/a'/><target dev='vdb1'/></disk>",
            "partitions can't appear",
        ),
        (
            "<disk><driver type='iso'/><source file='/a'/><target dev='vda'/></disk>",
            "'iso' is not directly supported",
        ),
        (
            "<disk><driver type='qcow2'/><source file='/a'/><target dev='vda'/><shareable/></disk>",
            "requires use of supported storage format",
        ),
        (
            "<disk><source file='/a'/><target dev='vda'/><vendor>x</vendor></disk>",
            "Only scsi disk supports vendor and product",
        ),
        (
            "<disk type='network'><source protocol='iscsi' name='t'><host name='h'/>"
            "<auth username='u'><secret type='ceph' usage='x'/></auth></source>"
            "<target dev='sda'/></disk>",
            "invalid secret type 'ceph'",
        ),
        (
            "<disk type='network'><source protocol='rbd' name='noslash'/>"
            "<target dev='vda'/></disk>",
            "can't split path 'noslash'",
        ),
        (
            "<disk type='network'><source protocol='iscsi' name='t'><auth username='u'>"
            "<secret type='iscsi' usage='x'/></auth></source><auth username='u'>"
            "<secret type='iscsi' usage='x'/></auth><target dev='sda'/></disk>",
            "an <auth> definition already found",
        ),
        (
            "<disk><source file='/a'/><target dev='sda' bus='scsi'/>"
            "<address type='pci' bus='0x00' slot='0x05'/></disk>",
            "Invalid address type 'pci' for the disk 'sda'",
        ),
        (
            "<disk><source file='/a'/><mirror job='active-commit' file='/b'/>"
            "<target dev='vda'/></disk>",
            "mirror without type only supported by copy job",
        ),
        (
            "<disk><source file='/a'/><mirror type='file'/><target dev='vda'/></disk>",
            "mirror requires source element",
        ),
        (
            "<disk><source file='/a'/><backingStore type='file'><source file='/b'/>"
            "</backingStore><target dev='vda'/></disk>",
            "missing disk backing store format",
        ),
        ("<disk><target dev='vda'/></disk>", "vda"),  # a disk needs a medium
        ("<disk><source file='/a'/><target dev='vda'/><boot order='0'/></disk>", "Zero"),
    ],
)
def test_refusals(doc: str, message: str) -> None:
    with pytest.raises(VirtError) as info:
        parse_qemu_disk(doc, active=True)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("doc", "domain"),
    [
        # virxml.c's attribute and scaled-value readers report under VIR_FROM_XML...
        ("<disk type='bogus'><source file='/a'/><target dev='vda'/></disk>", ErrorDomain.XML),
        (
            "<disk><source file='/a'/><target dev='vda'/><boot order='0'/></disk>",
            ErrorDomain.XML,
        ),
        (
            "<disk><driver name='qemu' type='qcow2'><metadata_cache><max_size>-1</max_size>"
            "</metadata_cache></driver><source file='/a'/><target dev='vda'/></disk>",
            ErrorDomain.XML,
        ),
        # ...while domain_conf.c's own checks stay under VIR_FROM_DOMAIN.
        (
            "<disk type='network'><source protocol='rbd' name='noslash'/>"
            "<target dev='vda'/></disk>",
            ErrorDomain.DOMAIN,
        ),
    ],
)
def test_refusal_error_domains(doc: str, domain: ErrorDomain) -> None:
    with pytest.raises(VirtError) as info:
        parse_qemu_disk(doc, active=True)
    assert info.value.domain is domain


def _domain(devices: str, machine: str = "pc", arch: str = "x86_64") -> str:
    return (
        f"<domain type='kvm'><name>t</name><os><type arch='{arch}' machine='{machine}'>hvm"
        f"</type></os><devices>{devices}</devices></domain>"
    )


def test_domain_level_refusals() -> None:
    twice = _domain(
        "<disk><source file='/a'/><target dev='vda'/></disk>"
        "<disk><source file='/b'/><target dev='vda'/></disk>"
    )
    with pytest.raises(VirtError, match="target 'vda' duplicated"):
        parse_domain_disks(twice, active=False)
    same_drive = _domain(
        "<disk><source file='/a'/><target dev='sda' bus='scsi'/></disk>"
        "<disk><source file='/b'/><target dev='sdb' bus='scsi'/>"
        "<address type='drive' controller='0' bus='0' target='0' unit='0'/></disk>"
    )
    with pytest.raises(VirtError, match="Found duplicate drive address"):
        parse_domain_disks(same_drive, active=False)


def test_iotune_groups_are_shared() -> None:
    doc = _domain(
        "<disk><source file='/a'/><target dev='vda'/><iotune>"
        "<total_iops_sec>500</total_iops_sec><group_name>g</group_name></iotune></disk>"
        "<disk><source file='/b'/><target dev='vdb'/><iotune><group_name>g</group_name>"
        "</iotune></disk>"
    )
    disks = parse_domain_disks(doc, active=False)
    assert disks[1].iotune.total_iops_sec == 500


def test_pci_slots_on_i440fx_follow_libvirt_order() -> None:
    doc = _domain(
        "<disk><source file='/a'/><target dev='vda'/></disk>"
        "<controller type='ide' index='0'/>"
        "<interface type='user'><model type='virtio'/></interface>"
        "<video><model type='vga'/></video>"
        "<disk><source file='/b'/><target dev='vdb'/></disk>"
    )
    slots = [d.info.address.slot for d in parse_domain_disks(doc, active=False) if d.info.address]
    # slot 1 is the PIIX3, slot 2 the primary video, the NIC comes before disks
    assert slots == [4, 5]


def test_q35_virtio_disks_get_their_own_root_ports() -> None:
    doc = _domain(
        "<disk><source file='/a'/><target dev='vda'/></disk>"
        "<disk><source file='/b'/><target dev='vdb'/></disk>",
        machine="q35",
    )
    addresses = [d.info.address for d in parse_domain_disks(doc, active=False)]
    # the default qemu-xhci USB controller takes the first root port
    assert [(a.bus, a.slot) for a in addresses if a] == [(2, 0), (3, 0)]
    # without virtio 1.0 support they are conventional PCI devices: behind a
    # dmi-to-pci-bridge (bus 1) and a pci-bridge (bus 2)
    legacy = parse_domain_disks(doc, active=False, features=LEGACY)
    assert [(a.bus, a.slot) for d in legacy if (a := d.info.address)] == [(2, 1), (2, 2)]


def test_s390_disks_get_ccw_numbers() -> None:
    doc = _domain(
        "<disk><source file='/a'/><target dev='vda'/></disk>"
        "<disk><source file='/b'/><target dev='vdb'/>"
        "<address type='ccw' cssid='0xfe' ssid='0x0' devno='0x0000'/></disk>",
        machine="s390-ccw-virtio",
        arch="s390x",
    )
    first, second = parse_domain_disks(doc, active=False)
    assert first.info.address is not None and first.info.address.type is AddressType.CCW
    assert first.info.address.devno == 1 and second.info.address is not None


def test_disk_elements_of_a_domain() -> None:
    doc = _domain("<disk><target dev='vda'/></disk><controller type='usb'/>")
    assert [e.tag for e in domain_disk_elements(doc)] == ["disk"]


@pytest.mark.parametrize("target", ["sda²", "vda\u0661"])
def test_non_ascii_digits_in_a_target_are_refused_not_crashed(target: str) -> None:
    doc = f"<disk type='file' device='disk'><source file='/a'/><target dev='{target}'/></disk>"
    with pytest.raises(VirtError) as info:
        parse_qemu_disk(doc, active=False)
    assert target in str(info.value)


@pytest.mark.parametrize(
    ("index", "code"),
    [("4000", ErrorCode.CONFIG_UNSUPPORTED), ("9" * 31, ErrorCode.XML_ERROR)],
)
def test_pci_controller_index_bounded_as_libvirt_bounds_it(index: str, code: ErrorCode) -> None:
    doc = (
        "<domain type='kvm'><os><type arch='x86_64' machine='pc-q35-7.0'>hvm</type></os>"
        "<devices><disk type='file' device='disk'><source file='/a'/>"
        "<target dev='vda' bus='virtio'/></disk>"
        f"<controller type='pci' index='{index}' model='pcie-root-port'/></devices></domain>"
    )
    with pytest.raises(VirtError) as info:
        parse_domain_disks(doc, active=False)
    assert info.value.code is code


def test_thousands_of_controllers_each_get_a_slot() -> None:
    # 300 SCSI controllers on a q35 machine: each needs a pcie-root-port of its own
    controllers = "".join(f"<controller type='scsi' index='{i}'/>" for i in range(300))
    doc = (
        "<domain type='kvm'><os><type arch='x86_64' machine='pc-q35-7.0'>hvm</type></os>"
        "<devices><disk type='file' device='disk'><source file='/a'/>"
        f"<target dev='vda' bus='virtio'/></disk>{controllers}</devices></domain>"
    )
    [disk] = parse_domain_disks(doc, active=False)
    assert disk.info.address is not None and disk.info.address.type is AddressType.PCI
