"""Restarting the storage service: pool state follows the storage, half-made volumes go."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import cast

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from client.storage import StorageClient
from services.storage.pools.journal import POOL, CreationJournal
from services.storage.service import StorageService, StorageSettings
from shared.api.storage import BuildMode, PoolState, VolRef
from shared.util.errors import ErrorCode, VirtError
from shared.util.events import STREAM
from shared.util.ledger import Conflict, Event, Ledger
from shared.util.subjects import ledger_name
from tests.conftest import ConnectAs
from tests.integration.procs import kill9, start_service, terminate, wait_for_service

pytestmark = pytest.mark.integration
HOST = "restart-host"
SMALL = "<volume><name>v</name><capacity>4096</capacity></volume>"


def dir_pool(name: str, path: Path) -> str:
    return f"<pool type='dir'><name>{name}</name><target><path>{path}</path></target></pool>"


def settings(nats_url: str, tmp_path: Path) -> StorageSettings:
    return StorageSettings(nats_url=nats_url, state_dir=tmp_path / "state", host=HOST)


async def refuse_writes(js: JetStreamContext, refuse: bool = True) -> None:
    """Make the host's ledger refuse every further write, as an administrator's
    limit does (``refuse``), or take writes again."""
    info = await js.stream_info(ledger_name("storage", HOST))
    config = info.config
    config.max_msgs = info.state.messages if refuse else -1
    config.discard = "new"  # type: ignore[assignment]
    await js.update_stream(config)


async def test_state_after_restart_matches_storage(nats_url: str, nc: NATS, tmp_path: Path) -> None:
    storage = StorageClient(nc, HOST)
    async with StorageService(settings(nats_url, tmp_path)):
        for name in ("gone", "kept", "auto"):
            await storage.pool_define(dir_pool(name, tmp_path / name))
            await storage.pool_build(name)
        await storage.pool_start("gone")
        await storage.pool_start("kept")
        await storage.pool_set_autostart("auto", True)
        await storage.pool_create(dir_pool("transient", tmp_path / "transient"), BuildMode.BUILD)
        await storage.vol_create("kept", "<volume><name>v</name><capacity>4096</capacity></volume>")
        assert (await storage.pool_info("auto")).state is PoolState.INACTIVE
    shutil.rmtree(tmp_path / "gone")
    (tmp_path / "kept" / "outside.img").write_bytes(b"x" * 512)
    async with StorageService(settings(nats_url, tmp_path)):
        states = {p.name: (p.state, p.persistent) for p in await storage.pool_list()}
        assert states == {
            "auto": (PoolState.RUNNING, True),
            "gone": (PoolState.INACTIVE, True),
            "kept": (PoolState.RUNNING, True),
            "transient": (PoolState.RUNNING, False),
        }
        assert [v.name for v in await storage.vol_list("kept")] == ["outside.img", "v"]


async def test_creation_left_by_a_crash_is_cleaned(nats_url: str, nc: NATS, tmp_path: Path) -> None:
    storage = StorageClient(nc, HOST)
    async with StorageService(settings(nats_url, tmp_path)):
        info = await storage.pool_create(dir_pool("p", tmp_path / "p"), BuildMode.BUILD)
    partial = tmp_path / "p" / "half.img"
    partial.write_bytes(b"\0" * 1024)
    journal = CreationJournal(tmp_path / "state" / "creating")
    assert journal.begin(info.uuid, "half.img", str(partial))
    async with StorageService(settings(nats_url, tmp_path)):
        assert not partial.exists()
        assert await storage.vol_list("p") == []
        assert journal.unfinished() == []


async def test_a_creation_whose_event_was_stored_stands_after_a_crash(
    nats_url: str, nc: NATS, connect_as: ConnectAs, tmp_path: Path
) -> None:
    """Killed after the Created event was stored and before the journal heard of
    it: the volume stays.  Killed before the event: the volume goes.  Either
    way a volume exists exactly when its event does."""
    storage = StorageClient(nc, HOST)
    async with StorageService(settings(nats_url, tmp_path)):
        info = await storage.pool_create(dir_pool("p", tmp_path / "p"), BuildMode.BUILD)
    made, half = tmp_path / "p" / "made.img", tmp_path / "p" / "half.img"
    made.write_bytes(b"\0" * 4096)
    half.write_bytes(b"\0" * 1024)
    journal = CreationJournal(tmp_path / "state" / "creating")
    assert journal.begin(info.uuid, "made.img", str(made), "key-made")
    assert journal.begin(info.uuid, "half.img", str(half), "key-half")
    as_storage = await connect_as("storage")
    ledger = Ledger(as_storage, as_storage.jetstream(), "storage", HOST)
    await ledger.open()
    await ledger.announce([Event("volume", "p/made.img", "lifecycle", "Created")], key="key-made")
    with pytest.raises(Conflict):  # an announcement's key is stored once
        await ledger.announce([Event("volume", "p/made.img", "lifecycle", "x")], key="key-made")
    assert await ledger.announced("key-made")
    assert not await ledger.announced("key-half")
    async with StorageService(settings(nats_url, tmp_path)):
        assert [v.name for v in await storage.vol_list("p")] == ["made.img"]
        assert made.exists() and not half.exists()
        assert journal.unfinished() == []


async def test_a_creation_whose_event_is_refused_leaves_no_volume(
    nats_url: str, nc: NATS, connect_as: ConnectAs, tmp_path: Path
) -> None:
    storage = StorageClient(nc, HOST)
    js = (await connect_as("operator")).jetstream()
    async with StorageService(settings(nats_url, tmp_path)):
        await storage.pool_create(dir_pool("p", tmp_path / "p"), BuildMode.BUILD)
        # The ledger takes nothing more (an administrator's limit): the
        # volume's Created event cannot be stored, so the volume must go.
        await refuse_writes(js)
        with pytest.raises(VirtError) as refused:
            await storage.vol_create("p", SMALL)
        assert "No space left" in refused.value.message
        assert not (tmp_path / "p" / "v").exists()
        await refuse_writes(js, False)
        assert await storage.vol_list("p") == []
        await storage.vol_create("p", SMALL)
        assert [v.name for v in await storage.vol_list("p")] == ["v"]
    assert CreationJournal(tmp_path / "state" / "creating").unfinished() == []


async def test_a_deletion_gets_its_event_even_when_the_ledger_refused_it(
    nats_url: str, nc: NATS, connect_as: ConnectAs, tmp_path: Path
) -> None:
    """The storage is gone once a deletion is answered: a Deleted event the
    ledger refuses then waits in the journal and is stored once it can be."""
    storage = StorageClient(nc, HOST)
    js = (await connect_as("operator")).jetstream()
    async with StorageService(settings(nats_url, tmp_path)) as service:
        await storage.pool_create(dir_pool("p", tmp_path / "p"), BuildMode.BUILD)
        await storage.vol_create("p", SMALL)
        await refuse_writes(js)
        await storage.vol_delete(VolRef(pool="p", name="v"))
        assert not (tmp_path / "p" / "v").exists()
        [pending] = CreationJournal(tmp_path / "state" / "creating").unfinished()
        assert pending.deleted is not None and pending.event_key is not None
        await refuse_writes(js, False)
        await service.volumes.settle_events()
        assert CreationJournal(tmp_path / "state" / "creating").unfinished() == []
        as_storage = await connect_as("storage")
        ledger = Ledger(as_storage, as_storage.jetstream(), "storage", HOST)
        await ledger.open()
        assert await ledger.announced(pending.event_key)


async def test_a_deletion_cut_short_is_settled_at_the_next_start(
    nats_url: str, nc: NATS, connect_as: ConnectAs, tmp_path: Path
) -> None:
    """Killed after the storage went and before its event: the next start stores
    the event.  Killed before the storage went: no event, the volume stays."""
    storage = StorageClient(nc, HOST)
    async with StorageService(settings(nats_url, tmp_path)):
        info = await storage.pool_create(dir_pool("p", tmp_path / "p"), BuildMode.BUILD)
    kept = tmp_path / "p" / "kept.img"
    kept.write_bytes(b"\0" * 4096)
    journal = CreationJournal(tmp_path / "state" / "creating")
    gone = Event("volume", "p/gone.img", "lifecycle", "Deleted", None, {"pool": "p"})
    left = Event("volume", "p/kept.img", "lifecycle", "Deleted", None, {"pool": "p"})
    assert journal.begin(
        info.uuid, "gone.img", str(tmp_path / "p" / "gone.img"), "k-gone", gone.to_json()
    )
    assert journal.begin(info.uuid, "kept.img", str(kept), "k-kept", left.to_json())
    async with StorageService(settings(nats_url, tmp_path)):
        assert [v.name for v in await storage.vol_list("p")] == ["kept.img"]
        assert journal.unfinished() == []
    as_storage = await connect_as("storage")
    ledger = Ledger(as_storage, as_storage.jetstream(), "storage", HOST)
    await ledger.open()
    assert await ledger.announced("k-gone")
    assert not await ledger.announced("k-kept")


async def test_killed_mid_clone_leaves_no_volume(nats_url: str, nc: NATS, tmp_path: Path) -> None:
    storage = StorageClient(nc, HOST)
    args = ["--host", HOST]
    log = tmp_path / "storage.log"
    proc = start_service("services.storage", nats_url, tmp_path / "state", log, extra=args)
    try:
        await wait_for_service(nc, "storage", proc)
        await storage.pool_create(dir_pool("p", tmp_path / "p"), BuildMode.BUILD)
        block = bytes(range(256)) * 4096
        with open(tmp_path / "p" / "big.img", "wb") as f:
            for _ in range(256):
                f.write(block)
        await storage.pool_refresh("p")
        clone = asyncio.create_task(
            storage.vol_create_from(
                "p",
                "<volume><name>copy.img</name><capacity>0</capacity></volume>",
                VolRef(pool="p", name="big.img"),
            )
        )
        for _ in range(200):
            if (tmp_path / "p" / "copy.img").exists():
                break
            await asyncio.sleep(0.005)
        kill9(proc)
        # No reply will ever come; the caller hears at once that the service died
        # (its heartbeats stopped), not when the hour-long timeout runs out.
        with pytest.raises(VirtError) as died:
            await clone
        assert died.value.code is ErrorCode.RPC
        assert "no heartbeat" in died.value.message
    finally:
        terminate(proc)
    proc = start_service("services.storage", nats_url, tmp_path / "state", log, extra=args)
    try:
        await wait_for_service(nc, "storage", proc)
        for _ in range(100):
            try:
                names = [v.name for v in await storage.vol_list("p")]
                break
            except VirtError:
                await asyncio.sleep(0.05)
        assert names == ["big.img"]
        assert not (tmp_path / "p" / "copy.img").exists()
        assert "half-made volume copy.img" in log.read_text()
    finally:
        terminate(proc)


async def volume_events(nc: NATS, count: int, kind: str = "volume") -> list[dict[str, object]]:
    """The ``data`` of the first ``count`` volume (or ``kind``) events in
    VIRTBUS_EVENTS (the ledger's forwarder stores them a moment after their change)."""
    js = nc.jetstream()
    sub = await js.pull_subscribe(f"virtbus.event.storage.{HOST}.{kind}.>", stream=STREAM)
    found: list[dict[str, object]] = []
    try:
        for _ in range(100):
            try:
                batch = await sub.fetch(count - len(found), timeout=0.1)
            except TimeoutError:
                continue
            for msg in batch:
                found.append(json.loads(msg.data)["data"])
                await msg.ack()
            if len(found) >= count:
                break
    finally:
        await sub.unsubscribe()
    return found


async def test_content_changes_store_their_event_and_leave_no_record(
    nats_url: str, nc: NATS, tmp_path: Path
) -> None:
    storage = StorageClient(nc, HOST)
    async with StorageService(settings(nats_url, tmp_path)):
        await storage.pool_create(dir_pool("p", tmp_path / "p"), BuildMode.BUILD)
        await storage.vol_create("p", SMALL)
        await storage.vol_resize(VolRef(pool="p", name="v"), 8192)
        await storage.vol_wipe(VolRef(pool="p", name="v"))
        assert CreationJournal(tmp_path / "state" / "creating").unfinished() == []
        events = await volume_events(nc, 3)
    assert [e["detail"] for e in events] == ["Created", "Resized", "Wiped"]
    extras = [cast(dict[str, object], e["extra"]) for e in events]
    assert extras[1]["capacity"] == 8192 and extras[2]["algorithm"] == "zero"
    assert not any("interrupted" in extra for extra in extras)


async def test_a_content_change_cut_short_is_announced_at_the_next_start(
    nats_url: str, nc: NATS, tmp_path: Path
) -> None:
    """Killed after a wipe was done and before its event: the next start stores
    the event.  Killed during a resize: the next start says it was interrupted
    (the volume may have changed in part).  Each is stored once."""
    storage = StorageClient(nc, HOST)
    async with StorageService(settings(nats_url, tmp_path)):
        info = await storage.pool_create(dir_pool("p", tmp_path / "p"), BuildMode.BUILD)
    for name in ("wiped.img", "resized.img"):
        (tmp_path / "p" / name).write_bytes(bytes(4096))
    journal = CreationJournal(tmp_path / "state" / "creating")
    wiped = Event("volume", "p/wiped.img", "lifecycle", "Wiped", None, {"algorithm": "zero"})
    resized = Event("volume", "p/resized.img", "lifecycle", "Resized", None, {"capacity": 8192})
    path = str(tmp_path / "p" / "wiped.img")
    assert journal.begin(info.uuid, "wiped.img", path, "k-wiped", changed=wiped.to_json())
    journal.done(info.uuid, "wiped.img", "k-wiped")
    path = str(tmp_path / "p" / "resized.img")
    assert journal.begin(info.uuid, "resized.img", path, "k-resized", changed=resized.to_json())
    for _ in range(2):  # a second start finds nothing left to announce
        async with StorageService(settings(nats_url, tmp_path)):
            assert journal.unfinished() == []
    events = {e["name"]: e for e in await volume_events(nc, 2)}
    assert events["p/wiped.img"]["detail"] == "Wiped"
    assert events["p/wiped.img"]["extra"] == {"algorithm": "zero"}
    assert events["p/resized.img"]["extra"] == {"capacity": 8192, "interrupted": True}
    assert len(await volume_events(nc, 3)) == 2


async def test_a_content_change_gets_its_event_even_when_the_ledger_refused_it(
    nats_url: str, nc: NATS, connect_as: ConnectAs, tmp_path: Path
) -> None:
    storage = StorageClient(nc, HOST)
    js = (await connect_as("operator")).jetstream()
    async with StorageService(settings(nats_url, tmp_path)) as service:
        await storage.pool_create(dir_pool("p", tmp_path / "p"), BuildMode.BUILD)
        await storage.vol_create("p", SMALL)
        await refuse_writes(js)
        await storage.vol_resize(VolRef(pool="p", name="v"), 8192)  # done: answered
        [pending] = CreationJournal(tmp_path / "state" / "creating").unfinished()
        assert pending.changed is not None and pending.done
        with pytest.raises(VirtError) as busy:  # one change at a time until it is stored
            await storage.vol_wipe(VolRef(pool="p", name="v"))
        assert busy.value.code is ErrorCode.OPERATION_INVALID
        await refuse_writes(js, False)
        await service.volumes.settle_events()
        assert CreationJournal(tmp_path / "state" / "creating").unfinished() == []
        events = await volume_events(nc, 2)
    assert [e["detail"] for e in events] == ["Created", "Resized"]


async def test_a_creation_cut_short_longer_ago_than_the_event_retention_is_kept(
    nats_url: str, nc: NATS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host down for over a week: the announcement that would say whether the
    creation completed has expired, so the volume is kept rather than removed."""
    storage = StorageClient(nc, HOST)
    async with StorageService(settings(nats_url, tmp_path)):
        info = await storage.pool_create(dir_pool("p", tmp_path / "p"), BuildMode.BUILD)
    old, recent = tmp_path / "p" / "old.img", tmp_path / "p" / "recent.img"
    old.write_bytes(bytes(4096))
    recent.write_bytes(bytes(4096))
    journal = CreationJournal(tmp_path / "state" / "creating")
    eight_days_ago = time.time() - 8 * 24 * 3600
    with monkeypatch.context() as clock:
        clock.setattr("services.storage.pools.journal.time.time", lambda: eight_days_ago)
        assert journal.begin(info.uuid, "old.img", str(old), "k-old")
    assert journal.begin(info.uuid, "recent.img", str(recent), "k-recent")
    async with StorageService(settings(nats_url, tmp_path)):
        assert [v.name for v in await storage.vol_list("p")] == ["old.img"]
        assert old.exists() and not recent.exists()
        assert journal.unfinished() == []


async def test_pool_build_and_delete_store_their_event_and_leave_no_record(
    nats_url: str, nc: NATS, tmp_path: Path
) -> None:
    storage = StorageClient(nc, HOST)
    async with StorageService(settings(nats_url, tmp_path)):
        await storage.pool_define(dir_pool("p", tmp_path / "p"))
        await storage.pool_build("p")
        assert (tmp_path / "p").is_dir()
        await storage.pool_delete("p")
        assert not (tmp_path / "p").exists()
        assert CreationJournal(tmp_path / "state" / "creating").unfinished() == []
        events = await volume_events(nc, 3, "pool")
    assert [e["detail"] for e in events] == ["Defined", "Created", "Deleted"]
    assert not any("interrupted" in cast(dict[str, object], e["extra"]) for e in events)


async def test_a_pool_change_cut_short_is_announced_at_the_next_start(
    nats_url: str, nc: NATS, tmp_path: Path
) -> None:
    """Killed after a pool was built and before its event: the next start
    stores the event.  Killed during a pool's deletion: the next start says it
    was interrupted.  Each is stored once."""
    storage = StorageClient(nc, HOST)
    async with StorageService(settings(nats_url, tmp_path)):
        built = await storage.pool_define(dir_pool("built", tmp_path / "built"))
        gone = await storage.pool_define(dir_pool("gone", tmp_path / "gone"))
    journal = CreationJournal(tmp_path / "state" / "creating")
    created = Event("pool", "built", "lifecycle", "Created", None, {"uuid": built.uuid})
    deleted = Event("pool", "gone", "lifecycle", "Deleted", None, {"uuid": gone.uuid})
    assert journal.begin(built.uuid, POOL, None, "k-built", changed=created.to_json())
    journal.done(built.uuid, POOL, "k-built")
    assert journal.begin(gone.uuid, POOL, None, "k-gone", changed=deleted.to_json())
    for _ in range(2):  # a second start finds nothing left to announce
        async with StorageService(settings(nats_url, tmp_path)):
            assert journal.unfinished() == []
    events = await volume_events(nc, 5, "pool")
    assert [(e["name"], e["detail"]) for e in events[:2]] == [
        ("built", "Defined"),
        ("gone", "Defined"),
    ]
    settled = {e["name"]: e for e in events[2:]}
    assert settled["built"]["detail"] == "Created"
    assert settled["built"]["extra"] == {"uuid": built.uuid}
    assert settled["gone"]["detail"] == "Deleted"
    assert settled["gone"]["extra"] == {"uuid": gone.uuid, "interrupted": True}
    assert len(events) == 4


async def test_a_pool_build_gets_its_event_even_when_the_ledger_refused_it(
    nats_url: str, nc: NATS, connect_as: ConnectAs, tmp_path: Path
) -> None:
    storage = StorageClient(nc, HOST)
    js = (await connect_as("operator")).jetstream()
    async with StorageService(settings(nats_url, tmp_path)) as service:
        await storage.pool_define(dir_pool("p", tmp_path / "p"))
        await refuse_writes(js)
        await storage.pool_build("p")  # built: answered
        assert (tmp_path / "p").is_dir()
        [pending] = CreationJournal(tmp_path / "state" / "creating").unfinished()
        assert pending.name == POOL and pending.done
        with pytest.raises(VirtError) as busy:  # one change at a time until it is stored
            await storage.pool_delete("p")
        assert busy.value.code is ErrorCode.OPERATION_INVALID
        assert "pool 'p' has a change whose event is not stored yet" in busy.value.message
        assert (tmp_path / "p").is_dir()
        await refuse_writes(js, False)
        await service.volumes.settle_events()
        assert CreationJournal(tmp_path / "state" / "creating").unfinished() == []
        await storage.pool_delete("p")
        events = await volume_events(nc, 3, "pool")
    assert [e["detail"] for e in events] == ["Defined", "Created", "Deleted"]
