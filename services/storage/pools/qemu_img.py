"""The qemu-img command lines libvirt 9.0.0 runs to create and clone volumes
(storage_util.c, virStorageBackendCreateQemuImgCmdFromVol), as pure builders.

A clone where either volume is encrypted takes two commands: ``create`` an
empty image of the new volume, then ``convert`` the input into it with
``--image-opts``; ``create_steps`` says which steps a job needs and
``qemu_img_create_command`` builds one step.  Nothing here touches the file
system: the caller checks that a backing store is readable, writes the secret
files, and runs the commands.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from shared.conf.encryption import Encryption, EncryptionFormat
from shared.conf.storage_volume import StorageVolumeDef, VolumeType
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

_D = ErrorDomain.STORAGE
QEMU_IMG = "qemu-img"
#: qcow2's compat level when the volume names none (libvirt 9.0.0 still
#: defaulted to the old format that QEMU older than 1.1 can read).
DEFAULT_QCOW2_COMPAT = "0.10"
#: virStorageEncryptionFormatType numbers, for libvirt's "%d" in one message.
_ENCRYPTION_FORMAT_NUMBER = {f: i for i, f in enumerate(EncryptionFormat)}
#: qcow2 features: the ``-o`` option each adds, and its name in libvirt's refusal
#: (which quotes one and not the other).
_QCOW2_FEATURES = (
    ("lazy_refcounts", "lazy_refcounts", "lazy_refcounts"),
    ("extended_l2", "extended_l2=on", "'extended_l2'"),
)


class ConvertStep(enum.Enum):
    """virStorageVolEncryptConvertStep: which command of a job to build."""

    NONE = "none"
    CREATE = "create"
    CONVERT = "convert"


@dataclass(frozen=True)
class QemuImgJob:
    """What one volume creation asks of qemu-img.

    ``volume`` must carry its final type (``file``, or ``block`` on a logical
    pool) and target path; ``source`` is the volume to clone from, if any.
    ``secret_path``/``input_secret_path`` are the files holding the
    passphrases of the new and the input volume when they are encrypted.
    """

    volume: StorageVolumeDef
    source: StorageVolumeDef | None = None
    prealloc_metadata: bool = False
    tool: str = QEMU_IMG
    secret_path: str | None = None
    input_secret_path: str | None = None


def _error(code: ErrorCode, message: str) -> VirtError:
    return VirtError(code, message, _D)


def escape_comma(value: str) -> str:
    """A value inside a QEMU option string: commas doubled (virQEMUBuildBufferEscapeComma)."""
    return value.replace(",", ",,")


def secret_alias(volume: StorageVolumeDef) -> str:
    """The ``--object secret`` id libvirt gives a volume's passphrase."""
    return f"{volume.name}_encrypt0"


def create_steps(job: QemuImgJob) -> list[ConvertStep]:
    """The commands a job runs: one, or create then convert when cloning with encryption."""
    source = job.source
    if source is not None and (
        job.volume.target.encryption is not None or source.target.encryption is not None
    ):
        return [ConvertStep.CREATE, ConvertStep.CONVERT]
    return [ConvertStep.NONE]


@dataclass
class _Info:
    """_virStorageBackendQemuImgInfo: the command's facts, derived from the volumes."""

    format: str
    type: str
    path: str
    size_kib: int
    allocation_kib: int
    input_type: str | None = None
    input_path: str | None = None
    input_format: str | None = None
    backing_path: str | None = None
    backing_format: str | None = None


def _format_of(volume: StorageVolumeDef) -> str:
    return volume.target.format or "none"


def _encryption_opts(fmt: str, enc: Encryption, alias: str) -> list[str]:
    """The key and cipher options of a LUKS image (raw -> luks, or qcow2's encrypt.*)."""
    opts: list[str] = []
    prefix = ""
    if fmt == "qcow2":
        opts.append("encrypt.format=luks")
        prefix = "encrypt."
    opts.append(f"{prefix}key-secret={alias}")
    cipher = enc.cipher
    if cipher is None:
        return opts
    opts.append(f"{prefix}cipher-alg={escape_comma(cipher.name)}-{cipher.size}")
    if cipher.mode:
        opts.append(f"{prefix}cipher-mode={escape_comma(cipher.mode)}")
    if cipher.hash:
        opts.append(f"{prefix}hash-alg={escape_comma(cipher.hash)}")
    if enc.ivgen is None:
        return opts
    opts.append(f"{prefix}ivgen-alg={escape_comma(enc.ivgen.name)}")
    if enc.ivgen.hash:
        opts.append(f"{prefix}ivgen-hash-alg={escape_comma(enc.ivgen.hash)}")
    return opts


