"""The iscsi backend: the LUNs of an iSCSI target, logged in with iscsiadm
(libvirt's VIR_STORAGE_POOL_ISCSI: storage_backend_iscsi.c and viriscsi.c).

Start looks for a session to the target and, when there is none, makes the
target's node record, sets its CHAP credentials from the pool's ``<auth>`` and
logs in; stop logs out only when a session exists.  Refresh rescans the
session and reads each disk LUN of its SCSI host from sysfs.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import time
from dataclasses import dataclass

from services.storage.pools.backends.base import Backend, PoolScan, found_volume
from shared.conf.secret import SecretUsageType
from shared.conf.storage_pool import StoragePoolDef
from shared.conf.storage_pool_source import AuthType
from shared.conf.storage_pool_types import PoolType
from shared.conf.storage_volume import StorageVolumeDef, VolumeType
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

_D = ErrorDomain.STORAGE
DEFAULT_PORT = 3260
#: Where sysfs and the device nodes are (tests point these at a made-up tree).
SYSFS = "/sys"
DEV = "/dev"
#: How long a LUN's stable link may take to appear (libvirt: 100 tries, 100 ms apart).
STABLE_PATH_TRIES, STABLE_PATH_PAUSE = 100, 0.1
#: A line of 'iscsiadm --mode session': 'tcp: [SID] PORTAL TARGET ...' (virISCSIGetSession).
_SESSION_LINE = re.compile(r"^tcp:\s+\[(\S+)\]\s+\S+\s+(\S+).*$")
#: SCSI peripheral types libvirt makes volumes of: direct-access disk and CD-ROM.
_DISK_TYPES = (0, 5)
#: iscsiadm's exit status when it has no session to list; libvirt accepts any status here.
_ANY_STATUS = range(-128, 256)


def _error(code: ErrorCode, message: str) -> VirtError:
    return VirtError(code, message, _D)


# ---- the iscsiadm command lines (viriscsi.c) ------------------------------------------


def check_source(pool: StoragePoolDef) -> None:
    """One host with a name and one device path (virStorageBackendISCSIStartPool)."""
    source = pool.source
    if len(source.hosts) != 1:
        raise _error(ErrorCode.CONFIG_UNSUPPORTED, "Expected exactly 1 host for the storage pool")
    if not source.hosts[0].name:
        raise _error(ErrorCode.INTERNAL_ERROR, "missing source host")
    if len(source.devices) != 1 or not source.devices[0].path:
        raise _error(ErrorCode.INTERNAL_ERROR, "missing source device")


def portal(pool: StoragePoolDef) -> str:
    """``host:port,1``, an IPv6 address in brackets (virStorageBackendISCSIPortal)."""
    host = pool.source.hosts[0]
    port = host.port or DEFAULT_PORT
    if ":" in host.name:
        return f"[{host.name}]:{port},1"
    return f"{host.name}:{port},1"


def session_command() -> list[str]:
    return ["iscsiadm", "--mode", "session"]


def node_command(portal: str, target: str, *action: str) -> list[str]:
    """A command on the target's node record: ``--op new``, ``--login``, ``--logout``."""
    return ["iscsiadm", "--mode", "node", "--portal", portal, "--targetname", target, *action]


def node_update_command(portal: str, target: str, name: str, value: str) -> list[str]:
    """virISCSINodeUpdate (which names the target with ``--target``, not ``--targetname``)."""
    return ["iscsiadm", "--mode", "node", "--portal", portal, "--target", target,
            "--op", "update", "--name", name, "--value", value]  # fmt: skip


def rescan_command(session: str) -> list[str]:
    return ["iscsiadm", "--mode", "session", "-r", session, "-R"]


def find_session(listing: str, target: str) -> str | None:
    """The id of the first session to ``target`` in 'iscsiadm --mode session' output."""
    for line in listing.splitlines():
        m = _SESSION_LINE.match(line)
        if m and m.group(2) == target:
            return m.group(1)
    return None


