"""What the QEMU driver's PCI address assignment needs to know about a whole domain:
its machine, its PCI controllers and every device that holds or wants a PCI slot,
with the connection type it needs (qemu_domain_address.c
qemuDomainDeviceCalculatePCIConnectFlags, the implicit devices of
qemuDomainDefAddDefaultDevices and virDomainDefAddImplicitDevices).

Long because it is one table-like pass over every device type libvirt can put
on PCI; splitting it per device type would scatter that table.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from lxml import etree

from shared.conf.disk_address import AddressType, DeviceAddress, parse_address
from shared.conf.disk_model import DiskBus, DiskDef, DiskModel
from shared.conf.storage_pool_util import prop_int
from shared.conf.xmlprops import first, prop
from shared.util.errors import ErrorDomain, VirtError, config_unsupported

# libvirt's virDomainPCIConnectFlags bits.
HOTPLUGGABLE = 1 << 0
AUTOASSIGN = 1 << 1
PCI_DEVICE = 1 << 2
PCIE_DEVICE = 1 << 3
PCIE_ROOT_PORT = 1 << 4
PCIE_SWITCH_UP = 1 << 5
PCIE_SWITCH_DOWN = 1 << 6
DMI_TO_PCI_BRIDGE = 1 << 7
PCIE_EXPANDER_BUS = 1 << 8
PCI_EXPANDER_BUS = 1 << 9
PCI_BRIDGE = 1 << 10
PCIE_TO_PCI_BRIDGE = 1 << 11
INTEGRATED = 1 << 12
AGGREGATE_SLOT = 1 << 13
TYPES_MASK = (
    PCI_DEVICE
    | PCIE_DEVICE
    | PCIE_ROOT_PORT
    | PCIE_SWITCH_UP
    | PCIE_SWITCH_DOWN
    | DMI_TO_PCI_BRIDGE
    | PCIE_EXPANDER_BUS
    | PCI_EXPANDER_BUS
    | PCI_BRIDGE
    | PCIE_TO_PCI_BRIDGE
)
ENDPOINT = PCI_DEVICE | PCIE_DEVICE

#: What each PCI controller model is, as a device plugged into its parent bus.
CONTROLLER_CONNECT: dict[str, int] = {
    "pci-root": 0,
    "pcie-root": 0,
    "pci-bridge": PCI_BRIDGE,
    "pci-expander-bus": PCI_EXPANDER_BUS,
    "pcie-expander-bus": PCIE_EXPANDER_BUS,
    "dmi-to-pci-bridge": DMI_TO_PCI_BRIDGE,
    "pcie-to-pci-bridge": PCIE_TO_PCI_BRIDGE,
    "pcie-root-port": PCIE_ROOT_PORT | AGGREGATE_SLOT,
    "pcie-switch-upstream-port": PCIE_SWITCH_UP,
    "pcie-switch-downstream-port": PCIE_SWITCH_DOWN,
}


class Machine(enum.Enum):
    """The machine families whose address assignment differs."""

    I440FX = "i440fx"
    Q35 = "q35"
    ARM_VIRT = "arm-virt"
    RISCV_VIRT = "riscv-virt"
    PSERIES = "pseries"
    S390_CCW = "s390-ccw"
    OTHER = "other"


@dataclass(frozen=True)
class QemuFeatures:
    """The few QEMU capabilities that change where devices land.

    ``LATEST`` is a current QEMU (libvirt's ``*-latest`` capability sets);
    ``LEGACY`` is libvirt's test suite's minimal capability set."""

    gpex: bool = True  # a pcie-root on ARM and RISC-V virt machines
    virtio_transitional: bool = True  # virtio devices are PCIe on PCIe machines
    qemu_xhci: bool = True  # q35's default USB controller
    lsi_scsi: bool = True
    virtio_mmio: bool = True
    pcie_to_pci_bridge: bool = True

    pcie_root_port: bool = True
    rbd_encryption: bool = True  # librbd encryption engine (QEMU 6.1 and later)

    @classmethod
    def for_caps(cls, caps: str) -> QemuFeatures:
        """The features of a libvirt capability set name: ``<arch>-latest`` or
        ``<arch>-<qemu version>``."""
        version = caps.rsplit("-", 1)[-1]
        if version == "latest":
            return LATEST
        parts = tuple(int(p) for p in version.split(".") if p.isdigit())
        return cls(rbd_encryption=parts >= (6, 1))

    @classmethod
    def from_flags(cls, flags: list[str] | tuple[str, ...]) -> QemuFeatures:
        """The legacy set plus libvirt capability flags (``QEMU_CAPS_*`` names)."""
        have = set(flags)
        return cls(
            gpex="QEMU_CAPS_OBJECT_GPEX" in have,
            virtio_transitional="QEMU_CAPS_VIRTIO_PCI_TRANSITIONAL" in have,
            qemu_xhci="QEMU_CAPS_DEVICE_QEMU_XHCI" in have,
            lsi_scsi="QEMU_CAPS_SCSI_LSI" in have,
            virtio_mmio=True,
            pcie_to_pci_bridge="QEMU_CAPS_DEVICE_PCIE_PCI_BRIDGE" in have,
            rbd_encryption="QEMU_CAPS_RBD_ENCRYPTION" in have,
            pcie_root_port=bool(
                have & {"QEMU_CAPS_DEVICE_PCIE_ROOT_PORT", "QEMU_CAPS_DEVICE_IOH3420"}
            ),
        )


LATEST = QemuFeatures()
LEGACY = QemuFeatures.from_flags(())


def machine_family(arch: str, machine: str) -> Machine:
    """qemuDomainMachineIs*: the family of an arch/machine pair."""
    if arch in ("i686", "x86_64"):
        if machine == "q35" or machine.startswith("pc-q35-"):
            return Machine.Q35
        if machine == "pc" or machine.startswith(("pc-0.", "pc-1.", "pc-i440fx-", "rhel")):
            return Machine.I440FX
    virt = machine == "virt" or machine.startswith("virt-")
    if arch in ("armv6l", "armv7l", "aarch64") and virt:
        return Machine.ARM_VIRT
    if arch.startswith("riscv") and virt:
        return Machine.RISCV_VIRT
    if arch in ("ppc64", "ppc64le") and (machine == "pseries" or machine.startswith("pseries-")):
        return Machine.PSERIES
    if arch.startswith("s390") and machine.startswith("s390-ccw"):
        return Machine.S390_CCW
    return Machine.OTHER


@dataclass
class PciDevice:
    """One device as the assignment sees it.  ``address`` is its PCI address once
    known; ``wanted`` says it has none yet and should get one."""

    category: str
    flags: int
    address: DeviceAddress | None = None
    wanted: bool = False
    other_address: bool = False
    ctl_type: str | None = None
    ctl_index: int = -1
    ctl_model: str | None = None
    disk_number: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class DomainPci:
    """The domain as PCI address assignment sees it."""

    arch: str
    machine: str
    family: Machine
    features: QemuFeatures
    has_pcie_root: bool
    devices: list[PciDevice]
    pci_controllers: dict[int, str]
    primary_video: PciDevice | None


_VIRTIO_TRANSITIONAL = "virtio-transitional"


def _address_state(node: etree._Element | None) -> tuple[DeviceAddress | None, bool, bool]:
    """(PCI address, wanted, has a non-PCI address) of a device's <address> child."""
    if node is None:
        return None, True, False
    try:
        addr = parse_address(node)
    except VirtError:
        # another device's unusable address: libvirt refuses it elsewhere
        return None, False, True
    if addr.type is AddressType.PCI:
        if addr.pci_empty:
            return None, True, False
        return addr, False, False
    return None, False, True


def _device(category: str, flags: int, node: etree._Element | None) -> PciDevice:
    address, wanted, other = _address_state(first(node, "address") if node is not None else None)
    return PciDevice(category, flags, address, wanted, other)


def _model_type(node: etree._Element) -> str | None:
    model = first(node, "model")
    return prop(model, "type") if model is not None else None


class _Flags:
    """The pci / pcie / virtio connect flags of one domain."""

    def __init__(self, pcie_root: bool, features: QemuFeatures) -> None:
        self.pci = PCI_DEVICE | AUTOASSIGN
        self.pcie = (PCIE_DEVICE if pcie_root else PCI_DEVICE) | AUTOASSIGN
        self.virtio = self.pcie if features.virtio_transitional else self.pci

    def virtio_model(self, model: str | None) -> int:
        return self.pci if model == _VIRTIO_TRANSITIONAL else self.virtio


_PCI_NET_MODELS = {
    "rtl8139",
    "e1000",
    "netfront",
    "spapr-vlan",
    "lan9118",
    "smc91c111",
    "vlance",
    "vmxnet",
    "vmxnet2",
    "vmxnet3",
    "am79c970a",
    "am79c973",
    "82540em",
    "82545em",
    "82543gc",
}


def _net_flags(node: etree._Element, f: _Flags, family: Machine) -> int:
    if prop(node, "type") == "hostdev":
        return 0
    model = _model_type(node)
    if model is None:
        model = (
            "virtio"
            if family in (Machine.S390_CCW, Machine.ARM_VIRT, Machine.RISCV_VIRT)
            else "rtl8139"
        )
    if model == "usb-net":
        return 0
    if model in ("virtio", "virtio-non-transitional"):
        return f.virtio
    if model == _VIRTIO_TRANSITIONAL:
        return f.pci
    if model == "e1000e":
        return f.pcie
    if model.lower() in _PCI_NET_MODELS:
        return f.pci
    return f.pcie


def _controller_flags(ctype: str, model: str | None, f: _Flags) -> int:
    if ctype == "pci":
        return CONTROLLER_CONNECT.get(model or "", 0)
    if ctype in ("sata", "ide"):
        return f.pci
    if ctype == "usb":
        if model in ("nec-xhci", "qemu-xhci"):
            return f.pcie
        if model in ("none", "qusb1", "qusb2"):
            return 0
        return f.pci
    if ctype == "scsi":
        if model in (None, "ncr53c90"):
            return 0
        if model in ("virtio-scsi", "virtio-non-transitional"):
            return f.virtio
        return f.pci
    if ctype == "virtio-serial":
        return f.virtio_model(model)
    return 0


_SOUND_PCI = {"es1370", "ac97", "ich6", "ich9"}
_VIDEO_PCI = {"vga", "cirrus", "vmvga", "xen", "vbox", "qxl", "parallels"}


def _simple_device(tag: str, node: etree._Element, f: _Flags, family: Machine) -> PciDevice | None:
    """Devices other than controllers and disks; None for those never on PCI."""
    if tag == "filesystem":
        driver = first(node, "driver")
        kind = prop(driver, "type") if driver is not None else None
        if kind in ("loop", "nbd", "ploop"):
            return _device("fs", 0, node)
        return _device("fs", f.virtio_model(prop(node, "model")), node)
    if tag == "interface":
        return _device("net", _net_flags(node, f, family), node)
    if tag == "sound":
        model = prop(node, "model")
        dev = _device("sound", f.pci if model in _SOUND_PCI else 0, node)
        dev.extra["model"] = model or ""
        return dev
    if tag == "hostdev":
        source_type = prop(node, "type")
        subsystem = prop(node, "mode") in (None, "subsystem")
        if not subsystem or source_type not in ("pci", "scsi_host", "mdev"):
            return _device("hostdev", 0, node)
        if source_type == "scsi_host":
            return _device("hostdev", f.virtio_model(prop(node, "model")), node)
        return _device("hostdev", f.pcie, node)
    if tag == "memballoon":
        model = prop(node, "model")
        if model in ("virtio", "virtio-non-transitional"):
            return _device("memballoon", f.virtio, node)
        if model == _VIRTIO_TRANSITIONAL:
            return _device("memballoon", f.pci, node)
        return _device("memballoon", 0, node)
    if tag == "rng":
        return _device("rng", f.virtio_model(prop(node, "model")), node)
    if tag == "watchdog":
        return _device("watchdog", f.pci if prop(node, "model") == "i6300esb" else 0, node)
    if tag == "video":
        kind = _model_type(node) or _default_video(family)
        flags = f.virtio if kind == "virtio" else f.pci if kind in _VIDEO_PCI else 0
        if kind == "bochs":
            flags = f.pcie
        dev = _device("video", flags, node)
        dev.extra["type"] = kind
        return dev
    if tag == "shmem":
        return _device("shmem", f.pci, node)
    if tag == "input":
        return _device(
            "input",
            f.virtio_model(prop(node, "model")) if prop(node, "bus") == "virtio" else 0,
            node,
        )
    if tag == "serial":
        target = first(node, "target")
        pci = target is not None and prop(target, "type") == "pci-serial"
        return _device("serial", f.pci if pci else 0, node)
    if tag == "iommu":
        return _device(
            "iommu", f.virtio | INTEGRATED if prop(node, "model") == "virtio" else 0, node
        )
    if tag == "vsock":
        model = prop(node, "model")
        return _device("vsock", f.pci if model == _VIRTIO_TRANSITIONAL else f.virtio, node)
    if tag == "memory":
        model = prop(node, "model")
        return _device("memory", f.virtio if model in ("virtio-pmem", "virtio-mem") else 0, node)
    return None


def _spapr_vio(tag: str, node: etree._Element) -> bool:
    if tag == "interface":
        return _model_type(node) == "spapr-vlan"
    return False


def _default_video(family: Machine) -> str:
    if family is Machine.PSERIES:
        return "vga"
    if family in (Machine.ARM_VIRT, Machine.RISCV_VIRT, Machine.S390_CCW):
        return "virtio"
    return "cirrus"


def read_domain(domain: etree._Element, disks: list[DiskDef], features: QemuFeatures) -> DomainPci:
    """Gather what PCI assignment needs from ``domain`` and its parsed ``disks``."""
    os_node = first(domain, "os")
    os_type = first(os_node, "type") if os_node is not None else None
    arch = (prop(os_type, "arch") if os_type is not None else None) or "x86_64"
    machine = prop(os_type, "machine") if os_type is not None else None
    family = machine_family(arch, machine or "")
    if (machine is None and arch in ("aarch64", "armv7l")) or (
        machine is None and arch.startswith("riscv")
    ):
        family = machine_family(arch, "virt")
    devices_node = first(domain, "devices")
    nodes = list(devices_node) if devices_node is not None else []
    controllers = _controllers(nodes, disks, family, features)
    pcie_root = any(c.ctl_type == "pci" and c.ctl_model == "pcie-root" for c in controllers)
    f = _Flags(pcie_root, features)
    for ctl in controllers:
        ctl.flags = _controller_flags(ctl.ctl_type or "", ctl.ctl_model, f)
    devices: list[PciDevice] = list(controllers)
    for number, disk in enumerate(disks):
        flags = 0
        if disk.target.bus is DiskBus.VIRTIO:
            flags = f.pci if disk.model is DiskModel.VIRTIO_TRANSITIONAL else f.virtio
        address = disk.info.address
        dev = PciDevice("disk", flags, disk_number=number)
        if address is None or (address.type is AddressType.PCI and address.pci_empty):
            dev.wanted = True
        elif address.type is AddressType.PCI:
            dev.address = address
        else:
            dev.other_address = True
        devices.append(dev)
    has_video = False
    has_balloon = False
    for node in nodes:
        tag = str(node.tag)
        other = _simple_device(tag, node, f, family)
        if other is None:
            continue
        if family is Machine.PSERIES and _spapr_vio(tag, node):
            # qemuDomainAssignSpaprVIOAddresses gives these spapr-vio addresses first
            other.wanted = False
        has_video = has_video or tag == "video"
        has_balloon = has_balloon or tag == "memballoon"
        devices.append(other)
    graphics = any(n.tag == "graphics" for n in nodes)
    if graphics and not has_video:
        kind = _default_video(family)
        flags = f.virtio if kind == "virtio" else f.pci
        devices.append(PciDevice("video", flags, wanted=True, extra={"type": kind}))
    if not has_balloon and family not in (Machine.ARM_VIRT, Machine.RISCV_VIRT, Machine.OTHER):
        devices.append(PciDevice("memballoon", f.virtio, wanted=True))
    videos = [d for d in devices if d.category == "video"]
    primary = videos[0] if videos and videos[0].extra.get("type") not in ("none", "ramfb") else None
    if family is Machine.PSERIES:
        for ctl in controllers:
            if ctl.ctl_type == "scsi" and ctl.ctl_model == "ibmvscsi":
                ctl.wanted = False
    pci_controllers = {c.ctl_index: c.ctl_model or "" for c in controllers if c.ctl_type == "pci"}
    return DomainPci(
        arch=arch,
        machine=machine or "",
        family=family,
        features=features,
        has_pcie_root=pcie_root,
        devices=devices,
        pci_controllers=pci_controllers,
        primary_video=primary,
    )


def _controllers(
    nodes: list[etree._Element], disks: list[DiskDef], family: Machine, features: QemuFeatures
) -> list[PciDevice]:
    """The domain's controllers in libvirt's list order (grouped by type in order
    of first appearance, by index within a type), implicit ones included."""
    out: list[PciDevice] = []
    # (type, index) of every controller, and the highest index of each type: kept
    # beside the list so that each look-up is O(1) and a document with thousands
    # of controllers is read in linear time
    present: set[tuple[str, int]] = set()
    top_index: dict[str, int] = {}

    def insert(dev: PciDevice) -> None:
        ctype = dev.ctl_type or ""
        present.add((ctype, dev.ctl_index))
        top_index[ctype] = max(top_index.get(ctype, -1), dev.ctl_index)
        # virDomainControllerInsertPreAlloced
        at = len(out)
        for i in range(len(out) - 1, -1, -1):
            if out[i].ctl_type != dev.ctl_type:
                continue
            if out[i].ctl_index > dev.ctl_index:
                at = i
            else:
                at = i + 1 if at == len(out) else at
                break
        out.insert(at, dev)

    def find(ctype: str, index: int) -> bool:
        return (ctype, index) in present

    for node in nodes:
        if node.tag != "controller":
            continue
        ctype = prop(node, "type") or ""
        index_text = prop(node, "index")
        dev = _device("ctl", 0, node)
        dev.ctl_type = ctype
        if index_text and index_text.isascii() and index_text.isdigit():
            dev.ctl_index = prop_int(node, "index") or 0
            if ctype == "pci" and dev.ctl_index > 255:
                # domain_validate.c virDomainControllerDefValidate
                raise config_unsupported(
                    f"PCI controller index {dev.ctl_index} too high, maximum is 255",
                    ErrorDomain.DOMAIN,
                )
        else:
            # libvirt gives a controller without index the next one of its type
            dev.ctl_index = 1 + top_index.get(ctype, -1)
        dev.ctl_model = prop(node, "model")
        if first(node, "master") is not None:
            dev.extra["master"] = "yes"
        insert(dev)
    for c in out:
        c.category = "pcictl" if c.ctl_type == "pci" else "ctl"
        c.ctl_model = _default_controller_model(c, family, features)

    def add(ctype: str, index: int, model: str | None) -> None:
        if find(ctype, index):
            return
        dev = PciDevice("pcictl" if ctype == "pci" else "ctl", 0, wanted=True)
        dev.ctl_type, dev.ctl_index = ctype, index
        dev.ctl_model = model
        dev.ctl_model = _default_controller_model(dev, family, features)
        insert(dev)

    # qemuDomainDefAddDefaultDevices
    if family is Machine.Q35:
        if not find("usb", 0) and features.qemu_xhci:
            add("usb", 0, "qemu-xhci")
        add("sata", 0, None)
        add("pci", 0, "pcie-root")
    elif family is Machine.I440FX or family is Machine.PSERIES:
        add("usb", 0, None)
        add("pci", 0, "pci-root")
    elif family in (Machine.ARM_VIRT, Machine.RISCV_VIRT) and features.gpex:
        add("pci", 0, "pcie-root")
    elif family is Machine.S390_CCW:
        add("pci", 0, "pci-root")
    # virDomainDefAddImplicitControllers: one per controller index disks use
    for ctype, bus in (
        ("fdc", DiskBus.FDC),
        ("scsi", DiskBus.SCSI),
        ("ide", DiskBus.IDE),
        ("sata", DiskBus.SATA),
    ):
        highest = -1
        for disk in disks:
            address = disk.info.address
            if disk.target.bus is bus and address is not None and address.type is AddressType.DRIVE:
                highest = max(highest, address.controller)
        for index in range(highest + 1):
            add(ctype, index, None)
    virtio_serial = any(
        n.tag in ("channel", "console") and prop(first(n, "target"), "type") == "virtio"
        for n in nodes
    )
    if virtio_serial:
        add("virtio-serial", 0, None)
    return out


def _default_controller_model(
    dev: PciDevice, family: Machine, features: QemuFeatures
) -> str | None:
    model = dev.ctl_model
    if model is not None:
        return model
    if dev.ctl_type == "scsi":
        if family is Machine.PSERIES:
            return "ibmvscsi"
        if family is Machine.S390_CCW or family in (Machine.ARM_VIRT, Machine.RISCV_VIRT):
            return "virtio-scsi"
        return "lsilogic" if features.lsi_scsi else "virtio-scsi"
    if dev.ctl_type == "usb":
        if family is Machine.S390_CCW and dev.address is None:
            return "none"
        if family is Machine.PSERIES:
            return "pci-ohci"
        if family is Machine.ARM_VIRT:
            return "qemu-xhci"
        if family is Machine.Q35 and features.qemu_xhci:
            return "qemu-xhci"
        return "piix3-uhci" if features.lsi_scsi else None
    if dev.ctl_type == "pci":
        if dev.ctl_index == 0:
            return (
                "pcie-root"
                if family in (Machine.Q35, Machine.ARM_VIRT, Machine.RISCV_VIRT)
                else "pci-root"
            )
        return "pcie-root-port" if family is Machine.Q35 else "pci-bridge"
    return None