def _options(job: QemuImgJob, info: _Info, alias: str | None) -> str:
    """The ``-o`` value (storageBackendCreateQemuImgOpts); empty when there is none."""
    target = job.volume.target
    opts: list[str] = []
    if info.backing_path is not None:
        opts.append(f"backing_fmt={info.backing_format}")
    if target.encryption is not None and alias is not None:
        opts += _encryption_opts(info.format, target.encryption, alias)
    if job.prealloc_metadata:
        # Metadata only when the image is to stay sparse; fully allocated
        # otherwise, which falloc does fastest.
        kind = "metadata" if info.size_kib > info.allocation_kib else "falloc"
        opts.append(f"preallocation={kind}")
    if target.nocow:
        opts.append("nocow=on")
    if target.compat is not None:
        opts.append(f"compat={target.compat}")
    elif info.format == "qcow2":
        opts.append(f"compat={DEFAULT_QCOW2_COMPAT}")
    if target.cluster_size > 0:
        opts.append(f"cluster_size={target.cluster_size}")
    if target.features is not None and info.format == "qcow2":
        for feature, option, shown in _QCOW2_FEATURES:
            if feature not in target.features:
                continue
            if target.compat == "0.10":
                raise _error(
                    ErrorCode.CONFIG_UNSUPPORTED,
                    f"{shown} not supported with compat level {target.compat}",
                )
            opts.append(option)
    return ",".join(opts)


def _check_encryption(info: _Info, volume: StorageVolumeDef) -> None:
    """storageBackendCreateQemuImgCheckEncryption: LUKS with one secret, raw or qcow2."""
    enc = volume.target.encryption
    assert enc is not None
    if info.format not in ("raw", "qcow2"):
        raise _error(
            ErrorCode.CONFIG_UNSUPPORTED, f"volume encryption unsupported with format {info.type}"
        )
    if enc.format is not EncryptionFormat.LUKS:
        number = _ENCRYPTION_FORMAT_NUMBER[enc.format]
        raise _error(ErrorCode.CONFIG_UNSUPPORTED, f"unsupported volume encryption format {number}")
    if len(enc.secrets) > 1:
        raise _error(ErrorCode.XML_ERROR, "too many secrets for luks encryption")
    if not enc.secrets:
        raise _error(ErrorCode.XML_ERROR, "no secret provided for luks encryption")


def _set_backing(job: QemuImgJob, info: _Info) -> None:
    """storageBackendCreateQemuImgSetBacking, without the access check (the caller's)."""
    backing = job.volume.backing_store
    assert backing is not None
    if info.format == "raw":
        raise _error(ErrorCode.CONFIG_UNSUPPORTED, "cannot set backing store for raw volume")
    info.backing_format = backing.format or "none"
    info.backing_path = backing.path
    if job.prealloc_metadata:
        raise _error(
            ErrorCode.CONFIG_UNSUPPORTED, "metadata preallocation conflicts with backing store"
        )
    source = job.source
    if (
        source is not None
        and source.backing_store is not None
        and source.backing_store.path != backing.path
    ):
        raise _error(ErrorCode.INTERNAL_ERROR, "a different backing store cannot be specified.")


def _set_input(source: StorageVolumeDef, step: ConvertStep, info: _Info) -> None:
    if step is not ConvertStep.CREATE:
        if not source.target.path:
            raise _error(ErrorCode.INVALID_ARG, "missing input volume target path")
        info.input_path = source.target.path
    fmt = _format_of(source)
    if source.type is VolumeType.BLOCK or fmt == "iso":
        fmt = "raw"
    info.input_format = fmt


def _raw_encryption_type(volume: StorageVolumeDef) -> str:
    enc = volume.target.encryption
    assert enc is not None
    if enc.format is not EncryptionFormat.LUKS:
        raise _error(ErrorCode.INTERNAL_ERROR, "Only luks encryption is supported for raw files")
    return "luks"


