"""``Hypervisor`` over QMP: one qemu-system-* or qemu-storage-daemon process.

A disk's alias is the QEMU device id (``-device ...,id=ALIAS``; QEMU reports
the backend of a virtio disk as ``/machine/peripheral/ALIAS/virtio-backend``) or,
for qemu-storage-daemon, a node name.  Chains are read from the block graph
(x-debug-query-block-graph, the one query that names every edge) and
query-named-block-nodes.  Copy and commit jobs are started with ``auto-dismiss:
false`` so that a concluded job, and how it ended, stays in QEMU until the agent
has published its outcome; a restarted agent finds it there.  (Stream jobs are
the exception, see ``start_pull``: a restarted agent tells from the chain
whether one that ended meanwhile did its work.)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from agents.qemu.hypervisor import (
    CommitSpec,
    CopySpec,
    JobEvent,
    JobState,
    Layer,
    LiveDisk,
    LiveJob,
    PullSpec,
    Started,
)
from agents.qemu.qmp_client import QmpClient, QmpCommandError
from shared.conf.disk_source import StorageFormat, StorageSource, StorageType
from shared.conf.disk_source_net import HostTransport, NetHost, NetProtocol, NetworkSource
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

log = logging.getLogger(__name__)

JOB_PREFIX = "vbj-"
#: Nodes that sit above an image without being one (skipped when reading a chain).
FILTER_DRIVERS = frozenset(
    {
        "mirror_top",
        "commit_top",
        "throttle",
        "copy-on-read",
        "copy-before-write",
        "preallocate",
        "compress",
        "blkdebug",
        "blklogwrites",
        "snapshot-access",
    }
)
#: Protocol drivers and the storage type a layer on them has.
PROTOCOL_TYPES = {
    "file": StorageType.FILE,
    "host_device": StorageType.BLOCK,
    "host_cdrom": StorageType.BLOCK,
    "nbd": StorageType.NETWORK,
    "rbd": StorageType.NETWORK,
    "iscsi": StorageType.NETWORK,
    "gluster": StorageType.NETWORK,
    "http": StorageType.NETWORK,
    "https": StorageType.NETWORK,
    "ftp": StorageType.NETWORK,
    "ftps": StorageType.NETWORK,
    "ssh": StorageType.NETWORK,
    "nfs": StorageType.NETWORK,
    "nvme": StorageType.NVME,
}
_PERIPHERAL = re.compile(r"^/machine/peripheral/([^/]+)(/.*)?$")
_NBD_TCP = re.compile(r"^nbd://(?P<host>[^:/]+)(:(?P<port>\d+))?/?(?P<export>[^?]*)$")
_NBD_UNIX = re.compile(r"^nbd\+unix:///(?P<export>[^?]*)\?socket=(?P<socket>.+)$")


def qemu_job_id(job_id: str) -> str:
    """The QEMU job id of a virtbus job (a QEMU id must start with a letter)."""
    return JOB_PREFIX + job_id


def node_names(job_id: str) -> tuple[str, str]:
    """The format and protocol node names of a job's destination (QEMU allows 31
    characters, so they come from a digest of the job id)."""
    digest = hashlib.sha256(job_id.encode()).hexdigest()[:16]
    return f"vb{digest}f", f"vb{digest}p"


def qdev_alias(qdev: str) -> str:
    """The device id in a block backend's qdev path (the path itself if it has none)."""
    match = _PERIPHERAL.match(qdev)
    return match.group(1) if match else qdev


def _network_source(driver: str, filename: str) -> StorageSource:
    """A network layer from QEMU's filename; only NBD is read in full."""
    protocol = NetProtocol(driver) if driver in {p.value for p in NetProtocol} else None
    net: NetworkSource
    tcp, unix = _NBD_TCP.match(filename), _NBD_UNIX.match(filename)
    if driver == "nbd" and tcp:
        port = int(tcp.group("port")) if tcp.group("port") else None
        net = NetworkSource(
            protocol=NetProtocol.NBD,
            path=tcp.group("export") or None,
            hosts=(NetHost(name=tcp.group("host"), port=port),),
        )
    elif driver == "nbd" and unix:
        net = NetworkSource(
            protocol=NetProtocol.NBD,
            path=unix.group("export") or None,
            hosts=(NetHost(transport=HostTransport.UNIX, socket=unix.group("socket")),),
        )
    else:
        net = NetworkSource(protocol=protocol or NetProtocol.NONE)
    return StorageSource(type=StorageType.NETWORK, network=net)


