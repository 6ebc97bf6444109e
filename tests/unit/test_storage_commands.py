"""The pure command builders of the storage service: qemu-img, mount, vgchange, rendering."""

from __future__ import annotations

import pytest

from services.storage.pools.command import render_command, shell_quote
from services.storage.pools.pool_commands import (
    mount_command,
    pool_start_command,
    unmount_command,
    vgchange_command,
)
from services.storage.pools.qemu_img import (
    ConvertStep,
    QemuImgJob,
    create_steps,
    qemu_img_create_command,
    qemu_img_create_commands,
)
from shared.conf.storage_pool import StoragePoolDef, parse_storage_pool
from shared.conf.storage_volume import StorageVolumeDef, VolParseFlags, parse_storage_volume
from shared.util.errors import ErrorCode, VirtError

DIR_POOL = parse_storage_pool(
    "<pool type='dir'><name>images</name><target><path>/srv/images</path></target></pool>"
)
SECRET = "<secret type='passphrase' uuid='0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f'/>"


def vol(
    body: str, pool: StoragePoolDef = DIR_POOL, flags: VolParseFlags = VolParseFlags.NONE
) -> StorageVolumeDef:
    return parse_storage_volume(f"<volume>{body}</volume>", pool, flags)


def qcow2(
    extra_target: str = "", name: str = "disk.qcow2", capacity: str = "1"
) -> StorageVolumeDef:
    return vol(
        f"<name>{name}</name><capacity unit='GiB'>{capacity}</capacity>"
        f"<target><path>/srv/images/{name}</path><format type='qcow2'/>{extra_target}</target>"
    )


def argv(job: QemuImgJob) -> list[str]:
    return qemu_img_create_command(job)


# ---- rendering ------------------------------------------------------------------------


def test_shell_quote() -> None:
    assert shell_quote("") == "''"
    assert shell_quote("plain/path-1,x=y") == "plain/path-1,x=y"
    assert shell_quote("two words") == "'two words'"
    assert shell_quote("it's") == "'it'\\''s'"


def test_render_keeps_option_and_value_on_one_line() -> None:
    text = render_command(["tool", "sub", "-f", "raw", "--flag", "/a", "/b", "1K"])
    assert text == "tool \\\nsub \\\n-f raw \\\n--flag /a \\\n/b \\\n1K"


def test_render_value_after_non_option_joins_when_an_option_follows() -> None:
    # 'x' follows a value, but an option comes later, so it stays on the line.
    assert render_command(["t", "-a", "v", "x", "-b"]) == "t \\\n-a v x \\\n-b"


# ---- qemu-img create ----------------------------------------------------------------


def test_qcow2_defaults_to_compat_0_10() -> None:
    assert argv(QemuImgJob(qcow2())) == [
        "qemu-img", "create", "-f", "qcow2", "-o", "compat=0.10",
        "/srv/images/disk.qcow2", "1048576K",
    ]  # fmt: skip


def test_raw_has_no_options() -> None:
    raw = vol("<name>r</name><capacity>1000</capacity><target><path>/srv/images/r</path></target>")
    assert argv(QemuImgJob(raw)) == ["qemu-img", "create", "-f", "raw", "/srv/images/r", "1K"]


def test_lazy_refcounts_imply_compat_1_1() -> None:
    job = QemuImgJob(qcow2("<features><lazy_refcounts/></features>"))
    assert argv(job)[4:6] == ["-o", "compat=1.1,lazy_refcounts"]


def test_lazy_refcounts_refused_with_compat_0_10() -> None:
    job = QemuImgJob(qcow2("<compat>0.10</compat><features><lazy_refcounts/></features>"))
    with pytest.raises(VirtError) as err:
        argv(job)
    assert err.value.code is ErrorCode.CONFIG_UNSUPPORTED
    assert "lazy_refcounts not supported with compat level 0.10" in err.value.message


def test_preallocation_metadata_when_sparse_falloc_when_full() -> None:
    sparse = qcow2().model_copy(update={"allocation": 0})
    assert "preallocation=metadata,compat=0.10" in argv(QemuImgJob(sparse, prealloc_metadata=True))
    full = qcow2()
    assert "preallocation=falloc,compat=0.10" in argv(QemuImgJob(full, prealloc_metadata=True))


def test_preallocation_only_for_qcow2() -> None:
    raw = vol("<name>r</name><capacity>1</capacity><target><path>/srv/images/r</path></target>")
    with pytest.raises(VirtError, match="metadata preallocation only available with qcow2"):
        argv(QemuImgJob(raw, prealloc_metadata=True))


def test_backing_store_and_optional_capacity() -> None:
    overlay = vol(
        "<name>o</name><target><path>/srv/images/o</path><format type='qcow2'/></target>"
        "<backingStore><path>/srv/images/base</path><format type='qcow2'/></backingStore>",
        flags=VolParseFlags.OPT_CAPACITY,
    )
    assert argv(QemuImgJob(overlay)) == [
        "qemu-img", "create", "-f", "qcow2", "-b", "/srv/images/base",
        "-o", "backing_fmt=qcow2,compat=0.10", "/srv/images/o",
    ]  # fmt: skip


def test_backing_store_refused_for_raw() -> None:
    raw = vol(
        "<name>r</name><capacity>1</capacity><target><path>/srv/images/r</path></target>"
        "<backingStore><path>/srv/images/base</path></backingStore>"
    )
    with pytest.raises(VirtError, match="cannot set backing store for raw volume"):
        argv(QemuImgJob(raw))


