"""The network service's records in its host's ledger (``shared.util.ledger``).

Keys of the ledger ``VIRTBUS_LEDGER_network_<host>``: ``net.<name>`` holds a
network (``NetworkRecord``) and ``port.<network>.<uuid>`` a port
(``PortRecord``).  A change and the events it announces are one ledger
message, compare-and-set on the key's last sequence; reads come from the
ledger's memory.  The definition is kept apart from the runtime facts
(libvirt's def vs obj): ``xml`` is the persistent definition, ``live_xml``
the one the running network was started with (bridge and MAC filled in).
Each stored document is parsed once (``definition``, ``port_definition``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache, partial

from pydantic import BaseModel

from shared.conf.network import NetworkDef, parse_network
from shared.conf.network_port import NetworkPortDef, parse_network_port
from shared.util.ledger import Event, Ledger
from shared.util.subjects import token, untoken

_NET = "net."
_PORT = "port."
#: Stored documents of each kind whose definitions are kept: more than a host
#: has networks (each twice when running: as defined and as started) or ports.
_KEPT = 4096


class NetworkRecord(BaseModel):
    """A network as stored."""

    xml: str
    persistent: bool = True
    autostart: bool = False
    active: bool = False
    live_xml: str | None = None


class PortRecord(BaseModel):
    """A network port as stored: its XML and the host device plugged for it."""

    xml: str
    dev: str | None = None


@lru_cache(maxsize=_KEPT)
def definition(xml: str) -> NetworkDef:
    """The definition of a stored network's document (``xml`` or ``live_xml``),
    parsed once: list, lookup, dumpxml and every define read every network's,
    which would otherwise parse each of them on each call.  A record's document
    never changes in place (a change stores a new record), and a definition is
    frozen, so one may be shared.  Raises as ``parse_network``."""
    return parse_network(xml)


@lru_cache(maxsize=_KEPT)
def port_definition(xml: str) -> NetworkPortDef:
    """The definition of a stored port's document, parsed once, as ``definition``:
    a running network's dumpxml and every port creation read all its ports'."""
    return parse_network_port(xml)


def _network(key: str, data: bytes) -> tuple[str, NetworkRecord]:
    """(name, record) of a stored network; raises when either does not parse."""
    record = NetworkRecord.model_validate_json(data)
    definition(record.xml)
    return untoken(key[len(_NET) :]), record


def _port(key: str, data: bytes) -> tuple[tuple[str, str], PortRecord]:
    """((network, uuid), record) of a stored port."""
    network, _, uuid = key[len(_PORT) :].rpartition(".")
    return (untoken(network), uuid), PortRecord.model_validate_json(data)


class Registry:
    """Reads (from memory) and writes (one ledger message each) of one host's records."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def networks(self) -> dict[str, NetworkRecord]:
        """Every stored network; a malformed record is skipped (``Ledger.decode``)."""
        found = (self.ledger.decode(r, partial(_network, r.key)) for r in self.ledger.items(_NET))
        return dict(item for item in found if item is not None)

    def ports(self) -> dict[tuple[str, str], PortRecord]:
        """Every stored port; a malformed record is skipped (``Ledger.decode``)."""
        found = (self.ledger.decode(r, partial(_port, r.key)) for r in self.ledger.items(_PORT))
        return dict(item for item in found if item is not None)

    async def save_network(
        self, name: str, record: NetworkRecord | None, events: Sequence[Event] = ()
    ) -> None:
        """Store (None: delete) network ``name`` with the events of the change."""
        value = None if record is None else record.model_dump_json().encode()
        await self.ledger.write(_NET + token(name), value, events, what=f"network '{name}'")

    async def save_port(
        self, network: str, uuid: str, record: PortRecord | None, events: Sequence[Event] = ()
    ) -> None:
        value = None if record is None else record.model_dump_json().encode()
        key = f"{_PORT}{token(network)}.{uuid}"
        await self.ledger.write(key, value, events, what=f"network port '{uuid}'")

    async def announce(self, events: Sequence[Event]) -> None:
        """Events no stored change carries (DHCP leases: dnsmasq's, not ours)."""
        await self.ledger.announce(events, what="lease event")
