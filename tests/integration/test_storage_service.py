"""The storage service against a real nats-server and real qemu-img, through the typed client."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from client import storage_stream
from client.events import subscribe
from client.storage import StorageClient
from services.storage.pools import files
from services.storage.pools.backends.local import LocalBackend
from services.storage.service import StorageService, StorageSettings
from shared.api.storage import BuildMode, PoolState, VolRef, WipeAlgorithm
from shared.conf.storage_pool_types import PoolType
from shared.util.errors import ErrorCode, VirtError

pytestmark = pytest.mark.integration

HOST = "h1"


def dir_pool(name: str, path: Path, uuid: str | None = None) -> str:
    uid = f"<uuid>{uuid}</uuid>" if uuid else ""
    return f"<pool type='dir'><name>{name}</name>{uid}<target><path>{path}</path></target></pool>"


def vol_xml(name: str, capacity: int = 1 << 20, fmt: str = "raw", extra: str = "") -> str:
    return (
        f"<volume><name>{name}</name><capacity>{capacity}</capacity>"
        f"<target><format type='{fmt}'/></target>{extra}</volume>"
    )


@pytest.fixture
async def service(nats_url: str, tmp_path: Path) -> AsyncIterator[StorageService]:
    settings = StorageSettings(nats_url=nats_url, state_dir=tmp_path / "state", host=HOST)
    async with StorageService(settings) as svc:
        yield svc


@pytest.fixture
def storage(service: StorageService, nc: NATS) -> StorageClient:
    return StorageClient(nc, HOST)


@pytest.fixture
async def pool(storage: StorageClient, tmp_path: Path) -> str:
    await storage.pool_define(dir_pool("images", tmp_path / "images"))
    await storage.pool_build("images")
    await storage.pool_start("images")
    return "images"


def ref(name: str, pool: str = "images") -> VolRef:
    return VolRef(pool=pool, name=name)


async def test_pool_lifecycle_and_refusals(storage: StorageClient, tmp_path: Path) -> None:
    info = await storage.pool_define(dir_pool("p", tmp_path / "p"))
    assert info.state is PoolState.INACTIVE and info.persistent and not info.autostart
    with pytest.raises(VirtError) as err:
        await storage.pool_destroy("p")
    assert err.value.code is ErrorCode.OPERATION_INVALID
    assert "storage pool 'p' is not active" in err.value.message
    with pytest.raises(VirtError, match="No such file or directory"):
        await storage.pool_start("p")
    await storage.pool_start("p", BuildMode.BUILD)
    assert (tmp_path / "p").stat().st_mode & 0o777 == 0o711
    info = await storage.pool_info("p")
    assert info.state is PoolState.RUNNING and info.capacity > 0
    for action in (storage.pool_undefine, storage.pool_delete):
        with pytest.raises(VirtError) as err:
            await action("p")
        assert err.value.message.endswith("storage pool 'p' is still active")
    with pytest.raises(VirtError, match="is already active"):
        await storage.pool_build("p")
    await storage.pool_destroy("p")
    await storage.pool_delete("p")
    assert not (tmp_path / "p").exists()
    await storage.pool_undefine("p")
    with pytest.raises(VirtError) as err:
        await storage.pool_info("p")
    assert err.value.code is ErrorCode.NO_STORAGE_POOL


async def test_define_duplicates_refused(storage: StorageClient, tmp_path: Path) -> None:
    uuid = "4b0d2d9e-6a51-4c1e-9f25-3d1c0c7e9a10"
    await storage.pool_define(dir_pool("a", tmp_path / "a", uuid))
    with pytest.raises(VirtError, match=f"pool 'a' already exists with uuid {uuid}"):
        await storage.pool_define(dir_pool("a", tmp_path / "other"))
    with pytest.raises(VirtError, match=f"pool 'a' is already defined with uuid {uuid}"):
        await storage.pool_define(dir_pool("b", tmp_path / "b", uuid))
    with pytest.raises(VirtError, match="Storage source conflict with pool: 'a'"):
        await storage.pool_define(dir_pool("c", tmp_path / "a"))


async def test_transient_pool_goes_away_on_destroy(storage: StorageClient, tmp_path: Path) -> None:
    info = await storage.pool_create(dir_pool("t", tmp_path / "t"), BuildMode.BUILD)
    assert info.state is PoolState.RUNNING and not info.persistent
    with pytest.raises(VirtError, match="pool has no config file"):
        await storage.pool_set_autostart("t", True)
    await storage.pool_destroy("t")
    assert await storage.pool_list() == []


async def test_list_filters(storage: StorageClient, tmp_path: Path, pool: str) -> None:
    await storage.pool_define(dir_pool("idle", tmp_path / "idle"))
    await storage.pool_set_autostart("idle", True)
    names = [p.name for p in await storage.pool_list()]
    assert names == ["idle", "images"]
    assert [p.name for p in await storage.pool_list(active=True)] == ["images"]
    assert [p.name for p in await storage.pool_list(autostart=True)] == ["idle"]
    assert [p.name for p in await storage.pool_list(types=["fs"])] == []


async def test_volumes_raw_qcow2_backing_clone_resize_wipe_delete(
    storage: StorageClient, pool: str, tmp_path: Path
) -> None:
    base = await storage.vol_create(pool, vol_xml("base.raw", 4 << 20))
    assert base.path == str(tmp_path / "images" / "base.raw") and base.key == base.path
    assert base.capacity == 4 << 20 and base.allocation >= 4 << 20  # fully allocated
    overlay = await storage.vol_create(
        pool,
        vol_xml(
            "top.qcow2",
            8 << 20,
            "qcow2",
            f"<backingStore><path>{base.path}</path><format type='raw'/></backingStore>",
        ),
    )
    assert overlay.capacity == 8 << 20
    xml = await storage.vol_dumpxml(ref("top.qcow2"))
    assert "<format type='qcow2'/>" in xml and f"<path>{base.path}</path>" in xml
    clone = await storage.vol_create_from(pool, vol_xml("copy.qcow2", 0, "qcow2"), ref("base.raw"))
    assert clone.capacity == 4 << 20
    grown = await storage.vol_resize(ref("copy.qcow2"), 16 << 20)
    assert grown.capacity == 16 << 20
    with pytest.raises(VirtError, match="unless shrink flag explicitly specified"):
        await storage.vol_resize(ref("copy.qcow2"), 1 << 20)
    await storage.vol_wipe(ref("base.raw"), WipeAlgorithm.ZERO)
    await storage.vol_delete(ref("copy.qcow2"))
    assert [v.name for v in await storage.vol_list(pool)] == ["base.raw", "top.qcow2"]
    found = await storage.vol_lookup_by_path(base.path)
    assert (found.pool, found.name) == (pool, "base.raw")
    assert (await storage.vol_lookup_by_key(overlay.key)).name == "top.qcow2"


async def test_plain_qcow2_volumes_match_qemu_img(
    storage: StorageClient, service: StorageService, pool: str, tmp_path: Path
) -> None:
    """The first plain qcow2 volume is made by qemu-img; once its bytes were
    seen to be the service's own, the next ones are written by the service,
    and come out the same as qemu-img's (compared with a fresh qemu-img run)."""
    sizes = [1 << 30, 3 << 20, 0, 5 << 40]
    made = [
        await storage.vol_create(pool, vol_xml(f"v{i}.qcow2", n, "qcow2"))
        for i, n in enumerate(sizes)
    ]
    backend = service.pools.backend(PoolType.DIR)
    assert isinstance(backend, LocalBackend) and backend.qcow2.agrees is True
    for info, size in zip(made, sizes, strict=True):
        reference = tmp_path / "reference.qcow2"
        reference.unlink(missing_ok=True)
        argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10"]
        subprocess.run([*argv, str(reference), f"{size // 1024}K"], check=True)
        assert Path(info.path).read_bytes() == reference.read_bytes()
        assert os.stat(info.path).st_mode & 0o777 == 0o600
        assert info.allocation == os.stat(reference).st_blocks * 512
    # An option in the XML still goes to qemu-img (compat 1.1 adds a feature table).
    v3 = await storage.vol_create(
        pool,
        "<volume><name>compat.qcow2</name><capacity>1073741824</capacity>"
        "<target><format type='qcow2'/><compat>1.1</compat></target></volume>",
    )
    assert v3.capacity == 1 << 30
    assert "<compat>1.1</compat>" in await storage.vol_dumpxml(ref("compat.qcow2"))