def _format_of(driver: str) -> StorageFormat:
    try:
        return StorageFormat(driver)
    except ValueError:
        return StorageFormat.RAW


@dataclass(frozen=True)
class _Graph:
    """The block graph: each node's driver, filename and size, and its children by role."""

    drivers: dict[str, str]
    filenames: dict[str, str]
    sizes: dict[str, int]
    children: dict[str, dict[str, str]]
    backends: dict[str, str]  # block backend name (qdev path) -> root node

    def chain(self, root: str) -> tuple[Layer, ...]:
        layers: list[Layer] = []
        node: str | None = root
        seen: set[str] = set()
        while node is not None and node not in seen:
            seen.add(node)
            driver = self.drivers.get(node, "")
            kids = self.children.get(node, {})
            if driver in FILTER_DRIVERS:
                node = kids.get("backing") or kids.get("file")
                continue
            if driver in PROTOCOL_TYPES:
                # an image opened without a format layer: raw on the protocol itself
                layers.append(Layer(node, self._source(node, StorageFormat.RAW), self._size(node)))
                break
            protocol = kids.get("file")
            where = protocol if protocol is not None else node
            source = self._source(where, _format_of(driver))
            layers.append(Layer(node, source, self._size(node), protocol))
            node = kids.get("backing")
        return tuple(layers)

    def _size(self, node: str) -> int:
        return self.sizes.get(node, 0)

    def _source(self, protocol: str, fmt: StorageFormat) -> StorageSource:
        driver = self.drivers.get(protocol, "file")
        filename = self.filenames.get(protocol, "")
        kind = PROTOCOL_TYPES.get(driver, StorageType.FILE)
        if kind is StorageType.NETWORK:
            return _network_source(driver, filename).model_copy(update={"format": fmt})
        return StorageSource(type=kind, path=filename or None, format=fmt)


