"""The iptables backend: libvirt 9's chains and rules for a network, as argument lists.

libvirt keeps its rules in private chains (``LIBVIRT_INP``, ``_OUT``,
``_FWO``, ``_FWI``, ``_FWX`` in filter, ``LIBVIRT_PRT`` in nat and mangle),
each jumped to from the built-in chain it is named after.  ``base_commands``
lists the commands that create them (the first network started does this),
``network_commands`` the rules of one network in libvirt's order (bridge_driver_linux.c,
network_iptables.c), and ``removal_commands`` the same rules with ``--delete``
in reverse.  Pure: the runner in ``firewall.py`` executes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from shared.conf.network import NetworkDef
from shared.conf.network_forward import ForwardMode
from shared.conf.network_ip import IPDef
from shared.conf.socketaddr import format_ip, mask_by_prefix
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

IPV4 = "iptables"
IPV6 = "ip6tables"

#: (table, chain, built-in chain it hangs from), in libvirt's creation order
PRIVATE_CHAINS: tuple[tuple[str, str, str], ...] = (
    ("filter", "LIBVIRT_INP", "INPUT"),
    ("filter", "LIBVIRT_OUT", "OUTPUT"),
    ("filter", "LIBVIRT_FWO", "FORWARD"),
    ("filter", "LIBVIRT_FWI", "FORWARD"),
    ("filter", "LIBVIRT_FWX", "FORWARD"),
    ("nat", "LIBVIRT_PRT", "POSTROUTING"),
    ("mangle", "LIBVIRT_PRT", "POSTROUTING"),
)

_LOCAL_BROADCAST = "255.255.255.255/32"
_LOCAL_MULTICAST_V4 = "224.0.0.0/24"
_LOCAL_MULTICAST_V6 = "ff02::/16"


@dataclass(frozen=True)
class Rule:
    """One rule: the program (``iptables``/``ip6tables``), its table and chain, the match."""

    program: str
    table: str
    chain: str
    args: tuple[str, ...]

    def command(self, action: str = "--insert") -> list[str]:
        return [self.program, "-w", "--table", self.table, action, self.chain, *self.args]


def base_commands() -> list[list[str]]:
    """networkSetupPrivateChains on a host with no chains yet: list, create, hook up."""
    out: list[list[str]] = []
    for program in (IPV4, IPV6):
        for table in ("filter", "nat", "mangle"):
            out.append([program, "-w", "--table", table, "--list-rules"])
        for table, chain, parent in PRIVATE_CHAINS:
            out.append([program, "-w", "--table", table, "--new-chain", chain])
            out.append([program, "-w", "--table", table, "--insert", parent, "--jump", chain])
    return out


def _network_cidr(ip: IPDef) -> str:
    prefix = ip.prefix_length()
    if prefix < 0:
        raise VirtError(
            ErrorCode.INTERNAL_ERROR,
            f"Invalid prefix or netmask for '{format_ip(ip.address)}'",
            ErrorDomain.NETWORK,
        )
    net = mask_by_prefix(ip.address, prefix)
    assert net is not None
    return f"{format_ip(net)}/{prefix}"


def _port_rules(program: str, bridge: str, chain: str, proto: str, port: int) -> Rule:
    direction = "--in-interface" if chain == "LIBVIRT_INP" else "--out-interface"
    return Rule(
        program,
        "filter",
        chain,
        (
            direction,
            bridge,
            "--protocol",
            proto,
            "--destination-port",
            str(port),
            "--jump",
            "ACCEPT",
        ),
    )


def _isolation(program: str, bridge: str) -> list[Rule]:
    """Reject forwarding out of and into the bridge; allow guest to guest."""
    return [
        Rule(program, "filter", "LIBVIRT_FWO", ("--in-interface", bridge, "--jump", "REJECT")),
        Rule(program, "filter", "LIBVIRT_FWI", ("--out-interface", bridge, "--jump", "REJECT")),
        Rule(
            program,
            "filter",
            "LIBVIRT_FWX",
            ("--in-interface", bridge, "--out-interface", bridge, "--jump", "ACCEPT"),
        ),
    ]


def _dns_rules(program: str, bridge: str) -> list[Rule]:
    return [
        _port_rules(program, bridge, "LIBVIRT_INP", "tcp", 53),
        _port_rules(program, bridge, "LIBVIRT_INP", "udp", 53),
        _port_rules(program, bridge, "LIBVIRT_OUT", "tcp", 53),
        _port_rules(program, bridge, "LIBVIRT_OUT", "udp", 53),
    ]


def _general_ipv4(net: NetworkDef, bridge: str) -> list[Rule]:
    tftp = next((ip for ip in net.ips_of(ipv6=False) if ip.has_dhcp() or ip.tftp_root), None)
    rules = [
        _port_rules(IPV4, bridge, "LIBVIRT_INP", "tcp", 67),
        _port_rules(IPV4, bridge, "LIBVIRT_INP", "udp", 67),
        _port_rules(IPV4, bridge, "LIBVIRT_OUT", "tcp", 68),
        _port_rules(IPV4, bridge, "LIBVIRT_OUT", "udp", 68),
        *_dns_rules(IPV4, bridge),
    ]
    if tftp is not None and tftp.tftp_root:
        rules += [
            _port_rules(IPV4, bridge, "LIBVIRT_INP", "udp", 69),
            _port_rules(IPV4, bridge, "LIBVIRT_OUT", "udp", 69),
        ]
    return rules + _isolation(IPV4, bridge)


def _general_ipv6(net: NetworkDef, bridge: str) -> list[Rule]:
    has_v6 = bool(net.ips_of(ipv6=True))
    if not has_v6 and not net.ipv6:
        return []
    rules = _isolation(IPV6, bridge)
    if has_v6:
        rules += _dns_rules(IPV6, bridge)
        rules += [
            _port_rules(IPV6, bridge, "LIBVIRT_INP", "udp", 547),
            _port_rules(IPV6, bridge, "LIBVIRT_OUT", "udp", 546),
        ]
    return rules


def _forward_out(program: str, cidr: str, bridge: str, dev: str | None) -> Rule:
    args = ["--source", cidr, "--in-interface", bridge]
    if dev:
        args += ["--out-interface", dev]
    return Rule(program, "filter", "LIBVIRT_FWO", (*args, "--jump", "ACCEPT"))


def _forward_in(program: str, cidr: str, bridge: str, dev: str | None, *, related: bool) -> Rule:
    args = ["--destination", cidr]
    if dev:
        args += ["--in-interface", dev]
    args += ["--out-interface", bridge]
    if related:
        args += ["--match", "conntrack", "--ctstate", "ESTABLISHED,RELATED"]
    return Rule(program, "filter", "LIBVIRT_FWI", (*args, "--jump", "ACCEPT"))


def _masquerade(net: NetworkDef, program: str, cidr: str, dev: str | None, proto: str) -> Rule:
    """iptablesForwardMasquerade: MASQUERADE, or SNAT when ``<nat><address>`` is given."""
    nat = net.forward.nat
    args = ["--source", cidr]
    if proto:
        args += ["-p", proto]
    args += ["!", "--destination", cidr]
    if dev:
        args += ["--out-interface", dev]
    ports = ""
    if proto:
        start, end = nat.port_start, nat.port_end
        if start == 0 and end == 0:
            start, end = 1024, 65535
        if start < end < 65536:
            ports = f":{start}-{end}"
    if nat.address_start is not None:
        target = format_ip(nat.address_start)
        if nat.address_end is not None:
            target += f"-{format_ip(nat.address_end)}"
        args += ["--jump", "SNAT", "--to-source", target + ports]
    else:
        args += ["--jump", "MASQUERADE"]
        if ports:
            args += ["--to-ports", ports[1:]]
    return Rule(program, "nat", "LIBVIRT_PRT", tuple(args))


def _dont_masquerade(program: str, cidr: str, dev: str | None, dest: str) -> Rule:
    args = ["--out-interface", dev] if dev else []
    args += ["--source", cidr, "--destination", dest, "--jump", "RETURN"]
    return Rule(program, "nat", "LIBVIRT_PRT", tuple(args))


def _ip_rules(net: NetworkDef, ip: IPDef, bridge: str) -> list[Rule]:
    """networkAddIPSpecificFirewallRules for one ``<ip>``."""
    ipv4 = isinstance(ip.address, IPv4Address)
    program = IPV4 if ipv4 else IPV6
    dev = net.forward.dev()
    mode = net.forward.mode
    nat = mode is ForwardMode.NAT and (ipv4 or net.forward.nat.ipv6 is True)
    if not nat and mode not in (ForwardMode.NAT, ForwardMode.ROUTE):
        return []
    cidr = _network_cidr(ip)
    rules = [
        _forward_out(program, cidr, bridge, dev),
        _forward_in(program, cidr, bridge, dev, related=nat),
    ]
    if not nat:
        return rules
    rules += [_masquerade(net, program, cidr, dev, proto) for proto in ("", "udp", "tcp")]
    if ipv4:
        rules.append(_dont_masquerade(program, cidr, dev, _LOCAL_BROADCAST))
    multicast = _LOCAL_MULTICAST_V4 if ipv4 else _LOCAL_MULTICAST_V6
    rules.append(_dont_masquerade(program, cidr, dev, multicast))
    return rules


def network_rules(net: NetworkDef) -> list[Rule]:
    """Every rule of ``net`` (its bridge named), in the order libvirt inserts them.

    A network of mode ``open`` (and the modes that use no libvirt bridge) has none.
    """
    if net.forward.mode not in (ForwardMode.NONE, ForwardMode.NAT, ForwardMode.ROUTE):
        return []
    bridge = net.bridge.name or ""
    rules = _general_ipv4(net, bridge) + _general_ipv6(net, bridge)
    for ip in net.ips:
        rules += _ip_rules(net, ip, bridge)
    if any(ip.has_dhcp() for ip in net.ips_of(ipv6=False)):
        # old DHCP clients drop replies whose UDP checksum the NIC was to fill in
        rules.append(
            Rule(
                IPV4,
                "mangle",
                "LIBVIRT_PRT",
                (
                    "--out-interface",
                    bridge,
                    "--protocol",
                    "udp",
                    "--destination-port",
                    "68",
                    "--jump",
                    "CHECKSUM",
                    "--checksum-fill",
                ),
            )
        )
    return rules


def network_commands(net: NetworkDef) -> list[list[str]]:
    """The commands that add ``net``'s rules."""
    return [rule.command() for rule in network_rules(net)]


def removal_commands(net: NetworkDef) -> list[list[str]]:
    """The commands that delete ``net``'s rules, last added first."""
    return [rule.command("--delete") for rule in reversed(network_rules(net))]
