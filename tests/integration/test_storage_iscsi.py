"""The iscsi backend for real: a LUN served by tgt's userspace target (tgtd) on
loopback, logged in with open-iscsi (iscsiadm, iscsid and the kernel's iscsi_tcp);
and, on any host, the iscsiadm commands the backend runs for a pool."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from client.storage import StorageClient
from services.storage.backends import iscsi
from services.storage.backends.iscsi import IscsiBackend
from services.storage.runner import find_tool
from services.storage.service import StorageService, StorageSettings
from shared.api.storage import PoolState
from shared.conf.storage_pool import parse_storage_pool
from shared.util.natsserver import free_port
from tests.integration.blockjob_stack import Cli, eventually
from tests.integration.netstorage import (
    RecordingRunner,
    kernel_feature,
    not_installed,
    skip_reason,
    tool,
)
from tests.integration.procs import terminate

HOST = "iscsi-host"
POOL = "lab"
IQN = "iqn.2024-01.test.virtbus:store"
INITIATOR = "iqn.2024-01.test.virtbus:initiator"
BY_PATH = "/dev/disk/by-path"


def pool_xml(host: str, port: int | None) -> str:
    port_attr = f" port='{port}'" if port else ""
    return (
        f"<pool type='iscsi'><name>{POOL}</name><source><host name='{host}'{port_attr}/>"
        f"<device path='{IQN}'/></source><target><path>{BY_PATH}</path></target></pool>"
    )


def node(portal: str, *action: str) -> list[str]:
    return ["iscsiadm", "--mode", "node", "--portal", portal, "--targetname", IQN, *action]


# ---- the commands, on any host ------------------------------------------------------


async def test_login_and_logout_are_libvirts_iscsiadm_lines() -> None:
    pool = parse_storage_pool(pool_xml("192.0.2.10", 3261))
    runner = RecordingRunner()
    backend = IscsiBackend(runner)
    await backend.start(pool)
    assert runner.commands[-1] == node("192.0.2.10:3261,1", "--login")
    await backend.stop(pool)
    assert runner.commands[-1] == node("192.0.2.10:3261,1", "--logout")


@pytest.mark.xfail(
    strict=True,
    reason="the backend runs a persistent 'iscsiadm --mode discovery --type sendtargets' "
    "where libvirt 9 first looks for a session ('iscsiadm --mode session') and then makes "
    "the one node record it needs ('iscsiadm --mode node ... --op new')",
)
async def test_start_runs_what_libvirt_9_runs() -> None:
    runner = RecordingRunner()  # 'iscsiadm --mode session' lists no session
    await IscsiBackend(runner).start(parse_storage_pool(pool_xml("192.0.2.10", None)))
    assert runner.commands == [
        ["iscsiadm", "--mode", "session"],
        node("192.0.2.10:3260,1", "--op", "new"),
        node("192.0.2.10:3260,1", "--login"),
    ]


@pytest.mark.xfail(strict=True, reason="the backend does not bracket an IPv6 portal")
async def test_an_ipv6_portal_is_bracketed_as_libvirt_does() -> None:
    runner = RecordingRunner()
    await IscsiBackend(runner).start(parse_storage_pool(pool_xml("2001:db8::5", None)))
    assert runner.commands[-1] == node("[2001:db8::5]:3260,1", "--login")


async def test_the_luns_of_the_target_are_the_volumes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in (
        f"ip-192.0.2.10:3260-iscsi-{IQN}-lun-1",
        f"ip-192.0.2.10:3260-iscsi-{IQN}-lun-2",
        "ip-192.0.2.10:3260-iscsi-iqn.2024-01.test.virtbus:other-lun-1",
        "pci-0000:00:1f.2-ata-1",
    ):
        (tmp_path / name).touch()
    monkeypatch.setattr(iscsi, "BY_PATH", str(tmp_path))
    scan = await IscsiBackend(RecordingRunner()).refresh(
        parse_storage_pool(pool_xml("192.0.2.10", None)), {}
    )
    assert [(v.name, v.target.path) for v in scan.volumes] == [
        ("unit:0:0:1", f"{tmp_path}/ip-192.0.2.10:3260-iscsi-{IQN}-lun-1"),
        ("unit:0:0:2", f"{tmp_path}/ip-192.0.2.10:3260-iscsi-{IQN}-lun-2"),
    ]


# ---- a real target and initiator ----------------------------------------------------


def _absent(path: str, lacking: str) -> Callable[[], str | None]:
    return lambda: None if os.path.exists(path) else lacking


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "logging in to an iSCSI target needs root"
    return skip_reason(
        kernel_feature(
            _absent(
                "/sys/module/iscsi_tcp",
                "no iSCSI initiator in the kernel: /sys/module/iscsi_tcp is absent",
            ),
            "iscsi_tcp",
        ),
        kernel_feature(
            _absent(
                "/sys/bus/scsi/drivers/sd",
                "no SCSI disk driver in the kernel: /sys/bus/scsi/drivers/sd is absent",
            ),
            "sd_mod",
        ),
        not_installed(
            [
                tool("iscsiadm", "open-iscsi"),
                tool("iscsid", "open-iscsi"),
                tool("tgtd", "tgt"),
                tool("tgtadm", "tgt"),
            ]
        ),
        # The backend finds the LUNs by the links udev makes, not in sysfs.
        None
        if os.path.exists("/run/udev/control")
        else "udevd is not running (no /run/udev/control), so no LUN gets its "
        f"{BY_PATH} link, which is how the iscsi backend finds LUNs",
    )


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    program = find_tool(argv[0])
    assert program is not None, argv[0]
    return subprocess.run([program, *argv[1:]], capture_output=True, text=True, timeout=60)


def _wait(ready: Callable[[], bool], what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not come up in 15s")
        time.sleep(0.1)


def _iscsid_listening() -> bool:
    """Whether an iscsid answers on its abstract socket, as iscsiadm reaches it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect("\0ISCSIADM_ABSTRACT_NAMESPACE")
        except OSError:
            return False
    return True


