"""A network running on this host: bridge, forwarding, firewall rules, dnsmasq, leases.

``RunningNetwork.start`` sets the parts up in libvirt's order and takes
them down again in reverse when one fails; ``adopt`` takes over a network
a previous service process left running (its bridge present): the rules
are re-applied (the backends never duplicate), a live dnsmasq is kept and
a dead one started; ``stop`` removes everything.  ``supervise`` restarts
dnsmasq whenever it dies until the network stops.  ``leases`` reads what
the lease helper recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from services.network import host
from services.network.dnsmasq import Dnsmasq, wait_exit
from services.network.dnsmasq_conf import DnsmasqFiles, dnsmasq_config
from services.network.firewall import FirewallBackend
from services.network.leasehelper import read_leases
from shared.api.network import Lease
from shared.conf.network import NetworkDef
from shared.conf.socketaddr import format_ip

log = logging.getLogger(__name__)

_RESTART_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0)


def needs_dnsmasq(net: NetworkDef) -> bool:
    """libvirt runs dnsmasq for a libvirt bridge with addresses, unless it would do nothing."""
    if not net.forward.info.libvirt_bridge or not net.ips:
        return False
    return (
        net.dns.enable is not False
        or any(ip.has_dhcp() for ip in net.ips)
        or bool(net.ips_of(ipv6=True))
    )


class RunningNetwork:
    """One active network of this host."""

    def __init__(self, net: NetworkDef, mac: str, run_dir: Path, firewall: FirewallBackend) -> None:
        self.net = net
        self.mac = mac
        self.firewall = firewall
        self.bridge = net.bridge.name or ""
        self.dnsmasq = Dnsmasq(net.name, self.bridge, run_dir)
        self._run_dir = run_dir
        self._stopping = False
        #: libvirt creates and owns this network's bridge (nat, route, open, isolated)
        self.owned = net.forward.info.libvirt_bridge
        self.restarts = 0
        self._status_mtime = 0.0

    def files(self) -> DnsmasqFiles:
        return dnsmasq_config(
            self.net, config_dir=str(self._run_dir), pidfile=str(self.dnsmasq.pidfile)
        )

    async def start(self) -> None:
        """Bring the network up; on failure (or cancellation) undo what was done.

        The bridge comes first; the firewall rules and dnsmasq only need the
        bridge, so they are set up side by side.  A network without a bridge of
        libvirt's (bridge, macvtap and hostdev modes) has nothing to set up:
        its ports use the host's devices as they are.
        """
        if not self.owned:
            return
        done: list[str] = ["bridge"]
        try:
            await host.create_bridge(self.net, self.mac)
            host.enable_forwarding(self.net)
            done += ["firewall", "dnsmasq"]
            steps: list[Coroutine[Any, Any, object]] = [self.firewall.apply(self.net)]
            if needs_dnsmasq(self.net):
                self.dnsmasq.write_files(self.files())
                steps.append(self.dnsmasq.start())
            outcomes = await asyncio.gather(*steps, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        except BaseException:
            await self._undo(done)
            raise

    async def _undo(self, done: list[str]) -> None:
        with contextlib.suppress(Exception):
            if "dnsmasq" in done:
                await self.dnsmasq.stop()
                self.dnsmasq.remove_files()
        with contextlib.suppress(Exception):
            if "firewall" in done:
                await self.firewall.remove(self.net)
        with contextlib.suppress(Exception):
            await host.delete_link(self.bridge)

    async def adopt(self) -> bool:
        """Take over the network if its bridge is still up; False when it is gone.

        A running dnsmasq is kept, as libvirt's refresh keeps it: it rereads its
        hosts files, or restarts when its configuration would now be written
        differently.
        """
        if not self.owned:
            return True
        if not host.is_bridge(self.bridge):
            return False
        host.enable_forwarding(self.net)
        if not await self.firewall.present(self.net):
            await self.firewall.apply(self.net)
        if not needs_dnsmasq(self.net):
            return True
        files = self.files()
        if self.dnsmasq.running_pid() is None:
            self.dnsmasq.write_files(files)
            await self.dnsmasq.start()
        elif self.dnsmasq.current_conf() != files.conf:
            # networkRefreshDhcpDaemon: a configuration that changed needs a restart
            self.dnsmasq.write_files(files)
            await self.dnsmasq.stop()
            await self.dnsmasq.start()
        else:
            # ... otherwise the hosts files are written again and dnsmasq rereads them
            self.dnsmasq.write_hosts(files)
            self.dnsmasq.reload()
        return True

    async def stop(self) -> None:
        """Remove dnsmasq, the rules and the bridge; safe to call on a half-gone network."""
        self._stopping = True
        if not self.owned:
            return  # never the host's own bridge or devices
        # independent steps: dnsmasq copes with its interface going away
        outcomes = await asyncio.gather(
            self.dnsmasq.stop(),
            self.firewall.remove(self.net),
            host.delete_link(self.bridge),
            return_exceptions=True,
        )
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        self.dnsmasq.remove_files(leases=True)
        if errors:
            raise errors[0]

    async def supervise(self) -> None:
        """Restart dnsmasq each time it dies, until the network stops."""
        if not needs_dnsmasq(self.net):
            return
        failures = 0
        while not self._stopping:
            pid = self.dnsmasq.running_pid()
            if pid is not None:
                await wait_exit(pid)
                failures = 0
                if self._stopping:
                    return
                log.warning("dnsmasq died, restarting it", extra={"network": self.net.name})
            try:
                self.dnsmasq.write_files(self.files())
                await self.dnsmasq.start()
                self.restarts += 1
            except Exception as err:
                wait = _RESTART_BACKOFF[min(failures, len(_RESTART_BACKOFF) - 1)]
                failures += 1
                log.error("dnsmasq restart failed: %s", err, extra={"network": self.net.name})
                await asyncio.sleep(wait)

    async def reconcile(self) -> bool:
        """Restore the firewall rules if a host firewall reload removed them."""
        if not self.owned or self._stopping or await self.firewall.present(self.net):
            return False
        log.warning("firewall rules missing, restoring them", extra={"network": self.net.name})
        await self.firewall.apply(self.net)
        return True

    def leases_changed(self) -> bool:
        """Whether the lease status file changed since the last call."""
        try:
            mtime = self.dnsmasq.status.stat().st_mtime
        except FileNotFoundError:
            mtime = 0.0
        changed = mtime != self._status_mtime
        self._status_mtime = mtime
        return changed

    def forget_leases_seen(self) -> None:
        """Make the next ``leases_changed`` answer True (to report again)."""
        self._status_mtime = -1.0

    def leases(self) -> list[Lease]:
        """virNetworkGetDHCPLeases: the leases the helper recorded, with their prefix."""
        out: list[Lease] = []
        for raw in read_leases(self.dnsmasq.status):
            addr = ipaddress.ip_address(raw["ip-address"])
            prefix = next(
                (
                    ip.prefix_length()
                    for ip in self.net.ips
                    if addr
                    in ipaddress.ip_network(
                        f"{format_ip(ip.address)}/{ip.prefix_length()}", strict=False
                    )
                ),
                0,
            )
            out.append(
                Lease(
                    iface=self.bridge,
                    expiry_time=int(raw.get("expiry-time", 0)),
                    type="ipv6" if addr.version == 6 else "ipv4",
                    mac=raw.get("mac-address"),
                    iaid=raw.get("iaid"),
                    ipaddr=str(addr),
                    prefix=prefix,
                    hostname=raw.get("hostname"),
                    clientid=raw.get("client-id"),
                )
            )
        return out
