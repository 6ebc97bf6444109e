"""Device addresses the QEMU driver assigns to disks that have none
(qemu_domain_address.c qemuDomainAssignAddresses): CCW device numbers on s390,
virtio-mmio on ARM/RISC-V boards without PCIe, and PCI slots everywhere else.

A PCI slot depends on the whole domain, so this replays libvirt's algorithm on
all of the domain's devices (tests.conformance.qemu.pci_devices): chipset slots
reserved first, then explicitly given addresses, then, in libvirt's device
order, the first free compatible slot for each device that wants one; a first
dry pass decides which pci-bridges or pcie-root-ports libvirt adds.
Only the disks' results are kept.

Long because the address set, the chipset reservations and the two passes only
make sense together; they mirror one libvirt file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from shared.conf.disk_address import AddressType, DeviceAddress, parse_address
from shared.conf.disk_model import DiskBus, DiskDef
from tests.conformance.qemu.pci_devices import (
    AGGREGATE_SLOT,
    AUTOASSIGN,
    CONTROLLER_CONNECT,
    DMI_TO_PCI_BRIDGE,
    ENDPOINT,
    HOTPLUGGABLE,
    INTEGRATED,
    LATEST,
    PCI_BRIDGE,
    PCI_DEVICE,
    PCI_EXPANDER_BUS,
    PCIE_DEVICE,
    PCIE_EXPANDER_BUS,
    PCIE_ROOT_PORT,
    PCIE_SWITCH_DOWN,
    PCIE_SWITCH_UP,
    PCIE_TO_PCI_BRIDGE,
    TYPES_MASK,
    DomainPci,
    Machine,
    PciDevice,
    QemuFeatures,
    read_domain,
)

#: Per PCI controller model: what its bus accepts (flags) and its slot range.
BUS_MODELS: dict[str, tuple[int, int, int]] = {
    "pci-root": (AUTOASSIGN | PCI_DEVICE | PCI_BRIDGE | PCI_EXPANDER_BUS | HOTPLUGGABLE, 1, 31),
    "pci-bridge": (AUTOASSIGN | PCI_DEVICE | PCI_BRIDGE | HOTPLUGGABLE, 1, 31),
    "pci-expander-bus": (AUTOASSIGN | PCI_DEVICE | PCI_BRIDGE | HOTPLUGGABLE, 0, 31),
    "pcie-root": (PCIE_DEVICE | PCIE_ROOT_PORT | DMI_TO_PCI_BRIDGE | PCIE_EXPANDER_BUS, 1, 31),
    "dmi-to-pci-bridge": (PCI_DEVICE | PCI_BRIDGE, 0, 31),
    "pcie-to-pci-bridge": (AUTOASSIGN | PCI_DEVICE | PCI_BRIDGE | HOTPLUGGABLE, 1, 31),
    "pcie-root-port": (
        AUTOASSIGN | PCIE_DEVICE | PCIE_SWITCH_UP | PCIE_TO_PCI_BRIDGE | HOTPLUGGABLE,
        0,
        0,
    ),
    "pcie-switch-downstream-port": (
        AUTOASSIGN | PCIE_DEVICE | PCIE_SWITCH_UP | PCIE_TO_PCI_BRIDGE | HOTPLUGGABLE,
        0,
        0,
    ),
    "pcie-switch-upstream-port": (PCIE_SWITCH_DOWN, 0, 31),
    "pcie-expander-bus": (PCIE_ROOT_PORT | DMI_TO_PCI_BRIDGE, 0, 31),
}


class NoSlot(Exception):
    """No free compatible slot (libvirt: "No more available PCI slots")."""


@dataclass
class _Bus:
    model: str
    flags: int
    min_slot: int
    max_slot: int
    functions: dict[int, int] = field(default_factory=dict)
    aggregate: set[int] = field(default_factory=set)
    #: every slot below this one is in use (slots are never freed)
    free_from: int = -1

    def __post_init__(self) -> None:
        self.free_from = self.min_slot

    @classmethod
    def of(cls, model: str) -> _Bus:
        flags, low, high = BUS_MODELS.get(model, BUS_MODELS["pci-bridge"])
        return cls(model, flags, low, high)

    def fully_reserved(self) -> bool:
        return all(self.functions.get(s) for s in range(self.min_slot, self.max_slot + 1))


def _compatible(bus: _Bus, bus_number: int, dev_flags: int, from_config: bool) -> bool:
    """virDomainPCIAddressFlagsCompatible without the error reporting."""
    bus_flags = bus.flags
    if dev_flags & INTEGRATED:
        if bus_number != 0:
            return False
        bus_flags |= AUTOASSIGN
    if from_config:
        if bus_flags & ENDPOINT:
            bus_flags |= ENDPOINT
        if dev_flags & PCI_BRIDGE:
            dev_flags |= PCI_DEVICE
    elif dev_flags & AUTOASSIGN and not bus_flags & AUTOASSIGN:
        return False
    if dev_flags & HOTPLUGGABLE and not bus_flags & HOTPLUGGABLE:
        return False
    return bool(dev_flags & bus_flags & TYPES_MASK)


class _AddressSet:
    """virDomainPCIAddressSet: buses and the functions in use on each slot."""

    def __init__(
        self,
        models: list[str],
        dry_run: bool,
        multiple_roots: bool,
        pcie_to_pci_bridge: bool = True,
    ) -> None:
        self.buses = [_Bus.of(m) for m in models]
        self.pcie_to_pci_bridge = pcie_to_pci_bridge
        self.dry_run = dry_run
        self.multiple_roots = multiple_roots
        self.pcie_root = bool(models) and models[0] == "pcie-root"
        #: per (flags, function) of a request: the buses before this index had no room
        self._no_room: dict[tuple[int, int], int] = {}

    def in_use(self, bus: int, slot: int) -> bool:
        return bus < len(self.buses) and bool(self.buses[bus].functions.get(slot))

    def reserve(self, addr: tuple[int, int, int], flags: int, from_config: bool = True) -> None:
        bus_number, slot, function = addr
        if self.dry_run:
            self._grow(bus_number, flags)
        if bus_number >= len(self.buses):
            return  # an address on a bus libvirt would refuse; nothing to track
        bus = self.buses[bus_number]
        if not bus.functions.get(slot) and flags & AGGREGATE_SLOT:
            bus.aggregate.add(slot)
        bus.functions[slot] = bus.functions.get(slot, 0) | (1 << function)

    def next_addr(self, flags: int, function: int = -1) -> tuple[int, int, int]:
        """virDomainPCIAddressGetNextAddr (isolation groups all 0).

        Functions are only ever taken, never given back, so a bus that had no
        room for a request never has room for the same request again: the
        search starts past such buses, and within a bus past its used slots,
        which keeps a domain with thousands of devices linear (libvirt's own
        search starts over each time)."""
        want = 0 if function == -1 else function
        key = (flags, function)
        start = self._no_room.get(key, 0)
        for number in range(start, len(self.buses)):
            found = self._on_bus(number, flags, function, want)
            if found is not None:
                self._no_room[key] = start
                return found
            if number == start:
                start += 1
        self._no_room[key] = start
        if self.dry_run:
            number = len(self.buses)
            number = self._grow(number, flags)
            return number, self.buses[number].min_slot, want
        raise NoSlot

    def _on_bus(
        self, number: int, flags: int, function: int, want: int
    ) -> tuple[int, int, int] | None:
        """The first slot of bus ``number`` that takes the request, in slot order."""
        bus = self.buses[number]
        if not _compatible(bus, number, flags, False):
            return None
        while bus.functions.get(bus.free_from):
            bus.free_from += 1
        if flags & AGGREGATE_SLOT:
            for slot in sorted(s for s in bus.aggregate if bus.min_slot <= s < bus.free_from):
                used = bus.functions.get(slot, 0)
                if not used & (1 << want):
                    return number, slot, want
                if function == -1:
                    for fn in range(8):
                        if not used & (1 << fn):
                            return number, slot, fn
        if bus.free_from <= bus.max_slot:
            return number, bus.free_from, want
        return None

    def reserve_next(self, flags: int, function: int = -1) -> tuple[int, int, int]:
        addr = self.next_addr(flags, function)
        self.reserve(addr, flags, from_config=False)
        return addr

    def _grow(self, bus_number: int, flags: int) -> int:
        """virDomainPCIAddressSetGrow: add the controllers a device needs."""
        add = bus_number - len(self.buses) + 1
        if add <= 0:
            return bus_number
        models: list[str] = []
        if flags & PCI_DEVICE:
            if self.multiple_roots:
                models = ["pci-root"] * add
            else:
                has_bridge_bus = any(b.flags & PCI_BRIDGE for b in self.buses)
                if not has_bridge_bus and add == 1:
                    # a pure PCIe guest first needs a place for the bridge:
                    # pcie-root-port + pcie-to-pci-bridge, or else
                    # dmi-to-pci-bridge + pci-bridge
                    if self.pcie_to_pci_bridge:
                        models = ["pcie-root-port", "pcie-to-pci-bridge"]
                    else:
                        models = ["dmi-to-pci-bridge", "pci-bridge"]
                    bus_number += 1
                else:
                    models = ["pci-bridge"] * add
        elif flags & (PCIE_DEVICE | PCIE_SWITCH_UP):
            models = ["pcie-root-port"] * add
        elif flags & PCIE_SWITCH_DOWN:
            models = ["pcie-switch-downstream-port"] * add
        elif flags & PCIE_TO_PCI_BRIDGE:
            models = ["pcie-root-port"] * add
        else:
            raise NoSlot
        self.buses.extend(_Bus.of(m) for m in models)
        return bus_number


def _as_tuple(addr: DeviceAddress) -> tuple[int, int, int]:
    return addr.bus, addr.slot, addr.function


def _validate_chipset(dom: DomainPci, addrs: _AddressSet) -> None:
    """qemuDomainValidateDevicePCISlotsPIIX3 / ...Q35: the chipset's own slots."""
    if not addrs.buses:
        return
    video = dom.primary_video
    if dom.family is Machine.I440FX:
        for dev in dom.devices:
            if dev.category != "ctl" or dev.ctl_index != 0:
                continue
            # the PIIX3's own IDE (00:01.1) and USB (00:01.2) functions
            if dev.ctl_type == "ide":
                function = 1
            elif dev.ctl_type == "usb" and dev.ctl_model in (None, "piix3-uhci"):
                function = 2
            else:
                continue
            dev.address = DeviceAddress(type=AddressType.PCI, slot=1, function=function)
            dev.wanted = False
            addrs.reserve((0, 1, function), PCI_DEVICE | AUTOASSIGN)
        addrs.reserve((0, 1, 0), PCI_DEVICE | AUTOASSIGN)
        addrs.reserve((0, 1, 3), PCI_DEVICE | AUTOASSIGN)
        _place_primary_video(addrs, video, 2)
    elif dom.family is Machine.Q35:
        for dev in dom.devices:
            if dev.category == "ctl" and dev.ctl_type == "sata" and dev.ctl_index == 0:
                if dev.address is None:
                    dev.address = DeviceAddress(type=AddressType.PCI, slot=0x1F, function=2)
                    dev.wanted = False
                    addrs.reserve((0, 0x1F, 2), PCIE_DEVICE)
            elif (
                dev.category == "ctl"
                and dev.ctl_type == "usb"
                and dev.ctl_model == "ich9-uhci1"
                and dev.wanted
            ):
                for slot in (0x1D, 0x1A):
                    if not addrs.in_use(0, slot):
                        addrs.reserve((0, slot, 0), PCIE_DEVICE)
                        dev.address = DeviceAddress(type=AddressType.PCI, slot=slot)
                        dev.wanted = False
                        break
            elif (
                dev.category == "pcictl"
                and dev.ctl_model == "dmi-to-pci-bridge"
                and dev.wanted
                and not addrs.in_use(0, 0x1E)
            ):
                addrs.reserve((0, 0x1E, 0), PCIE_DEVICE)
                dev.address = DeviceAddress(type=AddressType.PCI, slot=0x1E)
                dev.wanted = False
        addrs.reserve((0, 0x1F, 0), PCIE_DEVICE)
        addrs.reserve((0, 0x1F, 3), PCIE_DEVICE)
        _place_primary_video(addrs, video, 1)
        if not addrs.in_use(0, 0x1B):
            for dev in dom.devices:
                if dev.category == "sound" and dev.extra.get("model") == "ich9" and dev.wanted:
                    addrs.reserve((0, 0x1B, 0), PCIE_DEVICE)
                    dev.address = DeviceAddress(type=AddressType.PCI, slot=0x1B)
                    dev.wanted = False
                    break


