"""What libvirt and its QEMU driver do to one disk after parsing, for the agent's
view of its domains' disks: defaults
(domain_postparse.c virDomainDiskDefPostParse, qemu_domain.c
qemuDomainDeviceDiskDefPostParse, virDomainDiskDefAssignAddress) and per-disk
checks (domain_validate.c virDomainDiskDefValidate, qemu_validate.c
qemuValidateDomainDeviceDefDisk, qemu_domain.c qemuDomainValidateStorageSource).

Checks that depend on the QEMU binary's capabilities assume a current QEMU
(libvirt's ``x86_64-latest``), which supports every disk feature checked here.
"""

from __future__ import annotations

import re

from lxml import etree

from shared.conf.disk import parse_disk
from shared.conf.disk_address import AddressType, DeviceAddress
from shared.conf.disk_mirror import DiskMirror
from shared.conf.disk_model import (
    DiskBus,
    DiskDef,
    DiskDevice,
    DiskModel,
    Sgio,
    SnapshotLocation,
    StartupPolicy,
    Tray,
)
from shared.conf.disk_source import StorageFormat, StorageSource, StorageType
from shared.conf.disk_source_net import HostTransport, NetProtocol
from shared.conf.encryption import EncryptionEngine, EncryptionFormat
from shared.util.errors import ErrorCode, ErrorDomain, VirtError, config_unsupported, xml_error

# --- target names ------------------------------------------------------------------

_PREFIXES = ("fd", "hd", "vd", "sd", "xvd", "ubd")


def disk_name_parse(name: str) -> tuple[int, int] | None:
    """virDiskNameParse: (disk index, partition) of names like ``sda``, ``vdab2``;
    None for names libvirt cannot map (``sdaa`` is 26, ``hdz`` 25)."""
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            rest = name[len(prefix) :]
            break
    else:
        return None
    letters = re.match(r"[a-z]*", rest)
    assert letters is not None
    word, digits = letters.group(0), rest[letters.end() :]
    if not word or (digits and not (digits.isascii() and digits.isdigit())):
        return None
    index = 0
    for position, letter in enumerate(word):
        index = (index + (1 if position else 0)) * 26 + ord(letter) - ord("a")
    if len(digits) > 1 and digits[0] == "0":
        return (index, -1)
    return index, int(digits) if digits else 0


def disk_name_to_index(name: str) -> int | None:
    """virDiskNameToIndex: the disk index of a target name, None when unparsable."""
    parsed = disk_name_parse(name)
    return parsed[0] if parsed is not None else None


# --- post-parse ------------------------------------------------------------------

#: Per bus, libvirt's default drive-address mapping from the target index:
#: (units per bus, buses per controller).  Other buses are not controller based.
DRIVE_LAYOUT: dict[DiskBus, tuple[int, int]] = {
    DiskBus.IDE: (2, 2),
    DiskBus.SATA: (6, 1),
    DiskBus.FDC: (2, 1),
    DiskBus.SCSI: (7, 1),  # narrow SCSI bus, as the QEMU driver uses
}

_BUS_BY_PREFIX = (
    ("hd", DiskBus.IDE),
    ("sd", DiskBus.SCSI),
    ("vd", DiskBus.VIRTIO),
    ("xvd", DiskBus.XEN),
    ("ubd", DiskBus.UML),
)


def default_bus(disk: DiskDef) -> DiskBus:
    """The bus libvirt picks when ``<target>`` names none."""
    if disk.device is DiskDevice.FLOPPY:
        return DiskBus.FDC
    dst = disk.target.dev or ""
    for prefix, bus in _BUS_BY_PREFIX:
        if dst.startswith(prefix):
            return bus
    return DiskBus.IDE


def drive_address(dst: str, bus: DiskBus) -> DeviceAddress | None:
    """The ``<address type='drive'>`` libvirt derives from the target name, or None
    for buses that have no drive address.  Raises for an unmappable name."""
    index = disk_name_to_index(dst)
    if index is None:
        raise xml_error(f"Unknown disk name '{dst}' and no address specified", ErrorDomain.DOMAIN)
    layout = DRIVE_LAYOUT.get(bus)
    if layout is None:
        return None
    units, buses = layout
    per_controller = units * buses
    return DeviceAddress(
        type=AddressType.DRIVE,
        controller=index // per_controller,
        bus=(index % per_controller) // units,
        unit=index % units,
    )


