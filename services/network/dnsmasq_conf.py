"""The dnsmasq configuration of a network, as libvirt 9's network driver writes it.

``dnsmasq_config`` returns the three files libvirt gives dnsmasq: the
configuration (``<config_dir>/<name>.conf`` is where the service writes it),
the DHCP hosts file and the additional hosts file.  The text follows
networkDnsmasqConfContents line for line, so it can be compared with
libvirt's own test data (networkxml2conf).  Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv6Address

from shared.conf.network import NetworkDef
from shared.conf.network_dns import DnsSrv
from shared.conf.network_forward import ForwardMode
from shared.conf.network_ip import DhcpLease, IPDef
from shared.conf.socketaddr import check_range, format_ip, prefix_to_netmask
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

_DOMAIN = ErrorDomain.NETWORK

_HEADER = (
    "##WARNING:  THIS IS AN AUTO-GENERATED FILE. CHANGES TO IT ARE LIKELY TO BE\n"
    "##OVERWRITTEN AND LOST.  Changes to this configuration should be made using:\n"
    "##    virsh net-edit {name}\n"
    "## or other application using the libvirt API.\n"
    "##\n## dnsmasq conf file created by libvirt\n"
    "strict-order\n"
)

# virBufferEscapeString's replacements (the file paths are written through it)
_XML_ESCAPES = {"<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;"}


@dataclass(frozen=True)
class DnsmasqFiles:
    """The files of one network's dnsmasq; ``hostsfile`` None when it has no static host."""

    conf: str
    hostsfile: str | None
    addnhosts: str
    hostsfile_path: str
    addnhosts_path: str
    #: the number of addresses the DHCP ranges hold (dhcp-lease-max)
    lease_max: int


def file_paths(config_dir: str, name: str) -> tuple[str, str]:
    """The DHCP hosts file and the additional hosts file of network ``name``."""
    return f"{config_dir}/{name}.hostsfile", f"{config_dir}/{name}.addnhosts"


def _escape(text: str) -> str:
    return "".join(_XML_ESCAPES.get(c, c) for c in text)


def lease_time(lease: DhcpLease | None) -> str | None:
    """networkBuildDnsmasqLeaseTime: ``infinite`` or the number and the unit's initial."""
    if lease is None:
        return None
    if lease.expiry == 0:
        return "infinite"
    return f"{lease.expiry}{lease.unit.value[0]}"


def _dhcp_host_lines(ip: IPDef) -> list[str]:
    """dnsmasqAddDhcpHost: one hosts-file line per static host that has an address."""
    lines: list[str] = []
    for host in ip.hosts:
        if host.ip is None:
            continue
        addr = format_ip(host.ip)
        if ip.is_ipv6:
            parts = [f"id:{host.id}"] if host.id else []
            parts += [host.name] if host.name else []
            parts.append(f"[{addr}]")
        elif host.name and host.mac:
            parts = [host.mac, addr, host.name]
        elif host.name:
            parts = [host.name, addr]
        else:
            parts = [host.mac or "", addr]
        lease = lease_time(host.lease)
        if lease is not None:
            parts.append(lease)
        lines.append(",".join(parts))
    return lines


