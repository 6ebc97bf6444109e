"""The netfs backend for real: an NFS export served by nfs-ganesha (a userspace NFS
server) on loopback, mounted by the kernel's NFS client; and, on any host, the
mount and umount commands the backend runs for a pool."""

from __future__ import annotations

import glob
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from client.storage import StorageClient
from services.storage.pools.backends import fs
from services.storage.pools.backends.fs import is_mounted
from services.storage.pools.backends.netfs import NetfsBackend
from services.storage.pools.runner import find_tool
from services.storage.service import StorageService, StorageSettings
from shared.api.storage import PoolState
from shared.conf.storage_pool import parse_storage_pool
from shared.util.natsserver import free_port
from tests.integration.blockjob_stack import Cli
from tests.integration.netstorage import (
    RecordingRunner,
    kernel_feature,
    kernel_filesystems,
    not_installed,
    skip_reason,
    tool,
)
from tests.integration.procs import terminate

HOST = "netfs-host"
POOL = "nfs"
#: The export's path in the server's NFSv4 pseudo file system: what the pool mounts.
PSEUDO = "/virtbus"
FS_NS = "http://libvirt.org/schemas/storagepool/fs/1.0"


def pool_xml(port: int, target: str) -> str:
    """An NFSv4 pool of the export; the server's port rides in libvirt's fs:mount_opts."""
    return (
        f"<pool type='netfs' xmlns:fs='{FS_NS}'><name>{POOL}</name>"
        f"<source><host name='127.0.0.1'/><dir path='{PSEUDO}'/><format type='nfs'/>"
        "<protocol ver='4'/></source>"
        f"<target><path>{target}</path></target>"
        f"<fs:mount_opts><fs:option name='port={port}'/></fs:mount_opts></pool>"
    )


# ---- the commands, on any host ------------------------------------------------------


async def test_start_and_stop_run_the_mount_and_umount_libvirt_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = parse_storage_pool(pool_xml(20490, "/srv/pools/nfs"))
    runner = RecordingRunner()
    backend = NetfsBackend(runner)
    await backend.start(pool)
    await backend.stop(pool)  # not mounted: libvirt runs nothing either
    monkeypatch.setattr(fs, "is_mounted", lambda source, target: True)
    await backend.stop(pool)
    assert runner.commands == [
        ["mount", "-o", "nodev,nosuid,noexec,nfsvers=4,port=20490", "-t", "nfs",
         "127.0.0.1:/virtbus", "/srv/pools/nfs"],
        ["umount", "/srv/pools/nfs"],
    ]  # fmt: skip


# ---- a real NFS server and client ---------------------------------------------------


def _no_nfs_client() -> str | None:
    known = kernel_filesystems()
    if "nfs" not in known:
        return "the kernel has no NFS client: 'nfs' is not in /proc/filesystems"
    if "nfs4" not in known:
        return "the kernel's NFS client has no NFSv4: 'nfs4' is not in /proc/filesystems"
    return None


def _ganesha_vfs() -> bool:
    return bool(
        glob.glob("/usr/lib/*/ganesha/libfsalvfs.so")
        or glob.glob("/usr/lib*/ganesha/libfsalvfs.so")
    )


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "mounting an NFS export needs root"
    return skip_reason(
        kernel_feature(_no_nfs_client, "nfsv4"),
        not_installed(
            [
                tool("mount.nfs", "nfs-common"),
                tool("ganesha.nfsd", "nfs-ganesha"),
                (
                    "nfs-ganesha's VFS FSAL (ganesha/libfsalvfs.so)",
                    "nfs-ganesha-vfs",
                    _ganesha_vfs(),
                ),
                tool("qemu-img", "qemu-utils"),
            ]
        ),
    )


# Graceless: opens work at once instead of after NFSv4's 90-second grace period.
# Loopback on a free port: no clash with an NFS server the host runs on 2049.
# Its own idmapd.conf, so nothing of the host's NFS set-up is read.
GANESHA_CONF = """\
NFS_CORE_PARAM {{
    Protocols = 4;
    NFS_Port = {port};
    Bind_addr = 127.0.0.1;
    Enable_NLM = false;
    Enable_RQUOTA = false;
}}
NFSV4 {{
    Graceless = true;
    RecoveryBackend = fs;
    RecoveryRoot = "{state}/recovery";
    IdmapConf = "{state}/idmapd.conf";
    Only_Numeric_Owners = true;
}}
EXPORT {{
    Export_Id = 1;
    Path = "{export}";
    Pseudo = "{pseudo}";
    Access_Type = RW;
    Squash = No_Root_Squash;
    Protocols = 4;
    Transports = TCP;
    SecType = sys;
    FSAL {{ Name = VFS; }}
}}
"""


