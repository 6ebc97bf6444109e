"""Volume upload and download as chunked, flow-controlled, sparse-aware streams over NATS
(libvirt's virStorageVolUpload/Download with VIR_STORAGE_VOL_*_SPARSE_STREAM).

``vol.upload``/``vol.download`` open a stream and name its subject; the
client then sends one request per chunk on that subject and waits for the
reply, keeping at most ``window`` requests in flight (the flow control):

* upload: a request carries ``Virtbus-Offset`` and either data, or
  ``Virtbus-Hole: <length>`` with no data (the range reads as zeros and is
  punched out of the file), or ``Virtbus-Kind: end``; the reply is empty;
* download: a request carries ``Virtbus-Offset`` and ``Virtbus-Size``; the
  reply is the bytes there, or ``Virtbus-Hole: <length>`` when the whole
  range is a hole (sparse downloads only), or ``Virtbus-Kind: end``.

A failure answers with the API's error headers.  A stream idle for
``IDLE_SECONDS`` is closed; the volume is released either way.

A stream belongs to the connection that opened it: a chunk whose reply
subject is not on that connection's inbox is refused and leaves the stream
as it was (its subject, a random 128-bit id, is moreover seen only by that
connection, since nobody may read another's inbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import functools
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from services.storage.pools.volumes import VolumeManager
from shared.api import storage as api
from shared.util.api import error_reply, requester
from shared.util.errors import ErrorCode, ErrorDomain, VirtError
from shared.util.process import Spawn
from shared.util.subjects import api_subject

log = logging.getLogger(__name__)
_D = ErrorDomain.STREAMS

SERVICE = "storage"
CHUNK_BYTES = 512 * 1024
WINDOW = 16
IDLE_SECONDS = 60.0
OFFSET = "Virtbus-Offset"
SIZE = "Virtbus-Size"
HOLE = "Virtbus-Hole"
KIND = "Virtbus-Kind"
END = "end"

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate a range of a file so it reads as zeros (fallocate PUNCH_HOLE);
    where the file system cannot, write the zeros."""
    rc = _libc.fallocate(
        ctypes.c_int(fd),
        ctypes.c_int(_FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE),
        ctypes.c_longlong(offset),
        ctypes.c_longlong(length),
    )
    if rc == 0:
        return
    err = ctypes.get_errno()
    if err not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        raise OSError(err, os.strerror(err))
    zero = bytes(min(length, CHUNK_BYTES))
    done = 0
    while done < length:
        done += os.pwrite(fd, zero[: min(len(zero), length - done)], offset + done)


def is_hole(fd: int, offset: int, length: int) -> bool:
    """True when ``[offset, offset + length)`` of the file holds no data (SEEK_DATA)."""
    try:
        data = os.lseek(fd, offset, os.SEEK_DATA)
    except OSError as err:
        # ENXIO: no data after offset at all.
        return err.errno == errno.ENXIO
    return data >= offset + length


async def _unsubscribe(subscription: Subscription) -> None:
    try:
        await subscription.unsubscribe()
    except NatsError as err:  # the connection went first: nothing left to drop
        log.debug("stream subscription not dropped", extra={"error": repr(err)})


@dataclass
class _Stream:
    """One open transfer: its file, its range and its subscription."""

    id: str
    upload: bool
    fd: int
    start: int
    end: int
    sparse: bool
    on_close: Callable[[bool], Awaitable[None]]
    #: The opener's reply prefix (``shared.util.api.requester``); None: anyone.
    owner: str | None = None
    subscription: Subscription | None = None
    last_seen: float = 0.0
    closed: bool = False
    watchdog: asyncio.Task[None] | None = field(default=None, repr=False)


#: The end of an upload without a length: the file grows as data comes.
UNBOUNDED = 1 << 63