def test_luks_cipher_options() -> None:
    enc = (
        f"<encryption format='luks'>{SECRET}<cipher name='serpent' size='256' mode='xts' "
        "hash='sha512'/><ivgen name='plain64' hash='sha1'/></encryption>"
    )
    luks = vol(
        f"<name>l.img</name><capacity>1048576</capacity><target><path>/srv/images/l.img</path>"
        f"{enc}</target>"
    )
    assert argv(QemuImgJob(luks, secret_path="/run/s,1")) == [
        "qemu-img", "create", "-f", "luks",
        "--object", "secret,id=l.img_encrypt0,file=/run/s,,1",
        "-o", "key-secret=l.img_encrypt0,cipher-alg=serpent-256,cipher-mode=xts,"
        "hash-alg=sha512,ivgen-alg=plain64,ivgen-hash-alg=sha1",
        "/srv/images/l.img", "1024K",
    ]  # fmt: skip


def test_encrypted_volume_needs_secret_file() -> None:
    luks = qcow2(f"<encryption format='luks'>{SECRET}</encryption>")
    with pytest.raises(VirtError, match="path to secret data file is required"):
        argv(QemuImgJob(luks))


def test_qcow_encryption_refused() -> None:
    old = qcow2(f"<encryption format='qcow'>{SECRET}</encryption>")
    with pytest.raises(VirtError, match="creation of qcow2 encrypted image is not supported"):
        argv(QemuImgJob(old, secret_path="/s"))


def test_clone_across_formats_is_one_convert() -> None:
    raw = vol("<name>r</name><capacity>1</capacity><target><path>/srv/images/r</path></target>")
    job = QemuImgJob(qcow2(), source=raw)
    assert create_steps(job) == [ConvertStep.NONE]
    assert argv(job) == [
        "qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "compat=0.10",
        "/srv/images/r", "/srv/images/disk.qcow2",
    ]  # fmt: skip


def test_clone_into_luks_is_create_then_convert() -> None:
    raw = vol("<name>r</name><capacity>1</capacity><target><path>/srv/images/r</path></target>")
    luks = vol(
        f"<name>l</name><capacity>1024</capacity><target><path>/srv/images/l</path>"
        f"<encryption format='luks'>{SECRET}</encryption></target>"
    )
    create, convert = qemu_img_create_commands(QemuImgJob(luks, source=raw, secret_path="/s"))
    assert create[:3] == ["qemu-img", "create", "-f"] and create[-1] == "1K"
    assert convert[-2:] == [
        "driver=raw,file.filename=/srv/images/r",
        "driver=luks,file.filename=/srv/images/l,key-secret=l_encrypt0",
    ]


# ---- pool commands ------------------------------------------------------------------


def netfs(fmt: str, extra: str = "") -> StoragePoolDef:
    return parse_storage_pool(
        "<pool type='netfs' xmlns:fs='http://libvirt.org/schemas/storagepool/fs/1.0'>"
        f"<name>n</name><source><host name='nas'/><dir path='/export'/><format type='{fmt}'/>"
        f"</source><target><path>/mnt/n</path></target>{extra}</pool>"
    )


def test_gluster_mount_uses_direct_io() -> None:
    assert mount_command(netfs("glusterfs"), platform="linux") == [
        "mount", "-o", "nodev,nosuid,noexec,direct-io-mode=1", "-t", "glusterfs",
        "nas:/export", "/mnt/n",
    ]  # fmt: skip


def test_mount_opts_from_the_fs_namespace_come_last() -> None:
    pool = netfs("nfs", "<fs:mount_opts><fs:option name='sync'/><fs:option name='lazytime'/>"
                 "</fs:mount_opts>")  # fmt: skip
    assert mount_command(pool, platform="other") == [
        "mount", "-o", "sync,lazytime", "-t", "nfs", "nas:/export", "/mnt/n",
    ]  # fmt: skip


def test_fs_pool_mount_and_unmount() -> None:
    pool = parse_storage_pool(
        "<pool type='fs'><name>f</name><source><device path='/dev/loop7'/>"
        "<format type='ext4'/></source><target><path>/mnt/f</path></target></pool>"
    )
    assert pool_start_command(pool, platform="linux") == [
        "mount", "-o", "nodev,nosuid,noexec", "-t", "ext4", "/dev/loop7", "/mnt/f",
    ]  # fmt: skip
    assert unmount_command(pool) == ["umount", "/mnt/f"]


def test_logical_activation() -> None:
    pool = parse_storage_pool(
        "<pool type='logical'><name>vg0</name><source><device path='/dev/sdz'/></source>"
        "<target><path>/dev/vg0</path></target></pool>"
    )
    assert pool_start_command(pool) == ["vgchange", "-aly", "vg0"]
    assert vgchange_command(pool, activate=False) == ["vgchange", "-aln", "vg0"]


@pytest.mark.parametrize("pool_type", ["dir", "disk"])
def test_other_pool_types_have_no_start_command(pool_type: str) -> None:
    pool = parse_storage_pool(
        f"<pool type='{pool_type}'><name>p</name><source><device path='/dev/sdz'/></source>"
        "<target><path>/dev</path></target></pool>"
    )
    with pytest.raises(VirtError) as err:
        pool_start_command(pool)
    assert err.value.code is ErrorCode.NO_SUPPORT