def _place_primary_video(addrs: _AddressSet, video: PciDevice | None, slot: int) -> None:
    if video is None or not video.wanted:
        return
    if addrs.in_use(0, slot):
        bus, found, function = addrs.reserve_next(video.flags)
        video.address = DeviceAddress(type=AddressType.PCI, bus=bus, slot=found, function=function)
    else:
        addrs.reserve((0, slot, 0), PCI_DEVICE | AUTOASSIGN)
        video.address = DeviceAddress(type=AddressType.PCI, slot=slot)
    video.wanted = False


_ORDER = (
    "pcictl",
    "fs",
    "net",
    "sound",
    "ctl",
    "disk",
    "hostdev",
    "memballoon",
    "rng",
    "watchdog",
    "video",
    "shmem",
    "input",
    "serial",
    "iommu",
    "vsock",
    "memory",
)
_SKIPPED_CONTROLLERS = {"fdc", "ccid"}
_USB2_FUNCTION = {"ich9-ehci1": 7, "ich9-uhci1": 0, "ich9-uhci2": 1, "ich9-uhci3": 2}


def _assign_all(dom: DomainPci, addrs: _AddressSet) -> None:
    """qemuDomainAssignDevicePCISlots: every wanting device, in libvirt's order."""
    for category in _ORDER:
        for dev in dom.devices:
            if dev.category != category or not dev.wanted or not dev.flags:
                continue
            if category == "pcictl" and dev.ctl_model in ("pci-root", "pcie-root"):
                continue
            if category == "ctl" and (
                dev.ctl_type in _SKIPPED_CONTROLLERS
                or (dev.ctl_type == "ide" and dev.ctl_index == 0)
            ):
                continue
            if category == "ctl" and dev.ctl_model in _USB2_FUNCTION:
                _assign_usb2(dom, addrs, dev)
                continue
            bus, slot, function = addrs.reserve_next(dev.flags)
            if not addrs.dry_run:
                dev.address = DeviceAddress(
                    type=AddressType.PCI, bus=bus, slot=slot, function=function
                )
                dev.wanted = False