@dataclass(frozen=True)
class NfsServer:
    port: int
    export: Path  # the exported folder, as the server sees it
    mountpoint: Path  # where the pool mounts it


def _wait_for_ganesha(proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if "NFS SERVER INITIALIZED" in text:
            return
        if proc.poll() is not None:
            pytest.fail(f"ganesha.nfsd exited with {proc.returncode}:\n{text[-3000:]}")
        time.sleep(0.1)
    pytest.fail(f"ganesha.nfsd did not start in {timeout:.0f}s")


@pytest.fixture
def nfs_server(tmp_path: Path) -> Iterator[NfsServer]:
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    state, export = tmp_path / "ganesha", tmp_path / "export"
    (state / "recovery").mkdir(parents=True)
    export.mkdir()
    (state / "idmapd.conf").write_text("[General]\nDomain = localdomain\n")
    port = free_port()
    conf = state / "ganesha.conf"
    conf.write_text(GANESHA_CONF.format(port=port, state=state, export=export, pseudo=PSEUDO))
    log = state / "ganesha.log"
    program = find_tool("ganesha.nfsd")
    assert program is not None
    argv = [program, "-F", "-f", str(conf), "-L", str(log), "-p", str(state / "pid")]
    proc = subprocess.Popen([*argv, "-N", "NIV_EVENT"], stdout=subprocess.DEVNULL)
    server = NfsServer(port, export, tmp_path / "mnt")
    try:
        _wait_for_ganesha(proc, log)
        yield server
    finally:
        # A mount left by a failed test would hang once its server is gone.
        if is_mounted(f"127.0.0.1:{PSEUDO}", str(server.mountpoint)):
            subprocess.run(["umount", "-f", "-l", str(server.mountpoint)], capture_output=True)
        terminate(proc)


@pytest.fixture
async def storage(nats_url: str, nc: NATS, tmp_path: Path) -> AsyncIterator[StorageClient]:
    settings = StorageSettings(nats_url=nats_url, state_dir=tmp_path / "state", host=HOST)
    async with StorageService(settings):
        yield StorageClient(nc, HOST)


def _mount_options(target: Path) -> set[str]:
    with open("/proc/self/mounts", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if fields[1] == str(target):
                return set(fields[3].split(","))
    return set()


@pytest.mark.integration
async def test_netfs_pool_on_an_nfs_export(
    nfs_server: NfsServer, storage: StorageClient, nats_url: str, tmp_path: Path
) -> None:
    cli, target, export = Cli(nats_url), nfs_server.mountpoint, nfs_server.export
    # Already in the export before the pool starts: a volume once it is mounted.
    (export / "seed.img").write_bytes(bytes(1 << 20))
    xml = tmp_path / "pool.xml"
    xml.write_text(pool_xml(nfs_server.port, str(target)))
    r = await cli.ok("pool-define", str(xml))
    assert r.out == f"Pool {POOL} defined from {xml}\n\n"
    await cli.ok("pool-build", POOL)  # the mount point
    assert target.is_dir()
    await cli.ok("pool-start", POOL)  # mount -o nodev,nosuid,noexec,nfsvers=4,port=N -t nfs
    source = f"127.0.0.1:{PSEUDO}"
    assert is_mounted(source, str(target))
    options = _mount_options(target)
    assert {"nodev", "nosuid", "noexec", f"port={nfs_server.port}"} <= options, options
    assert any(o.startswith("vers=4") for o in options), options
    info = await storage.pool_info(POOL)
    assert info.state is PoolState.RUNNING and info.capacity > 0
    assert [v.name for v in await storage.vol_list(POOL)] == ["seed.img"]

    r = await cli.ok("vol-create-as", POOL, "disk.qcow2", "8M", "--format", "qcow2")
    assert r.out == "Vol disk.qcow2 created\n\n"
    # Written through the kernel's NFS client: the server's folder has it.
    assert (export / "disk.qcow2").read_bytes()[:4] == b"QFI\xfb"
    await cli.ok("pool-refresh", POOL)
    volumes = {v.name: v for v in await storage.vol_list(POOL)}
    assert sorted(volumes) == ["disk.qcow2", "seed.img"]
    disk = volumes["disk.qcow2"]
    assert (disk.path, disk.type, disk.capacity) == (f"{target}/disk.qcow2", "file", 8 << 20)
    await cli.ok("vol-delete", "disk.qcow2", "--pool", POOL)
    assert not (export / "disk.qcow2").exists()

    await cli.ok("pool-destroy", POOL)  # umount
    assert not is_mounted(source, str(target))
    assert (export / "seed.img").exists()  # stopping a pool leaves the export's files
    await cli.ok("pool-delete", POOL)  # the mount point goes, the export stays
    assert not target.exists() and export.is_dir()
    await cli.ok("pool-undefine", POOL)
