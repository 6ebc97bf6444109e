"""A network file system may stall: the netfs backend checks and touches its
volumes' files in threads, so a stalled server holds up one request, not the
storage service's event loop."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from services.storage.pools import confine
from services.storage.pools.backends import local
from services.storage.pools.backends.base import CreateOptions
from services.storage.pools.backends.netfs import NetfsBackend
from services.storage.pools.runner import CommandRunner
from shared.api.storage import WipeAlgorithm
from shared.conf.storage_pool import StoragePoolDef, parse_storage_pool
from shared.conf.storage_volume import StorageVolumeDef, parse_storage_volume

Call = Callable[[NetfsBackend, StoragePoolDef, StorageVolumeDef], Coroutine[Any, Any, object]]
CALLS: dict[str, Call] = {
    "build": lambda b, p, v: b.build_volume(p, v, CreateOptions()),
    "refresh": lambda b, p, v: b.refresh_volume(p, v),
    "resize": lambda b, p, v: b.resize_volume(p, v, 8192, False),
    "wipe": lambda b, p, v: b.wipe_volume(p, v, WipeAlgorithm.ZERO),
    "upload": lambda b, p, v: b.upload_target(p, v),
    "download": lambda b, p, v: b.download_source(p, v),
}


@pytest.mark.parametrize("call", sorted(CALLS))
async def test_a_stalled_file_server_holds_up_its_request_not_the_loop(
    call: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = parse_storage_pool(
        "<pool type='netfs'><name>n</name><source><host name='files.example'/>"
        "<dir path='/export'/><format type='nfs'/></source>"
        f"<target><path>{tmp_path}</path></target></pool>"
    )
    backend = NetfsBackend(CommandRunner())
    xml = "<volume><name>v.img</name><capacity>4096</capacity></volume>"
    vol = await backend.define_volume(pool, parse_storage_volume(xml, pool))
    if call != "build":
        (tmp_path / "v.img").write_bytes(bytes(4096))

    entered, release, answered = threading.Event(), threading.Event(), threading.Event()

    def stall() -> None:
        # The file server stops answering until released (or for 5 s).
        entered.set()
        release.wait(5)
        answered.set()

    def stalled(root: str, path: str) -> str:
        stall()
        return confine.confined(root, path)

    def stalled_status(root: str, path: str) -> os.stat_result | None:
        stall()
        return confine.confined_status(root, path)

    # The confinement, either way the backend asks for it.
    monkeypatch.setattr(local, "confined", stalled)
    monkeypatch.setattr(local, "confined_status", stalled_status)
    task = asyncio.create_task(CALLS[call](backend, pool, vol))
    for _ in range(500):
        if entered.is_set():
            break
        await asyncio.sleep(0.01)
    # The loop turns while the server is still stalled (on the loop, this
    # coroutine would run again only once the stall was over).
    assert entered.is_set() and not answered.is_set()
    release.set()
    await task
    assert (tmp_path / "v.img").is_file()