def _assign_usb2(dom: DomainPci, addrs: _AddressSet, dev: PciDevice) -> None:
    function = _USB2_FUNCTION[dev.ctl_model or ""]
    companion = next(
        (
            d
            for d in dom.devices
            if d.ctl_type == "usb"
            and d.ctl_model in _USB2_FUNCTION
            and d.ctl_index == dev.ctl_index
            and d.address is not None
        ),
        None,
    )
    if companion is not None and companion.address is not None:
        addr = (companion.address.bus, companion.address.slot, function)
        addrs.reserve(addr, dev.flags)
    else:
        addr = addrs.reserve_next(dev.flags, function)
    if not addrs.dry_run:
        dev.address = DeviceAddress(
            type=AddressType.PCI, bus=addr[0], slot=addr[1], function=addr[2]
        )
        dev.wanted = False


def _collect(dom: DomainPci, addrs: _AddressSet) -> None:
    """qemuDomainCollectPCIAddress: reserve every address given in the config."""
    for dev in dom.devices:
        addr = dev.address
        if addr is None or addr.type is not AddressType.PCI:
            continue
        # the PIIX3's own functions are reserved with the chipset, not here
        piix3 = (dev.ctl_type == "ide" and addr.function == 1) or (
            dev.ctl_type == "usb" and dev.ctl_model in (None, "piix3-uhci") and addr.function == 2
        )
        if (
            dev.category == "ctl"
            and (addr.bus, addr.slot) == (0, 1)
            and dev.ctl_index == 0
            and piix3
        ):
            continue
        addrs.reserve(_as_tuple(addr), dev.flags or PCI_DEVICE)


