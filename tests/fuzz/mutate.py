"""Mutations of an XML document: structure-aware ones on the parsed tree (values from a
dictionary of hostile numbers and of values seen in other seeds, attributes and
elements dropped, duplicated or spliced in from other seeds) and a few on the raw
text.  Deterministic for a given ``random.Random``."""

from __future__ import annotations

import copy
import random
from collections import defaultdict
from collections.abc import Callable, Iterable

from lxml import etree

#: Values that break number, address and name parsers: C type limits and one past
#: them, Python's int-string limit, signs, bases, dotted and colon forms, odd text.
HOSTILE = (
    "",
    " ",
    "0",
    "-0",
    "-1",
    "+1",
    "1 ",
    "07",
    "08",
    "0x",
    "0x10",
    "0xffffffffffffffffff",
    "127",
    "128",
    "255",
    "256",
    "65535",
    "65536",
    "2147483647",
    "2147483648",
    "-2147483649",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-18446744073709551616",
    "9" * 31,
    "9" * 5000,
    "0" * 5000 + "1",
    "1" + "0" * 4400,
    "1e3",
    "1.5",
    "\u0661\u0662",
    "\uff11\uff12",
    "0.0.0.0",
    "255.255.255.255",
    "256.0.0.1",
    "1.2.3",
    "0x7f.1",
    "017.0.0.1",
    "1." + "9" * 5000,
    "9" * 5000 + ".1.1.1",
    "::",
    "::1",
    "::ffff:1.2.3.4",
    "1::2::3",
    "fe80::1%eth0",
    "a" * 300,
    "yes",
    "no",
    "on",
    "off",
    "default",
    "none",
    "(null)",
    "00:11:22:33:44:55",
    "ff:ff:ff:ff:ff:ff",
    "aa:bb:cc:dd:ee:fg",
    "00000000-0000-0000-0000-000000000000",
    "$VAR",
    "$VAR[@1]",
    "$VAR[" + "9" * 5000 + "]",
    "&amp;",
    "/",
    "../x",
    "\t",
    "a\r\nb",
    " padded ",
    "é",
    "\U0001f600",
)


def _elements(tree: etree._Element) -> list[etree._Element]:
    return [e for e in tree.iter() if isinstance(e.tag, str)]


class Dictionary:
    """Attribute values by attribute name and elements by tag, gathered from seeds."""

    def __init__(self) -> None:
        self.values: dict[str, list[str]] = defaultdict(list)
        self.elements: dict[str, list[etree._Element]] = defaultdict(list)
        self.names: list[str] = []

    def learn(self, texts: Iterable[str]) -> None:
        values: dict[str, set[str]] = defaultdict(set)
        for text in texts:
            try:
                root = etree.fromstring(text.encode())
            except etree.XMLSyntaxError:
                continue
            for element in _elements(root):
                for name, value in element.attrib.items():
                    values[str(name)].add(str(value))
                if len(self.elements[str(element.tag)]) < 40:
                    self.elements[str(element.tag)].append(copy.deepcopy(element))
        for name, seen in values.items():
            self.values[name] = sorted(seen)
        self.names = sorted(values)


Mutation = Callable[[random.Random, etree._Element, Dictionary], bool]


def _value(rng: random.Random, name: str, words: Dictionary) -> str:
    known = words.values.get(name)
    if known and rng.random() < 0.4:
        return rng.choice(known)
    return rng.choice(HOSTILE)


def _set_attribute(rng: random.Random, root: etree._Element, words: Dictionary) -> bool:
    candidates = [e for e in _elements(root) if e.attrib]
    if not candidates:
        return False
    element = rng.choice(candidates)
    name = rng.choice(list(element.attrib))
    element.set(name, _value(rng, str(name), words))
    return True


def _add_attribute(rng: random.Random, root: etree._Element, words: Dictionary) -> bool:
    if not words.names:
        return False
    element = rng.choice(_elements(root))
    name = rng.choice(words.names)
    if ":" in name or "{" in name:
        return False
    element.set(name, _value(rng, name, words))
    return True


