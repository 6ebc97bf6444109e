"""The secret kind: golden documents, libvirt's refusals, and round-trip properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.conf.secret import SecretDef, SecretUsageType, format_secret, parse_secret
from shared.util.errors import ErrorCode, VirtError

ISCSI = """<secret ephemeral='no' private='yes'>
  <uuid>5f0e1e8a-0e52-4d5b-9b0c-1c2d3e4f5a6b</uuid>
  <description>target chap</description>
  <usage type='iscsi'>
    <target>iqn.2026-11.org.example:store</target>
  </usage>
</secret>
"""


def test_iscsi_round_trip_is_exact() -> None:
    assert format_secret(parse_secret(ISCSI)) == ISCSI


def test_defaults_and_canonical_uuid() -> None:
    d = parse_secret("<secret><uuid>5F0E1E8A0E524D5B9B0C1C2D3E4F5A6B</uuid></secret>")
    assert d.uuid == "5f0e1e8a-0e52-4d5b-9b0c-1c2d3e4f5a6b"
    assert format_secret(d) == (
        "<secret ephemeral='no' private='no'>\n"
        "  <uuid>5f0e1e8a-0e52-4d5b-9b0c-1c2d3e4f5a6b</uuid>\n"
        "</secret>\n"
    )


def test_special_characters_are_escaped() -> None:
    d = SecretDef(description="a<b & 'c'", usage_type=SecretUsageType.TLS, usage_id='x"y')
    text = format_secret(d)
    assert "a&lt;b &amp; &apos;c&apos;" in text and "x&quot;y" in text
    assert parse_secret(text) == d


_INTERNAL, _UNSUPPORTED, _XML = (
    ErrorCode.INTERNAL_ERROR,
    ErrorCode.CONFIG_UNSUPPORTED,
    ErrorCode.XML_ERROR,
)


@pytest.mark.parametrize(
    ("doc", "code", "message"),
    [
        # libvirt 9's codes: the words virsh prints before the message come from them
        ("<secret><uuid>nope</uuid></secret>", _INTERNAL, "malformed uuid element"),
        ("<secret><usage type='bogus'/></secret>", _UNSUPPORTED, "unknown secret usage type bogus"),
        ("<secret><usage type='volume'/></secret>", _INTERNAL, "volume path is missing"),
        (
            "<secret><usage type='ceph'/></secret>",
            _INTERNAL,
            "Ceph usage specified, but name is missing",
        ),
        ("<secret><usage type='iscsi'/></secret>", _INTERNAL, "target is missing"),
        ("<secret><usage type='tls'/></secret>", _INTERNAL, "TLS usage specified"),
        ("<secret><usage type='vtpm'/></secret>", _INTERNAL, "vTPM usage specified"),
        ("<secret ephemeral='maybe'/>", _XML, "XML error: invalid value of 'ephemeral'"),
        ("<notsecret/>", _XML, "XML error: expecting root element of 'secret', not 'notsecret'"),
    ],
)
def test_refusals(doc: str, code: ErrorCode, message: str) -> None:
    with pytest.raises(VirtError) as info:
        parse_secret(doc)
    assert message in str(info.value)
    assert info.value.code is code


_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30
).filter(lambda s: s.strip() == s and s)

secrets = st.builds(
    SecretDef,
    uuid=st.one_of(st.none(), st.uuids().map(str)),
    description=st.one_of(st.none(), _text),
    ephemeral=st.booleans(),
    private=st.booleans(),
    usage_type=st.sampled_from(list(SecretUsageType)),
    usage_id=_text,
).map(
    lambda d: d.model_copy(update={"usage_id": None}) if d.usage_type is SecretUsageType.NONE else d
)


@given(secrets)
def test_format_parse_format_is_stable(d: SecretDef) -> None:
    once = format_secret(d)
    assert format_secret(parse_secret(once)) == once
