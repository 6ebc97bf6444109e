"""One mechanism for bad state: ``Ledger.decode`` skips a malformed record, logs
its key (never its content), and counts it until its key changes; each
service's and the agent's registry reads its records through it."""

from __future__ import annotations

import json
import logging

import pytest

from agents.qemu.records import AgentStore, InventoryMark
from services.network.registry import NetworkRecord, Registry
from services.nwfilter import bindings
from services.nwfilter.registry import FilterRegistry
from shared.util.errors import ErrorCode, VirtError
from shared.util.ledger import MAX_SUBJECT, Event
from tests.memory_bus import memory_ledger, put

HOST = "h1"
SECRET_LOOKING = "hunter2-do-not-log"


def test_a_bad_record_is_skipped_logged_by_key_and_counted_until_its_key_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = NetworkRecord(xml="<network><name>ok</name><bridge name='b0'/></network>")
    ledger = memory_ledger(
        "network",
        {
            "net.ok": good.model_dump_json().encode(),
            "net.bad": b'{"xml": "' + SECRET_LOOKING.encode(),
            "net.badxml": NetworkRecord(xml=f"<network>{SECRET_LOOKING}")
            .model_dump_json()
            .encode(),
            "port.ok.x": b"[]",
        },
    )
    registry = Registry(ledger)
    with caplog.at_level(logging.ERROR):
        assert list(registry.networks()) == ["ok"]
        assert registry.ports() == {}
    assert ledger.bad_keys == {"net.bad", "net.badxml", "port.ok.x"}
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for key in ledger.bad_keys:
        assert key in logged
    assert SECRET_LOOKING not in logged
    assert SECRET_LOOKING not in caplog.text
    # A key leaves the count when it changes: overwritten, or deleted.
    put(ledger, "net.bad", good.model_dump_json().encode())
    put(ledger, "port.ok.x", None)
    assert ledger.bad_keys == {"net.badxml"}
    # Decoding the same bad record again counts it once.
    registry.networks()
    assert ledger.bad_keys == {"net.badxml"}


def test_filter_registry_skips_a_filter_that_does_not_parse_or_is_under_another_name() -> None:
    ledger = memory_ledger(
        "nwfilter",
        {
            "filter.ok": b"<filter name='ok'><rule action='drop' direction='in'><all/></rule>"
            b"</filter>",
            "filter.broken": b"<filter name='broken'><rule",
            "filter.elsewhere": b"<filter name='other'/>",
        },
        host=None,
    )
    filters = FilterRegistry(ledger)
    assert [d.name for d in filters.all()] == ["ok"]
    assert ledger.bad_keys == {"filter.broken", "filter.elsewhere"}
    # A good filter that turns bad is gone (as if undefined), and counted.
    seen: list[tuple[str, bool, bool]] = []
    filters.on_change(lambda name, old, new: seen.append((name, old is None, new is None)))
    put(ledger, "filter.ok", b"not xml")
    assert filters.all() == []
    assert seen == [("ok", False, True)]
    assert ledger.bad_keys == {"filter.broken", "filter.elsewhere", "filter.ok"}


def test_binding_decode_refuses_a_record_of_another_port() -> None:
    xml = (
        "<filterbinding><owner><name>vm</name><uuid>d1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a5b</uuid>"
        "</owner><portdev name='vnet0'/><mac address='52:54:00:00:00:01'/>"
        "<filterref filter='clean-traffic'/></filterbinding>"
    )
    data = bindings.BindingRecord(xml=xml).model_dump_json().encode()
    assert bindings.decode(bindings.key("vnet0"), data).definition.portdev == "vnet0"
    with pytest.raises(ValueError, match="port"):
        bindings.decode(bindings.key("vnet1"), data)


def test_agent_store_skips_bad_job_records_and_republishes_after_a_bad_mark() -> None:
    ledger = memory_ledger(
        "agent", {"job.j1": b"{}", "inventory.web1": b"[", "inventory.web2": b'{"generation": 4}'}
    )
    store = AgentStore(ledger)
    assert store.jobs() == []
    assert store.mark("web1") == InventoryMark()
    assert store.mark("web2") == InventoryMark(generation=4)
    assert ledger.bad_keys == {"job.j1", "inventory.web1"}


async def test_a_name_too_long_for_a_subject_is_refused_before_anything_is_sent() -> None:
    # nats-server would close the connection of a publish with such a subject;
    # the ledger of this test has none, so any attempt to send would fail otherwise.
    ledger = memory_ledger("nwfilter", {}, host=None)
    long = "x" * MAX_SUBJECT
    with pytest.raises(VirtError) as refused:
        await ledger.write(f"filter.{long}", b"<filter/>", what=f"nwfilter '{long}'")
    assert refused.value.code is ErrorCode.INVALID_ARG
    assert len(refused.value.message) < 200
    with pytest.raises(VirtError) as refused:
        await ledger.write("filter.short", b"<filter/>", [Event("nwfilter", long, "lifecycle")])
    assert refused.value.code is ErrorCode.INVALID_ARG
    with pytest.raises(VirtError) as refused:
        await ledger.announce([Event("lease", long, "dhcp-lease")])
    assert refused.value.code is ErrorCode.INVALID_ARG


def test_read_is_get_then_decode() -> None:
    ledger = memory_ledger("storage", {"job.j1": b'{"n": 1}', "job.j2": b"not json"})
    assert ledger.read("job.j1", json.loads) == {"n": 1}
    assert ledger.read("job.absent", json.loads) is None
    assert ledger.read("job.j2", json.loads) is None
    assert ledger.bad_keys == {"job.j2"}