def _default_chain_engine(src: StorageSource) -> StorageSource:
    """The QEMU driver's default encryption engine, down the backing chain."""
    update: dict[str, object] = {}
    if src.encryption is not None and src.encryption.engine is None:
        update["encryption"] = src.encryption.model_copy(update={"engine": EncryptionEngine.QEMU})
    if src.backing_store is not None and not src.backing_store.is_terminator:
        update["backing_store"] = _default_chain_engine(src.backing_store)
    return src.model_copy(update=update) if update else src


def postparse_disk(disk: DiskDef) -> DiskDef:
    """``disk`` with the defaults libvirt's generic and QEMU post-parse fill in."""
    target = disk.target
    if target.dev is not None and target.dev.startswith("ioemu:"):
        target = target.model_copy(update={"dev": target.dev[len("ioemu:") :]})
        disk = disk.model_copy(update={"target": target})
    update: dict[str, object] = {}
    readonly = disk.readonly or disk.device is DiskDevice.CDROM
    update["readonly"] = readonly
    if target.bus is DiskBus.NONE:
        target = target.model_copy(update={"bus": default_bus(disk)})
        update["target"] = target
    snapshot = disk.snapshot
    if snapshot is None and readonly:
        snapshot = SnapshotLocation.NO
    src = disk.source
    if src.type is StorageType.NETWORK and src.network is not None:
        net = src.network
        if net.protocol is NetProtocol.ISCSI and net.path is not None and "/" not in net.path:
            src = src.model_copy(
                update={"network": net.model_copy(update={"path": net.path + "/0"})}
            )
    if src.type is StorageType.NVME and src.nvme is not None and src.nvme.managed is None:
        src = src.model_copy(update={"nvme": src.nvme.model_copy(update={"managed": True})})
    if src.type is StorageType.VHOSTUSER and snapshot is None:
        snapshot = SnapshotLocation.NO
    update["snapshot"] = snapshot
    if disk.info.address is None and target.dev is not None:
        address = drive_address(target.dev, target.bus)
        if address is not None:
            update["info"] = disk.info.model_copy(update={"address": address})
    # the QEMU driver's defaults
    if disk.driver.name is None:
        update["driver"] = disk.driver.model_copy(update={"name": "qemu"})
    if src.format is None and src.type is not StorageType.VOLUME:
        src = src.model_copy(update={"format": StorageFormat.RAW})
    update["source"] = _default_chain_engine(src)
    if disk.mirror is not None and disk.mirror.source.format is None:
        mirror_src = disk.mirror.source.model_copy(update={"format": StorageFormat.RAW})
        update["mirror"] = DiskMirror(
            source=mirror_src, job=disk.mirror.job, ready=disk.mirror.ready
        )
    return disk.model_copy(update=update)


# --- validation ------------------------------------------------------------------

_AUTH_PROTOCOLS = {
    NetProtocol.ISCSI,
    NetProtocol.HTTP,
    NetProtocol.HTTPS,
    NetProtocol.FTP,
    NetProtocol.FTPS,
    NetProtocol.SSH,
    NetProtocol.RBD,
}
_SECRET_USAGES = ("none", "volume", "ceph", "iscsi", "tls", "vtpm")
_REQUIRED_USAGE = {NetProtocol.ISCSI: "iscsi", NetProtocol.RBD: "ceph"}


def _validate_chain_generic(src: StorageSource) -> None:
    net = src.network
    if src.type is StorageType.NETWORK and net is not None and src.auth is not None:
        if net.protocol not in _AUTH_PROTOCOLS and net.protocol is not NetProtocol.NONE:
            raise config_unsupported(
                f"authentication is not supported for protocol '{net.protocol.value}'",
                ErrorDomain.DOMAIN,
            )
        usage = src.auth.secret_type
        if usage not in _SECRET_USAGES:
            raise config_unsupported(
                f"unknown secret type '{usage or '<null>'}'", ErrorDomain.DOMAIN
            )
        required = _REQUIRED_USAGE.get(net.protocol)
        if required is not None and usage != required:
            raise config_unsupported(f"invalid secret type '{usage}'", ErrorDomain.DOMAIN)
    enc = src.encryption
    if enc is not None and enc.format is EncryptionFormat.LUKS and enc.cipher is not None:
        raise config_unsupported(
            "supplying <cipher> for domain disk definition is unnecessary", ErrorDomain.DOMAIN
        )
    # <snapshot>/<config> exist only in the network model here, so libvirt's
    # "only with rbd" refusal for other source types cannot arise.


