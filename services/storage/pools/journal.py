"""The volumes being created, deleted or changed (wiped, resized, uploaded
into) on this host, and the pools being built or deleted, so that a change
cut short by a crash is settled when the service starts again: a creation
whose ``Created`` event is not stored is removed, a deletion that happened
gets its ``Deleted`` event, any other change gets its event, marked
interrupted unless it was recorded as done (``services.storage.pools.volumes``
and ``.changes``).  A pool's own change is recorded under the name ``POOL``,
which no volume can have.

The journal is one file of fixed-size slots in the service's state folder.
A creation takes a free slot and writes its record there (pool, name, path,
start time) before the volume's storage is made; once the volume is
complete, the slot's first byte is overwritten with a NUL, which frees it.
A killed process leaves its records behind (the page cache keeps them
without a sync).  That is two small writes per creation (three for a wipe,
resize or upload, whose record is rewritten in place, at the same length,
once the change is done) into a file that
exists, where one file per creation cost a create and an unlink in the
folder (~35 us of CPU, and two directory changes for every later fsync of
the state filesystem to commit).  Freeing a slot rewrites a byte already on
disk, so it needs no room: a full disk can refuse a new creation (which then
makes nothing) but never keeps a finished one from being recorded as such.

One process owns the folder.  Which of two concurrent requests gets a name
is decided in memory, by the pool's volume table, before anything is
written here.  Entries of the earlier layout (one file per creation in the
same folder) are still read and removed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.util.errors import ErrorCode, ErrorDomain, VirtError

#: Bytes per slot: a record holds a pool UUID, a volume name (at most 255
#: bytes) and its path (at most PATH_MAX, 4096 bytes), as JSON.
SLOT = 16384
FILE = "creations"
_FREE = b"\0"
#: The name a pool's own change (build, delete) is recorded under.
POOL = ""


def _journal_error(creation: Creation, err: OSError, what: str) -> VirtError:
    if creation.name == POOL:
        changed = creation.changed or {}
        subject = f"pool '{changed.get('n', creation.pool_uuid)}'"
    else:
        subject = f"volume '{creation.name}'"
    return VirtError(
        ErrorCode.SYSTEM_ERROR,
        f"cannot record the {what} of {subject}: {err.strerror or err}",
        ErrorDomain.STORAGE,
        raw=True,
    )


@dataclass(frozen=True)
class Creation:
    """A volume creation (or, with ``deleted``, deletion; with ``changed``, a
    change of its content, or of the pool itself under the name ``POOL``) in
    progress: enough to
    remove what it left, and the key its event is announced under
    (``Ledger.announce``), which tells after a crash whether its event is
    stored (None in records of earlier versions).  ``deleted`` is the
    deletion's ``Deleted`` event (``Ledger.Event.to_json``), announced when
    the deletion is found done."""

    pool_uuid: str
    name: str
    path: str | None
    started: float
    event_key: str | None = None
    deleted: dict[str, Any] | None = None
    #: A change of the volume's content (wipe, resize, upload), or a pool's
    #: build or deletion (under ``POOL``): its event
    #: (``Ledger.Event.to_json``), announced once the change is ``done``, or,
    #: when a crash cut the change short, at the next start as interrupted.
    changed: dict[str, Any] | None = None
    done: bool = False


def _record(creation: Creation) -> bytes:
    doc: dict[str, Any] = {
        "pool_uuid": creation.pool_uuid,
        "name": creation.name,
        "path": creation.path,
        "started": creation.started,
        "event_key": creation.event_key,
    }
    if creation.deleted is not None:
        doc["deleted"] = creation.deleted
    if creation.changed is not None:
        doc["changed"] = creation.changed
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    if creation.changed is not None:
        # "done" has the same length either way, so that marking a change done
        # rewrites its record in place, without growing the file.
        text = text[:-1] + b',"done":' + (b"true " if creation.done else b"false") + b"}"
    return text + b"\n"


def _parse(data: bytes) -> Creation | None:
    """The creation a slot (or an entry file of the earlier layout) records;
    None for a free slot or an unreadable record (one a full disk cut short)."""
    if not data.startswith(b"{"):
        return None
    line = data.partition(b"\n")[0]
    try:
        return Creation(**json.loads(line))
    except (ValueError, TypeError):
        return None


class CreationJournal:
    """The unfinished creations: a slot file in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._path = str(folder / FILE)
        #: (pool UUID, name) -> its slot (or the entry file of the earlier layout)
        #: and what it records.
        self._recorded: dict[tuple[str, str], tuple[int | Path, Creation]] = {}
        self._free: list[int] = []
        self._slots = 0
        self._load()

    def _load(self) -> list[Creation]:
        """Read the journal into memory; the creations it records."""
        self._recorded.clear()
        found: list[Creation] = []
        try:
            with open(self._path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        self._slots = -(-len(data) // SLOT)
        free = []
        for slot in range(self._slots):
            creation = _parse(data[slot * SLOT : (slot + 1) * SLOT])
            if creation is None:
                free.append(slot)
            else:
                self._recorded[(creation.pool_uuid, creation.name)] = (slot, creation)
                found.append(creation)
        self._free = sorted(free, reverse=True)
        for entry in sorted(self._folder.iterdir()):
            if entry.name == FILE:
                continue
            try:
                creation = _parse(entry.read_bytes())
            except OSError:
                creation = None
            if creation is None:
                entry.unlink(missing_ok=True)
                continue
            self._recorded[(creation.pool_uuid, creation.name)] = (entry, creation)
            found.append(creation)
        return found

    def begin(
        self,
        pool_uuid: str,
        name: str,
        path: str | None,
        event_key: str | None = None,
        deleted: dict[str, Any] | None = None,
        changed: dict[str, Any] | None = None,
    ) -> bool:
        """Record a creation (a deletion with ``deleted``, any other change of
        a volume or of the pool with ``changed``: their events); False when a
        change of that name is already recorded.

        Raises ``VirtError`` (``VIR_ERR_SYSTEM_ERROR``, the OS's reason: "No
        space left on device") when the record cannot be written; nothing of
        it is left, so the name stays free.
        """
        if (pool_uuid, name) in self._recorded:
            return False
        what = "creation" if deleted is None else "deletion"
        if changed is not None:
            what = "change"
        creation = Creation(pool_uuid, name, path, time.time(), event_key, deleted, changed)
        slot = self._free.pop() if self._free else self._slots
        try:
            self._write(slot, creation, what)
        except VirtError:
            self._release(slot)
            raise
        self._slots = max(self._slots, slot + 1)
        self._recorded[(pool_uuid, name)] = (slot, creation)
        return True

    def done(self, pool_uuid: str, name: str, event_key: str) -> None:
        """Record that the change under ``event_key`` is done: its event
        is due whatever happens next.  Raises ``VirtError`` as ``begin``."""
        found = self._find(pool_uuid, name, event_key)
        if found is None or isinstance(found[0], Path):
            return
        creation = dataclasses.replace(found[1], done=True)
        self._write(found[0], creation, "change", fresh=False)
        self._recorded[(pool_uuid, name)] = (found[0], creation)

    def _write(self, slot: int, creation: Creation, what: str, *, fresh: bool = True) -> None:
        """Write ``creation``'s record into ``slot`` (one write: a killed process
        leaves the old record or the new one).  A short write of a ``fresh``
        record frees the slot again; one over a record of the same length
        cannot be short for want of room, and leaves it as it was."""
        record = _record(creation)
        if len(record) >= SLOT:
            raise _journal_error(
                creation, OSError(0, "the volume's path is too long to record"), what
            )
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            fd = os.open(self._path, flags, 0o600)
            try:
                written = os.pwrite(fd, record, slot * SLOT)
                if written != len(record):
                    # A short write (the disk filled up): leave a free slot.
                    if fresh:
                        os.pwrite(fd, _FREE, slot * SLOT)
                    raise OSError(28, os.strerror(28))
            finally:
                os.close(fd)
        except OSError as err:
            raise _journal_error(creation, err, what) from err

    def _find(
        self, pool_uuid: str, name: str, event_key: str | None
    ) -> tuple[int | Path, Creation] | None:
        """Where ``name``'s record is and what it holds; with ``event_key``, only
        when it is the record of that change."""
        found = self._recorded.get((pool_uuid, name))
        if found is None or (event_key is not None and found[1].event_key != event_key):
            return None
        return found

    def _release(self, slot: int) -> None:
        if slot < self._slots:
            self._free.append(slot)
            self._free.sort(reverse=True)

    def end(self, pool_uuid: str, name: str, event_key: str | None = None) -> None:
        """Forget a creation (finished, or undone); with ``event_key``, only the
        record of that change (the name may have a newer one by now)."""
        found = self._find(pool_uuid, name, event_key)
        if found is None:
            return
        del self._recorded[(pool_uuid, name)]
        where = found[0]
        if isinstance(where, Path):
            where.unlink(missing_ok=True)
            return
        fd = os.open(self._path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            os.pwrite(fd, _FREE, where * SLOT)
        finally:
            os.close(fd)
        self._release(where)

    def unfinished(self) -> list[Creation]:
        """Every creation recorded and not ended (read again from the folder);
        unreadable records are dropped."""
        return self._load()

    def recorded(self) -> list[Creation]:
        """What this journal has recorded and not ended, from memory (no I/O)."""
        return [creation for _, creation in self._recorded.values()]
