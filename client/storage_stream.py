"""Uploading a local file into a volume and downloading a volume into a local file
(libvirt's virStorageVolUpload/Download), chunk by chunk over the bus.

At most ``window`` chunks are in flight: each waits for the service's reply,
which is the flow control.  With ``sparse``, holes travel as holes: an
upload skips reading them and the service punches them out of the volume,
a download skips writing them and the local file keeps them.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.micro.request import ERROR_CODE_HEADER

from client.storage import StorageClient
from shared.api import storage as api
from shared.api.storage import TransferReply, VolRef
from shared.util.api import call
from shared.util.bus import roundtrip
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

#: Called with (bytes done, bytes in all) as chunks complete.
Progress = Callable[[int, int], None]
CHUNK_TIMEOUT = 120.0
_OFFSET, _SIZE, _HOLE, _KIND, _END = (
    "Virtbus-Offset",
    "Virtbus-Size",
    "Virtbus-Hole",
    "Virtbus-Kind",
    "end",
)


def _check(msg: Msg) -> dict[str, str]:
    """The reply's headers; a ``VirtError`` when the reply is an error."""
    headers = msg.headers or {}
    if ERROR_CODE_HEADER in headers:
        try:
            raise VirtError.from_dict(json.loads(msg.data))
        except (ValueError, TypeError):
            raise VirtError(
                ErrorCode.INTERNAL_ERROR, "malformed stream error", ErrorDomain.STREAMS
            ) from None
    return dict(headers)


def local_hole(fd: int, offset: int, length: int) -> bool:
    """Whether ``[offset, offset + length)`` of a local file holds no data."""
    try:
        return os.lseek(fd, offset, os.SEEK_DATA) >= offset + length
    except OSError as err:
        return err.errno == errno.ENXIO


async def _pipeline(
    reply: TransferReply,
    chunk: Callable[[int, int], Awaitable[None]],
    progress: Progress | None,
) -> int:
    """Run ``chunk(offset, size)`` over the whole range with ``window`` workers.

    The first failure cancels the other workers (whose chunks could wait for
    replies the service, having closed the stream on that failure, never
    sends) and is the error raised."""
    total = reply.length
    starts = iter(range(0, total, reply.chunk_bytes))
    done = 0

    async def worker() -> None:
        nonlocal done
        for start in starts:
            size = min(reply.chunk_bytes, total - start)
            await chunk(start, size)
            done += size
            if progress is not None:
                progress(done, total)

    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(max(1, reply.window)):
                tg.create_task(worker())
    except* (VirtError, OSError, NatsError) as group:
        # The service closes the stream on the first failure, so the chunks in
        # flight then fail too (no responders): those are its consequence, and
        # the first failure (TaskGroup keeps them in the order they came) is the
        # error of the transfer.
        raise group.exceptions[0] from None
    return total


async def _request(nc: NATS, subject: str, data: bytes, headers: dict[str, str]) -> Msg:
    # The same reply inbox as the call that opened the stream: the service
    # serves a stream's chunks to that connection only (by that prefix).
    return await roundtrip(nc, subject, data, CHUNK_TIMEOUT, headers=headers)


async def upload(
    storage: StorageClient,
    vol: VolRef,
    path: str,
    *,
    offset: int = 0,
    length: int = 0,
    sparse: bool = False,
    progress: Progress | None = None,
) -> int:
    """Write the file at ``path`` into ``vol`` from ``offset``; the bytes sent.

    As virsh does, the whole file is sent: the volume grows past its end when
    it can, and ``length`` (0: none) is a limit the service enforces (writing
    more fails with ENOSPC, after the bytes that fit).

    Raises ``OSError`` for the local file and ``VirtError`` from the service.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        request = api.VolTransferRequest(vol=vol, offset=offset, length=length, sparse=sparse)
        reply = await call(storage.nc, api.VOL_UPLOAD, request, host=storage.host)
        reply = reply.model_copy(update={"length": size})
        nc = storage.nc

        async def chunk(start: int, size: int) -> None:
            headers = {_OFFSET: str(offset + start)}
            if sparse and local_hole(fd, start, size):
                _check(await _request(nc, reply.subject, b"", {**headers, _HOLE: str(size)}))
                return
            data = await asyncio.to_thread(os.pread, fd, size, start)
            _check(await _request(nc, reply.subject, data, headers))

        sent = await _pipeline(reply, chunk, progress)
        _check(await _request(nc, reply.subject, b"", {_KIND: _END}))
        return sent
    finally:
        os.close(fd)


async def download(
    storage: StorageClient,
    vol: VolRef,
    path: str,
    *,
    offset: int = 0,
    length: int = 0,
    sparse: bool = False,
    progress: Progress | None = None,
) -> int:
    """Write ``vol`` (from ``offset``, ``length`` bytes or to its end) into ``path``;
    the bytes received.  A file this call created is removed on failure."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        created = True
    except FileExistsError:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        created = False
    try:
        request = api.VolTransferRequest(vol=vol, offset=offset, length=length, sparse=sparse)
        reply = await call(storage.nc, api.VOL_DOWNLOAD, request, host=storage.host)
        nc = storage.nc

        async def chunk(start: int, size: int) -> None:
            headers = {_OFFSET: str(offset + start), _SIZE: str(size)}
            msg = await _request(nc, reply.subject, b"", headers)
            got = _check(msg)
            if _HOLE in got or got.get(_KIND) == _END:
                return
            await asyncio.to_thread(os.pwrite, fd, msg.data, start)

        received = await _pipeline(reply, chunk, progress)
        # Trailing holes still count in the file's size.
        os.ftruncate(fd, received)
        _check(await _request(nc, reply.subject, b"", {_KIND: _END}))
        return received
    except BaseException:
        if created:
            os.unlink(path)
        raise
    finally:
        os.close(fd)
