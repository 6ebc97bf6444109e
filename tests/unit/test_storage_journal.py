"""The creation journal: what a crash leaves is found again, a failed write
leaves the name free, and the journal does not grow with use."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from services.storage.pools.journal import FILE, SLOT, CreationJournal
from shared.util.errors import ErrorCode, VirtError

POOL = "8f0c4a4e-2c1b-4a7e-9d51-0b4f3b1e2a10"


def test_what_a_crash_leaves_is_found_by_the_next_process(tmp_path: Path) -> None:
    folder = tmp_path / "journal"
    first = CreationJournal(folder)
    assert first.begin(POOL, "a.qcow2", "/p/a.qcow2")
    assert first.begin(POOL, "b.qcow2", "/p/b.qcow2")
    assert first.begin(POOL, "c.qcow2", None)
    first.end(POOL, "b.qcow2")
    # The process dies here; the next one reads what it left.
    second = CreationJournal(folder)
    left = {c.name: c.path for c in second.unfinished()}
    assert left == {"a.qcow2": "/p/a.qcow2", "c.qcow2": None}
    assert not second.begin(POOL, "a.qcow2", "/p/a.qcow2")  # still recorded
    for name in left:
        second.end(POOL, name)
    assert second.unfinished() == []
    assert CreationJournal(folder).unfinished() == []


def test_a_name_is_recorded_once(tmp_path: Path) -> None:
    book = CreationJournal(tmp_path / "journal")
    assert book.begin(POOL, "disk.qcow2", "/p/disk.qcow2")
    assert not book.begin(POOL, "disk.qcow2", "/p/disk.qcow2")
    assert book.begin("another-pool", "disk.qcow2", "/q/disk.qcow2")
    book.end(POOL, "disk.qcow2")
    assert book.begin(POOL, "disk.qcow2", "/p/disk.qcow2")


def test_slots_are_reused(tmp_path: Path) -> None:
    book = CreationJournal(tmp_path / "journal")
    for i in range(100):
        assert book.begin(POOL, f"v{i}", f"/p/v{i}")
        assert book.begin(POOL, f"w{i}", f"/p/w{i}")
        book.end(POOL, f"v{i}")
        book.end(POOL, f"w{i}")
    assert os.path.getsize(tmp_path / "journal" / FILE) <= 2 * SLOT


def test_an_entry_that_cannot_be_written_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    book = CreationJournal(tmp_path / "journal")

    def full(*_: Any, **__: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(VirtError) as info:
        book.begin(POOL, "disk.qcow2", "/p/disk.qcow2")
    assert info.value.code is ErrorCode.SYSTEM_ERROR
    assert "No space left on device" in str(info.value)
    monkeypatch.undo()  # room again
    assert book.unfinished() == []
    assert book.begin(POOL, "disk.qcow2", "/p/disk.qcow2")
    assert [c.name for c in book.unfinished()] == ["disk.qcow2"]


def test_a_record_cut_short_is_not_a_creation(tmp_path: Path) -> None:
    folder = tmp_path / "journal"
    book = CreationJournal(folder)
    assert book.begin(POOL, "whole", "/p/whole")
    # A write the disk cut short: the start of a record, never its end.
    with open(folder / FILE, "r+b") as f:
        f.seek(SLOT)
        f.write(b'{"pool_uuid":"' + POOL.encode() + b'","na')
    assert [c.name for c in CreationJournal(folder).unfinished()] == ["whole"]


def test_entries_of_the_earlier_layout_are_read_and_removed(tmp_path: Path) -> None:
    folder = tmp_path / "journal"
    folder.mkdir()
    old = {"pool_uuid": POOL, "name": "old.img", "path": "/p/old.img", "started": 1.0}
    (folder / f"{POOL}.old.img").write_text(json.dumps(old))
    (folder / f"{POOL}.broken").write_text("{not json")
    book = CreationJournal(folder)
    assert [(c.name, c.path) for c in book.unfinished()] == [("old.img", "/p/old.img")]
    assert not (folder / f"{POOL}.broken").exists()
    book.end(POOL, "old.img")
    assert not (folder / f"{POOL}.old.img").exists()
    assert book.unfinished() == []


def test_only_its_owner_can_read_the_journal(tmp_path: Path) -> None:
    folder = tmp_path / "journal"
    book = CreationJournal(folder)
    assert book.begin(POOL, "a.qcow2", "/p/a.qcow2")
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / FILE).stat().st_mode & 0o777 == 0o600


def test_ending_a_change_by_its_key_leaves_a_newer_record_of_the_name(tmp_path: Path) -> None:
    book = CreationJournal(tmp_path / "journal")
    assert book.begin(POOL, "v", "/p/v", "delete-key", {"o": "volume", "n": "p/v", "e": "x"})
    book.end(POOL, "v")  # settled by the periodic check
    assert book.begin(POOL, "v", "/p/v", "create-key")  # a new creation of the name
    book.end(POOL, "v", "delete-key")  # the deletion finishing late
    assert [c.event_key for c in book.recorded()] == ["create-key"]
    book.end(POOL, "v", "create-key")
    assert book.recorded() == []
