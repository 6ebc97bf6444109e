"""The element readers and the writer every kind shares (xmlprops, xmlwriter)."""

from __future__ import annotations

import pytest
from lxml import etree

from shared.conf.xmlprops import first, first_children, string_of, xpath_attr
from shared.conf.xmlwriter import XmlWriter, attrs_text

_DOC = (
    "<disk xmlns:x='urn:x'><x:serial>ns</x:serial><!--c--><serial>one</serial>"
    "<serial>two</serial><target dev='vda' bus=''/><driver><a/></driver></disk>"
)


def _root() -> etree._Element:
    return etree.fromstring(_DOC)


@pytest.mark.parametrize("name", ["serial", "target", "driver", "x:serial", "missing", "a"])
def test_first_children_answers_as_first_does(name: str) -> None:
    # the first element of that name, never a namespaced one or a comment
    root = _root()
    assert first_children(root).get(name) is first(root, name)


def test_first_children_keeps_the_first_of_a_name() -> None:
    assert string_of(first_children(_root())["serial"]) == "one"


def test_empty_attribute_and_text_read_as_absent() -> None:
    target = first(_root(), "target")
    assert xpath_attr(target, "dev") == "vda"
    assert xpath_attr(target, "bus") is None
    assert string_of(target) is None
    assert string_of(first(_root(), "driver")) is None


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("plain", " a='plain'"),
        ('it\'s <&> "q"', " a='it&apos;s &lt;&amp;&gt; &quot;q&quot;'"),
        ("tab\tnl\ncr\r", " a='tab&#9;nl&#10;cr&#13;'"),
        ("bell\x07", " a='bell'"),
        (0, " a='0'"),
        (True, " a='yes'"),
        (False, " a='no'"),
        (None, ""),
    ],
)
def test_attribute_values_are_escaped_as_libvirt_does(value: object, written: str) -> None:
    assert attrs_text([("a", value)]) == written


def test_writer_indents_and_closes_elements() -> None:
    w = XmlWriter()
    w.open("a", [("x", "1")])
    w.leaf("b")
    with w.block("c", [("y", None)]) as c:
        c.text("d", "<t>")
    with w.block("e"):
        pass
    content = w.child()
    content.leaf("g")
    w.element("f", [], content)
    w.element("h", [], w.child())
    w.close("a")
    w.line("<z/>")
    assert w.getvalue() == (
        "<a x='1'>\n"
        "  <b/>\n"
        "  <c>\n"
        "    <d>&lt;t&gt;</d>\n"
        "  </c>\n"
        "  <e/>\n"
        "  <f>\n"
        "    <g/>\n"
        "  </f>\n"
        "</a>\n"
        "<z/>\n"
    )
