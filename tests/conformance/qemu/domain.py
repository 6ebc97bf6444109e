"""The disks of a whole domain document as libvirt's QEMU driver holds them: the
post-parse steps that look at the other disks and devices (throttle groups,
SCSI host device conflicts, addresses assigned by the QEMU driver) and the
checks across disks (domain_validate.c duplicate targets and drive addresses)."""

from __future__ import annotations

from lxml import etree

from agents.qemu.disk_postparse import parse_qemu_disk, validate_disk_for_qemu
from shared.conf.disk_address import AddressType, DeviceAddress, parse_address
from shared.conf.disk_domain import domain_disk_elements, domain_root
from shared.conf.disk_model import DiskBus, DiskDef
from shared.conf.xmlprops import every, first, prop
from shared.util.errors import ErrorDomain, config_unsupported, xml_error
from tests.conformance.qemu.pci import assign_disk_addresses
from tests.conformance.qemu.pci_devices import LATEST, QemuFeatures


def scsi_hostdev_addresses(domain: etree._Element) -> list[DeviceAddress]:
    """The drive addresses of the domain's SCSI host devices."""
    devices = first(domain, "devices")
    out: list[DeviceAddress] = []
    for hostdev in every(devices, "hostdev") if devices is not None else []:
        if prop(hostdev, "type") != "scsi":
            continue
        address = first(hostdev, "address")
        if address is not None and prop(address, "type") == "drive":
            out.append(parse_address(address))
    return out


def _same_drive(a: DeviceAddress, b: DeviceAddress) -> bool:
    return (a.controller, a.bus, a.target, a.unit) == (b.controller, b.bus, b.target, b.unit)


def expand_iotune_groups(disks: list[DiskDef]) -> list[DiskDef]:
    """A disk naming a throttle group but no limits takes the limits of the first
    disk of that group that has some (virDomainDiskExpandGroupIoTune)."""
    out: list[DiskDef] = []
    for disk in disks:
        group = disk.iotune.group_name
        if group is not None and not disk.iotune.has_any():
            for other in disks:
                if other.iotune.group_name == group and other.iotune.has_any():
                    disk = disk.model_copy(update={"iotune": other.iotune})
                    break
        out.append(disk)
    return out


def validate_domain_disks(
    disks: list[DiskDef], *, scsi_hostdevs: list[DeviceAddress] | None = None
) -> None:
    """Refuse what libvirt refuses across the disks of one domain: a target used
    twice, two disks of one bus at one drive address, a disk at the drive address
    of a SCSI host device, different limits within one throttle group."""
    for i, a in enumerate(disks):
        for b in disks[i + 1 :]:
            if a.target.dev == b.target.dev:
                raise xml_error(
                    f"target '{a.target.dev}' duplicated for disk sources "
                    f"'{_source_name(a)}' and '{_source_name(b)}'",
                    ErrorDomain.DOMAIN,
                )
    for i, a in enumerate(disks):
        addr_a = a.info.address
        if addr_a is None or addr_a.type is not AddressType.DRIVE:
            continue
        for b in disks[i + 1 :]:
            addr_b = b.info.address
            if a.target.bus is not b.target.bus or addr_b is None:
                continue
            if addr_b.type is AddressType.DRIVE and _same_drive(addr_a, addr_b):
                raise config_unsupported(
                    f"Found duplicate drive address for disk with target name "
                    f"'{a.target.dev}' controller='{addr_a.controller}' bus='{addr_a.bus}' "
                    f"target='{addr_a.target}' unit='{addr_a.unit}'",
                    ErrorDomain.DOMAIN,
                )
    for hostdev in scsi_hostdevs or []:
        for disk in disks:
            address = disk.info.address
            if (
                disk.target.bus is DiskBus.SCSI
                and address is not None
                and address.type is AddressType.DRIVE
                and _same_drive(address, hostdev)
            ):
                raise config_unsupported(
                    f"using disk target name '{disk.target.dev}' conflicts with SCSI host "
                    f"device address controller='{address.controller}' bus='{address.bus}' "
                    f"target='{address.target}' unit='{address.unit}",
                    ErrorDomain.DOMAIN,
                )
    for disk in disks:
        group = disk.iotune.group_name
        if group is None:
            continue
        if not disk.iotune.has_any():
            raise config_unsupported(
                "group_name can be configured only together with settings", ErrorDomain.DOMAIN
            )
        for other in disks:
            if other is disk or other.iotune.group_name != group:
                continue
            if other.iotune.limits() != disk.iotune.limits():
                raise config_unsupported(
                    f"different iotunes for disks {disk.target.dev} and {other.target.dev}",
                    ErrorDomain.DOMAIN,
                )


def _source_name(disk: DiskDef) -> str:
    src = disk.source
    if src.path is not None:
        return src.path
    if src.network is not None and src.network.name is not None:
        return src.network.name
    if src.pool is not None and src.pool.volume is not None:
        return src.pool.volume
    return "<null>"


def parse_domain_disks(
    domain: str | bytes | etree._Element,
    *,
    active: bool,
    features: QemuFeatures = LATEST,
) -> list[DiskDef]:
    """Every disk of a domain document as libvirt's QEMU driver holds it after
    parsing: each disk parsed and post-parsed, throttle groups expanded, device
    addresses assigned (for a QEMU with ``features``), then the checks across
    disks.  Raises ``VirtError``."""
    root = domain_root(domain)
    disks = [parse_qemu_disk(node, active=active) for node in domain_disk_elements(root)]
    for disk in disks:
        validate_disk_for_qemu(disk, rbd_encryption=features.rbd_encryption)
    disks = expand_iotune_groups(disks)
    validate_domain_disks(disks, scsi_hostdevs=scsi_hostdev_addresses(root))
    return assign_disk_addresses(root, disks, features)
