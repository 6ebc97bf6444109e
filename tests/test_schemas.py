"""virtbus's own XML output is valid by libvirt's RelaxNG schemas.

For every conformance case of an XML kind that does not expect an error, the
case's input is parsed with ``shared/conf`` and formatted again (the suite
adapter's ``produce``: the same code the services run), and what virtbus
wrote is validated with lxml against the schema of its kind, read from the
conformance data's ``schemas`` folder at run time.  The check does not depend
on the conformance comparison: an output that differs from libvirt's
expected file is validated all the same.

Disks are ``<disk>`` elements of a domain: they are validated against the
``disk`` definition of ``domain.rng``, through a grammar made here that
includes ``domain.rng`` and starts at ``disk``.

An output the schema refuses is a bug of ``shared/conf``: fix it, or list the
case in ``KNOWN_INVALID`` with the reason (a strict xfail, so that a fixed
case must leave the list).  In CI (``CI=true``) missing conformance data is a
failure, never a skip.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache

import pytest
from lxml import etree

from tests.conformance.data import conformance_dir
from tests.conformance.runner import Case, Suite, find_suites
from tests.conformance.suites import (
    domaindisks,
    networkportxml2xml,
    networkxml2xml,
    networkxml2xmlupdate,
    nwfilterbindingxml2xml,
    nwfilterxml2xml,
    secretxml2xml,
    storagepoolxml2xml,
    storagevolxml2xml,
)

DATA = conformance_dir()
SCHEMAS = DATA / "schemas"

Produce = Callable[[Suite, Case], list[str]]


def _one(produce: Callable[[Suite, Case], str]) -> Produce:
    return lambda suite, case: [produce(suite, case)]


#: Where a disk's schema starts: the ``disk`` definition of libvirt's domain
#: grammar (``domain.rng`` includes ``domaincommon.rng``, which defines it).
_DISK_GRAMMAR = """\
<grammar xmlns="http://relaxng.org/ns/structure/1.0"
         datatypeLibrary="http://www.w3.org/2001/XMLSchema-datatypes">
  <include href="domain.rng">
    <start><ref name="disk"/></start>
  </include>
</grammar>
"""
DISK = "domain.rng#disk"

#: XML suite -> how virtbus formats a case's input, and the schema (a file of
#: ``SCHEMAS``, or ``DISK``) every document it formats must satisfy.
KINDS: dict[str, tuple[Produce, str]] = {
    "secretxml2xml": (_one(secretxml2xml.produce), "secret.rng"),
    "storagepoolxml2xml": (_one(storagepoolxml2xml.produce), "storagepool.rng"),
    "storagevolxml2xml": (_one(storagevolxml2xml.produce), "storagevol.rng"),
    "networkxml2xml": (_one(networkxml2xml.produce), "network.rng"),
    "networkxml2xmlupdate": (_one(networkxml2xmlupdate.produce), "network.rng"),
    "networkportxml2xml": (_one(networkportxml2xml.produce), "networkport.rng"),
    "nwfilterxml2xml": (_one(nwfilterxml2xml.produce), "nwfilter.rng"),
    "nwfilterbindingxml2xml": (_one(nwfilterbindingxml2xml.produce), "nwfilterbinding.rng"),
    "domaindisks": (domaindisks.produce_disks, DISK),
}

#: (suite, case) -> why virtbus's output for it is not schema-valid yet.
KNOWN_INVALID: dict[tuple[str, str], str] = {}


@cache
def _suites() -> dict[str, Suite]:
    if not DATA.is_dir():
        return {}
    return {s.name: s for s in find_suites([DATA]) if s.name in KINDS}


def _cases() -> list[object]:
    found: list[object] = []
    for name, suite in sorted(_suites().items()):
        for case in suite.cases:
            if case.get("expect_error"):
                continue
            key = (name, str(case["name"]))
            marks = []
            if key in KNOWN_INVALID:
                marks.append(pytest.mark.xfail(reason=KNOWN_INVALID[key], strict=True))
            found.append(pytest.param(*key, id=f"{name}/{case['name']}", marks=marks))
    return found


@cache
def _schema(name: str) -> etree.RelaxNG:
    if name == DISK:
        # Its base URL puts it beside the schemas, so its include resolves there.
        grammar = etree.fromstring(_DISK_GRAMMAR, base_url=str(SCHEMAS / "disk.rng"))
        return etree.RelaxNG(grammar)
    # Parsed from its path so that its <include href=...> resolve beside it.
    return etree.RelaxNG(etree.parse(str(SCHEMAS / name)))


def _needs_data() -> None:
    if DATA.is_dir() and SCHEMAS.is_dir():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"conformance data or schemas missing at {DATA} (CI must run them)")
    pytest.skip(f"conformance data not found at {DATA}; set VIRTBUS_CONFORMANCE_DIR")


def test_schema_data_present() -> None:
    _needs_data()


def test_every_kind_has_cases() -> None:
    """A suite renamed or emptied must not drop its kind from the check unseen."""
    _needs_data()
    for name in KINDS:
        suite = _suites().get(name)
        assert suite is not None, f"no conformance suite {name} under {DATA}"
        assert any(not c.get("expect_error") for c in suite.cases), f"{name}: no case to format"
    for schema in {s for _, s in KINDS.values()}:
        _schema(schema)  # every schema compiles


@pytest.mark.parametrize(("suite_name", "case_name"), _cases())
def test_virtbus_output_is_schema_valid(suite_name: str, case_name: str) -> None:
    suite = _suites()[suite_name]
    case = next(c for c in suite.cases if str(c["name"]) == case_name)
    produce, schema_name = KINDS[suite_name]
    schema = _schema(schema_name)
    documents = produce(suite, case)
    assert documents, f"{suite_name}/{case_name}: nothing formatted"
    for number, text in enumerate(documents, start=1):
        document = etree.fromstring(text.encode())
        if not schema.validate(document):
            errors = "; ".join(f"line {e.line}: {e.message}" for e in schema.error_log)
            pytest.fail(
                f"{suite_name}/{case_name} document {number}: virtbus's output is not "
                f"valid by {schema_name}: {errors}\n{text}"
            )


def test_an_invalid_document_is_refused() -> None:
    """The check can fail: a secret with an unknown element is refused."""
    _needs_data()
    bad = etree.fromstring(b"<secret><bogus/></secret>")
    assert not _schema("secret.rng").validate(bad)
    assert not _schema(DISK).validate(etree.fromstring(b"<disk type='file'><bogus/></disk>"))
