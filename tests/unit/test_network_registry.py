"""The network service parses each stored document once: its reads (list,
lookup, dumpxml) and every define look at all networks' definitions, and a
running network's dumpxml and every port creation at all its ports'."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import services.network.registry as registry
from shared.conf.network import parse_network
from shared.conf.network_port import parse_network_port
from shared.util.errors import ErrorCode, VirtError
from tests.memory_bus import memory_ledger

NETWORK = "<network><name>blue</name><uuid>{uuid}</uuid><bridge name='vb0'/></network>"
PORT = (
    "<networkport><uuid>5d4f7a1e-0c2b-4e8a-9f31-6b7c8d9e0a1b</uuid>"
    "<owner><name>web</name><uuid>7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d</uuid></owner>"
    "<mac address='52:54:00:aa:bb:cc'/>"
    "<plug type='network' bridge='vb0'/></networkport>"
)


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The documents the registry parses from here on (its kept definitions forgotten)."""
    seen: list[str] = []

    def counted(parse: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(xml: str, *args: Any, **kwargs: Any) -> Any:
            seen.append(xml)
            return parse(xml, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(registry, "parse_network", counted(parse_network))
    monkeypatch.setattr(registry, "parse_network_port", counted(parse_network_port))
    registry.definition.cache_clear()
    registry.port_definition.cache_clear()
    yield seen
    registry.definition.cache_clear()
    registry.port_definition.cache_clear()


def test_a_stored_network_is_parsed_once_however_often_it_is_read(parses: list[str]) -> None:
    xml = NETWORK.format(uuid="b7e0c2a4-51d3-4c8e-a0f6-7d92e13c5b48")
    record = registry.NetworkRecord(xml=xml)
    ledger = memory_ledger("network", {"net.blue": record.model_dump_json().encode()})
    stored = registry.Registry(ledger).networks()["blue"]
    first = registry.definition(stored.xml)
    for _ in range(50):
        assert registry.definition(stored.xml) is first
    assert first == parse_network(xml)
    assert first.uuid == "b7e0c2a4-51d3-4c8e-a0f6-7d92e13c5b48"
    # Loading the record checked that it parses: that parse is the one kept.
    assert parses == [xml]


def test_a_changed_network_is_parsed_again(parses: list[str]) -> None:
    old = NETWORK.format(uuid="b7e0c2a4-51d3-4c8e-a0f6-7d92e13c5b48")
    new = NETWORK.format(uuid="c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f")
    assert registry.definition(old).uuid != registry.definition(new).uuid
    assert parses == [old, new]


def test_a_malformed_document_is_refused_each_time(parses: list[str]) -> None:
    for _ in range(2):
        with pytest.raises(VirtError) as refused:
            registry.definition("<network><name>x</name>")
        assert refused.value.code is ErrorCode.XML_ERROR
    assert len(parses) == 2


def test_a_stored_port_is_parsed_once(parses: list[str]) -> None:
    first = registry.port_definition(PORT)
    assert registry.port_definition(PORT) is first
    assert first == parse_network_port(PORT)
    assert parses == [PORT]
