"""The standard filters are valid filter documents by libvirt's own schema."""

from __future__ import annotations

from importlib import resources

import pytest
from lxml import etree

from tests.conformance.data import conformance_dir

SCHEMA = conformance_dir() / "schemas" / "nwfilter.rng"
FILES = sorted(
    (e for e in resources.files("services.nwfilter").joinpath("standard").iterdir()),
    key=lambda e: e.name,
)


@pytest.mark.parametrize("entry", FILES, ids=lambda e: e.name)
def test_standard_filter_is_schema_valid(entry: resources.abc.Traversable) -> None:
    if not SCHEMA.is_file():
        pytest.skip(f"libvirt's schemas not found at {SCHEMA}")
    schema = etree.RelaxNG(etree.parse(str(SCHEMA)))
    document = etree.fromstring(entry.read_bytes())
    assert schema.validate(document), schema.error_log
    assert document.get("name") == entry.name.removesuffix(".xml")
