"""The pool-* and vol-* commands as a user runs them, against a real storage service."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.storage.service import StorageService, StorageSettings
from tests.integration.cli import forget_hosts, virtbus

pytestmark = pytest.mark.integration
HOST = "cli-host"


@pytest.fixture
async def service(nats_url: str, tmp_path: Path) -> AsyncIterator[StorageService]:
    settings = StorageSettings(nats_url=nats_url, state_dir=tmp_path / "state", host=HOST)
    async with StorageService(settings) as svc:
        yield svc


async def test_pool_and_volume_commands(
    service: StorageService, nats_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "pool"
    r = await virtbus(nats_url, "pool-define-as", "p", "dir", "--target", str(root))
    assert (r.rc, r.out, r.err) == (0, "Pool p defined\n\n", "")
    r = await virtbus(nats_url, "pool-start", "p")
    assert r.rc == 1 and r.out == "\n"
    assert r.err == (
        "error: Failed to start pool p\n"
        f"error: cannot open directory '{root}': No such file or directory\n"
    )
    r = await virtbus(nats_url, "pool-start", "p", "--build")
    assert r.out == "Pool p started\n\n"
    r = await virtbus(nats_url, "pool-list")
    assert r.out == (
        " Name   State    Autostart\n----------------------------\n p      active   no\n\n"
    )
    r = await virtbus(nats_url, "vol-create-as", "p", "a.img", "1M")
    assert r.out == "Vol a.img created\n\n"
    r = await virtbus(nats_url, "vol-create-as", "p", "a.img", "1M")
    assert (
        r.err == "error: Failed to create vol a.img\nerror: storage volume 'a.img' exists already\n"
    )
    r = await virtbus(
        nats_url, "vol-create-as", "p", "top.qcow2", "2M", "--format", "qcow2",
        "--backing-vol", "a.img", "--backing-vol-format", "raw",
    )  # fmt: skip
    assert r.rc == 0, r.err
    r = await virtbus(nats_url, "vol-list", "--pool", "p", "--details")
    lines = r.out.splitlines()
    assert lines[0].split() == ["Name", "Path", "Type", "Capacity", "Allocation"]
    assert lines[2].split() == ["a.img", f"{root}/a.img", "file", "1.00", "MiB", "1.00", "MiB"]
    assert lines[3].split()[:5] == ["top.qcow2", f"{root}/top.qcow2", "file", "2.00", "MiB"]
    r = await virtbus(nats_url, "vol-info", "a.img", "--pool", "p", "--bytes")
    assert r.out == (
        "Name:           a.img\nType:           file\n"
        "Capacity:       1048576 bytes\nAllocation:     1048576 bytes\n\n"
    )
    r = await virtbus(nats_url, "vol-info", "a.img")
    assert r.err == (
        "error: failed to get vol 'a.img', specifying --pool might help\n"
        "error: Storage volume not found: no storage vol with matching path 'a.img'\n"
    )
    assert (await virtbus(nats_url, "vol-pool", f"{root}/a.img")).out == "p\n\n"
    assert (await virtbus(nats_url, "vol-name", f"{root}/a.img")).out == "a.img\n\n"
    r = await virtbus(nats_url, "vol-resize", "a.img", "-512K", "--pool", "p", "--shrink")
    assert r.err.endswith("can't shrink capacity below existing allocation\n")
    r = await virtbus(nats_url, "vol-clone", "a.img", "b.img", "--pool", "p")
    assert r.out == "Vol b.img cloned from a.img\n\n"
    r = await virtbus(nats_url, "pool-destroy", "p")
    assert r.out == "Pool p destroyed\n\n"
    r = await virtbus(nats_url, "pool-info", "p")
    assert r.out.splitlines()[2:5] == [
        "State:          inactive",
        "Persistent:     yes",
        "Autostart:      no",
    ]
    r = await virtbus(nats_url, "pool-undefine", "p")
    assert r.out == "Pool p has been undefined\n\n"


async def test_host_defaults_to_the_only_storage_host(
    service: StorageService, nats_url: str, tmp_path: Path
) -> None:
    r = await virtbus(nats_url, "pool-list", "--all")
    assert r.rc == 0, r.err
    if socket.gethostname() != HOST:
        # Two storage hosts on the bus: the default is this machine, which has none.
        settings = StorageSettings(nats_url=nats_url, state_dir=tmp_path / "s2", host="other")
        async with StorageService(settings):
            # the host found before is remembered while it answers
            r = await virtbus(nats_url, "pool-list")
            assert r.rc == 0, r.err
            forget_hosts()
            r = await virtbus(nats_url, "pool-list")
            assert r.rc == 1 and "no storage service is running" in r.err
            r = await virtbus(nats_url, "--host", HOST, "pool-list", "--name")
            assert r.rc == 0 and r.out == "\n"


async def test_print_xml_needs_no_service(nats_url: str) -> None:
    r = await virtbus(
        nats_url, "pool-define-as", "n", "netfs", "--print-xml", "--source-host", "nas",
        "--source-path", "/export", "--source-format", "nfs", "--target", "/mnt/n",
    )  # fmt: skip
    assert r.out == (
        "<pool type='netfs'>\n  <name>n</name>\n  <source>\n    <host name='nas'/>\n"
        "    <dir path='/export'/>\n    <format type='nfs'/>\n  </source>\n"
        "  <target>\n    <path>/mnt/n</path>\n  </target>\n</pool>\n\n"
    )
