"""The host side of a network: its bridge, addresses, routes and forwarding sysctls.

Everything happens in the network namespace the service runs in.  Commands
are run with ``ip -batch`` so that setting up a bridge is one process, not
one per address.  ``bridge_commands`` is pure (the lines of that batch);
the coroutines run them.  Errors are ``VirtError`` (``VIR_ERR_SYSTEM_ERROR``)
carrying the command's own message.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from shared.conf.network import NetworkDef
from shared.conf.network_forward import ForwardMode
from shared.conf.socketaddr import format_ip
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

_SYS_NET = Path("/sys/class/net")
_PROC_SYS = Path("/proc/sys/net")
#: seconds any one host command may take
COMMAND_TIMEOUT = 30.0


async def run(argv: list[str], stdin: str | None = None) -> str:
    """Run a host command; its stdout, or ``VIR_ERR_SYSTEM_ERROR`` with its stderr."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as err:
        raise VirtError(
            ErrorCode.SYSTEM_ERROR, f"cannot run {argv[0]}: {err}", ErrorDomain.NETWORK
        ) from err
    try:
        out, err_out = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), COMMAND_TIMEOUT
        )
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise VirtError(
            ErrorCode.OPERATION_TIMEOUT, f"{argv[0]} did not finish", ErrorDomain.NETWORK
        ) from None
    if proc.returncode != 0:
        message = err_out.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        raise VirtError(
            ErrorCode.SYSTEM_ERROR, f"{' '.join(argv[:3])}: {message}", ErrorDomain.NETWORK
        )
    return out.decode(errors="replace")


def link_exists(name: str) -> bool:
    return (_SYS_NET / name).exists()


def is_bridge(name: str) -> bool:
    return (_SYS_NET / name / "bridge").is_dir()


def link_stats(name: str) -> tuple[int, int]:
    """(rx_bytes, tx_bytes) of a device; zeros when it is gone."""
    base = _SYS_NET / name / "statistics"
    try:
        rx = int((base / "rx_bytes").read_text())
        tx = int((base / "tx_bytes").read_text())
    except (FileNotFoundError, ValueError):
        return 0, 0
    return rx, tx


def bridge_commands(net: NetworkDef, mac: str) -> list[str]:
    """``ip -batch`` lines that create ``net``'s bridge, as libvirt sets it up.

    The bridge gets the network's MAC (so guests see a stable gateway
    address), STP and its forward delay (libvirt's delay is seconds, the
    kernel's centiseconds), the MTU, every address, then comes up, then the
    static routes (which need the bridge up and an address on its subnet).
    """
    bridge = net.bridge
    name = bridge.name or ""
    stp = 1 if bridge.stp else 0
    link = f"link add name {name} address {mac}"
    if net.mtu:
        link += f" mtu {net.mtu}"
    link += f" type bridge stp_state {stp} forward_delay {bridge.delay * 100}"
    lines = [link]
    for ip in net.ips:
        prefix = ip.prefix_length()
        extra = " nodad" if ip.is_ipv6 else ""
        lines.append(f"address add {format_ip(ip.address)}/{prefix} dev {name}{extra}")
    lines.append(f"link set dev {name} up")
    for route in net.routes:
        line = (
            f"route add {format_ip(route.address)}/{route.prefix_length()} "
            f"via {format_ip(route.gateway)} dev {name}"
        )
        if route.metric:
            line += f" metric {route.metric}"
        lines.append(line)
    return lines


async def create_bridge(net: NetworkDef, mac: str) -> None:
    """Create and configure ``net``'s bridge; on failure nothing of it is left."""
    name = net.bridge.name or ""
    if link_exists(name):
        raise VirtError(
            ErrorCode.SYSTEM_ERROR,
            f"Unable to create bridge {name}: File exists",
            ErrorDomain.NETWORK,
        )
    if net.ips_of(ipv6=True):
        # the kernel refuses IPv6 addresses on a device with IPv6 disabled
        _write_sysctl(f"ipv6/conf/{name}/disable_ipv6", "0", missing_ok=True)
    try:
        await run(["ip", "-batch", "-"], "\n".join(bridge_commands(net, mac)) + "\n")
    except BaseException:
        if link_exists(name):
            await delete_link(name)
        raise
    if net.ips_of(ipv6=True):
        # the bridge is a router: it must not configure itself from guests' RAs
        _write_sysctl(f"ipv6/conf/{name}/accept_ra", "0", missing_ok=True)


async def delete_link(name: str) -> None:
    """Remove a device; nothing when it is already gone."""
    if link_exists(name):
        try:
            await run(["ip", "link", "del", "dev", name])
        except VirtError:
            if link_exists(name):
                raise


def _write_sysctl(key: str, value: str, *, missing_ok: bool = False) -> None:
    path = _PROC_SYS / key
    try:
        if path.read_text().strip() == value:
            return
        path.write_text(value)
    except FileNotFoundError:
        if not missing_ok:
            raise
    except OSError as err:
        raise VirtError(
            ErrorCode.SYSTEM_ERROR,
            f"cannot set {path} to {value}: {os.strerror(err.errno or 0)}",
            ErrorDomain.NETWORK,
        ) from err


def enable_forwarding(net: NetworkDef) -> None:
    """networkEnableIPForwarding: a forwarding network turns on the families it uses."""
    if net.forward.mode in (ForwardMode.NONE,) or not net.forward.info.libvirt_bridge:
        return
    if net.ips_of(ipv6=False):
        _write_sysctl("ipv4/ip_forward", "1")
    if net.ips_of(ipv6=True):
        _write_sysctl("ipv6/conf/all/forwarding", "1")
