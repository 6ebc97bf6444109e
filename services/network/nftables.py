"""The native nftables backend: one table of virtbus's own per network.

A network's rules live in the ``inet`` table ``virtbus_<bridge>``, which
nothing else writes.  ``add_script`` is one ``nft -f`` transaction that
creates the table or replaces it whole (so applying it twice, or after a
host firewall reload removed it, gives the same result), ``delete_script``
removes it whole, and no other table is ever named.  The rules do what
libvirt's iptables rules do (``iptables.py``): DHCP, DNS and TFTP to the
bridge are accepted, guests on the bridge reach each other, traffic is
forwarded out of the bridge only from the network's own subnets (``nat``
and ``route``), back in only to them (``nat``: only replies), every other
forwarding through the bridge is rejected, and ``nat`` masquerades (or
SNATs to ``<nat><address>``) what leaves the subnet, except broadcast and
local multicast.  Pure: the runner in ``firewall.py`` executes the text.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from shared.conf.network import NetworkDef
from shared.conf.network_forward import ForwardMode
from shared.conf.network_ip import IPDef
from shared.conf.socketaddr import format_ip, mask_by_prefix

FAMILY = "inet"
TABLE_PREFIX = "virtbus_"

#: the modes whose networks get rules (an open network is left to the host)
FIREWALLED = (ForwardMode.NONE, ForwardMode.NAT, ForwardMode.ROUTE)


def table_name(bridge: str) -> str:
    """The table of the network whose bridge is ``bridge``."""
    return TABLE_PREFIX + bridge


def _cidr(ip: IPDef) -> str:
    prefix = ip.prefix_length()
    net = mask_by_prefix(ip.address, prefix)
    assert net is not None, "the network's prefix was checked when it was parsed"
    return f"{format_ip(net)}/{prefix}"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', "") + '"'


def _service_rules(net: NetworkDef, br: str) -> tuple[list[str], list[str]]:
    """The input and output rules for the services dnsmasq gives the bridge."""
    has_v6 = bool(net.ips_of(ipv6=True))
    udp_in, udp_out = ["53", "67"], ["53", "68"]
    if any(ip.tftp_root for ip in net.ips_of(ipv6=False)):
        udp_in.append("69")
        udp_out.append("69")
    if has_v6:
        udp_in.append("547")
        udp_out.append("546")
    inputs = [
        f"iifname {br} tcp dport {{ 53, 67 }} accept",
        f"iifname {br} udp dport {{ {', '.join(udp_in)} }} accept",
    ]
    outputs = [
        f"oifname {br} tcp dport {{ 53, 68 }} accept",
        f"oifname {br} udp dport {{ {', '.join(udp_out)} }} accept",
    ]
    return inputs, outputs


def _forward_rules(net: NetworkDef, br: str) -> list[str]:
    dev = net.forward.dev()
    out_dev = f" oifname {_quoted(dev)}" if dev else ""
    in_dev = f" iifname {_quoted(dev)}" if dev else ""
    rules = [f"iifname {br} oifname {br} accept"]
    mode = net.forward.mode
    if mode in (ForwardMode.NAT, ForwardMode.ROUTE):
        for ip in net.ips:
            fam = "ip" if isinstance(ip.address, IPv4Address) else "ip6"
            cidr = _cidr(ip)
            nat = _masqueraded(net, ip)
            rules.append(f"iifname {br}{out_dev} {fam} saddr {cidr} accept")
            state = " ct state established,related" if nat else ""
            rules.append(f"oifname {br}{in_dev} {fam} daddr {cidr}{state} accept")
    rules += [f"iifname {br} reject", f"oifname {br} reject"]
    return rules


def _masqueraded(net: NetworkDef, ip: IPDef) -> bool:
    if net.forward.mode is not ForwardMode.NAT:
        return False
    return isinstance(ip.address, IPv4Address) or net.forward.nat.ipv6 is True


def _nat_rules(net: NetworkDef) -> list[str]:
    dev = net.forward.dev()
    out_dev = f" oifname {_quoted(dev)}" if dev else ""
    nat = net.forward.nat
    start, end = nat.port_start, nat.port_end
    if start == 0 and end == 0:
        start, end = 1024, 65535
    ports = f":{start}-{end}" if start < end < 65536 else ""
    rules: list[str] = []
    for ip in net.ips:
        if not _masqueraded(net, ip):
            continue
        v4 = isinstance(ip.address, IPv4Address)
        fam = "ip" if v4 else "ip6"
        cidr = _cidr(ip)
        match = f"{fam} saddr {cidr}{out_dev}"
        if v4:
            rules.append(f"{match} ip daddr 255.255.255.255 return")
        rules.append(f"{match} {fam} daddr {'224.0.0.0/24' if v4 else 'ff02::/16'} return")
        if v4 and nat.address_start is not None:
            target = format_ip(nat.address_start)
            if nat.address_end is not None:
                target += f"-{format_ip(nat.address_end)}"
            rules.append(
                f"{match} ip daddr != {cidr} meta l4proto {{ tcp, udp }} snat ip to {target}{ports}"
            )
            rules.append(f"{match} ip daddr != {cidr} snat ip to {target}")
        else:
            to = f" to {ports}" if ports else ""
            rules.append(
                f"{match} {fam} daddr != {cidr} meta l4proto {{ tcp, udp }} masquerade{to}"
            )
            rules.append(f"{match} {fam} daddr != {cidr} masquerade")
    return rules


def _chain(name: str, hook: str, rules: list[str], *, kind: str = "filter") -> str:
    priority = "srcnat" if kind == "nat" else "filter"
    body = "".join(f"\t\t{rule}\n" for rule in rules)
    return (
        f"\tchain {name} {{\n"
        f"\t\ttype {kind} hook {hook} priority {priority}; policy accept;\n"
        f"{body}\t}}\n"
    )


def add_script(net: NetworkDef) -> str:
    """The ``nft -f`` transaction that gives ``net`` (its bridge named) its table.

    Empty for a network that gets no rules.
    """
    if net.forward.mode not in FIREWALLED:
        return ""
    bridge = net.bridge.name or ""
    br = _quoted(bridge)
    table = table_name(bridge)
    inputs, outputs = _service_rules(net, br)
    chains = _chain("input", "input", inputs) + _chain("output", "output", outputs)
    chains += _chain("forward", "forward", _forward_rules(net, br))
    nat = _nat_rules(net)
    if nat:
        chains += _chain("postrouting", "postrouting", nat, kind="nat")
    # declaring then deleting makes the replacement work whether or not it exists
    return (
        f"table {FAMILY} {table}\n"
        f"delete table {FAMILY} {table}\n"
        f"table {FAMILY} {table} {{\n{chains}}}\n"
    )


def delete_script(bridge: str) -> str:
    """The transaction that removes the table of ``bridge``'s network, if it exists."""
    table = table_name(bridge)
    return f"table {FAMILY} {table}\ndelete table {FAMILY} {table}\n"