def _bus_models(dom: DomainPci, nbuses: int) -> list[str]:
    models: list[str] = []
    default = (
        "pci-root"
        if dom.family is Machine.PSERIES
        else "pcie-root-port"
        if dom.has_pcie_root
        else "pci-bridge"
    )
    for index in range(nbuses):
        model = dom.pci_controllers.get(index)
        if not model:
            model = "pci-root" if index == 0 else default
        models.append(model)
    return models


def _supports_pci(dom: DomainPci) -> bool:
    return bool(dom.pci_controllers)


def assign_pci(dom: DomainPci) -> None:
    """qemuDomainAssignPCIAddresses, for the devices' ``address`` fields."""
    max_index = max(dom.pci_controllers, default=-1)
    nbuses = max_index + 1
    multiple_roots = dom.family is Machine.PSERIES
    if nbuses > 0:
        # the dry pass only counts buses: work on copies of the device states
        saved = [(d.address, d.wanted) for d in dom.devices]
        dry = _AddressSet(
            _bus_models(dom, nbuses), True, multiple_roots, dom.features.pcie_to_pci_bridge
        )
        _collect(dom, dry)
        _validate_chipset(dom, dry)
        if dom.pci_controllers.get(0) == "pci-root" and not all(
            b.fully_reserved() for b in dry.buses
        ):
            dry.reserve_next(PCI_DEVICE | AUTOASSIGN)
        _assign_all(dom, dry)
        if max_index <= 0 and len(dry.buses) > max_index + 1 and dom.has_pcie_root:
            dry.reserve_next(PCIE_DEVICE | AUTOASSIGN)
        for (address, wanted), dev in zip(saved, dom.devices, strict=True):
            dev.address, dev.wanted = address, wanted
        for index in range(1, len(dry.buses)):
            if index in dom.pci_controllers:
                continue
            model = dry.buses[index].model
            new = _add_pci_controller(dom, index, model)
            # the new controller needs a slot too (possibly growing further)
            if model not in ("pci-root", "pcie-root"):
                dry.reserve_next(new.flags)
        nbuses = len(dry.buses)
        for index in range(1, nbuses):
            if index not in dom.pci_controllers:
                _add_pci_controller(dom, index, dry.buses[index].model)
    if not _supports_pci(dom):
        return
    final = _AddressSet(_bus_models(dom, nbuses), False, multiple_roots)
    _collect(dom, final)
    _validate_chipset(dom, final)
    _assign_all(dom, final)


