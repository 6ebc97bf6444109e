"""The secret kind: libvirt's ``<secret>`` XML (secret_conf.c) <-> ``SecretDef``."""

from __future__ import annotations

import enum

from lxml import etree
from pydantic import BaseModel, ConfigDict

from shared.conf.uuid import parse_uuid
from shared.conf.xmlprops import first, member_of
from shared.conf.xmlsafe import parse_xml
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorCode, ErrorDomain, VirtError, xml_error


class SecretUsageType(enum.StrEnum):
    """What a secret is used for (virSecretUsageType)."""

    NONE = "none"
    VOLUME = "volume"
    CEPH = "ceph"
    ISCSI = "iscsi"
    TLS = "tls"
    VTPM = "vtpm"


# Per usage type: the child element of <usage> holding the usage id, and the
# wording libvirt uses when that element is missing.
USAGE_ID_ELEMENT: dict[SecretUsageType, tuple[str, str]] = {
    SecretUsageType.VOLUME: ("volume", "volume usage specified, but volume path is missing"),
    SecretUsageType.CEPH: ("name", "Ceph usage specified, but name is missing"),
    SecretUsageType.ISCSI: ("target", "iSCSI usage specified, but target is missing"),
    SecretUsageType.TLS: ("name", "TLS usage specified, but name is missing"),
    SecretUsageType.VTPM: ("name", "vTPM usage specified, but name is missing"),
}


class SecretDef(BaseModel):
    """What a ``<secret>`` document says; runtime state (the value) lives elsewhere."""

    model_config = ConfigDict(frozen=True)

    uuid: str | None = None
    description: str | None = None
    ephemeral: bool = False
    private: bool = False
    usage_type: SecretUsageType = SecretUsageType.NONE
    usage_id: str | None = None


_DOMAIN = ErrorDomain.SECRET


def _parse_bool_attr(root: etree._Element, name: str) -> bool:
    value = root.get(name)
    if value is None:
        return False
    if value not in ("yes", "no"):
        raise xml_error(f"invalid value of '{name}'", _DOMAIN)
    return value == "yes"


def _parse_usage(node: etree._Element) -> tuple[SecretUsageType, str]:
    type_text = node.get("type")
    # libvirt's secret_conf.c reports these as internal errors and an unknown
    # type as an unsupported configuration, not as XML errors.
    if type_text is None:
        raise VirtError(ErrorCode.INTERNAL_ERROR, "unknown secret usage type", _DOMAIN)
    usage_type = member_of(SecretUsageType, type_text) or SecretUsageType.NONE
    if usage_type is SecretUsageType.NONE:
        raise VirtError(
            ErrorCode.CONFIG_UNSUPPORTED, f"unknown secret usage type {type_text}", _DOMAIN
        )
    element, missing = USAGE_ID_ELEMENT[usage_type]
    child = first(node, element)
    if child is None or not child.text:
        raise VirtError(ErrorCode.INTERNAL_ERROR, missing, _DOMAIN)
    return usage_type, child.text


def _format_usage(w: XmlWriter, usage_type: SecretUsageType, usage_id: str | None) -> None:
    if usage_type is SecretUsageType.NONE:
        return
    element, _ = USAGE_ID_ELEMENT[usage_type]
    with w.block("usage", [("type", usage_type)]) as u:
        u.text(element, usage_id)


def parse_secret(xml: str | bytes) -> SecretDef:
    """Parse a ``<secret>`` document; raises ``VirtError`` as libvirt would refuse it."""
    root = parse_xml(xml, "secret", domain=_DOMAIN)
    uuid: str | None = None
    uuid_node = first(root, "uuid")
    if uuid_node is not None:
        uuid = parse_uuid(uuid_node.text or "")
        if uuid is None:
            raise VirtError(ErrorCode.INTERNAL_ERROR, "malformed uuid element", _DOMAIN)
    description_node = first(root, "description")
    usage_type, usage_id = SecretUsageType.NONE, None
    usage_node = first(root, "usage")
    if usage_node is not None:
        usage_type, usage_id = _parse_usage(usage_node)
    return SecretDef(
        uuid=uuid,
        description=description_node.text if description_node is not None else None,
        ephemeral=_parse_bool_attr(root, "ephemeral"),
        private=_parse_bool_attr(root, "private"),
        usage_type=usage_type,
        usage_id=usage_id,
    )


def format_secret(secret: SecretDef) -> str:
    """The ``<secret>`` document libvirt writes for ``secret``."""
    w = XmlWriter()
    with w.block("secret", [("ephemeral", secret.ephemeral), ("private", secret.private)]) as s:
        s.text("uuid", secret.uuid)
        s.text("description", secret.description)
        _format_usage(s, secret.usage_type, secret.usage_id)
    return w.getvalue()
