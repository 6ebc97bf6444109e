"""storagevolxml2argv: the qemu-img command lines that create or clone a volume."""

from __future__ import annotations

from services.storage.pools.command import render_command
from services.storage.pools.qemu_img import QemuImgJob, create_steps, qemu_img_create_command
from shared.conf.storage_pool import StoragePoolDef, parse_storage_pool
from shared.conf.storage_pool_types import PoolType
from shared.conf.storage_volume import (
    StorageVolumeDef,
    VolParseFlags,
    VolumeType,
    parse_storage_volume,
)
from tests.conformance.runner import Case, Outcome, Suite, compare_text, expect_error

_PARSE_FLAGS = {
    "VIR_VOL_XML_PARSE_NO_CAPACITY": VolParseFlags.NO_CAPACITY,
    "VIR_VOL_XML_PARSE_OPT_CAPACITY": VolParseFlags.OPT_CAPACITY,
}
_CREATE_FLAGS = {"VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA"}


def _with_pool_type(vol: StorageVolumeDef, pool: StoragePoolDef) -> StorageVolumeDef:
    """The volume type the storage driver sets on creation, by pool type."""
    if pool.type in (PoolType.DIR, PoolType.FS, PoolType.NETFS):
        return vol.model_copy(update={"type": VolumeType.FILE})
    if pool.type is PoolType.LOGICAL:
        return vol.model_copy(update={"type": VolumeType.BLOCK})
    return vol


def _commands(suite: Suite, case: Case) -> str:
    flags = VolParseFlags.NONE
    for name in case.get("parse_flags") or []:
        flags |= _PARSE_FLAGS[name]
    unknown = set(case.get("create_flags") or []) - _CREATE_FLAGS
    if unknown:
        raise ValueError(f"unknown create flags {sorted(unknown)}")
    source: StorageVolumeDef | None = None
    if case.get("inputvol"):
        flags |= VolParseFlags.NO_CAPACITY
        input_pool = parse_storage_pool(suite.read(case["inputpool"]))
        source = parse_storage_volume(suite.read(case["inputvol"]), input_pool)
        source = _with_pool_type(source, input_pool)
    pool = parse_storage_pool(suite.read(case["pool"]))
    volume = _with_pool_type(parse_storage_volume(suite.read(case["input"]), pool, flags), pool)
    job = QemuImgJob(
        volume=volume,
        source=source,
        prealloc_metadata=bool(case.get("create_flags")),
        tool=case.get("tool") or "qemu-img",
        secret_path=case.get("secret_file"),
        input_secret_path=case.get("input_secret_file"),
    )
    return "\n".join(render_command(qemu_img_create_command(job, s)) for s in create_steps(job))


def run_case(suite: Suite, case: Case) -> Outcome:
    if case.get("expect_error"):
        return expect_error(lambda: _commands(suite, case))
    return compare_text(_commands(suite, case), suite.read(case["expected"]), literal=True)