@contextlib.contextmanager
def _iscsid(folder: Path) -> Iterator[None]:
    """The host's iscsid when one runs, else one of our own for the test's length."""
    if _iscsid_listening():
        yield
        return
    folder.mkdir()
    (folder / "iscsid.conf").write_text("node.startup = manual\n")
    (folder / "initiatorname.iscsi").write_text(f"InitiatorName={INITIATOR}\n")
    program = find_tool("iscsid")
    assert program is not None
    conf, name = str(folder / "iscsid.conf"), str(folder / "initiatorname.iscsi")
    proc = subprocess.Popen([program, "-f", "-c", conf, "-i", name], stdout=subprocess.DEVNULL)
    try:
        _wait(_iscsid_listening, "iscsid", proc)
        yield
    finally:
        terminate(proc)


@dataclass(frozen=True)
class Target:
    port: int
    lun_file: Path  # what LUN 1 stores its blocks in

    @property
    def portal(self) -> str:
        return f"127.0.0.1:{self.port},1"

    @property
    def lun_link(self) -> str:
        return f"{BY_PATH}/ip-127.0.0.1:{self.port}-iscsi-{IQN}-lun-1"


def _free_control_port() -> int:
    """A tgtd management channel no other tgtd uses (its socket is /var/run/tgtd/socket.N)."""
    for n in range(4000 + os.getpid() % 1000, 6000):
        if not os.path.exists(f"/var/run/tgtd/socket.{n}"):
            return n
    raise AssertionError("no free tgtd control port")


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Target]:
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    lun_file = tmp_path / "lun1.img"
    with open(lun_file, "wb") as f:
        f.truncate(16 << 20)
    served = Target(free_port(), lun_file)
    control = str(_free_control_port())
    program = find_tool("tgtd")
    assert program is not None
    portal = f"portal=127.0.0.1:{served.port}"
    with open(tmp_path / "tgtd.log", "wb") as log:
        tgtd = subprocess.Popen(
            [program, "-f", "-C", control, "--iscsi", portal], stdout=log, stderr=log
        )

    def tgtadm(*args: str) -> subprocess.CompletedProcess[str]:
        return _run("tgtadm", "-C", control, "--lld", "iscsi", *args)

    try:
        _wait(lambda: tgtadm("--op", "show", "--mode", "target").returncode == 0, "tgtd", tgtd)
        for args in (
            ("--op", "new", "--mode", "target", "--tid", "1", "-T", IQN),
            ("--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1",
             "-b", str(lun_file)),
            ("--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL"),
        ):  # fmt: skip
            done = tgtadm(*args)
            assert done.returncode == 0, done.stderr
        with _iscsid(tmp_path / "iscsid"):
            try:
                yield served
            finally:
                # Nothing of the test stays in the initiator's node and discovery records.
                _run(*node(served.portal, "--logout"))
                _run(*node(served.portal, "--op", "delete"))
                _run("iscsiadm", "--mode", "discoverydb", "--type", "sendtargets",
                     "--portal", f"127.0.0.1:{served.port}", "--op", "delete")  # fmt: skip
    finally:
        # tgtd leaves only once it serves no target.
        tgtadm("--op", "delete", "--mode", "target", "--tid", "1", "--force")
        _run("tgtadm", "-C", control, "--op", "delete", "--mode", "system")
        terminate(tgtd)
        for leftover in (f"/var/run/tgtd/socket.{control}", f"/var/run/tgtd/socket.{control}.lock"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)


