"""The volumes being created on this host, one small file each, so that a creation
cut short by a crash can be cleaned up when the service starts again.

An entry is written (``O_EXCL``: one per pool and name) before a volume's
storage is made and removed once the volume is complete.  Entries live in the
service's state folder, on the host whose storage they describe; a killed
process leaves its entries behind (the page cache keeps them without a sync).
Which of two concurrent requests gets a name is decided in memory, by the
pool's volume table, before anything is written here.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from shared.util.errors import ErrorCode, ErrorDomain, VirtError
from shared.util.subjects import token


def _journal_error(name: str, err: OSError) -> VirtError:
    return VirtError(
        ErrorCode.SYSTEM_ERROR,
        f"cannot record the creation of volume '{name}': {err.strerror or err}",
        ErrorDomain.STORAGE,
        raw=True,
    )


@dataclass(frozen=True)
class Creation:
    """A volume creation in progress: enough to remove what it left."""

    pool_uuid: str
    name: str
    path: str | None
    started: float


class CreationJournal:
    """The folder of unfinished creations."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _entry(self, pool_uuid: str, name: str) -> Path:
        return self._folder / f"{pool_uuid}.{token(name)}"

    def begin(self, pool_uuid: str, name: str, path: str | None) -> bool:
        """Record a creation; False when one of that name is already recorded.

        Raises ``VirtError`` (``VIR_ERR_SYSTEM_ERROR``, the OS's reason: "No
        space left on device") when the entry cannot be written; nothing of it
        is left, so the name stays free.
        """
        entry = Creation(pool_uuid, name, path, time.time())
        where = self._entry(pool_uuid, name)
        try:
            fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        except OSError as err:
            raise _journal_error(name, err) from err
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(asdict(entry), f)
        except OSError as err:
            # A half-written entry would hold the name until the next start.
            where.unlink(missing_ok=True)
            raise _journal_error(name, err) from err
        return True

    def end(self, pool_uuid: str, name: str) -> None:
        try:
            os.unlink(self._entry(pool_uuid, name))
        except FileNotFoundError:
            pass

    def unfinished(self) -> list[Creation]:
        """Every creation recorded and not ended; unreadable entries are dropped."""
        found = []
        for entry in sorted(self._folder.iterdir()):
            try:
                found.append(Creation(**json.loads(entry.read_text())))
            except (OSError, ValueError, TypeError):
                entry.unlink(missing_ok=True)
        return found