def _info(job: QemuImgJob, step: ConvertStep) -> _Info:
    """virStorageBackendCreateQemuImgSetInfo: checks and facts, in libvirt's order."""
    volume, source = job.volume, job.source
    target = volume.target
    fmt = _format_of(volume)
    if volume.type is VolumeType.BLOCK or fmt == "iso":
        fmt = "raw"
    if not target.path:
        raise _error(ErrorCode.INVALID_ARG, "missing volume target path")
    info = _Info(
        format=fmt,
        type=fmt,
        path=target.path,
        size_kib=-(-volume.capacity // 1024),
        allocation_kib=-(-volume.allocation // 1024),
    )
    if source is not None:
        info.input_type = _format_of(source)
    if job.prealloc_metadata and fmt != "qcow2":
        raise _error(
            ErrorCode.CONFIG_UNSUPPORTED, "metadata preallocation only available with qcow2"
        )
    if target.compat is not None and fmt != "qcow2":
        raise _error(ErrorCode.CONFIG_UNSUPPORTED, "compatibility option only available with qcow2")
    if target.features is not None and fmt != "qcow2":
        raise _error(ErrorCode.CONFIG_UNSUPPORTED, "format features only available with qcow2")
    if fmt == "raw" and target.encryption is not None:
        info.type = _raw_encryption_type(volume)
    if source is not None and _format_of(source) == "raw" and source.target.encryption:
        info.input_type = _raw_encryption_type(source)
    if source is not None:
        _set_input(source, step, info)
    if volume.backing_store is not None:
        _set_backing(job, info)
    if target.encryption is not None:
        _check_encryption(info, volume)
    return info


def _secret_object(alias: str, path: str) -> list[str]:
    return ["--object", f"secret,id={alias},file={escape_comma(path)}"]


def _image_opts(driver: str, path: str, key_prefix: str, alias: str | None) -> str:
    text = f"driver={driver},file.filename={path}"
    return f"{text},{key_prefix}key-secret={alias}" if alias is not None else text


def qemu_img_create_command(job: QemuImgJob, step: ConvertStep = ConvertStep.NONE) -> list[str]:
    """The qemu-img command of one step of ``job``; raises ``VirtError`` with libvirt's
    message for a volume libvirt refuses to create this way."""
    volume, source = job.volume, job.source
    enc = volume.target.encryption
    input_enc = source.target.encryption if source is not None else None
    if (
        enc is not None
        and enc.format in (EncryptionFormat.QCOW, EncryptionFormat.DEFAULT)
        and _format_of(volume) in ("qcow", "qcow2")
    ):
        raise _error(
            ErrorCode.CONFIG_UNSUPPORTED, "creation of qcow2 encrypted image is not supported"
        )
    if input_enc is not None and input_enc.format is not EncryptionFormat.LUKS:
        raise _error(ErrorCode.CONFIG_UNSUPPORTED, "encryption format of inputvol must be LUKS")
    info = _info(job, step)
    # A clone copies the input's data: the new volume gets no backing store.
    if info.input_path is not None or step is ConvertStep.CREATE:
        info.backing_path = None

    argv = [job.tool]
    if info.input_path is not None and step is ConvertStep.NONE:
        argv += ["convert", "-f", str(info.input_format), "-O", info.type]
    elif info.input_path is not None and step is ConvertStep.CONVERT:
        argv += ["convert", "--image-opts", "-n", "--target-image-opts"]
    else:
        argv += ["create", "-f", info.type]
    if info.backing_path is not None:
        argv += ["-b", info.backing_path]

    alias: str | None = None
    if enc is not None:
        if job.secret_path is None:
            raise _error(ErrorCode.INTERNAL_ERROR, "path to secret data file is required")
        alias = secret_alias(volume)
        argv += _secret_object(alias, job.secret_path)
    input_alias: str | None = None
    if source is not None and input_enc is not None and step is ConvertStep.CONVERT:
        if job.input_secret_path is None:
            raise _error(ErrorCode.INTERNAL_ERROR, "path to inputvol secret data file is required")
        input_alias = secret_alias(source)
        argv += _secret_object(input_alias, job.input_secret_path)

    if step is not ConvertStep.CONVERT:
        opts = _options(job, info, alias)
        if opts:
            argv += ["-o", opts]
        if info.input_path is not None:
            argv.append(info.input_path)
        argv.append(info.path)
        if info.input_path is None and (info.size_kib or info.backing_path is None):
            argv.append(f"{info.size_kib}K")
        return argv

    assert source is not None and info.input_path is not None
    input_prefix = "encrypt." if _format_of(source) == "qcow2" else ""
    argv.append(_image_opts(info.input_type or "raw", info.input_path, input_prefix, input_alias))
    prefix = "encrypt." if _format_of(volume) == "qcow2" else ""
    argv.append(_image_opts(info.type, info.path, prefix, alias))
    return argv


def qemu_img_create_commands(job: QemuImgJob) -> list[list[str]]:
    """Every command ``job`` runs, in order."""
    return [qemu_img_create_command(job, step) for step in create_steps(job)]
