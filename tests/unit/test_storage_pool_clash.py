"""Two pools on one storage (virStoragePoolObjSourceFindDuplicate), by the pool type
table's ``source_match``."""

from __future__ import annotations

import pytest

from services.storage.pools.pools import sources_clash
from shared.conf.storage_pool import StoragePoolDef, parse_storage_pool


def pool(kind: str, name: str, source: str = "", target: str = "") -> StoragePoolDef:
    target_xml = f"<target><path>{target}</path></target>" if target else ""
    return parse_storage_pool(
        f"<pool type='{kind}'><name>{name}</name><source>{source}</source>{target_xml}</pool>"
    )


NFS = "<host name='nfs.example'/><dir path='/export'/>"


@pytest.mark.parametrize(
    ("a", "b", "clash"),
    [
        (pool("dir", "a", target="/srv/a"), pool("dir", "b", target="/srv/a"), True),
        (pool("dir", "a", target="/srv/a"), pool("dir", "b", target="/srv/b"), False),
        (pool("netfs", "a", NFS, "/mnt/a"), pool("netfs", "b", NFS, "/mnt/b"), True),
        (
            pool("netfs", "a", NFS, "/mnt/a"),
            pool("netfs", "b", "<host name='other'/><dir path='/export'/>", "/mnt/b"),
            False,
        ),
        # device pools clash across types when they share a device
        (
            pool("fs", "a", "<device path='/dev/sdb'/>", "/mnt/a"),
            pool("logical", "b", "<device path='/dev/sdb'/>"),
            True,
        ),
        (
            pool("fs", "a", "<device path='/dev/sdb'/>", "/mnt/a"),
            pool("dir", "b", target="/dev/sdb"),
            False,
        ),
        (
            pool("rbd", "a", "<name>rbd</name><host name='mon'/>"),
            pool("rbd", "b", "<name>rbd</name><host name='mon2'/>"),
            True,
        ),
        (pool("mpath", "a", target="/dev/mapper"), pool("mpath", "b", target="/dev/mapper"), False),
    ],
)
def test_sources_clash_by_type(a: StoragePoolDef, b: StoragePoolDef, clash: bool) -> None:
    assert sources_clash(a, b) is clash