def _validate_chain_qemu(src: StorageSource) -> None:
    fmt = src.format
    if fmt is StorageFormat.COW:
        raise config_unsupported("'cow' storage format is not supported", ErrorDomain.DOMAIN)
    if fmt is StorageFormat.DIR:
        raise config_unsupported(
            "'directory' storage format is not directly supported by QEMU, "
            "use 'dir' disk type instead",
            ErrorDomain.DOMAIN,
        )
    if fmt is StorageFormat.ISO:
        raise config_unsupported(
            "storage format 'iso' is not directly supported by QEMU, use 'raw' instead",
            ErrorDomain.DOMAIN,
        )
    if fmt is StorageFormat.FAT and src.type not in (StorageType.VOLUME, StorageType.DIR):
        raise config_unsupported(
            "storage format 'fat' is supported only with 'dir' storage type", ErrorDomain.DOMAIN
        )
    if src.type is StorageType.DIR and fmt not in (None, StorageFormat.FAT):
        raise config_unsupported(
            "storage type 'dir' requires use of storage format 'fat'", ErrorDomain.DOMAIN
        )
    net = src.network if src.type is StorageType.NETWORK else None
    protocol = net.protocol if net is not None else None
    if net is not None:
        if protocol is NetProtocol.TFTP:
            raise config_unsupported(
                "'tftp' protocol is not supported with this QEMU binary", ErrorDomain.DOMAIN
            )
        if protocol is NetProtocol.NFS:
            if len(net.hosts) != 1:
                raise config_unsupported(
                    "'nfs' protocol requires the usage of exactly one host", ErrorDomain.DOMAIN
                )
            if net.hosts[0].transport is not HostTransport.TCP:
                raise config_unsupported("'nfs' host must use TCP protocol", ErrorDomain.DOMAIN)
            if net.hosts[0].port:
                raise config_unsupported(
                    "port cannot be specified in 'nfs' protocol host", ErrorDomain.DOMAIN
                )
        if net.tls_hostname is not None and protocol is not NetProtocol.NBD:
            raise config_unsupported(
                "'tlsHostname' field is supported only with NBD disks", ErrorDomain.DOMAIN
            )
    if src.metadata_cache_max_size and fmt is not StorageFormat.QCOW2:
        raise config_unsupported(
            "metadata cache max size control is supported only with qcow2 images",
            ErrorDomain.DOMAIN,
        )
    enc = src.encryption
    if enc is not None:
        if enc.format in (EncryptionFormat.DEFAULT, EncryptionFormat.QCOW):
            raise config_unsupported(
                "old qcow/qcow2 encryption is not supported", ErrorDomain.DOMAIN
            )
        if enc.engine is EncryptionEngine.QEMU:
            if enc.format is EncryptionFormat.LUKS2:
                raise config_unsupported(
                    "luks2 is currently not supported by the qemu encryption engine",
                    ErrorDomain.DOMAIN,
                )
            if fmt not in (StorageFormat.QCOW2, StorageFormat.RAW):
                raise config_unsupported(
                    "encryption is supported only with 'raw' and 'qcow2' image format",
                    ErrorDomain.DOMAIN,
                )
        elif enc.engine is EncryptionEngine.LIBRBD and protocol is not NetProtocol.RBD:
            raise config_unsupported(
                "librbd encryption is supported only with RBD backed disks", ErrorDomain.DOMAIN
            )


def _no_target(disk: DiskDef) -> VirtError:
    src = disk.source
    if src.pool is not None and src.pool.pool is not None:
        detail = f"pool = '{src.pool.pool}', volume = '{src.pool.volume}'"
    elif src.path is not None:
        detail = src.path
    elif src.network is not None and src.network.name is not None:
        detail = src.network.name
    else:
        return VirtError(
            ErrorCode.NO_TARGET, "missing target information for device", ErrorDomain.DOMAIN
        )
    return VirtError(
        ErrorCode.NO_TARGET, f"missing target information for device {detail}", ErrorDomain.DOMAIN
    )


_VIRTIO_MODELS = {
    DiskModel.VIRTIO,
    DiskModel.VIRTIO_TRANSITIONAL,
    DiskModel.VIRTIO_NON_TRANSITIONAL,
}
_DRIVE_BUSES = {DiskBus.IDE, DiskBus.FDC, DiskBus.SCSI, DiskBus.SATA}


