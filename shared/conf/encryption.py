"""The ``<encryption>`` element of volumes and disks (storage_encryption_conf.c), and the
``<secret uuid=|usage=/>`` look-up it shares with pool and disk ``<auth>`` (virsecret.c)."""

from __future__ import annotations

import enum

from lxml import etree
from pydantic import BaseModel, ConfigDict

from shared.conf.uuid import parse_uuid
from shared.conf.xmlprops import first, member_of, prop_enum, prop_uint
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorDomain, config_unsupported, xml_error

_DOMAIN = ErrorDomain.STORAGE


class SecretLookup(BaseModel):
    """Which secret to use: by ``uuid`` or by ``usage`` id (exactly one is set)."""

    model_config = ConfigDict(frozen=True)

    uuid: str | None = None
    usage: str | None = None


def parse_secret_lookup(node: etree._Element) -> SecretLookup:
    """The uuid= or usage= of a ``<secret>`` element (virSecretLookupParseSecret)."""
    uuid_text = node.get("uuid")
    usage = node.get("usage")
    if uuid_text is None and usage is None:
        raise xml_error("missing secret uuid or usage attribute", ErrorDomain.NONE)
    if uuid_text is not None and usage is not None:
        raise xml_error("either secret uuid or usage expected", ErrorDomain.NONE)
    if uuid_text is not None:
        uuid = parse_uuid(uuid_text)
        if uuid is None:
            raise xml_error(f"invalid secret uuid '{uuid_text}'", ErrorDomain.NONE)
        return SecretLookup(uuid=uuid)
    return SecretLookup(usage=usage)


def format_secret_lookup(w: XmlWriter, secret_type: str | None, lookup: SecretLookup) -> None:
    """``<secret type=... uuid=|usage=/>`` (virSecretLookupFormatSecret)."""
    w.leaf("secret", [("type", secret_type), ("uuid", lookup.uuid), ("usage", lookup.usage)])


class EncryptionFormat(enum.StrEnum):
    """virStorageEncryptionFormatType."""

    DEFAULT = "default"
    QCOW = "qcow"
    LUKS = "luks"
    LUKS2 = "luks2"


class EncryptionEngine(enum.StrEnum):
    """virStorageEncryptionEngine; absence means libvirt's "default" (never written)."""

    QEMU = "qemu"
    LIBRBD = "librbd"


#: The only ``<secret type=...>`` an encryption element knows.
SECRET_TYPES = ("passphrase",)


class EncryptionSecret(BaseModel):
    """One ``<secret type='passphrase' .../>`` of an encryption element."""

    model_config = ConfigDict(frozen=True)

    type: str = "passphrase"
    lookup: SecretLookup


class Cipher(BaseModel):
    """``<cipher name size mode? hash?/>`` of a LUKS encryption."""

    model_config = ConfigDict(frozen=True)

    name: str
    size: int
    mode: str | None = None
    hash: str | None = None


class Ivgen(BaseModel):
    """``<ivgen name hash?/>`` of a LUKS encryption (only together with a cipher)."""

    model_config = ConfigDict(frozen=True)

    name: str
    hash: str | None = None


class Encryption(BaseModel):
    """What an ``<encryption>`` element says."""

    model_config = ConfigDict(frozen=True)

    format: EncryptionFormat
    engine: EncryptionEngine | None = None
    secrets: tuple[EncryptionSecret, ...] = ()
    cipher: Cipher | None = None
    ivgen: Ivgen | None = None


def _parse_secret(node: etree._Element) -> EncryptionSecret:
    type_text = node.get("type")
    if not type_text:
        raise xml_error("unknown volume encryption secret type", _DOMAIN)
    if type_text not in SECRET_TYPES:
        raise config_unsupported(f"unknown volume encryption secret type {type_text}", _DOMAIN)
    return EncryptionSecret(type=type_text, lookup=parse_secret_lookup(node))


def _parse_cipher(node: etree._Element) -> Cipher:
    name = node.get("name")
    if name is None:
        raise xml_error("cipher info missing 'name' attribute", _DOMAIN)
    size = prop_uint(node, "size", required=True)
    assert size is not None  # required=True raises instead
    return Cipher(name=name, size=size, mode=node.get("mode"), hash=node.get("hash"))


def _parse_ivgen(node: etree._Element) -> Ivgen:
    name = node.get("name")
    if name is None:
        raise xml_error("missing ivgen info name string", _DOMAIN)
    return Ivgen(name=name, hash=node.get("hash"))


def parse_encryption(node: etree._Element) -> Encryption:
    """Parse an ``<encryption>`` element (virStorageEncryptionParseNode).

    ``<cipher>``/``<ivgen>`` are read only for the ``luks`` format, as libvirt
    does; raises ``VirtError`` with libvirt's wording.
    """
    format_text = node.get("format")
    if not format_text:
        raise xml_error("unknown volume encryption format", _DOMAIN)
    fmt = member_of(EncryptionFormat, format_text)
    if fmt is None:
        raise config_unsupported(f"unknown volume encryption format type {format_text}", _DOMAIN)
    engine = prop_enum(node, "engine", EncryptionEngine)
    secrets = tuple(_parse_secret(child) for child in node.iterchildren("secret"))
    cipher: Cipher | None = None
    ivgen: Ivgen | None = None
    if fmt is EncryptionFormat.LUKS:
        cipher_node = first(node, "cipher")
        if cipher_node is not None:
            cipher = _parse_cipher(cipher_node)
        ivgen_node = first(node, "ivgen")
        if ivgen_node is not None:
            if cipher is None:
                raise xml_error("ivgen element found, but cipher is missing", _DOMAIN)
            ivgen = _parse_ivgen(ivgen_node)
    return Encryption(format=fmt, engine=engine, secrets=secrets, cipher=cipher, ivgen=ivgen)


def format_encryption(w: XmlWriter, enc: Encryption) -> None:
    """Write ``<encryption>`` as libvirt does (virStorageEncryptionFormat): always
    an open/close pair, cipher and ivgen only for ``luks``."""
    w.open("encryption", [("format", enc.format), ("engine", enc.engine)])
    for secret in enc.secrets:
        format_secret_lookup(w, secret.type, secret.lookup)
    if enc.format is EncryptionFormat.LUKS and enc.cipher is not None:
        c = enc.cipher
        w.leaf("cipher", [("name", c.name), ("size", c.size), ("mode", c.mode), ("hash", c.hash)])
        if enc.ivgen is not None:
            w.leaf("ivgen", [("name", enc.ivgen.name), ("hash", enc.ivgen.hash)])
    w.close("encryption")
