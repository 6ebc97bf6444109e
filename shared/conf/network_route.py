"""Static ``<route>`` elements of a network (networkcommon_conf.c)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from lxml import etree
from pydantic import BaseModel, ConfigDict

from shared.conf.socketaddr import (
    IPAddress,
    format_ip,
    mask_by_prefix,
    netmask_bits,
    try_parse_ip,
)
from shared.conf.xmlprops import prop, prop_uint
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorCode, ErrorDomain, VirtError, xml_error

_DOMAIN = ErrorDomain.NETWORK


class RouteDef(BaseModel):
    """A route to ``address``/``prefix`` (or ``netmask``) via ``gateway``."""

    model_config = ConfigDict(frozen=True)

    family: str | None = None
    address: IPAddress
    netmask: IPAddress | None = None
    prefix: int | None = None
    gateway: IPAddress
    metric: int | None = None

    def prefix_length(self) -> int:
        """The route's prefix: explicit, from the netmask, else 0."""
        if self.prefix is not None:
            return self.prefix
        if self.netmask is not None:
            return netmask_bits(self.netmask)
        return 0


def parse_route(context: str, node: etree._Element) -> RouteDef:
    """virNetDevIPRouteParseXML; ``context`` prefixes every message (the network name).

    The address must be a network address for its netmask or prefix.
    """
    family = prop(node, "family")
    address_text = prop(node, "address")
    netmask_text = prop(node, "netmask")
    gateway_text = prop(node, "gateway")
    prefix = prop_uint(node, "prefix")
    metric = prop_uint(node, "metric", nonzero=True)
    if address_text is None:
        raise _err(f"{context}: Missing required address attribute in route definition")
    if gateway_text is None:
        raise _err(f"{context}: Missing required gateway attribute in route definition")
    address = try_parse_ip(address_text)
    if address is None:
        raise _err(f"{context}: Bad network address '{address_text}' in route definition")
    gateway = try_parse_ip(gateway_text)
    if gateway is None:
        raise _err(f"{context}: Bad gateway address '{gateway_text}' in route definition")
    netmask: IPAddress | None = None
    if family is None or family == "ipv4":
        said = "No family specified" if family is None else "IPv4 family specified"
        if not isinstance(address, IPv4Address):
            raise _err(
                f"{context}: {said} for non-IPv4 address '{address_text}' in route definition"
            )
        if not isinstance(gateway, IPv4Address):
            # libvirt names the address here, not the gateway
            raise _err(
                f"{context}: {said} for non-IPv4 gateway '{address_text}' in route definition"
            )
        if netmask_text is not None:
            netmask = try_parse_ip(netmask_text)
            if netmask is None:
                raise _err(f"{context}: Bad netmask address '{netmask_text}' in route definition")
            if not isinstance(netmask, IPv4Address):
                raise _err(
                    f"{context}: Invalid netmask '{netmask_text}' for address "
                    f"'{address_text}' (both must be IPv4)"
                )
            if prefix is not None:
                raise _err(f"{context}: Route definition cannot have both a prefix and a netmask")
        if (prefix or 0) > 32:
            raise _err(
                f"{context}: Invalid prefix {prefix} specified in route definition, must be 0 - 32"
            )
    elif family == "ipv6":
        if not isinstance(address, IPv6Address):
            raise _err(
                f"{context}: ipv6 family specified for non-IPv6 address '{address_text}' "
                "in route definition"
            )
        if netmask_text is not None:
            raise _err(
                f"{context}: Specifying netmask invalid for IPv6 address '{address_text}' "
                "in route definition"
            )
        if not isinstance(gateway, IPv6Address):
            raise _err(
                f"{context}: ipv6 specified for non-IPv6 gateway address '{gateway_text}' "
                "in route definition"
            )
        if (prefix or 0) > 128:
            raise _err(
                f"{context}: Invalid prefix {prefix} specified in route definition, must be 0 - 128"
            )
    else:
        raise _err(f"{context}: Unrecognized family '{family}' in route definition")
    if netmask is not None:
        network: IPAddress | None = type(address)(int(address) & int(netmask))
    else:
        network = mask_by_prefix(address, prefix or 0)
    if network != address:
        raise _err(
            f"{context}: Address '{address_text}' in route definition is not a network address"
        )
    return RouteDef(
        family=family,
        address=address,
        netmask=netmask,
        prefix=prefix,
        gateway=gateway,
        metric=metric,
    )


def _err(message: str) -> VirtError:
    return xml_error(message, _DOMAIN)


def unreachable_gateway(network: str, gateway: IPAddress) -> VirtError:
    """The refusal of a route whose gateway is on none of the network's subnets."""
    return VirtError(
        ErrorCode.CONFIG_UNSUPPORTED,
        f"unreachable static route gateway '{format_ip(gateway)}' specified for network "
        f"'{network}'",
        _DOMAIN,
    )


def format_route(w: XmlWriter, route: RouteDef) -> None:
    """virNetDevIPRouteFormat."""
    w.leaf(
        "route",
        [
            ("family", route.family),
            ("address", format_ip(route.address)),
            ("netmask", format_ip(route.netmask) if route.netmask is not None else None),
            ("prefix", route.prefix),
            ("gateway", format_ip(route.gateway)),
            ("metric", route.metric or None),
        ],
    )