def _validate_generic(disk: DiskDef) -> None:
    dst = disk.target.dev
    if dst is None:
        raise _no_target(disk)
    for src in disk.source.chain():
        _validate_chain_generic(src)
    if disk.sgio is Sgio.UNFILTERED:
        raise config_unsupported("unfiltered sgio is no longer supported", ErrorDomain.DOMAIN)
    if disk.device is not DiskDevice.LUN:
        if disk.source.reservations is not None:
            raise config_unsupported(
                "<reservations/> allowed only for lun devices", ErrorDomain.DOMAIN
            )
        if disk.rawio is not None:
            raise config_unsupported("rawio can be used only with device='lun'", ErrorDomain.DOMAIN)
        if disk.sgio is not None:
            raise config_unsupported("sgio can be used only with device='lun'", ErrorDomain.DOMAIN)
    io = disk.iotune
    for kind in ("bytes_sec", "iops_sec", "bytes_sec_max", "iops_sec_max"):
        total = getattr(io, f"total_{kind}")
        if total and (getattr(io, f"read_{kind}") or getattr(io, f"write_{kind}")):
            raise xml_error(
                f"total and read/write {kind} cannot be set at the same time", ErrorDomain.DOMAIN
            )
    bus = disk.target.bus
    address_type = disk.info.address_type
    if (
        bus in _DRIVE_BUSES
        and address_type is not AddressType.NONE
        and address_type is not AddressType.DRIVE
    ):
        raise config_unsupported(
            f"Invalid address type '{address_type.value}' for the disk '{dst}' "
            f"with the bus type '{bus.value}'",
            ErrorDomain.DOMAIN,
        )
    if bus is not DiskBus.VIRTIO:
        if disk.model in _VIRTIO_MODELS:
            raise config_unsupported(
                f"disk model '{disk.model}' not supported for bus '{bus.value}'", ErrorDomain.DOMAIN
            )
        if disk.driver.queues:
            raise config_unsupported(
                "queues attribute in disk driver element is only supported by virtio-blk",
                ErrorDomain.DOMAIN,
            )
        if disk.driver.event_idx is not None:
            raise config_unsupported(
                "disk event_idx mode supported only for virtio bus", ErrorDomain.DOMAIN
            )
        if disk.driver.ioeventfd is not None:
            raise config_unsupported(
                "disk ioeventfd mode supported only for virtio bus", ErrorDomain.DOMAIN
            )
        for option in ("iommu", "ats", "packed"):
            if getattr(disk.driver, option) is not None:
                raise config_unsupported(
                    f"{option} driver option is only supported for virtio devices",
                    ErrorDomain.DOMAIN,
                )
        if disk.driver.page_per_vq is not None:
            raise config_unsupported(
                "page_per_vq option is only supported for virtio devices", ErrorDomain.DOMAIN
            )
    if disk.source.nvme is not None and disk.source.nvme.namespace == 0:
        raise config_unsupported("NVMe namespace can't be zero", ErrorDomain.DOMAIN)
    if disk.target.tray is not Tray.CLOSED and disk.device not in (
        DiskDevice.FLOPPY,
        DiskDevice.CDROM,
    ):
        raise config_unsupported("tray is only valid for cdrom and floppy", ErrorDomain.DOMAIN)
    for what, value, limit in (("vendor", disk.vendor, 8), ("product", disk.product, 16)):
        if value is None:
            continue
        if not value.isprintable() or not value.isascii():
            raise xml_error(f"disk {what} is not printable string", ErrorDomain.DOMAIN)
        if len(value) > limit:
            raise config_unsupported(
                f"disk {what} is more than {limit} characters", ErrorDomain.DOMAIN
            )
    if disk.device is DiskDevice.FLOPPY and bus is not DiskBus.FDC:
        raise VirtError(
            ErrorCode.INTERNAL_ERROR,
            f"Invalid bus type '{bus.value}' for floppy disk",
            ErrorDomain.DOMAIN,
        )
    if disk.device is not DiskDevice.FLOPPY and bus is DiskBus.FDC:
        raise VirtError(
            ErrorCode.INTERNAL_ERROR, f"Invalid bus type '{bus.value}' for disk", ErrorDomain.DOMAIN
        )
    if disk.target.removable is not None and bus is not DiskBus.USB:
        raise xml_error("removable is only valid for usb disks", ErrorDomain.DOMAIN)
    _validate_startup_policy(disk)
    if disk.device in (DiskDevice.DISK, DiskDevice.LUN) and not dst.startswith(_PREFIXES[1:]):
        raise VirtError(
            ErrorCode.INTERNAL_ERROR, f"Invalid harddisk device name: {dst}", ErrorDomain.DOMAIN
        )
    if disk.device is DiskDevice.FLOPPY and not dst.startswith("fd"):
        raise VirtError(
            ErrorCode.INTERNAL_ERROR, f"Invalid floppy device name: {dst}", ErrorDomain.DOMAIN
        )
    if disk.source.is_empty and disk.device is DiskDevice.DISK:
        raise VirtError(ErrorCode.NO_SOURCE, dst, ErrorDomain.DOMAIN)