async def test_volume_name_confined(storage: StorageClient, pool: str, tmp_path: Path) -> None:
    for bad in ("../escape", "/etc/x", "a/b"):
        with pytest.raises(VirtError, match="cannot contain '/'"):
            await storage.vol_create(pool, vol_xml(bad))
    for bad in ("..", "."):
        with pytest.raises(VirtError) as err:
            await storage.vol_create(pool, vol_xml(bad))
        assert err.value.code is ErrorCode.OPERATION_INVALID
    os.symlink("/etc/hostname", tmp_path / "images" / "link-out")
    await storage.pool_refresh(pool)
    # listed, as virsh lists it, but not written through
    assert "link-out" in [v.name for v in await storage.vol_list(pool)]
    with pytest.raises(VirtError, match="leads out of pool folder"):
        await storage.vol_wipe(ref("link-out"))


@pytest.mark.parametrize("clients", [2, 12])
async def test_concurrent_create_same_name(storage: StorageClient, pool: str, clients: int) -> None:
    results = await asyncio.gather(
        *(storage.vol_create(pool, vol_xml("race.img", 64 << 20)) for _ in range(clients)),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, VirtError)]
    assert len(errors) == clients - 1 and len(results) == clients
    assert {e.code for e in errors} == {ErrorCode.STORAGE_VOL_EXIST}
    assert {e.message for e in errors} == {"storage volume 'race.img' exists already"}
    assert [v.name for v in await storage.vol_list(pool)] == ["race.img"]


