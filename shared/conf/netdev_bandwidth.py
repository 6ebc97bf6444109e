"""The ``<bandwidth>`` element of networks, portgroups and ports (netdev_bandwidth_conf.c)."""

from __future__ import annotations

from lxml import etree
from pydantic import BaseModel, ConfigDict

from shared.conf.xmlprops import ULONG_MAX, prop_uint, sub_element
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorCode, ErrorDomain, VirtError, xml_detail

_DOMAIN = ErrorDomain.NONE  # netdev_bandwidth_conf.c reports without a domain


class BandwidthRate(BaseModel):
    """One direction's limits; 0 means "not set", as libvirt stores them."""

    model_config = ConfigDict(frozen=True)

    average: int = 0
    peak: int = 0
    burst: int = 0
    floor: int = 0


class Bandwidth(BaseModel):
    """Inbound and outbound rates; at least one is present."""

    model_config = ConfigDict(frozen=True)

    inbound: BandwidthRate | None = None
    outbound: BandwidthRate | None = None

    def has_floor(self) -> bool:
        """virNetDevBandwidthHasFloor: an inbound floor is set."""
        return self.inbound is not None and self.inbound.floor != 0


def _parse_rate(node: etree._Element, allow_floor: bool) -> BandwidthRate:
    average = prop_uint(node, "average", limit=ULONG_MAX)
    peak = prop_uint(node, "peak", limit=ULONG_MAX)
    burst = prop_uint(node, "burst", limit=ULONG_MAX)
    floor = prop_uint(node, "floor", limit=ULONG_MAX)
    if average is None and floor is None:
        raise xml_detail("Missing mandatory average or floor attributes", _DOMAIN)
    if (peak is not None or burst is not None) and average is None:
        raise VirtError(
            ErrorCode.CONFIG_UNSUPPORTED, "'peak' and 'burst' require 'average' attribute", _DOMAIN
        )
    if floor is not None and not allow_floor:
        raise VirtError(
            ErrorCode.CONFIG_UNSUPPORTED,
            "floor attribute is not supported for this config",
            _DOMAIN,
        )
    return BandwidthRate(average=average or 0, peak=peak or 0, burst=burst or 0, floor=floor or 0)


def parse_bandwidth(
    node: etree._Element, *, allow_floor: bool, allow_class_id: bool = False
) -> tuple[Bandwidth | None, int | None]:
    """virNetDevBandwidthParse: (bandwidth or None when it has no rate, classID).

    ``allow_class_id`` is true only where libvirt passes a class id pointer
    (network ports); elsewhere a ``classID`` attribute is refused.  ``floor``
    is never allowed on ``<outbound>``.
    """
    class_id = prop_uint(node, "classID")
    if class_id is not None and not allow_class_id:
        raise xml_detail(
            "classID attribute not supported on <bandwidth> in this usage context", _DOMAIN
        )
    inbound_node = sub_element(node, "inbound")
    outbound_node = sub_element(node, "outbound")
    inbound = _parse_rate(inbound_node, allow_floor) if inbound_node is not None else None
    outbound = _parse_rate(outbound_node, False) if outbound_node is not None else None
    if inbound is None and outbound is None:
        return None, class_id
    return Bandwidth(inbound=inbound, outbound=outbound), class_id


def _format_rate(w: XmlWriter, name: str, rate: BandwidthRate | None) -> None:
    if rate is None or not (rate.average or rate.floor):
        return
    w.leaf(
        name,
        [
            # libvirt leaves out average='0', which peak or burst then lack on
            # reading back; written whenever they are
            ("average", rate.average if rate.average or rate.peak or rate.burst else None),
            ("peak", rate.peak or None),
            ("floor", rate.floor or None),
            ("burst", rate.burst or None),
        ],
    )


def format_bandwidth(w: XmlWriter, bandwidth: Bandwidth | None, class_id: int = 0) -> None:
    """virNetDevBandwidthFormat (always an open/close pair, even with no rate left)."""
    if bandwidth is None:
        return
    w.open("bandwidth", [("classID", class_id or None)])
    _format_rate(w, "inbound", bandwidth.inbound)
    _format_rate(w, "outbound", bandwidth.outbound)
    w.close("bandwidth")
