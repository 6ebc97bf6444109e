"""The netfs backend: an NFS, CIFS or GlusterFS export mounted on the pool folder
(libvirt's VIR_STORAGE_POOL_NETFS)."""

from __future__ import annotations

from services.storage.pools.backends.fs import FsBackend
from shared.conf.storage_pool_types import PoolType


class NetfsBackend(FsBackend):
    """Like fs, with ``host:dir`` (or ``//host/dir``) as what is mounted."""

    pool_type = PoolType.NETFS
    # A file server may stall: no file access on the event loop.
    inline_io = False
