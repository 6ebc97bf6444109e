"""Round-trip properties of the <disk> kind: for generated disk models,
format(parse(format(m))) == format(m) in the live form."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.conf.disk import format_disk, parse_disk
from shared.conf.disk_address import AddressType, DeviceAddress, DeviceInfo
from shared.conf.disk_mirror import DiskMirror, MirrorJob, MirrorState
from shared.conf.disk_model import (
    CacheMode,
    DiskBus,
    DiskDef,
    DiskDevice,
    DiskDriver,
    DiskIotune,
    DiskTarget,
    IoMode,
    StartupPolicy,
)
from shared.conf.disk_source import (
    TERMINATOR,
    AuthType,
    PoolMode,
    PoolSource,
    Seclabel,
    StorageAuth,
    StorageFormat,
    StorageSlice,
    StorageSource,
    StorageType,
)
from shared.conf.disk_source_net import (
    PROTOCOLS,
    Cookie,
    HostTransport,
    NetHost,
    NetProtocol,
    NetworkSource,
)
from shared.conf.encryption import (
    Encryption,
    EncryptionEngine,
    EncryptionFormat,
    EncryptionSecret,
    SecretLookup,
)

_WORD = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=12)
_PATH = st.lists(_WORD, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
_FORMATS = st.sampled_from([f for f in StorageFormat if f is not StorageFormat.NONE])
_COUNT = st.integers(min_value=1, max_value=10**9)


@st.composite
def _host(draw: st.DrawFn, protocol: NetProtocol) -> NetHost:
    if protocol in (NetProtocol.NBD, NetProtocol.GLUSTER) and draw(st.booleans()):
        return NetHost(transport=HostTransport.UNIX, socket=draw(_PATH))
    return NetHost(name=draw(_WORD), port=draw(st.integers(1, 65535)))


@st.composite
def _network(draw: st.DrawFn) -> NetworkSource:
    protocol = draw(st.sampled_from([p for p in NetProtocol if p is not NetProtocol.NONE]))
    traits = PROTOCOLS[protocol]
    fields: dict[str, object] = {"protocol": protocol, "path": draw(_PATH)}
    if traits.pool_in_name:
        fields["volume"] = draw(_WORD)
    fields["hosts"] = tuple(draw(st.lists(_host(protocol), max_size=2)))
    fields["tls"] = draw(st.none() | st.booleans())
    if traits.query:
        fields["query"] = draw(st.none() | _WORD)
    if traits.cookies:
        names = draw(st.lists(_WORD, max_size=2, unique=True))
        fields["cookies"] = tuple(Cookie(name=n, value=draw(_WORD)) for n in names)
    if traits.ssl:
        fields["ssl_verify"] = draw(st.none() | st.booleans())
    if traits.readahead:
        fields["readahead"] = draw(st.none() | _COUNT)
        fields["timeout"] = draw(st.none() | _COUNT)
    if traits.identity:
        fields["nfs_user"] = draw(st.none() | _WORD)
    if protocol is NetProtocol.RBD:
        fields["snapshot"] = draw(st.none() | _WORD)
        fields["config_file"] = draw(st.none() | _PATH)
    if protocol is NetProtocol.ISCSI:
        fields["initiator_iqn"] = draw(st.none() | _WORD)
    return NetworkSource.model_validate(fields)


_LOOKUP = st.builds(SecretLookup, usage=_WORD)
_AUTH = st.builds(
    StorageAuth,
    username=_WORD,
    auth_type=st.sampled_from(list(AuthType)),
    secret_type=st.sampled_from(["iscsi", "ceph"]),
    secret=_LOOKUP,
)
_ENCRYPTION = st.builds(
    Encryption,
    format=st.just(EncryptionFormat.LUKS),
    engine=st.sampled_from(list(EncryptionEngine)),
    secrets=st.tuples(st.builds(EncryptionSecret, lookup=_LOOKUP)),
)
_SECLABEL = st.one_of(
    st.builds(Seclabel, model=st.just("selinux"), relabel=st.just(True), label=_WORD),
    st.builds(Seclabel, model=st.just("dac"), relabel=st.booleans()),
)


@st.composite
def _source(draw: st.DrawFn, *, backing_depth: int, need_format: bool) -> StorageSource:
    kind = draw(
        st.sampled_from(
            [StorageType.FILE, StorageType.BLOCK, StorageType.DIR, StorageType.NETWORK]
            + ([StorageType.VOLUME] if not need_format else [])
        )
    )
    fields: dict[str, object] = {"type": kind}
    if kind is StorageType.NETWORK:
        fields["network"] = draw(_network())
        fields["auth"] = draw(st.none() | _AUTH)
    elif kind is StorageType.VOLUME:
        fields["pool"] = PoolSource(
            pool=draw(_WORD),
            volume=draw(_WORD),
            mode=draw(st.none() | st.sampled_from([PoolMode.HOST, PoolMode.DIRECT])),
        )
    else:
        fields["path"] = draw(_PATH)
        fields["seclabels"] = tuple(draw(st.lists(_SECLABEL, max_size=1)))
    fields["format"] = draw(_FORMATS) if need_format else draw(st.none() | _FORMATS)
    fields["encryption"] = draw(st.none() | _ENCRYPTION)
    fields["slice_storage"] = draw(st.none() | st.builds(StorageSlice, offset=_COUNT, size=_COUNT))
    fields["index"] = draw(st.none() | st.integers(1, 99))
    if backing_depth > 0:
        fields["backing_store"] = draw(
            st.none()
            | st.just(TERMINATOR)
            | _source(backing_depth=backing_depth - 1, need_format=True)
        )
    return StorageSource.model_validate(fields)


_ADDRESS = st.one_of(
    st.builds(
        DeviceAddress,
        type=st.just(AddressType.DRIVE),
        controller=st.integers(0, 3),
        bus=st.integers(0, 1),
        unit=st.integers(0, 6),
    ),
    st.builds(
        DeviceAddress,
        type=st.just(AddressType.PCI),
        bus=st.integers(0, 255),
        slot=st.integers(0, 31),
    ),
)


@st.composite
def _disk(draw: st.DrawFn) -> DiskDef:
    source = draw(_source(backing_depth=2, need_format=False))
    mirror = None
    if draw(st.booleans()):
        mirror = DiskMirror(
            source=draw(_source(backing_depth=1, need_format=True)),
            job=draw(st.sampled_from(list(MirrorJob))),
            ready=draw(st.sampled_from(list(MirrorState))),
        )
    return DiskDef(
        device=draw(st.sampled_from(list(DiskDevice))),
        driver=DiskDriver(
            name=draw(st.none() | st.just("qemu")),
            cache=draw(
                st.none() | st.sampled_from([c for c in CacheMode if c is not CacheMode.DEFAULT])
            ),
            io=draw(st.none() | st.sampled_from([IoMode.NATIVE, IoMode.THREADS])),
            queues=draw(st.none() | st.integers(1, 8)),
            iommu=draw(st.none() | st.booleans()),
        ),
        source=source,
        startup_policy=draw(st.none() | st.sampled_from([StartupPolicy.OPTIONAL])),
        auth_on_disk=source.auth is not None and draw(st.booleans()),
        encryption_on_disk=source.encryption is not None and draw(st.booleans()),
        mirror=mirror,
        target=DiskTarget(
            dev=draw(st.sampled_from(["vda", "sdb", "hdc", "fda"])),
            bus=draw(st.sampled_from([b for b in DiskBus if b is not DiskBus.NONE])),
        ),
        iotune=DiskIotune(
            total_bytes_sec=draw(st.integers(0, 10**6)),
            group_name=draw(st.none() | _WORD),
        ),
        readonly=draw(st.booleans()),
        shareable=draw(st.booleans()),
        serial=draw(st.none() | _WORD),
        info=DeviceInfo(
            boot_order=draw(st.none() | st.integers(1, 9)),
            alias=draw(st.none() | _WORD),
            address=draw(st.none() | _ADDRESS),
        ),
    )


@settings(max_examples=150, deadline=None)
@given(_disk())
def test_live_format_parse_format_is_stable(disk: DiskDef) -> None:
    text = format_disk(disk, active=True)
    again = parse_disk(text, active=True)
    assert format_disk(again, active=True) == text


@settings(max_examples=50, deadline=None)
@given(_disk())
def test_inactive_form_is_stable_and_has_no_live_data(disk: DiskDef) -> None:
    text = format_disk(disk, active=False)
    assert "<mirror" not in text and " index=" not in text
    again = parse_disk(text, active=False)
    assert format_disk(again, active=False) == text
