"""Hostile and malformed documents are refused by the one parser every kind uses."""

from __future__ import annotations

import codecs

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


_DTD_SUBSETS = {
    "attribute default": '<!DOCTYPE secret [<!ATTLIST secret ephemeral CDATA "yes">]>',
    "unused entity": '<!DOCTYPE secret [<!ENTITY x "boom">]>',
    "external subset": '<!DOCTYPE secret SYSTEM "secret.dtd">',
}
_WIDE_ENCODINGS = {
    "utf-16 le, bom": lambda doc: codecs.BOM_UTF16_LE + doc.encode("utf-16-le"),
    "utf-16 be, bom": lambda doc: codecs.BOM_UTF16_BE + doc.encode("utf-16-be"),
    "utf-16 le, declared": lambda doc: ('<?xml version="1.0" encoding="UTF-16"?>' + doc).encode(
        "utf-16-le"
    ),
    "utf-32 le, bom": lambda doc: codecs.BOM_UTF32_LE + doc.encode("utf-32-le"),
    "utf-32 be, bom": lambda doc: codecs.BOM_UTF32_BE + doc.encode("utf-32-be"),
    # UTF-7 may spell "<" as "+ADw-": no "<!" byte pair for the check before parsing.
    "utf-7, declared": lambda doc: (
        ('<?xml version="1.0" encoding="UTF-7"?>' + doc).encode("utf-7").replace(b"<!", b"+ADw-!")
    ),
}


@pytest.mark.parametrize("subset", sorted(_DTD_SUBSETS))
@pytest.mark.parametrize("encoding", sorted(_WIDE_ENCODINGS))
def test_dtd_in_any_encoding_is_refused(subset: str, encoding: str) -> None:
    # In these encodings the bytes of "<!DOCTYPE" are not the ASCII ones the
    # check before parsing looks for; the parsed document must refuse it.
    doc = _WIDE_ENCODINGS[encoding](
        _DTD_SUBSETS[subset] + "<secret><description>d</description></secret>"
    )
    assert "DTD and entity declarations are not allowed" in str(_refused(doc))


@pytest.mark.parametrize("encoding", sorted(_WIDE_ENCODINGS))
def test_document_without_dtd_in_any_encoding_is_accepted(encoding: str) -> None:
    doc = _WIDE_ENCODINGS[encoding]("<secret><description>é</description></secret>")
    assert parse_secret(doc).description == "é"


def test_entity_declared_and_used_in_a_utf16_document_is_refused() -> None:
    body = '<!DOCTYPE secret [<!ENTITY x "boom">]><secret><description>&x;</description></secret>'
    for doc in (
        body.encode("utf-16"),
        ('<?xml version="1.0" encoding="UTF-16"?>' + body).encode("utf-16-le"),
        body.encode("utf-32"),
    ):
        assert "DTD and entity declarations are not allowed" in str(_refused(doc))