async def test_events(storage: StorageClient, nc: NATS, tmp_path: Path) -> None:
    # The consumer exists once subscribe() has entered: every event after it is seen.
    async with subscribe(nc) as events:
        await storage.pool_define(dir_pool("ev", tmp_path / "ev"))
        await storage.pool_build("ev")
        await storage.pool_start("ev")
        await storage.vol_create("ev", vol_xml("v"))
        await storage.pool_refresh("ev")
        await storage.vol_delete(ref("v", "ev"))
        await storage.pool_destroy("ev")
        await storage.pool_undefine("ev")
        async with asyncio.timeout(60):
            seen = [await anext(events) for _ in range(8)]
    got = [(e.data.object, e.data.event, e.data.detail) for e in seen]
    assert got == [
        ("pool", "lifecycle", "Defined"),
        ("pool", "lifecycle", "Created"),
        ("pool", "lifecycle", "Started"),
        ("volume", "lifecycle", "Created"),
        ("pool", "refresh", None),
        ("volume", "lifecycle", "Deleted"),
        ("pool", "lifecycle", "Stopped"),
        ("pool", "lifecycle", "Undefined"),
    ]
    assert json.loads(seen[3].model_dump_json())["data"]["extra"]["pool"] == "ev"


async def test_busy_pool_and_volume_refuse_changes(
    storage: StorageClient, pool: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A paused backend: the clone's copy waits on a gate until the checks are done.
    copying, release = threading.Event(), threading.Event()
    copy = files.create_raw

    def gated_copy(*args: Any, **kwargs: Any) -> None:
        copying.set()
        release.wait(timeout=120)
        copy(*args, **kwargs)

    monkeypatch.setattr(files, "create_raw", gated_copy)
    block = bytes(range(256)) * 4096
    with open(tmp_path / "images" / "src.img", "wb") as f:
        for _ in range(256):
            f.write(block)
    await storage.pool_refresh(pool)
    clone = asyncio.create_task(
        storage.vol_create_from(pool, vol_xml("dst.img", 0), ref("src.img"))
    )
    await asyncio.to_thread(copying.wait, 60)
    with pytest.raises(VirtError, match=re.escape("pool 'images' has asynchronous jobs running.")):
        await storage.pool_destroy(pool)
    with pytest.raises(VirtError, match=re.escape("volume 'src.img' is still in use.")):
        await storage.vol_delete(ref("src.img"))
    with pytest.raises(VirtError, match=re.escape("volume 'dst.img' is still being allocated.")):
        await storage.vol_wipe(ref("dst.img"))
    release.set()
    copied = await clone
    assert copied.capacity == 256 * len(block)
    await storage.pool_destroy(pool)


async def test_upload_download_sparse_round_trip(
    storage: StorageClient, pool: str, tmp_path: Path
) -> None:
    src = tmp_path / "src.bin"
    with open(src, "wb") as f:
        f.write(os.urandom(3 << 20))
        f.seek(20 << 20)
        f.write(os.urandom(1 << 20))
        f.truncate(32 << 20)
    await storage.vol_create(pool, vol_xml("v.img", 32 << 20, extra="<allocation>0</allocation>"))
    seen: list[tuple[int, int]] = []
    sent = await storage_stream.upload(
        storage, ref("v.img"), str(src), sparse=True, progress=lambda d, t: seen.append((d, t))
    )
    assert sent == 32 << 20 and seen[-1] == (32 << 20, 32 << 20)
    vol_file = tmp_path / "images" / "v.img"
    assert vol_file.stat().st_blocks * 512 < 8 << 20  # holes stayed holes
    out = tmp_path / "out.bin"
    assert await storage_stream.download(storage, ref("v.img"), str(out), sparse=True) == 32 << 20
    assert out.read_bytes() == src.read_bytes()
    assert out.stat().st_blocks * 512 < 8 << 20
    part = tmp_path / "part.bin"
    await storage_stream.download(storage, ref("v.img"), str(part), offset=1 << 20, length=4096)
    assert part.read_bytes() == src.read_bytes()[1 << 20 : (1 << 20) + 4096]
    info = await storage.vol_info(ref("v.img"))
    assert info.allocation < 8 << 20


async def test_upload_past_the_end_and_beyond_its_length(
    storage: StorageClient, pool: str, tmp_path: Path
) -> None:
    """As libvirt's fdstream: an upload grows the file; a --length shorter than
    the data writes that many bytes and fails with ENOSPC."""
    await storage.vol_create(pool, vol_xml("small.img", 4096))
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 8192)
    assert await storage_stream.upload(storage, ref("small.img"), str(big)) == 8192
    assert (await storage.vol_info(ref("small.img"))).capacity == 8192
    vol_file = tmp_path / "images" / "small.img"
    vol_file.write_bytes(b"\0" * 4096)
    with pytest.raises(VirtError, match="cannot write to stream: No space left on device"):
        await storage_stream.upload(storage, ref("small.img"), str(big), offset=10, length=100)
    assert vol_file.read_bytes() == b"\0" * 10 + b"x" * 100 + b"\0" * (4096 - 110)
    # The failed stream released the volume.
    await storage.vol_delete(ref("small.img"))