def _drop_attribute(rng: random.Random, root: etree._Element, words: Dictionary) -> bool:
    candidates = [e for e in _elements(root) if e.attrib]
    if not candidates:
        return False
    element = rng.choice(candidates)
    del element.attrib[rng.choice(list(element.attrib))]
    return True


def _set_text(rng: random.Random, root: etree._Element, words: Dictionary) -> bool:
    leaves = [e for e in _elements(root) if len(e) == 0]
    if not leaves:
        return False
    rng.choice(leaves).text = rng.choice(HOSTILE)
    return True


def _pick_below_root(rng: random.Random, root: etree._Element) -> etree._Element | None:
    children = [e for e in _elements(root) if e is not root]
    return rng.choice(children) if children else None


def _drop_element(rng: random.Random, root: etree._Element, words: Dictionary) -> bool:
    element = _pick_below_root(rng, root)
    parent = element.getparent() if element is not None else None
    if element is None or parent is None:
        return False
    parent.remove(element)
    return True


def _empty_element(rng: random.Random, root: etree._Element, words: Dictionary) -> bool:
    element = rng.choice(_elements(root))
    for child in list(element):
        element.remove(child)
    element.text = None
    if rng.random() < 0.5:
        element.attrib.clear()
    return True


def _duplicate_element(rng: random.Random, root: etree._Element, words: Dictionary) -> bool:
    element = _pick_below_root(rng, root)
    if element is None:
        return False
    times = rng.choice((1, 1, 2, 50))
    for _ in range(times):
        element.addnext(copy.deepcopy(element))
    return True


def _splice_element(rng: random.Random, root: etree._Element, words: Dictionary) -> bool:
    tags = [t for t in words.elements if words.elements[t]]
    if not tags:
        return False
    donor = copy.deepcopy(rng.choice(words.elements[rng.choice(tags)]))
    donor.tail = None
    rng.choice(_elements(root)).append(donor)
    return True


def _replace_element(rng: random.Random, root: etree._Element, words: Dictionary) -> bool:
    """An element swapped for another seed's element of the same tag."""
    candidates = [e for e in _elements(root) if e is not root and words.elements.get(str(e.tag))]
    if not candidates:
        return False
    element = rng.choice(candidates)
    donor = copy.deepcopy(rng.choice(words.elements[str(element.tag)]))
    donor.tail = element.tail
    parent = element.getparent()
    assert parent is not None
    parent.replace(element, donor)
    return True


TREE_MUTATIONS: tuple[Mutation, ...] = (
    _set_attribute,
    _set_attribute,
    _set_attribute,
    _add_attribute,
    _drop_attribute,
    _set_text,
    _set_text,
    _drop_element,
    _empty_element,
    _duplicate_element,
    _splice_element,
    _replace_element,
)


def _mutate_text(rng: random.Random, text: str) -> str:
    if not text:
        return text
    at = rng.randrange(len(text))
    choice = rng.randrange(4)
    if choice == 0:
        return text[:at]
    if choice == 1:
        return text[:at] + text[at + 1 :]
    if choice == 2:
        return text[:at] + rng.choice("<>&'\"=/ \x00x9-") + text[at:]
    end = min(len(text), at + rng.randrange(1, 40))
    return text[:at] + text[at:end] * rng.randrange(2, 5) + text[end:]


def mutate(rng: random.Random, text: str, words: Dictionary) -> str:
    """One mutant of ``text``: one to four tree mutations, or now and then a raw edit."""
    if rng.random() < 0.08:
        return _mutate_text(rng, text)
    try:
        root = etree.fromstring(text.encode())
    except (etree.XMLSyntaxError, ValueError):
        return _mutate_text(rng, text)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 4))):
        rng.choice(TREE_MUTATIONS)(rng, root, words)
    return etree.tostring(root, encoding="unicode")
