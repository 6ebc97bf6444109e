"""Which host device a new port of a network gets (libvirt's networkAllocatePort).

Pure: given the network, the port and the ports the network already has,
``allocate_port`` returns the port with its ``<plug>`` filled in, its
bandwidth and VLAN taken from the port, else its portgroup, else the
network, as libvirt does.  Per forward mode (the table in
``shared.conf.network_forward``):

* a bridge libvirt owns (nat, route, open, isolated): ``plug type='network'``
  on the network's bridge;
* ``bridge`` with a bridge name: ``plug type='bridge'`` on that host bridge;
* ``bridge`` without one, ``private``, ``vepa``, ``passthrough``: a macvtap
  ``plug type='direct'`` on the least used device of the interface pool
  (``passthrough``: an unused one only);
* ``hostdev``: ``plug type='hostdev-pci'`` with an unused PCI device of the pool.

A VLAN tag is refused where libvirt refuses it (``_vlan_capable``).
``connections`` counts what the ports use, for the live XML's
``connections`` attributes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TypeVar

from shared.conf.network import NetworkDef, NetworkLive
from shared.conf.network_forward import DevicePool, ForwardMode
from shared.conf.network_port import MacvlanMode, NetworkPortDef, PlugType, PortPlug
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

_DOMAIN = ErrorDomain.NETWORK
T = TypeVar("T")
_MACVTAP_MODES = {
    ForwardMode.BRIDGE: MacvlanMode.BRIDGE,
    ForwardMode.PRIVATE: MacvlanMode.PRIVATE,
    ForwardMode.VEPA: MacvlanMode.VEPA,
    ForwardMode.PASSTHROUGH: MacvlanMode.PASSTHROUGH,
}


def _unsupported(message: str) -> VirtError:
    return VirtError(ErrorCode.INTERNAL_ERROR, message, _DOMAIN)


def connections(ports: Iterable[NetworkPortDef]) -> NetworkLive:
    """The live counts: ports on the network, and ports per pool device."""
    plugs = [p.plug for p in ports]
    per_dev = Counter(p.dev for p in plugs if p.type is PlugType.DIRECT and p.dev)
    return NetworkLive(connections=len(plugs), interface_connections=dict(per_dev))


def _direct(net: NetworkDef, used: Counter[str]) -> PortPlug:
    devs = [i.dev for i in net.forward.interfaces if i.dev is not None]
    if not devs:
        raise _unsupported(
            f"network '{net.name}' uses a direct mode, but has no forward dev and no interface pool"
        )
    mode = net.forward.mode
    if mode is ForwardMode.PASSTHROUGH:
        free = [d for d in devs if not used[d]]
        if not free:
            raise _unsupported(
                f"network '{net.name}' requires exclusive access to interfaces, but none "
                "are available"
            )
        dev = free[0]
    else:
        dev = min(devs, key=lambda d: used[d])  # the first of the least used
    return PortPlug(type=PlugType.DIRECT, dev=dev, mode=_MACVTAP_MODES[mode])


def _hostdev(net: NetworkDef, taken: set[str]) -> PortPlug:
    pool = [i.pci for i in net.forward.interfaces if i.pci is not None]
    free = [a for a in pool if str(a) not in taken]
    if not pool:
        raise _unsupported(
            f"network '{net.name}' uses a hostdev mode, but has no forward dev and no "
            "interface pool"
        )
    if not free:
        raise _unsupported(
            f"network '{net.name}' requires exclusive access to interfaces, but none are available"
        )
    return PortPlug(
        type=PlugType.HOSTDEV_PCI,
        address=free[0],
        managed=net.forward.managed,
        driver=net.forward.driver,
    )


def allocate_port(
    net: NetworkDef, port: NetworkPortDef, existing: Iterable[NetworkPortDef]
) -> NetworkPortDef:
    """``port`` as the network plugs it; raises ``VirtError`` when no device is free."""
    others = list(existing)
    group = net.portgroup(port.group)
    if port.group is not None and group is None:
        raise VirtError(
            ErrorCode.INTERNAL_ERROR,
            f"Port group '{port.group}' not found in network '{net.name}'",
            _DOMAIN,
        )
    info = net.forward.info
    if info.libvirt_bridge:
        plug = PortPlug(
            type=PlugType.NETWORK,
            bridge=net.bridge.name,
            mac_table_manager=net.bridge.mac_table_manager,
        )
    elif net.forward.mode is ForwardMode.BRIDGE and net.bridge.name:
        plug = PortPlug(
            type=PlugType.BRIDGE,
            bridge=net.bridge.name,
            mac_table_manager=net.bridge.mac_table_manager,
        )
    elif info.pool is DevicePool.PCI:
        taken = {str(p.plug.address) for p in others if p.plug.address is not None}
        plug = _hostdev(net, taken)
    else:
        used = Counter(p.plug.dev for p in others if p.plug.dev)
        plug = _direct(net, used)
    pick = (port, group, net)
    vlan = _first(x.vlan for x in pick if x is not None)
    vport = _first(x.virtualport for x in pick if x is not None)
    if vlan is not None and not _vlan_capable(net, plug, vport is not None):
        raise VirtError(
            ErrorCode.CONFIG_UNSUPPORTED,
            f"an interface connecting to network '{net.name}' is requesting a vlan tag, "
            "but that is not supported for this type of network",
            _DOMAIN,
        )
    return port.model_copy(
        update={
            "plug": plug,
            "bandwidth": _first(x.bandwidth for x in pick if x is not None),
            "vlan": vlan,
            "virtualport": vport,
            "trust_guest_rx_filters": _first(
                x.trust_guest_rx_filters for x in pick if x is not None
            ),
            "isolated_port": _first((port.isolated_port, net.isolated_port)),
        }
    )


def _vlan_capable(net: NetworkDef, plug: PortPlug, openvswitch: bool) -> bool:
    """libvirt tags VLANs on SR-IOV devices (hostdev, macvtap passthrough) and on
    Open vSwitch bridges (a ``<virtualport>``) only; a Linux bridge cannot."""
    if plug.type is PlugType.HOSTDEV_PCI:
        return True
    if plug.type is PlugType.DIRECT:
        return net.forward.mode is ForwardMode.PASSTHROUGH
    return openvswitch


def _first(values: Iterable[T | None]) -> T | None:
    """The first value given (not None): the port's, else its portgroup's, else the network's."""
    return next((v for v in values if v is not None), None)