def _validate_startup_policy(disk: DiskDef) -> None:
    policy = disk.startup_policy
    if policy is None:
        return
    if disk.source.type is not StorageType.VOLUME and not disk.source.is_local:
        raise xml_error(
            f"disk startupPolicy '{policy.value}' is not allowed for disk of "
            f"'{disk.source.type.value}' type",
            ErrorDomain.DOMAIN,
        )
    if policy is StartupPolicy.REQUISITE and disk.device not in (
        DiskDevice.CDROM,
        DiskDevice.FLOPPY,
    ):
        raise xml_error(
            "disk startupPolicy 'requisite' is allowed only for cdrom or floppy", ErrorDomain.DOMAIN
        )


def _validate_qemu(disk: DiskDef) -> None:
    dst = disk.target.dev or ""
    bus = disk.target.bus
    if disk.device is DiskDevice.CDROM and bus in (DiskBus.VIRTIO, DiskBus.SD):
        raise config_unsupported(
            f"disk type of '{dst}' does not support ejectable media", ErrorDomain.DOMAIN
        )
    if disk.wwn and bus not in (DiskBus.IDE, DiskBus.SCSI):
        raise config_unsupported("Only ide and scsi disk support wwn", ErrorDomain.DOMAIN)
    if (disk.vendor or disk.product) and bus is not DiskBus.SCSI:
        raise config_unsupported("Only scsi disk supports vendor and product", ErrorDomain.DOMAIN)
    if disk.device is DiskDevice.LUN and bus not in (DiskBus.VIRTIO, DiskBus.SCSI):
        raise config_unsupported(
            f"disk device='lun' is not supported for bus='{bus.value}'", ErrorDomain.DOMAIN
        )
    address_type = disk.info.address_type
    if bus in _DRIVE_BUSES and address_type is not AddressType.DRIVE:
        raise VirtError(
            ErrorCode.INTERNAL_ERROR,
            f"unexpected address type for {bus.value} disk",
            ErrorDomain.DOMAIN,
        )
    if disk.readonly and disk.device is DiskDevice.DISK and bus in (DiskBus.IDE, DiskBus.SATA):
        raise config_unsupported(
            f"readonly {bus.value} disks are not supported", ErrorDomain.DOMAIN
        )
    if disk.transient and disk.readonly:
        raise config_unsupported(
            f"transient disk '{dst}' must not be read-only", ErrorDomain.DOMAIN
        )
    if disk.shareable and not disk.readonly and disk.source.format is not StorageFormat.RAW:
        raise config_unsupported(
            f"shared access for disk '{dst}' requires use of supported storage format",
            ErrorDomain.DOMAIN,
        )
    if disk.driver.name is not None and disk.driver.name != "qemu":
        raise config_unsupported(
            f"unsupported driver name '{disk.driver.name}' for disk '{dst}'", ErrorDomain.DOMAIN
        )
    parsed = disk_name_parse(dst)
    if parsed is None or parsed[1] < 0:
        raise config_unsupported(f"invalid disk target '{dst}'", ErrorDomain.DOMAIN)
    if parsed[1] != 0:
        raise config_unsupported(
            f"invalid disk target '{dst}', partitions can't appear in disk targets",
            ErrorDomain.DOMAIN,
        )
    for src in disk.source.chain():
        _validate_chain_qemu(src)


def validate_disk(disk: DiskDef) -> None:
    """Refuse ``disk`` as libvirt's per-disk checks do (generic, then QEMU)."""
    _validate_generic(disk)
    _validate_qemu(disk)


def validate_disk_for_qemu(disk: DiskDef, *, rbd_encryption: bool) -> None:
    """The per-disk checks that depend on the QEMU binary's capabilities."""
    for src in disk.source.chain():
        enc = src.encryption
        if enc is not None and enc.engine is EncryptionEngine.LIBRBD and not rbd_encryption:
            raise config_unsupported(
                "librbd encryption is not supported by this QEMU binary", ErrorDomain.DOMAIN
            )


def parse_qemu_disk(xml: str | bytes | etree._Element, *, active: bool) -> DiskDef:
    """One ``<disk>`` parsed, with what the QEMU driver fills in (driver name and
    format, bus, drive address...), having passed libvirt's per-disk checks.
    Raises ``VirtError`` as libvirt refuses."""
    disk = postparse_disk(parse_disk(xml, active=active))
    validate_disk(disk)
    return disk
