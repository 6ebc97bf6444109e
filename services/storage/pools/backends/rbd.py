"""The rbd backend: the images of a Ceph RBD pool (libvirt's VIR_STORAGE_POOL_RBD).

libvirt talks to Ceph through librados; virtbus runs the ``rbd`` and ``rados``
tools (both in ceph-common) with the pool's monitors and, for a pool with
``<auth type='ceph'>``, its cephx user and key, so a host without them reports
the tool as missing.  The key goes in a private file for the length of the
commands, as libvirt hands it to librados in memory.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
from collections.abc import AsyncIterator
from typing import Any

from services.storage.pools.backends.base import (
    Backend,
    CreateOptions,
    PoolScan,
    found_volume,
    placed,
)
from services.storage.pools.confine import check_volume_name
from shared.conf.secret import SecretUsageType
from shared.conf.storage_pool import StoragePoolDef
from shared.conf.storage_pool_source import PoolSourceHost
from shared.conf.storage_pool_types import PoolType
from shared.conf.storage_volume import StorageVolumeDef, VolumeType
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

_D = ErrorDomain.STORAGE


def _is_ipv6(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).version == 6
    except ValueError:
        return False


def _monitor(host: PoolSourceHost) -> str:
    """One entry of libvirt's mon_host: the name alone without a port, else
    ``name:port`` with an IPv6 address in brackets."""
    if not host.port:
        return host.name
    if _is_ipv6(host.name):
        return f"[{host.name}]:{host.port}"
    return f"{host.name}:{host.port}"


def connection_args(pool: StoragePoolDef, keyfile: str | None) -> list[str]:
    """``--pool``, ``-m`` with the monitors, and ``--id``/``--keyfile`` of the cephx user."""
    argv = ["--pool", str(pool.source.name)]
    monitors = ",".join(_monitor(h) for h in pool.source.hosts)
    if monitors:
        argv += ["-m", monitors]
    if pool.source.auth is not None:
        argv += ["--id", pool.source.auth.username]
        if keyfile is not None:
            argv += ["--keyfile", keyfile]
    return argv


def pool_usage(df: dict[str, Any], pool: str) -> tuple[int, int, int]:
    """Capacity, allocation and available from ``rados df --format json``: the
    cluster's size and free space (rados_cluster_stat, in KiB) and the bytes of
    ``pool`` (rados_ioctx_pool_stat), as libvirt's refreshPool reports them."""
    used = next(
        (int(p.get("size_bytes", 0)) for p in df.get("pools", []) if p.get("name") == pool), None
    )
    if used is None:
        raise VirtError(ErrorCode.SYSTEM_ERROR, f"failed to stat the RADOS pool '{pool}'", _D)
    return int(df.get("total_space", 0)) * 1024, used, int(df.get("total_avail", 0)) * 1024


class RbdBackend(Backend):
    """Images listed, created and removed with the rbd tool."""

    pool_type = PoolType.RBD
    builds_volumes = False

    @contextlib.asynccontextmanager
    async def _connect(self, pool: StoragePoolDef) -> AsyncIterator[list[str]]:
        """The connection arguments; the cephx key (the secret's value, base64 as
        librados's 'key' option takes it) in a 0600 file removed afterwards."""
        auth = pool.source.auth
        if auth is None:
            yield connection_args(pool, None)
            return
        secrets = self._pool_secrets()
        value = await secrets.fetch(auth.secret, SecretUsageType.CEPH)
        key = base64.b64encode(value)
        async with secrets.key_file(f"{pool.name}.cephx", key) as path:
            yield connection_args(pool, path)

    async def check(self, pool: StoragePoolDef) -> bool:
        return False

    async def refresh(self, pool: StoragePoolDef, known: dict[str, StorageVolumeDef]) -> PoolScan:
        async with self._connect(pool) as conn:
            df = await self.runner.output(["rados", *conn, "df", "--format", "json"])
            out = await self.runner.output(["rbd", *conn, "ls", "-l", "--format", "json"])
        capacity, allocation, available = pool_usage(json.loads(df or "{}"), str(pool.source.name))
        volumes = []
        for image in json.loads(out or "[]"):
            if "snapshot" in image:
                continue  # 'ls -l' lists each snapshot as a row of its own
            name = str(image.get("image"))
            size = int(image.get("size", 0))
            path = f"{pool.source.name}/{name}"
            volumes.append(found_volume(name, path, VolumeType.NETWORK, size, "raw"))
        return PoolScan(capacity, allocation, available, volumes)

    async def define_volume(self, pool: StoragePoolDef, vol: StorageVolumeDef) -> StorageVolumeDef:
        check_volume_name(vol.name)
        return placed(vol, f"{pool.source.name}/{vol.name}", VolumeType.NETWORK)

    async def build_volume(
        self, pool: StoragePoolDef, vol: StorageVolumeDef, options: CreateOptions
    ) -> None:
        size_mib = max(1, -(-vol.capacity // (1024 * 1024)))
        async with self._connect(pool) as conn:
            await self.runner.run(["rbd", *conn, "create", "--size", f"{size_mib}M", vol.name])

    async def delete_volume(
        self, pool: StoragePoolDef, vol: StorageVolumeDef, *, with_snapshots: bool = False
    ) -> None:
        async with self._connect(pool) as conn:
            if with_snapshots:
                await self.runner.run(["rbd", *conn, "snap", "purge", vol.name])
            await self.runner.run(["rbd", *conn, "rm", vol.name])
