"""What is shown of a volume is made once per change of what it shows."""

from __future__ import annotations

from services.storage.pools.objects import PoolObj, VolObj, list_json
from shared.api.storage import (
    VolBriefListReply,
    VolListReply,
    VolumeBrief,
    VolumeInfo,
    VolumeUser,
)
from shared.conf.storage_pool import parse_storage_pool
from shared.conf.storage_volume import StorageVolumeDef, VolumeTarget, VolumeType
from shared.util.api import to_json

POOL = "<pool type='dir'><name>p</name><target><path>/p</path></target></pool>"


def volume(allocation: int) -> StorageVolumeDef:
    return StorageVolumeDef(
        name="v.qcow2",
        key="/p/v.qcow2",
        type=VolumeType.FILE,
        capacity=1 << 30,
        allocation=allocation,
        has_allocation=True,
        physical=196624,
        target=VolumeTarget(path="/p/v.qcow2", format="qcow2"),
    )


def test_a_reread_with_the_same_figures_keeps_the_model() -> None:
    pool = PoolObj(parse_storage_pool(POOL), persistent=True, active=True)
    vol = VolObj(volume(200704))
    first = pool.volume_info(vol)
    assert (first.name, first.pool, first.path, first.allocation) == (
        "v.qcow2",
        "p",
        "/p/v.qcow2",
        200704,
    )
    vol.definition = volume(200704)  # re-read: a new definition, the same figures
    assert pool.volume_info(vol) is first
    vol.definition = volume(266240)  # the volume grew
    grown = pool.volume_info(vol)
    assert grown is not first and grown.allocation == 266240
    assert pool.volume_info(vol) is grown


def test_users_are_added_to_a_copy() -> None:
    pool = PoolObj(parse_storage_pool(POOL), persistent=True, active=True)
    vol = VolObj(volume(200704))
    user = VolumeUser(host="h", domain="web1", disk="vda", role="source")
    used = pool.volume_info(vol, [user])
    assert used.users == [user]
    assert pool.volume_info(vol).users == []


def test_the_kept_json_is_the_models_and_follows_its_changes() -> None:
    pool = PoolObj(parse_storage_pool(POOL), persistent=True, active=True)
    vol = VolObj(volume(200704))
    shown = pool.shown(vol)
    assert shown.data == to_json(shown.info)
    assert VolumeInfo.model_validate_json(shown.data).allocation == 200704
    vol.definition = volume(266240)
    assert VolumeInfo.model_validate_json(pool.shown(vol).data).allocation == 266240
    pool.definition = parse_storage_pool(POOL.replace("<name>p</name>", "<name>q</name>"))
    assert VolumeInfo.model_validate_json(pool.shown(vol).data).pool == "q"


def test_a_list_joined_from_kept_json_is_the_list_models_json() -> None:
    pool = PoolObj(parse_storage_pool(POOL), persistent=True, active=True)
    vols = [VolObj(volume(4096 * n)) for n in range(3)]
    joined = list_json(pool.shown(v).data for v in vols)
    assert joined == to_json(VolListReply(volumes=[pool.volume_info(v) for v in vols]))


def test_a_brief_list_joined_from_kept_json_is_the_brief_models_json() -> None:
    pool = PoolObj(parse_storage_pool(POOL), persistent=True, active=True)
    vols = [VolObj(volume(4096 * n)) for n in range(3)]
    joined = list_json(pool.brief(v) for v in vols)
    briefs = [VolumeBrief(name=i.name, key=i.key, path=i.path) for i in map(pool.volume_info, vols)]
    assert joined == to_json(VolBriefListReply(volumes=briefs))