def _add_pci_controller(dom: DomainPci, index: int, model: str) -> PciDevice:
    """Record and insert the PCI controller ``index`` of ``model`` libvirt adds."""
    dom.pci_controllers[index] = model
    new = PciDevice(
        "pcictl",
        CONTROLLER_CONNECT.get(model, 0),
        wanted=True,
        ctl_type="pci",
        ctl_index=index,
        ctl_model=model,
    )
    _insert_pci_controller(dom, new)
    return new


def _insert_pci_controller(dom: DomainPci, new: PciDevice) -> None:
    position = len(dom.devices)
    for i, dev in enumerate(dom.devices):
        if dev.category == "pcictl" and dev.ctl_index > new.ctl_index:
            position = i
            break
        if dev.category == "pcictl":
            position = i + 1
    dom.devices.insert(position, new)


# --- CCW and virtio-mmio ------------------------------------------------------------


def _virtio_mmio_wanted(dom: DomainPci, disks: list[DiskDef]) -> bool:
    """qemuDomainAssignVirtioMMIOAddresses: do virtio devices go on virtio-mmio?"""
    arm = dom.arch in ("armv6l", "armv7l", "aarch64")
    if not (arm or dom.arch.startswith("riscv")):
        return False
    if not (
        dom.machine.startswith("vexpress-") or dom.family in (Machine.ARM_VIRT, Machine.RISCV_VIRT)
    ):
        return False
    has_mmio = any(
        d.info.address is not None and d.info.address.type is AddressType.VIRTIO_MMIO for d in disks
    )
    if dom.has_pcie_root and not has_mmio:
        return False
    return dom.features.virtio_mmio