class StreamServer:
    """The open streams of one storage service."""

    def __init__(self, nc: NATS, host: str, volumes: VolumeManager, spawn: Spawn) -> None:
        self._nc = nc
        self._host = host
        self._volumes = volumes
        self._spawn = spawn
        self._streams: dict[str, _Stream] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def upload(self, req: api.VolTransferRequest) -> api.TransferReply:
        """virStorageVolUpload: a stream writing into the volume."""
        return await self._transfer(req, upload=True)

    async def download(self, req: api.VolTransferRequest) -> api.TransferReply:
        """virStorageVolDownload: a stream reading the volume."""
        return await self._transfer(req, upload=False)

    async def _transfer(self, req: api.VolTransferRequest, upload: bool) -> api.TransferReply:
        obj, vol, path = await self._volumes.begin_transfer(req.vol, upload=upload)

        async def closed(completed: bool) -> None:
            await self._volumes.end_transfer(obj, vol, uploaded=upload and completed)

        async with contextlib.AsyncExitStack() as undo:
            # Until the stream is open the volume is released here; after, by ``closed``.
            undo.push_async_callback(self._volumes.end_transfer, obj, vol, uploaded=False)
            subject, length = await self.open(
                path,
                upload=upload,
                offset=req.offset,
                length=req.length,
                sparse=req.sparse,
                on_close=closed,
                owner=requester(),
            )
            undo.pop_all()
        return api.TransferReply(
            subject=subject, length=length, chunk_bytes=CHUNK_BYTES, window=WINDOW
        )

    def subject(self, stream_id: str) -> str:
        return api_subject(SERVICE, f"stream.{stream_id}", self._host)

    async def open(
        self,
        path: str,
        *,
        upload: bool,
        offset: int,
        length: int,
        sparse: bool,
        on_close: Callable[[bool], Awaitable[None]],
        owner: str | None = None,
    ) -> tuple[str, int]:
        """Open ``path`` for a transfer of ``length`` bytes from ``offset`` (0: to the
        end, which an upload may move); returns the stream's subject and the
        number of bytes it covers (0 for an upload without a length).
        ``on_close(completed)`` runs once when the stream ends, however it ends.
        Only requests answered on ``owner``'s inbox prefix are served."""
        flags = (os.O_WRONLY if upload else os.O_RDONLY) | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = await asyncio.to_thread(os.open, path, flags)
        except OSError as err:
            raise VirtError(
                ErrorCode.SYSTEM_ERROR, f"Unable to open '{path}': {err.strerror}", _D
            ) from err
        size = await asyncio.to_thread(lambda: os.lseek(fd, 0, os.SEEK_END))
        # As libvirt's fdstream: an upload may write past the file's end (a file
        # grows; only its --length bounds it), a download from past the end
        # reads nothing.
        if upload:
            end = offset + length if length else UNBOUNDED
        else:
            start = min(offset, size)
            end = size if length == 0 else min(start + length, size)
            offset = start
        stream = _Stream(uuid.uuid4().hex, upload, fd, offset, end, sparse, on_close, owner)
        stream.last_seen = asyncio.get_running_loop().time()
        self._streams[stream.id] = stream
        stream.subscription = await self._nc.subscribe(
            self.subject(stream.id), cb=functools.partial(self._handle, stream)
        )
        stream.watchdog = self._spawn(self._watch(stream), f"stream-{stream.id}")
        return self.subject(stream.id), 0 if end == UNBOUNDED else end - offset

    async def _watch(self, stream: _Stream) -> None:
        loop = asyncio.get_running_loop()
        while not stream.closed:
            await asyncio.sleep(1.0)
            if loop.time() - stream.last_seen > IDLE_SECONDS:
                log.warning("closing idle stream %s", stream.id)
                await self._close(stream, completed=False)
                self._unsubscribe_later(stream)

    async def _close(self, stream: _Stream, *, completed: bool) -> None:
        """Finish the stream's file and release the volume (the subscription stays
        until ``_unsubscribe_later``, so a reply can still go out)."""
        if stream.closed:
            return
        stream.closed = True
        self._streams.pop(stream.id, None)
        try:
            if stream.upload and completed:
                await asyncio.to_thread(os.fsync, stream.fd)
        finally:
            os.close(stream.fd)
            await stream.on_close(completed)

    def _unsubscribe_later(self, stream: _Stream) -> None:
        """Drop the stream's subscription and watchdog once the current reply is out.

        Unsubscribing cancels the task delivering the stream's messages, which
        is usually the caller: it runs as its own task, after the caller's last
        await.
        """
        if stream.subscription is not None:
            task = self._spawn(_unsubscribe(stream.subscription), f"stream-{stream.id}-end")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            stream.subscription = None
        if stream.watchdog is not None and stream.watchdog is not asyncio.current_task():
            stream.watchdog.cancel()

    async def close_all(self) -> None:
        """Abort every open stream and wait for their subscriptions to go."""
        for stream in list(self._streams.values()):
            await self._close(stream, completed=False)
            self._unsubscribe_later(stream)
        if self._tasks:
            await asyncio.wait(self._tasks)

    async def _handle(self, stream: _Stream, msg: Msg) -> None:
        if stream.owner is not None and (msg.reply or "").rpartition(".")[0] != stream.owner:
            log.warning("refused a chunk of stream %s from another connection", stream.id)
            body, err_headers = error_reply(
                VirtError(
                    ErrorCode.ACCESS_DENIED,
                    "the stream belongs to the connection that opened it",
                    _D,
                )
            )
            await self._reply(msg, body, err_headers)
            return
        stream.last_seen = asyncio.get_running_loop().time()
        headers = msg.headers or {}
        if stream.closed:
            body, err_headers = error_reply(
                VirtError(ErrorCode.INVALID_STREAM, "the stream is closed", _D)
            )
            await self._reply(msg, body, err_headers)
            return
        try:
            if headers.get(KIND) == END:
                await self._close(stream, completed=True)
                await self._reply(msg, b"", {KIND: END})
                self._unsubscribe_later(stream)
                return
            offset = int(headers.get(OFFSET, "0"))
            if stream.upload:
                await self._write(stream, offset, msg.data, int(headers.get(HOLE, "0")))
                await self._reply(msg, b"", {})
            else:
                data, reply_headers = await self._read(stream, offset, int(headers[SIZE]))
                await self._reply(msg, data, reply_headers)
        except (VirtError, OSError, ValueError, KeyError) as exc:
            err = (
                exc
                if isinstance(exc, VirtError)
                else VirtError(ErrorCode.OPERATION_FAILED, f"stream failed: {exc}", _D)
            )
            body, err_headers = error_reply(err)
            try:
                await self._reply(msg, body, err_headers)
            except NatsError as lost:
                log.warning("stream error not sent", extra={"error": repr(lost)})
            await self._close(stream, completed=False)
            self._unsubscribe_later(stream)

    async def _reply(self, msg: Msg, data: bytes, headers: dict[str, str]) -> None:
        if msg.reply:
            await self._nc.publish(msg.reply, data, headers=headers or None)

    async def _write(self, stream: _Stream, offset: int, data: bytes, hole: int) -> None:
        length = hole or len(data)
        if offset < stream.start:
            raise VirtError(
                ErrorCode.INVALID_ARG, "upload data before the range given when it began", _D
            )
        if offset + length > stream.end:
            # libvirt's fdstream writes up to the length it was given, then
            # fails the write with ENOSPC.
            room = max(0, stream.end - offset)
            if room and not hole:
                await asyncio.to_thread(os.pwrite, stream.fd, data[:room], offset)
            raise VirtError(
                ErrorCode.SYSTEM_ERROR, "cannot write to stream: No space left on device", _D
            )
        if hole:
            await asyncio.to_thread(punch_hole, stream.fd, offset, hole)
            # A hole past the end still makes the file that long.
            if os.fstat(stream.fd).st_size < offset + hole:
                await asyncio.to_thread(os.ftruncate, stream.fd, offset + hole)
        else:
            await asyncio.to_thread(os.pwrite, stream.fd, data, offset)

    async def _read(self, stream: _Stream, offset: int, size: int) -> tuple[bytes, dict[str, str]]:
        if offset >= stream.end:
            return b"", {KIND: END}
        size = min(size, stream.end - offset, CHUNK_BYTES)
        if stream.sparse and await asyncio.to_thread(is_hole, stream.fd, offset, size):
            return b"", {HOLE: str(size)}
        data = await asyncio.to_thread(os.pread, stream.fd, size, offset)
        return data, {}
