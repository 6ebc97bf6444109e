"""Network ports on the host: a tap device per port, plugged into the network's bridge.

A port of a network with a libvirt bridge gets a tap device named after its
UUID (``vbp`` and the first 11 hex digits), attached to the bridge with the
port's MAC, and the port's bandwidth as libvirt sets it with ``tc``
(inbound: an htb class on the tap's egress; outbound: an ingress policer).
``plug`` is idempotent, so a restarted service re-plugs what a reboot or a
deleted device lost.
"""

from __future__ import annotations

from services.network import host
from shared.conf.netdev_bandwidth import Bandwidth
from shared.conf.network_port import NetworkPortDef
from shared.util.errors import VirtError


def port_device(uuid: str) -> str:
    """The tap device of port ``uuid`` (15 characters, the kernel's limit)."""
    return "vbp" + uuid.replace("-", "")[:12]


def tc_commands(dev: str, bandwidth: Bandwidth | None) -> list[list[str]]:
    """virNetDevBandwidthSet's shaping, as tc argument lists (rates in kilobytes/s)."""
    out: list[list[str]] = []
    if bandwidth is None:
        return out
    inbound, outbound = bandwidth.inbound, bandwidth.outbound
    if inbound is not None and inbound.average:
        rate = f"{inbound.average}kbps"
        ceil = f"{inbound.peak}kbps" if inbound.peak else rate
        cls = ["tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb"]
        cls += ["rate", rate, "ceil", ceil]
        if inbound.burst:
            cls += ["burst", f"{inbound.burst}kb"]
        out += [
            ["tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "1"],
            cls,
            [
                "tc",
                "qdisc",
                "add",
                "dev",
                dev,
                "parent",
                "1:1",
                "handle",
                "2:",
                "sfq",
                "perturb",
                "10",
            ],
        ]
    if outbound is not None and outbound.average:
        burst = f"{outbound.burst or outbound.average}kb"
        out += [
            ["tc", "qdisc", "add", "dev", dev, "ingress"],
            [
                "tc", "filter", "add", "dev", dev, "parent", "ffff:", "protocol", "all",
                "u32", "match", "u32", "0", "0", "police", "rate", f"{outbound.average}kbps",
                "burst", burst, "mtu", "64kb", "drop", "flowid", ":1",
            ],
        ]  # fmt: skip
    return out


async def plug(port: NetworkPortDef, bridge: str) -> str:
    """Create (or find) the port's tap, plug it into ``bridge``, shape it; its name.

    A tap this call created is removed again when a later step fails.
    """
    dev = port_device(port.uuid)
    if host.link_exists(dev):
        await host.run(["ip", "link", "set", "dev", dev, "master", bridge, "up"])
        return dev
    await host.run(["ip", "tuntap", "add", "dev", dev, "mode", "tap"])
    try:
        await host.run(["ip", "link", "set", "dev", dev, "address", port.mac])
        for argv in tc_commands(dev, port.bandwidth):
            try:
                await host.run(argv)
            except VirtError:
                # sfq only shares the class fairly among flows; a kernel built
                # without it still shapes
                if "sfq" not in argv:
                    raise
        await host.run(["ip", "link", "set", "dev", dev, "master", bridge, "up"])
    except BaseException:
        await host.delete_link(dev)
        raise
    return dev


async def unplug(dev: str) -> None:
    """Remove the port's tap device (its shaping goes with it)."""
    await host.delete_link(dev)