def find_iface(listing: str, initiator_iqn: str) -> str | None:
    """The interface whose initiator name is ``initiator_iqn`` in 'iscsiadm --mode iface'
    output (``NAME transport,hwaddress,ipaddress,net_ifacename,initiatorname``)."""
    for line in listing.splitlines():
        name, sep, fields = line.partition(" ")
        parts = fields.split(",", 4)
        if not sep or len(parts) != 5:
            raise _error(ErrorCode.INTERNAL_ERROR, f"malformed output of iscsiadm: {line}")
        if parts[4] == initiator_iqn:
            return name
    return None


# ---- the LUNs in sysfs (storage_util.c virStorageBackendSCSIFindLUs) -------------------


@dataclass(frozen=True)
class Lun:
    bus: int
    target: int
    lun: int
    device: str  # the block device's name, e.g. sdb


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _scsi_host(session: str) -> int:
    """The SCSI host number of a session (virStorageBackendISCSIGetHostNumber)."""
    folder = f"{SYSFS}/class/iscsi_session/session{session}/device"
    try:
        names = os.listdir(folder)
    except OSError as err:
        raise _error(
            ErrorCode.SYSTEM_ERROR, f"cannot open directory '{folder}': {err.strerror}"
        ) from err
    for name in names:
        if name.startswith("target"):
            m = re.match(r"target(\d+):", name)
            if m is None:
                raise _error(ErrorCode.INTERNAL_ERROR, f"Failed to parse target '{name}'")
            return int(m.group(1))
    raise _error(
        ErrorCode.INTERNAL_ERROR,
        f"Failed to get host number for iSCSI session with path '{folder}'",
    )


def _block_device(folder: str) -> str | None:
    try:
        names = os.listdir(f"{folder}/block")
    except OSError:
        return None
    return sorted(names)[0] if names else None


def _luns(host: int) -> list[Lun]:
    """The disk and CD-ROM LUNs of SCSI host ``host`` that have a block device."""
    devices = f"{SYSFS}/bus/scsi/devices"
    found = []
    for name in sorted(os.listdir(devices)):
        m = re.fullmatch(rf"{host}:(\d+):(\d+):(\d+)", name)
        if m is None:
            continue
        try:
            kind = int(_read(f"{devices}/{name}/type"))
        except (OSError, ValueError) as err:
            raise _error(
                ErrorCode.INTERNAL_ERROR,
                f"Failed to determine if {name} is a Direct-Access LUN",
            ) from err
        if kind not in _DISK_TYPES:
            continue
        device = _block_device(f"{devices}/{name}")
        if device is not None:
            bus, target, lun = (int(g) for g in m.groups())
            found.append(Lun(bus, target, lun, device))
    return found


def _stable_path(folder: str, device: str) -> str:
    """The link in ``folder`` to ``device`` (virStorageBackendStablePath), waiting for
    udev to make it; the device node itself when none appears."""
    for attempt in range(STABLE_PATH_TRIES):
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            names = []
        for name in names:
            path = f"{folder}/{name}"
            try:
                if os.path.samefile(path, device):
                    return path
            except OSError:
                continue
        if attempt + 1 < STABLE_PATH_TRIES:
            time.sleep(STABLE_PATH_PAUSE)
    return device


def _path_is_stable(path: str) -> bool:
    """Under /dev but not /dev itself (virStorageBackendPoolPathIsStable)."""
    return path.startswith(DEV) and path.rstrip("/") != DEV


def _volumes(pool: StoragePoolDef, session: str) -> list[StorageVolumeDef]:
    assert pool.target is not None
    folder = pool.target.path.rstrip("/") or "/"
    at_dev = folder == DEV
    volumes = []
    for lun in _luns(_scsi_host(session)):
        node = f"{DEV}/{lun.device}"
        if not _path_is_stable(folder) and not at_dev:
            raise _error(
                ErrorCode.INVALID_ARG,
                f"unable to use target path '{pool.target.path}' for dev '{lun.device}'",
            )
        path = node if at_dev else _stable_path(folder, node)
        if path == node and not at_dev:
            continue  # no stable link: libvirt skips the LUN
        size = int(_read(f"{SYSFS}/block/{lun.device}/size")) * 512
        name = f"unit:{lun.bus}:{lun.target}:{lun.lun}"
        volumes.append(found_volume(name, path, VolumeType.BLOCK, size))
    return volumes