async def test_the_brief_list_names_what_the_full_list_shows(
    storage: StorageClient, pool: str, tmp_path: Path
) -> None:
    for name in ("b.img", "A.img", "c.qcow2"):
        await storage.vol_create(pool, vol_xml(name, fmt="qcow2" if "qcow2" in name else "raw"))
    (tmp_path / "images" / "made-outside.img").write_bytes(bytes(512))
    await storage.pool_refresh(pool)
    full = await storage.vol_list(pool)
    brief = await storage.vol_list_brief(pool)
    assert [(v.name, v.key, v.path) for v in brief] == [(v.name, v.key, v.path) for v in full]
    assert [v.name for v in brief] == ["A.img", "b.img", "c.qcow2", "made-outside.img"]
    await storage.vol_delete(VolRef(pool=pool, name="b.img"))
    assert [v.name for v in await storage.vol_list_brief(pool)] == [
        "A.img",
        "c.qcow2",
        "made-outside.img",
    ]
    await storage.pool_destroy(pool)
    with pytest.raises(VirtError) as inactive:
        await storage.vol_list_brief(pool)
    assert inactive.value.code is ErrorCode.OPERATION_INVALID
    with pytest.raises(VirtError) as unknown:
        await storage.vol_list_brief("no-such-pool")
    assert unknown.value.code is ErrorCode.NO_STORAGE_POOL
