"""Hostile and malformed documents are refused by the one parser every kind uses."""

from __future__ import annotations

import pytest

from shared.conf.secret import parse_secret
from shared.conf.xmlsafe import MAX_XML_BYTES, MAX_XML_DEPTH, parse_xml
from shared.util.errors import ErrorCode, VirtError

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<secret><description>&lol4;</description></secret>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE secret [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<secret><description>&xxe;</description></secret>"""

EXTERNAL_DTD = """<?xml version="1.0"?>
<!DOCTYPE secret SYSTEM "http://127.0.0.1:1/secret.dtd">
<secret/>"""


def _refused(text: str | bytes) -> VirtError:
    with pytest.raises(VirtError) as info:
        parse_secret(text)
    assert info.value.code is ErrorCode.XML_ERROR
    return info.value


def test_billion_laughs_is_refused_without_expansion() -> None:
    assert "DTD" in str(_refused(BILLION_LAUGHS))


def test_external_entity_is_refused() -> None:
    err = _refused(EXTERNAL_ENTITY)
    assert "root:" not in str(err)


def test_external_dtd_is_refused() -> None:
    _refused(EXTERNAL_DTD)


def test_undeclared_entity_reference_is_malformed() -> None:
    assert "malformed" in str(_refused("<secret><description>&foo;</description></secret>"))


def test_ten_megabyte_document_is_refused_before_parsing() -> None:
    big = "<secret><description>" + "x" * (10 * 1024 * 1024) + "</description></secret>"
    assert str(MAX_XML_BYTES) in str(_refused(big))


def test_deeply_nested_document_is_refused() -> None:
    depth = MAX_XML_DEPTH + 5
    doc = "<secret>" + "<a>" * depth + "</a>" * depth + "</secret>"
    assert "nested" in str(_refused(doc))


def test_malformed_document_names_the_problem() -> None:
    assert "malformed document" in str(_refused("<secret"))


def test_empty_document() -> None:
    assert "empty" in str(_refused("   "))


def test_wrong_root_element() -> None:
    err = _refused("<pool/>")
    assert "expecting root element of 'secret', not 'pool'" in str(err)


def test_document_at_the_limit_is_accepted() -> None:
    pad = MAX_XML_BYTES - len("<secret><description></description></secret>")
    root = parse_xml("<secret><description>" + "y" * pad + "</description></secret>")
    assert root.tag == "secret"


def test_encoding_declaration_in_text_is_accepted() -> None:
    doc = "<?xml version='1.0' encoding='UTF-8'?>\n<secret><description>é</description></secret>"
    assert parse_secret(doc).description == "é"


def _nested(levels: int) -> str:
    """A document whose elements nest ``levels`` deep, the root included."""
    inner = levels - 1
    return "<secret>" + "<a>" * inner + "</a>" * inner + "</secret>"


def test_nesting_limit_is_exact() -> None:
    assert parse_xml(_nested(MAX_XML_DEPTH)).tag == "secret"
    assert "nested" in str(_refused(_nested(MAX_XML_DEPTH + 1)))


def test_deep_document_in_utf16_is_refused() -> None:
    assert "nested" in str(_refused(_nested(MAX_XML_DEPTH + 1).encode("utf-16")))


def test_deep_document_whose_tags_hide_in_utf7_is_refused() -> None:
    # In UTF-7 a "<" can be written as "+ADw-": no "<" byte for the nested tags.
    inner = MAX_XML_DEPTH
    body = "+ADw-a+AD4-" * inner + "+ADw-/a+AD4-" * inner
    doc = f"<?xml version='1.0' encoding='UTF-7'?><secret>{body}</secret>"
    assert "nested" in str(_refused(doc.encode("ascii")))


def test_entity_declared_in_a_utf16_document_is_refused() -> None:
    # The DTD check reads bytes and misses a UTF-16 DOCTYPE; the entity left in
    # the tree is what refuses it, so that check must still run for UTF-16,
    # declared or known only by its byte order mark (lxml then reports UTF-8).
    body = '<!DOCTYPE secret [<!ENTITY x "boom">]><secret><description>&x;</description></secret>'
    for doc in (
        body.encode("utf-16"),
        ('<?xml version="1.0" encoding="UTF-16"?>' + body).encode("utf-16-le"),
    ):
        assert "entity references" in str(_refused(doc))