# ---- the backend ------------------------------------------------------------------------


class IscsiBackend(Backend):
    """Logs in on start and out on stop; the LUNs of the session are the volumes."""

    pool_type = PoolType.ISCSI
    has_check = True

    async def _session(self, pool: StoragePoolDef) -> str | None:
        _, out = await self.runner.run(session_command(), ok_codes=_ANY_STATUS)
        return find_session(out, pool.source.devices[0].path)

    async def check(self, pool: StoragePoolDef) -> bool:
        check_source(pool)
        return await self._session(pool) is not None

    async def start(self, pool: StoragePoolDef) -> None:
        check_source(pool)
        if await self._session(pool) is not None:
            return
        where, target = portal(pool), pool.source.devices[0].path
        # A static node record for the target: login needs one.
        await self.runner.run(node_command(where, target, "--op", "new"))
        await self._set_auth(pool, where, target)
        login = node_command(where, target, "--login")
        iface = await self._iface(pool, where)
        await self.runner.run([*login, "--interface", iface] if iface else login)

    async def _set_auth(self, pool: StoragePoolDef, where: str, target: str) -> None:
        """The node's CHAP login from ``<auth type='chap'>`` (virStorageBackendISCSISetAuth)."""
        auth = pool.source.auth
        if auth is None:
            return
        if auth.type is not AuthType.CHAP:
            raise _error(ErrorCode.XML_ERROR, "iscsi pool only supports 'chap' auth type")
        value = await self._pool_secrets().fetch(auth.secret, SecretUsageType.ISCSI)
        password = value.decode("utf-8", "replace")
        for name, setting in (
            ("node.session.auth.authmethod", "CHAP"),
            ("node.session.auth.username", auth.username),
            ("node.session.auth.password", password),
        ):
            await self.runner.run(node_update_command(where, target, name, setting))

    async def _iface(self, pool: StoragePoolDef, where: str) -> str | None:
        """The iscsiadm interface of the pool's initiator IQN, made when missing
        (virStorageBackendIQNFound / virStorageBackendCreateIfaceIQN)."""
        iqn = pool.source.initiator_iqn
        if not iqn:
            return None
        _, out = await self.runner.run(["iscsiadm", "--mode", "iface"])
        name = find_iface(out, iqn)
        if name is not None:
            return name
        name = f"libvirt-iface-{secrets.randbits(32):08x}"
        iface = ["iscsiadm", "--mode", "iface", "--interface", name]
        await self.runner.run([*iface, "--op", "new"])
        await self.runner.run(
            [*iface, "--op", "update", "--name", "iface.initiatorname", "--value", iqn]
        )
        # iscsiadm knows no target over a new interface before a persistent sendtargets.
        discover = ["iscsiadm", "--mode", "discovery", "--type", "sendtargets", "--portal", where]
        await self.runner.run([*discover, "--interface", name])
        return name

    async def stop(self, pool: StoragePoolDef) -> None:
        check_source(pool)
        if await self._session(pool) is None:
            return
        where, target = portal(pool), pool.source.devices[0].path
        logout = node_command(where, target, "--logout")
        iface = await self._iface(pool, where)
        await self.runner.run([*logout, "--interface", iface] if iface else logout)

    async def refresh(self, pool: StoragePoolDef, known: dict[str, StorageVolumeDef]) -> PoolScan:
        check_source(pool)
        _, out = await self.runner.run(session_command(), ok_codes=_ANY_STATUS)
        session = find_session(out, pool.source.devices[0].path)
        if session is None:
            raise _error(ErrorCode.INTERNAL_ERROR, "cannot find iscsiadm session: ")
        await self.runner.run(rescan_command(session))
        volumes = await asyncio.to_thread(_volumes, pool, session)
        total = sum(v.capacity for v in volumes)
        # libvirt adds up the LUNs' capacities and allocations and leaves available at 0.
        return PoolScan(total, sum(v.allocation for v in volumes), 0, volumes)