class QemuDomain:
    """A domain's QEMU over one QMP connection (injected; closed by ``close``)."""

    def __init__(self, qmp: QmpClient, qemu_img: str = "qemu-img") -> None:
        self._qmp = qmp
        self._qemu_img = qemu_img
        # Stream jobs are auto-dismissed (see start_pull); how they ended is kept
        # here, from BLOCK_JOB_COMPLETED/CANCELLED, until the agent dismisses them.
        self._ended: dict[str, LiveJob] = {}

    @property
    def connected(self) -> bool:
        return self._qmp.connected

    async def close(self) -> None:
        await self._qmp.disconnect()

    # -- disks --------------------------------------------------------------------------

    async def _graph(self) -> _Graph:
        graph = await self._qmp.execute("x-debug-query-block-graph")
        nodes = await self._qmp.execute("query-named-block-nodes", {"flat": True})
        names = {n["id"]: (n["name"], n["type"]) for n in graph["nodes"]}
        children: dict[str, dict[str, str]] = {}
        backends: dict[str, str] = {}
        for edge in graph["edges"]:
            parent, parent_type = names[edge["parent"]]
            child, _ = names[edge["child"]]
            if parent_type == "block-backend":
                backends[parent] = child
            elif parent_type == "block-driver":
                children.setdefault(parent, {})[edge["name"]] = child
        return _Graph(
            drivers={n["node-name"]: n["drv"] for n in nodes},
            filenames={n["node-name"]: n.get("file", "") for n in nodes},
            sizes={n["node-name"]: n.get("image", {}).get("virtual-size", 0) for n in nodes},
            children=children,
            backends=backends,
        )

    async def disks(self) -> dict[str, LiveDisk]:
        graph = await self._graph()
        blocks = await self._qmp.execute("query-block")
        out: dict[str, LiveDisk] = {}
        # qemu-storage-daemon: a disk is named by its node; any node may be asked for.
        for node in graph.drivers:
            chain = graph.chain(node)
            if chain:
                out[node] = LiveDisk(node, chain)
        for block in blocks:
            inserted = block.get("inserted")
            qdev = block.get("qdev")
            if not inserted or not qdev:
                continue
            chain = graph.chain(inserted["node-name"])
            if chain:
                alias = qdev_alias(qdev)
                out[alias] = LiveDisk(alias, chain)
        return out

    # -- jobs ---------------------------------------------------------------------------

    async def jobs(self) -> dict[str, LiveJob]:
        listed = await self._qmp.execute("query-jobs")
        speeds = {
            j["device"]: j.get("speed", 0) for j in await self._qmp.execute("query-block-jobs")
        }
        out: dict[str, LiveJob] = {}
        for job in listed:
            qid = job["id"]
            if not qid.startswith(JOB_PREFIX):
                continue
            job_id = qid[len(JOB_PREFIX) :]
            out[job_id] = LiveJob(
                job_id=job_id,
                state=JobState(job["status"]),
                cur=job.get("current-progress", 0),
                end=job.get("total-progress", 0),
                speed=speeds.get(qid, 0),
                error=job.get("error"),
            )
        for job_id, ended in self._ended.items():
            out.setdefault(job_id, ended)
        return out

    async def job_events(self) -> AsyncIterator[JobEvent | None]:
        while True:
            event = await self._qmp.events.get()
            if event is None:
                yield None
                return
            if event.name in ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED"):
                self._note_end(event.name, event.data)
            if event.name != "JOB_STATUS_CHANGE":
                continue
            qid = str(event.data.get("id", ""))
            if qid.startswith(JOB_PREFIX):
                state = JobState(event.data["status"])
                yield JobEvent(qid[len(JOB_PREFIX) :], state, event.timestamp)

    def _note_end(self, name: str, data: dict[str, Any]) -> None:
        qid = str(data.get("device", ""))
        if not qid.startswith(JOB_PREFIX):
            return
        error = data.get("error")
        if name == "BLOCK_JOB_CANCELLED":
            error = error or "Operation canceled"
        job_id = qid[len(JOB_PREFIX) :]
        self._ended[job_id] = LiveJob(
            job_id, JobState.CONCLUDED, data.get("offset", 0), data.get("len", 0), 0, error
        )

    async def _exists(self, job_id: str) -> bool:
        return job_id in await self.jobs()

    async def start_copy(self, job_id: str, disk: LiveDisk, spec: CopySpec) -> Started:
        fmt_node, proto_node = node_names(job_id)
        started = Started([fmt_node, proto_node])
        if await self._exists(job_id):
            return started
        dest = spec.destination
        fmt = dest.format if dest.format and dest.format is not StorageFormat.NONE else None
        fmt = fmt or StorageFormat.RAW
        backing = disk.chain[1] if spec.shallow and len(disk.chain) > 1 else None
        existing = set((await self._graph()).drivers)
        if spec.create and proto_node not in existing:
            await self._create_image(dest, fmt, disk.top.virtual_size, backing)
        if proto_node not in existing:
            await self._qmp.execute("blockdev-add", _protocol_options(dest, proto_node))
        if fmt_node not in existing:
            options: dict[str, Any] = {
                "driver": fmt.value,
                "node-name": fmt_node,
                "file": proto_node,
            }
            if fmt is not StorageFormat.RAW:
                options["backing"] = backing.node if backing is not None else None
            try:
                await self._qmp.execute("blockdev-add", options)
            except QmpCommandError:
                # a failed open of the format layer leaves the protocol node behind
                await self.release([proto_node])
                raise
        args: dict[str, Any] = {
            "job-id": qemu_job_id(job_id),
            "device": disk.top.node,
            "target": fmt_node,
            "sync": "top" if spec.shallow else "full",
            "auto-finalize": True,
            "auto-dismiss": False,
        }
        _optional(args, speed=spec.bandwidth, granularity=spec.granularity)
        _optional(args, **{"buf-size": spec.buf_size})
        if spec.synchronous_writes:
            args["copy-mode"] = "write-blocking"
        try:
            await self._qmp.execute("blockdev-mirror", args)
        except QmpCommandError:
            await self.release(started.added_nodes)
            raise
        return started

    async def start_commit(self, job_id: str, disk: LiveDisk, spec: CommitSpec) -> Started:
        if not await self._exists(job_id):
            args: dict[str, Any] = {
                "job-id": qemu_job_id(job_id),
                "device": disk.top.node,
                "top-node": spec.top.node,
                "base-node": spec.base.node,
                "auto-finalize": True,
                "auto-dismiss": False,
            }
            _optional(args, speed=spec.bandwidth)
            if spec.backing_file is not None:
                args["backing-file"] = spec.backing_file
            await self._qmp.execute("block-commit", args)
        return Started()

    async def start_pull(self, job_id: str, disk: LiveDisk, spec: PullSpec) -> Started:
        if not await self._exists(job_id):
            # QEMU 7.2 crashes in query-named-block-nodes while a concluded stream
            # job is kept, so this one job kind is dismissed by QEMU itself.
            args: dict[str, Any] = {
                "job-id": qemu_job_id(job_id),
                "device": disk.top.node,
                "auto-finalize": True,
                "auto-dismiss": True,
            }
            if spec.base is not None:
                args["base-node"] = spec.base.node
            if spec.backing_file is not None:
                args["backing-file"] = spec.backing_file
            _optional(args, speed=spec.bandwidth)
            await self._qmp.execute("block-stream", args)
        return Started()

    async def complete(self, job_id: str) -> None:
        await self._qmp.execute("job-complete", {"id": qemu_job_id(job_id)})

    async def cancel(self, job_id: str) -> None:
        await self._qmp.execute("job-cancel", {"id": qemu_job_id(job_id)})

    async def set_speed(self, job_id: str, bandwidth: int) -> None:
        await self._qmp.execute(
            "block-job-set-speed", {"device": qemu_job_id(job_id), "speed": bandwidth}
        )

    async def dismiss(self, job_id: str) -> None:
        self._ended.pop(job_id, None)
        listed = await self._qmp.execute("query-jobs")
        if any(job["id"] == qemu_job_id(job_id) for job in listed):
            await self._qmp.execute("job-dismiss", {"id": qemu_job_id(job_id)})

    async def release(self, nodes: list[str]) -> None:
        for node in nodes:
            try:
                await self._qmp.execute("blockdev-del", {"node-name": node})
            except QmpCommandError as err:
                # Nodes created by -drive, or still used by another layer, stay.
                log.debug("node kept", extra={"node": node, "reason": err.desc})

    async def _create_image(
        self, dest: StorageSource, fmt: StorageFormat, size: int, backing: Layer | None
    ) -> None:
        if dest.type is not StorageType.FILE or dest.path is None:
            raise VirtError(
                ErrorCode.OPERATION_UNSUPPORTED,
                "non-file destination not supported without reuse-external",
                ErrorDomain.QEMU,
            )
        argv = [self._qemu_img, "create", "-q", "-f", fmt.value]
        if backing is not None and backing.source.path is not None:
            backing_fmt = backing.source.format or StorageFormat.RAW
            argv += ["-b", backing.source.path, "-F", backing_fmt.value]
        argv += [dest.path, str(size)]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise VirtError(
                ErrorCode.OPERATION_FAILED,
                f"cannot create '{dest.path}': {err.decode(errors='replace').strip()}",
                ErrorDomain.QEMU,
            )


