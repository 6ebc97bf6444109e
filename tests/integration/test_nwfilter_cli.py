"""The nwfilter commands of the CLI, as a user runs them, against a running service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.nwfilter.service import NWFilterService, NWFilterSettings
from tests.integration.cli import virtbus
from tests.integration.nwfilter_topology import (
    GUEST_IP,
    GUEST_MAC,
    Topology,
    missing_requirements,
    topology_fixture,  # noqa: F401  (the ``topo`` fixture)
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(missing_requirements() is not None, reason=str(missing_requirements())),
]
HOST = "cli-host"
UUID = "3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
FILTER = f"<filter name='web'><uuid>{UUID}</uuid><filterref filter='clean-traffic'/></filter>"
BINDING = f"""<filterbinding>
  <owner><name>vm1</name><uuid>d1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a5b</uuid></owner>
  <portdev name='vnet0'/>
  <mac address='{GUEST_MAC}'/>
  <filterref filter='web'><parameter name='IP' value='{GUEST_IP}'/></filterref>
</filterbinding>
"""


@pytest.fixture
async def url(nats_url: str, tmp_path: Path, topo: Topology) -> AsyncIterator[str]:
    settings = NWFilterSettings(
        nats_url=nats_url, state_dir=tmp_path / "s", host=HOST, netns=topo.host
    )
    async with NWFilterService(settings):
        yield nats_url


async def test_filter_and_binding_commands_answer_as_virsh(url: str, tmp_path: Path) -> None:
    f = tmp_path / "web.xml"
    f.write_text(FILTER)
    r = await virtbus(url, "nwfilter-define", str(f))
    assert (r.rc, r.out) == (0, f"Network filter web defined from {f}\n\n")
    r = await virtbus(url, "nwfilter-list")
    lines = r.out.splitlines()
    assert lines[0].split() == ["UUID", "Name"]
    assert f" {UUID}   web" in lines
    r = await virtbus(url, "nwfilter-dumpxml", "web")
    assert r.out.startswith(f"<filter name='web' chain='root'>\n  <uuid>{UUID}</uuid>")

    b = tmp_path / "binding.xml"
    b.write_text(BINDING)
    r = await virtbus(url, "--host", HOST, "nwfilter-binding-create", str(b))
    assert (r.rc, r.out) == (0, f"Network filter binding on vnet0 created from {b}\n\n")
    r = await virtbus(url, "--host", HOST, "nwfilter-binding-list")
    assert r.out.splitlines()[0].split() == ["Port", "Dev", "Filter"]
    assert r.out.splitlines()[2] == " vnet0      web"
    r = await virtbus(url, "--host", HOST, "nwfilter-binding-dumpxml", "vnet0")
    assert "<portdev name='vnet0'/>" in r.out

    r = await virtbus(url, "nwfilter-undefine", "web")
    assert r.rc == 1
    assert r.err == (
        "error: Failed to undefine network filter web\n"
        "error: Requested operation is not valid: nwfilter is in use\n"
    )
    r = await virtbus(url, "--host", HOST, "nwfilter-binding-delete", "vnet0")
    assert (r.rc, r.out) == (0, "Network filter binding on vnet0 deleted\n\n")
    r = await virtbus(url, "nwfilter-undefine", UUID)
    assert (r.rc, r.out) == (0, f"Network filter {UUID} undefined\n\n")
    r = await virtbus(url, "nwfilter-dumpxml", "web")
    assert r.rc == 1
    assert r.err.startswith("error: failed to get nwfilter 'web'\n")
