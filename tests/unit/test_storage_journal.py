"""The creation journal: a failed write leaves the name free."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest

from services.storage.pools.journal import CreationJournal
from shared.util.errors import ErrorCode, VirtError


def test_an_entry_that_cannot_be_written_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    book = CreationJournal(tmp_path / "journal")

    def full(*_: Any, **__: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(json, "dump", full)
    with pytest.raises(VirtError) as info:
        book.begin("pool-uuid", "disk.qcow2", "/p/disk.qcow2")
    assert info.value.code is ErrorCode.SYSTEM_ERROR
    assert "No space left on device" in str(info.value)
    assert book.unfinished() == []
    monkeypatch.undo()  # room again
    assert book.begin("pool-uuid", "disk.qcow2", "/p/disk.qcow2")
    assert [c.name for c in book.unfinished()] == ["disk.qcow2"]