def _optional(args: dict[str, Any], **values: int) -> None:
    for key, value in values.items():
        if value:
            args[key] = value


def _protocol_options(dest: StorageSource, node: str) -> dict[str, Any]:
    """blockdev-add options of the protocol node of a destination."""
    if dest.type is StorageType.FILE and dest.path:
        return {"driver": "file", "filename": dest.path, "node-name": node}
    if dest.type is StorageType.BLOCK and dest.path:
        return {"driver": "host_device", "filename": dest.path, "node-name": node}
    net = dest.network
    if dest.type is StorageType.NETWORK and net is not None and net.protocol is NetProtocol.NBD:
        host = net.hosts[0] if net.hosts else NetHost(name="localhost")
        server: dict[str, Any]
        if host.socket:
            server = {"type": "unix", "path": host.socket}
        else:
            server = {
                "type": "inet",
                "host": host.name or "localhost",
                "port": str(host.port or 10809),
            }
        options: dict[str, Any] = {"driver": "nbd", "server": server, "node-name": node}
        if net.path:
            options["export"] = net.path
        return options
    raise VirtError(
        ErrorCode.OPERATION_UNSUPPORTED,
        f"block copy to a '{dest.type.value}' destination is not supported by this agent",
        ErrorDomain.QEMU,
    )