@pytest.fixture
async def storage(nats_url: str, nc: NATS, tmp_path: Path) -> AsyncIterator[StorageClient]:
    settings = StorageSettings(nats_url=nats_url, state_dir=tmp_path / "state", host=HOST)
    async with StorageService(settings):
        yield StorageClient(nc, HOST)


def _logged_in() -> bool:
    return IQN in _run("iscsiadm", "--mode", "session").stdout


def _device_size(path: str) -> int:
    with open(path, "rb") as dev:
        return dev.seek(0, os.SEEK_END)


@pytest.mark.integration
async def test_iscsi_pool_on_a_tgt_target(
    target: Target, storage: StorageClient, nats_url: str, tmp_path: Path
) -> None:
    cli = Cli(nats_url)
    xml = tmp_path / "pool.xml"
    xml.write_text(pool_xml("127.0.0.1", target.port))
    r = await cli.ok("pool-define", str(xml))
    assert r.out == f"Pool {POOL} defined from {xml}\n\n"
    await cli.ok("pool-build", POOL)  # libvirt's iscsi backend has nothing to build
    await cli.ok("pool-start", POOL)  # iscsiadm ... --login
    assert _logged_in()

    async def lun_listed() -> bool:
        # The kernel scans the LUNs and udev links them after the login returns.
        await cli.ok("pool-refresh", POOL)
        return [v.path for v in await storage.vol_list(POOL)] == [target.lun_link]

    await eventually(lun_listed, timeout=30)
    info = await storage.pool_info(POOL)
    assert info.state is PoolState.RUNNING and info.volumes == 1
    [lun] = await storage.vol_list(POOL)
    assert (lun.name, lun.type) == ("unit:0:0:1", "block")
    assert _device_size(lun.path) == 16 << 20
    assert lun.capacity == 16 << 20  # libvirt reports each LUN's size
    # The LUN is the target's file: what the initiator writes lands in it.
    fd = os.open(lun.path, os.O_WRONLY)
    try:
        os.write(fd, b"virtbus over iscsi")
        os.fsync(fd)
    finally:
        os.close(fd)
    assert target.lun_file.read_bytes()[:18] == b"virtbus over iscsi"

    r = await cli.run("vol-create-as", POOL, "new", "8M")
    assert r.rc == 1 and "storage pool does not support volume creation" in r.err, r.err
    await cli.ok("pool-destroy", POOL)  # iscsiadm ... --logout
    assert not _logged_in()
    r = await cli.run("pool-delete", POOL)
    assert r.rc == 1 and "pool does not support pool deletion" in r.err, r.err
    await cli.ok("pool-undefine", POOL)