def assign_disk_addresses(
    domain: etree._Element, disks: list[DiskDef], features: QemuFeatures = LATEST
) -> list[DiskDef]:
    """``disks`` (the parsed disks of ``domain``, in order) with the addresses the
    QEMU driver gives the ones that have none, and ``multifunction='on'`` where
    libvirt sets it on a disk at function 0 of a slot shared with other functions."""
    wanting = any(
        (d.target.bus is DiskBus.VIRTIO and d.info.address is None)
        or (
            d.info.address is not None
            and d.info.address.type is AddressType.PCI
            and d.info.address.pci_empty
        )
        for d in disks
    )
    on_pci = any(
        d.info.address is not None and d.info.address.type is AddressType.PCI for d in disks
    )
    if not wanting and not on_pci:
        return disks
    dom = read_domain(domain, disks, features)
    out = list(disks)
    if wanting and dom.family is Machine.S390_CCW:
        return _assign_ccw(out, _ccw_in_use(domain))
    if wanting and _virtio_mmio_wanted(dom, disks):
        for i, disk in enumerate(out):
            if disk.target.bus is DiskBus.VIRTIO and disk.info.address is None:
                out[i] = _with_address(disk, DeviceAddress(type=AddressType.VIRTIO_MMIO))
        return out
    try:
        assign_pci(dom)
    except NoSlot:
        return out
    for dev in dom.devices:
        if dev.category == "disk" and dev.disk_number is not None and dev.address is not None:
            disk = out[dev.disk_number]
            if disk.info.address is None or disk.info.address.pci_empty:
                out[dev.disk_number] = _with_address(disk, dev.address)
    return _set_multifunction(out, dom)


def _set_multifunction(disks: list[DiskDef], dom: DomainPci) -> list[DiskDef]:
    """virDomainPCIAddressSetAllMulti for the disks: a disk at function 0 of a slot
    whose other functions are in use gets ``multifunction='on'`` unless it says
    otherwise."""
    shared = {
        (a.domain, a.bus, a.slot)
        for dev in dom.devices
        if (a := dev.address) is not None and a.type is AddressType.PCI and a.function != 0
    }
    out: list[DiskDef] = []
    for disk in disks:
        a = disk.info.address
        if (
            a is not None
            and a.type is AddressType.PCI
            and a.function == 0
            and a.multifunction is None
            and (a.domain, a.bus, a.slot) in shared
        ):
            disk = _with_address(disk, a.model_copy(update={"multifunction": True}))
        out.append(disk)
    return out


def _with_address(disk: DiskDef, address: DeviceAddress) -> DiskDef:
    return disk.model_copy(update={"info": disk.info.model_copy(update={"address": address})})


def _ccw_in_use(domain: etree._Element) -> set[tuple[int, int, int]]:
    """The CCW addresses the domain's devices give explicitly."""
    used: set[tuple[int, int, int]] = set()
    devices = domain.find("devices")
    for device in devices if devices is not None else []:
        node = device.find("address")
        if node is not None and node.get("type") == "ccw" and node.get("devno") is not None:
            a = parse_address(node)
            used.add((a.cssid, a.ssid, a.devno))
    return used


def _assign_ccw(disks: list[DiskDef], used: set[tuple[int, int, int]]) -> list[DiskDef]:
    """virDomainCCWAddressAssign: the next free device number in 0xfe.0, disks first
    (libvirt visits disks before every other device)."""
    used = set(used)
    devno = 0
    out: list[DiskDef] = []
    for disk in disks:
        if disk.target.bus is DiskBus.VIRTIO and disk.info.address is None:
            while (0xFE, 0, devno) in used:
                devno += 1
            used.add((0xFE, 0, devno))
            disk = _with_address(
                disk, DeviceAddress(type=AddressType.CCW, cssid=0xFE, ssid=0, devno=devno)
            )
        out.append(disk)
    return out
