"""One backend module per pool type; ``BACKENDS`` maps each supported type to its class.

A pool type missing here has no backend on this host: defining such a pool
is refused as libvirt refuses a type its daemon was built without.
"""

from __future__ import annotations

from services.storage.pools.backends.base import Backend
from services.storage.pools.backends.dir import DirBackend
from services.storage.pools.backends.disk import DiskBackend
from services.storage.pools.backends.fs import FsBackend
from services.storage.pools.backends.iscsi import IscsiBackend
from services.storage.pools.backends.logical import LogicalBackend
from services.storage.pools.backends.netfs import NetfsBackend
from services.storage.pools.backends.rbd import RbdBackend
from shared.conf.storage_pool_types import PoolType

BACKENDS: dict[PoolType, type[Backend]] = {
    cls.pool_type: cls
    for cls in (
        DirBackend,
        FsBackend,
        NetfsBackend,
        LogicalBackend,
        DiskBackend,
        IscsiBackend,
        RbdBackend,
    )
}