def ptr_domain(ip: IPDef) -> str:
    """virSocketAddrPTRDomain: the reverse zone of ``ip``'s network.

    Raises ``VIR_ERR_CONFIG_UNSUPPORTED`` when the prefix does not end on an
    octet (IPv4) or nibble (IPv6) boundary.
    """
    prefix = ip.prefix_length()
    if ip.is_ipv4:
        if prefix <= 0 or prefix % 8:
            raise _no_ptr("IPv4", prefix)
        octets = ip.address.packed[: prefix // 8]
        return ".".join(str(o) for o in reversed(octets)) + ".in-addr.arpa"
    if prefix <= 0 or prefix % 4:
        raise _no_ptr("IPv6", prefix)
    nibbles = ip.address.packed.hex()[: prefix // 4]
    return ".".join(reversed(nibbles)) + ".ip6.arpa"


def _no_ptr(family: str, prefix: int) -> VirtError:
    return VirtError(
        ErrorCode.CONFIG_UNSUPPORTED,
        f"PTR domain for {family} network with prefix {prefix} cannot be automatically created",
        _DOMAIN,
    )


def _dhcp_lines(ip: IPDef | None, bridge: str) -> tuple[list[str], int]:
    """networkDnsmasqConfDHCP: the DHCP lines of one ``<ip>`` and its range sizes."""
    if ip is None:
        return [], 0
    prefix = ip.prefix_length()
    if prefix < 0:
        raise VirtError(
            ErrorCode.INTERNAL_ERROR, f"bridge '{bridge}' has an invalid prefix", _DOMAIN
        )
    lines: list[str] = []
    leases = 0
    for r in ip.ranges:
        start, end = format_ip(r.start), format_ip(r.end)
        if ip.is_ipv6:
            line = f"dhcp-range={start},{end},{prefix}"
        else:
            # dnsmasq wants a netmask for IPv4
            mask = prefix_to_netmask(prefix, ip.address)
            if mask is None:
                raise VirtError(
                    ErrorCode.INTERNAL_ERROR,
                    f"Failed to translate bridge '{bridge}' prefix {prefix} to netmask",
                    _DOMAIN,
                )
            line = f"dhcp-range={start},{end},{format_ip(mask)}"
        lease = lease_time(r.lease)
        lines.append(line if lease is None else f"{line},{lease}")
        leases += check_range(r.start, r.end, ip.address, prefix)
    if not ip.ranges and ip.hosts:
        # static hosts only: a "static" range switches the DHCP server on
        line = f"dhcp-range={format_ip(ip.address)},static"
        lines.append(f"{line},{prefix}" if ip.is_ipv6 else line)
    if ip.is_ipv4:
        if ip.ranges or ip.hosts:
            lines += ["dhcp-no-override", "dhcp-authoritative"]
        if ip.bootp_file is not None:
            if ip.bootp_server is not None:
                lines.append(f"dhcp-boot={ip.bootp_file},,{format_ip(ip.bootp_server)}")
            else:
                lines.append(f"dhcp-boot={ip.bootp_file}")
    return lines, leases


def _srv_line(name: str, srv: DnsSrv) -> str:
    if not srv.service or not srv.protocol:
        raise VirtError(
            ErrorCode.INTERNAL_ERROR,
            f"Missing required 'service' attribute in SRV record of network '{name}'",
            _DOMAIN,
        )
    line = f"srv-host=_{srv.service}._{srv.protocol}"
    if srv.domain:
        line += f".{srv.domain}"
    # an empty or "." target: the service is decidedly not available (RFC 2782)
    if srv.target and srv.target != ".":
        line += f",{srv.target}"
        # the fields are positional: an earlier one is given when a later one is
        if srv.port or srv.priority or srv.weight:
            line += f",{srv.port or 1}"
        if srv.priority or srv.weight:
            line += f",{srv.priority}"
        if srv.weight:
            line += f",{srv.weight}"
    return line


def _dhcp_ips(net: NetworkDef) -> tuple[IPDef | None, IPDef | None, list[str]]:
    """The IPv4 and IPv6 ``<ip>`` with DHCP (one of each at most) and the TFTP lines."""
    v4: IPDef | None = None
    v6: IPDef | None = None
    tftp: list[str] = []
    for ip in net.ips:
        if ip.is_ipv4:
            if ip.has_dhcp():
                if v4 is not None:
                    raise VirtError(
                        ErrorCode.CONFIG_UNSUPPORTED,
                        "For IPv4, multiple DHCP definitions cannot be specified.",
                        _DOMAIN,
                    )
                v4 = ip
            if ip.tftp_root is not None:
                if not tftp:
                    tftp.append("enable-tftp")
                tftp.append(f"tftp-root={ip.tftp_root}")
        elif ip.has_dhcp():
            if v6 is not None:
                raise VirtError(
                    ErrorCode.CONFIG_UNSUPPORTED,
                    "For IPv6, multiple DHCP definitions cannot be specified.",
                    _DOMAIN,
                )
            v6 = ip
    return v4, v6, tftp


def _dns_lines(net: NetworkDef) -> list[str]:
    """Forwarders, the domain, local PTR zones and plain-name handling."""
    dns = net.dns
    want_dns = dns.enable is not False
    lines: list[str] = [] if want_dns else ["port=0"]
    if want_dns and dns.forwarders:
        no_resolv = False
        for fwd in dns.forwarders:
            line = "server="
            if fwd.domain:
                line += f"/{fwd.domain}/"
            if fwd.addr is not None:
                line += format_ip(fwd.addr)
                no_resolv = no_resolv or not fwd.domain
            else:
                line += "#"  # do not forward this domain
            lines.append(line)
        if no_resolv:
            lines.append("no-resolv")
    if net.domain:
        if net.domain_local_only is True:
            lines.append(f"local=/{net.domain}/")
        lines += [f"domain={net.domain}", "expand-hosts"]
    if want_dns:
        lines += [f"local=/{ptr_domain(ip)}/" for ip in net.ips if ip.local_ptr is True]
        if dns.forward_plain_names is False:
            lines += ["domain-needed", "local=//"]
    return lines


def addn_hosts_text(net: NetworkDef) -> str:
    """The additional hosts file: one line per address with all its names, tab-separated."""
    merged: dict[str, list[str]] = {}
    for host in net.dns.hosts:
        if host.ip is None:
            continue
        merged.setdefault(format_ip(host.ip), []).extend(host.hostnames)
    return "".join(
        ip + "\t" + "".join(n + "\t" for n in names) + "\n" for ip, names in merged.items()
    )


def dnsmasq_config(net: NetworkDef, *, config_dir: str, pidfile: str | None = None) -> DnsmasqFiles:
    """The dnsmasq files of ``net``, whose bridge must be named (the service names it).

    Raises ``VirtError`` where libvirt refuses the network at start.
    """
    bridge = net.bridge.name or ""
    dns = net.dns
    want_dns = dns.enable is not False
    hosts_path, addn_path = file_paths(config_dir, net.name)
    lines = _dns_lines(net)
    if pidfile:
        lines.append(f"pid-file={pidfile}")
    # dnsmasq always listens on the loopback unless told not to; bind-dynamic with
    # only interface= keeps it from answering anywhere but the bridge (CVE-2012-3411)
    lines += ["except-interface=lo", "bind-dynamic", f"interface={bridge}"]
    if net.forward.mode is ForwardMode.NONE:
        # isolated: no default route, no upstream DNS, and RAs with a zero lifetime
        lines += ["dhcp-option=3", "no-resolv", "ra-param=*,0,0"]
    if want_dns:
        lines += [f"txt-record={t.name},{t.value}" for t in dns.txts]
        lines += [_srv_line(net.name, srv) for srv in dns.srvs]
    v4, v6, tftp = _dhcp_ips(net)
    lines += tftp
    host_lines: list[str] = []
    leases = 0
    for ip in (v4, v6):
        dhcp, count = _dhcp_lines(ip, bridge)
        lines += dhcp
        leases += count
        if ip is not None:
            host_lines += _dhcp_host_lines(ip)
    if leases > 0:
        lines.append(f"dhcp-lease-max={leases}")
    if v4 is not None or v6 is not None:
        lines.append(f"dhcp-hostsfile={_escape(hosts_path)}")
    if want_dns:
        lines.append(f"addn-hosts={_escape(addn_path)}")
    if net.mtu > 0:
        lines.append(f"dhcp-option=option:mtu,{net.mtu}")
    if v6 is not None:
        lines.append("enable-ra")
    else:
        lines += [
            f"dhcp-range={format_ip(ip.address)},ra-only"
            for ip in net.ips
            if isinstance(ip.address, IPv6Address) and not ip.has_dhcp()
        ]
    lines += list(net.dnsmasq_options)
    conf = _HEADER.format(name=net.name) + "".join(line + "\n" for line in lines)
    return DnsmasqFiles(
        conf=conf,
        hostsfile="".join(h + "\n" for h in host_lines) if host_lines else None,
        addnhosts=addn_hosts_text(net),
        hostsfile_path=hosts_path,
        addnhosts_path=addn_path,
        lease_max=leases,
    )
