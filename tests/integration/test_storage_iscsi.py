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
from services.storage.pools.backends import iscsi
from services.storage.pools.backends.iscsi import IscsiBackend
from services.storage.pools.pool_secrets import PoolSecrets
from services.storage.pools.runner import find_tool
from services.storage.service import StorageService, StorageSettings
from shared.api.storage import PoolState
from shared.conf.encryption import SecretLookup
from shared.conf.secret import SecretUsageType
from shared.conf.storage_pool import parse_storage_pool
from shared.util.errors import VirtError
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

SESSIONS = (
    "tcp: [3] 192.0.2.10:3260,1 iqn.2024-01.test.virtbus:other (non-flash)\n"
    f"tcp: [7] 192.0.2.10:3260,1 {IQN} (non-flash)\n"
)
SESSION = ["iscsiadm", "--mode", "session"]


def sessions(listing: str) -> Callable[[list[str]], str]:
    """A runner's answers: ``listing`` for 'iscsiadm --mode session', nothing else."""
    return lambda argv: listing if argv == SESSION else ""


def update(portal: str, name: str, value: str) -> list[str]:
    return ["iscsiadm", "--mode", "node", "--portal", portal, "--target", IQN,
            "--op", "update", "--name", name, "--value", value]  # fmt: skip


async def test_start_runs_what_libvirt_9_runs() -> None:
    runner = RecordingRunner()  # 'iscsiadm --mode session' lists no session
    await IscsiBackend(runner).start(parse_storage_pool(pool_xml("192.0.2.10", None)))
    assert runner.commands == [
        SESSION,
        node("192.0.2.10:3260,1", "--op", "new"),
        node("192.0.2.10:3260,1", "--login"),
    ]


async def test_start_with_a_session_runs_nothing_more() -> None:
    runner = RecordingRunner(sessions(SESSIONS))
    await IscsiBackend(runner).start(parse_storage_pool(pool_xml("192.0.2.10", 3261)))
    assert runner.commands == [SESSION]


async def test_stop_logs_out_only_from_a_session() -> None:
    pool = parse_storage_pool(pool_xml("192.0.2.10", 3261))
    runner = RecordingRunner(sessions(SESSIONS))
    await IscsiBackend(runner).stop(pool)
    assert runner.commands == [SESSION, node("192.0.2.10:3261,1", "--logout")]
    runner = RecordingRunner(sessions(SESSIONS.replace(IQN, "iqn.2024-01.test.virtbus:gone")))
    await IscsiBackend(runner).stop(pool)
    assert runner.commands == [SESSION]


async def test_an_ipv6_portal_is_bracketed_as_libvirt_does() -> None:
    runner = RecordingRunner()
    await IscsiBackend(runner).start(parse_storage_pool(pool_xml("2001:db8::5", None)))
    assert runner.commands[-1] == node("[2001:db8::5]:3260,1", "--login")


async def test_chap_credentials_come_from_the_secret_service(tmp_path: Path) -> None:
    asked: list[tuple[SecretLookup, SecretUsageType]] = []

    async def fetch(lookup: SecretLookup, usage: SecretUsageType) -> bytes:
        asked.append((lookup, usage))
        return b"s3cret-chap"

    xml = pool_xml("192.0.2.10", None).replace(
        "</source>",
        "<auth type='chap' username='initiator-user'><secret usage='lab-chap'/></auth></source>",
    )
    runner = RecordingRunner()
    backend = IscsiBackend(runner, PoolSecrets(fetch, tmp_path))
    await backend.start(parse_storage_pool(xml))
    portal = "192.0.2.10:3260,1"
    assert runner.commands == [
        SESSION,
        node(portal, "--op", "new"),
        update(portal, "node.session.auth.authmethod", "CHAP"),
        update(portal, "node.session.auth.username", "initiator-user"),
        update(portal, "node.session.auth.password", "s3cret-chap"),
        node(portal, "--login"),
    ]
    assert asked == [(SecretLookup(usage="lab-chap"), SecretUsageType.ISCSI)]


async def test_a_ceph_auth_is_refused_as_libvirt_refuses_it(tmp_path: Path) -> None:
    xml = pool_xml("192.0.2.10", None).replace(
        "</source>", "<auth type='ceph' username='u'><secret usage='x'/></auth></source>"
    )
    with pytest.raises(VirtError, match="iscsi pool only supports 'chap' auth type"):
        await IscsiBackend(RecordingRunner()).start(parse_storage_pool(xml))


