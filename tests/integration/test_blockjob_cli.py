"""Block jobs end to end through the CLI against ``virtbus up`` and a real
qemu-system-x86_64 (TCG, ``-S``) running a qcow2-on-raw chain with known data:
copy into a new pool volume with a pivot, active commit with a pivot, pull,
abort, the disk inventory (``domblklist``, ``disk-dumpxml``) and volume users.

The agent killed mid-copy and nats-server restarted mid-copy are covered by
tests/integration/test_agent_qemu.py; the storage service restarted mid-copy
by tests/integration/test_blockjob_restart.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lxml import etree

from client.cli.output import table
from tests.integration.blockjob_stack import (
    DOMAIN,
    Cli,
    dir_pool,
    eventually,
    qemu_domain,
    virtbus_up,
)
from tests.integration.qemu_domain import QEMU, TARGET, QemuFixture, identical

pytestmark = [
    pytest.mark.integration,
    pytest.mark.e2e,
    pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed"),
]


@dataclass
class Stack:
    cli: Cli
    domain: QemuFixture


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    state = tmp_path / "state"
    domains = state / "agent-qemu" / "domains"
    async with virtbus_up(state) as url, qemu_domain(tmp_path / "images", domains) as domain:
        cli = Cli(url)

        async def listed() -> bool:
            r = await cli.run("domblklist", DOMAIN)
            return r.rc == 0 and str(domain.top) in r.out

        await eventually(listed, timeout=60)
        yield Stack(cli, domain)


def _disk(xml: str) -> etree._Element:
    return etree.fromstring(xml.encode())


async def test_copy_to_a_new_volume_then_pivot(stack: Stack, tmp_path: Path) -> None:
    cli, domain = stack.cli, stack.domain
    images = domain.images
    await cli.ok("pool-create", "--build", str(_write(tmp_path, dir_pool("images", images))))

    listing = await cli.ok("domblklist", DOMAIN)
    assert listing.out == table(["Target", "Source"], [[TARGET, str(domain.top)]])
    details = await cli.ok("domblklist", DOMAIN, "--details")
    assert details.out == table(
        ["Type", "Device", "Target", "Source"], [["file", "disk", TARGET, str(domain.top)]]
    )
    # the chain's images are in use: refused without --force
    refused = await cli.run("vol-delete", "base.raw", "--pool", "images")
    assert refused.rc == 1
    assert refused.err == (
        "error: Failed to delete vol base.raw\n"
        "error: Requested operation is not valid: volume 'base.raw' is still in use by "
        f"domain '{DOMAIN}' disk '{TARGET}'.\n"
    )
    users = json.loads((await cli.ok("vol-info", "base.raw", "--pool", "images", "--json")).out)
    assert users["users"] == [
        {"host": users["users"][0]["host"], "domain": DOMAIN, "disk": TARGET, "role": "backing",
         "index": 1},
    ]  # fmt: skip
    listed = json.loads((await cli.ok("vol-list", "--pool", "images", "--json")).out)
    assert {v["name"]: v["users"] for v in listed}["base.raw"] == users["users"]

    copied = await cli.ok(
        "blockcopy", DOMAIN, TARGET, "--pool", "images", "--name", "copy.qcow2",
        "--format", "qcow2", "--wait", "--verbose",
    )  # fmt: skip
    assert copied.out == "\nNow in mirroring phase\n"
    assert copied.err.endswith("\rBlock Copy: [100 %]")
    copy = images / "copy.qcow2"

    mirrored = _disk((await cli.ok("disk-dumpxml", DOMAIN, TARGET)).out)
    mirror = mirrored.find("mirror")
    assert mirror is not None
    assert (mirror.get("type"), mirror.get("job"), mirror.get("ready")) == ("file", "copy", "yes")
    assert mirror.get("file") == str(copy) and mirror.get("format") == "qcow2"
    assert mirror.find("source").get("file") == str(copy)  # type: ignore[union-attr]
    info = await cli.ok("vol-info", "copy.qcow2", "--pool", "images", "--users")
    assert info.out.splitlines()[-2] == f"Users:          {DOMAIN}/{TARGET}"
    busy = await cli.run("blockcopy", DOMAIN, TARGET, str(tmp_path / "other.qcow2"))
    assert busy.rc == 1
    assert "block copy still active: disk 'vda' already in active block job" in busy.err

    # the guest writes while the copy mirrors
    await domain.guest_write(0x44, 2 * 1024 * 1024, 256 * 1024)
    await domain.guest_write(0x45, 7 * 1024 * 1024, 64 * 1024)
    shown = await cli.ok("blockjob", DOMAIN, TARGET, "--info")
    assert shown.err == "\rBlock Copy: [100 %]" and shown.out == "\n\n"
    await cli.ok("blockjob", DOMAIN, TARGET, "--pivot")

    assert (await cli.ok("domblklist", DOMAIN)).out == table(
        ["Target", "Source"], [[TARGET, str(copy)]]
    )
    pivoted = _disk((await cli.ok("disk-dumpxml", DOMAIN, TARGET)).out)
    assert pivoted.find("mirror") is None
    assert pivoted.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    text = domain.xml_path.read_text()
    assert f"file='{copy}'" in text and str(domain.top) not in text
    none = await cli.ok("blockjob", DOMAIN, TARGET, "--info")
    assert none.out == f"No current block job for {TARGET}\n"

    await domain.flush()
    assert identical(copy, "qcow2", domain.reference(tmp_path / "reference.raw"), "raw")

    # the old chain is free now; the copy is in use until forced
    await cli.ok("vol-delete", "top.qcow2", "--pool", "images")
    refused = await cli.run("vol-wipe", "copy.qcow2", "--pool", "images")
    assert refused.rc == 1 and "is still in use by domain 'web1' disk 'vda'" in refused.err
    await cli.ok("vol-delete", "copy.qcow2", "--pool", "images", "--force")


async def test_active_commit_with_pivot(stack: Stack, tmp_path: Path) -> None:
    cli, domain = stack.cli, stack.domain
    await domain.guest_write(0x55, 3 * 1024 * 1024, 128 * 1024)
    done = await cli.ok(
        "blockcommit", DOMAIN, TARGET, "--active", "--pivot", "--verbose", "--delete"
    )
    assert done.out == "\nSuccessfully pivoted\n"
    assert done.err.endswith("\rBlock commit: [100 %]")
    assert not domain.top.exists()  # --delete: the committed overlay is gone
    assert (await cli.ok("domblklist", DOMAIN)).out == table(
        ["Target", "Source"], [[TARGET, str(domain.base)]]
    )
    disk = _disk((await cli.ok("disk-dumpxml", DOMAIN, TARGET)).out)
    assert disk.find("driver").get("type") == "raw"  # type: ignore[union-attr]
    store = disk.find("backingStore")
    assert store is not None and len(store) == 0
    assert f"file='{domain.base}'" in domain.xml_path.read_text()
    await domain.flush()
    assert identical(domain.base, "raw", domain.reference(tmp_path / "reference.raw"), "raw")


async def test_pull(stack: Stack, tmp_path: Path) -> None:
    cli, domain = stack.cli, stack.domain
    started = await cli.ok("blockpull", DOMAIN, TARGET, "--wait")
    assert started.out == "\nPull complete\n"
    disk = _disk((await cli.ok("disk-dumpxml", DOMAIN, TARGET)).out)
    assert disk.find("source").get("file") == str(domain.top)  # type: ignore[union-attr]
    store = disk.find("backingStore")
    assert store is not None and len(store) == 0
    await domain.flush()
    assert identical(domain.top, "qcow2", domain.reference(tmp_path / "reference.raw"), "raw")


async def test_abort_leaves_the_source_untouched(stack: Stack, tmp_path: Path) -> None:
    """A shallow copy into an existing volume named by ``--xml`` (a ``type='volume'``
    source), aborted once ready."""
    cli, domain = stack.cli, stack.domain
    before = domain.xml_path.read_text()
    await cli.ok("pool-create", "--build", str(_write(tmp_path, dir_pool("images", domain.images))))
    await cli.ok(
        "vol-create-as", "images", "shallow.qcow2", "8M", "--format", "qcow2",
        "--backing-vol", "base.raw", "--backing-vol-format", "raw",
    )  # fmt: skip
    dest = tmp_path / "dest.xml"
    dest.write_text(
        "<disk type='volume'><source pool='images' volume='shallow.qcow2'/>"
        "<driver type='qcow2'/></disk>"
    )
    started = await cli.ok(
        "blockcopy", DOMAIN, TARGET, "--xml", str(dest), "--shallow", "--reuse-external"
    )
    assert started.out == "Block Copy started\n"

    async def ready() -> bool:
        xml = (await cli.ok("disk-dumpxml", DOMAIN, TARGET)).out
        mirror = _disk(xml).find("mirror")
        return mirror is not None and mirror.get("ready") == "yes"

    await eventually(ready)
    await cli.ok("blockjob", DOMAIN, TARGET, "--bandwidth", "10")
    shown = await cli.ok("blockjob", DOMAIN, TARGET, "--info")
    assert shown.out == "    Bandwidth limit: 10485760 bytes/s (10.000 MiB/s)\n\n"
    mirror = _disk((await cli.ok("disk-dumpxml", DOMAIN, TARGET)).out).find("mirror")
    assert mirror is not None and mirror.get("file") == str(domain.images / "shallow.qcow2")
    backing = mirror.find("backingStore/source")
    assert backing is not None and backing.get("file") == str(domain.base)
    await cli.ok("blockjob", DOMAIN, TARGET, "--abort")
    disk = _disk((await cli.ok("disk-dumpxml", DOMAIN, TARGET)).out)
    assert disk.find("mirror") is None
    assert disk.find("source").get("file") == str(domain.top)  # type: ignore[union-attr]
    assert domain.xml_path.read_text() == before
    gone = await cli.run("blockjob", DOMAIN, TARGET, "--abort")
    assert gone.rc == 1
    assert gone.err == "error: invalid argument: disk vda does not have an active block job\n"
    await domain.flush()
    assert identical(domain.top, "qcow2", domain.reference(tmp_path / "reference.raw"), "raw")


def _write(folder: Path, text: str) -> Path:
    path = folder / "pool.xml"
    path.write_text(text)
    return path