async def test_an_initiator_iqn_logs_in_over_its_interface() -> None:
    xml = pool_xml("192.0.2.10", None).replace(
        "</source>", f"<initiator><iqn name='{INITIATOR}'/></initiator></source>"
    )
    ifaces = (
        "default tcp,<empty>,<empty>,<empty>,<empty>\n"
        f"libvirt-iface-0000beef tcp,<empty>,<empty>,<empty>,{INITIATOR}\n"
    )
    runner = RecordingRunner(lambda argv: ifaces if argv[-1] == "iface" else "")
    await IscsiBackend(runner).start(parse_storage_pool(xml))
    assert runner.commands[-2:] == [
        ["iscsiadm", "--mode", "iface"],
        [*node("192.0.2.10:3260,1", "--login"), "--interface", "libvirt-iface-0000beef"],
    ]


def _fake_lun(root: Path, address: str, device: str, blocks: int, kind: int = 0) -> None:
    lun = root / "sys/bus/scsi/devices" / address
    (lun / "block" / device).mkdir(parents=True)
    (lun / "type").write_text(f"{kind}\n")
    (root / "sys/block" / device).mkdir(parents=True)
    (root / "sys/block" / device / "size").write_text(f"{blocks}\n")
    (root / "dev").mkdir(exist_ok=True)
    (root / "dev" / device).touch()


async def test_refresh_rescans_the_session_and_sizes_its_luns_from_sysfs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # SCSI host 5 is session 7's; host 6 belongs to another session.
    (tmp_path / "sys/class/iscsi_session/session7/device/target5:0:0").mkdir(parents=True)
    _fake_lun(tmp_path, "5:0:0:1", "sdc", 32768)
    _fake_lun(tmp_path, "5:0:0:2", "sdd", 2048)
    _fake_lun(tmp_path, "5:0:0:3", "sg9", 0, kind=12)  # an enclosure, not a disk
    _fake_lun(tmp_path, "6:0:0:1", "sde", 4096)
    by_path = tmp_path / "dev/disk/by-path"
    by_path.mkdir(parents=True)
    for lun, dev in ((1, "sdc"), (2, "sdd")):
        (by_path / f"ip-192.0.2.10:3260-iscsi-{IQN}-lun-{lun}").symlink_to(f"../../{dev}")
    monkeypatch.setattr(iscsi, "SYSFS", str(tmp_path / "sys"))
    monkeypatch.setattr(iscsi, "DEV", str(tmp_path / "dev"))
    pool = parse_storage_pool(pool_xml("192.0.2.10", None).replace(BY_PATH, str(by_path)))
    runner = RecordingRunner(sessions(SESSIONS))
    scan = await IscsiBackend(runner).refresh(pool, {})
    assert runner.commands == [SESSION, ["iscsiadm", "--mode", "session", "-r", "7", "-R"]]
    assert [(v.name, v.target.path, v.capacity, v.allocation) for v in scan.volumes] == [
        ("unit:0:0:1", f"{by_path}/ip-192.0.2.10:3260-iscsi-{IQN}-lun-1", 16 << 20, 16 << 20),
        ("unit:0:0:2", f"{by_path}/ip-192.0.2.10:3260-iscsi-{IQN}-lun-2", 1 << 20, 1 << 20),
    ]
    assert (scan.capacity, scan.allocation, scan.available) == (17 << 20, 17 << 20, 0)


async def test_refresh_without_a_session_fails() -> None:
    with pytest.raises(VirtError, match="cannot find iscsiadm session"):
        await IscsiBackend(RecordingRunner()).refresh(
            parse_storage_pool(pool_xml("192.0.2.10", None)), {}
        )


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
        # The backend names each LUN by the link udev makes for it, as libvirt does.
        None
        if os.path.exists("/run/udev/control")
        else "udevd is not running (no /run/udev/control), so no LUN gets its "
        f"{BY_PATH} link, which is the path the iscsi backend gives a LUN",
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
    await cli.ok("pool-start", POOL)  # iscsiadm ... --op new, then --login
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
