"""Storage pool and volume XML (shared.conf.storage_*), and the encryption element.

Golden documents are written for these tests; each compares byte for byte.
The property tests build valid definitions from the pool-type table and check
that formatting is a fixed point of parse-then-format.
"""

from __future__ import annotations

import string
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from shared.conf.encryption import (
    Cipher,
    Encryption,
    EncryptionEngine,
    EncryptionFormat,
    EncryptionSecret,
    Ivgen,
    SecretLookup,
    format_encryption,
    parse_encryption,
)
from shared.conf.pci_address import PciAddress
from shared.conf.storage_pool import (
    NamespaceOption,
    PoolTarget,
    RefreshAllocation,
    StoragePoolDef,
    format_storage_pool,
    parse_storage_pool,
)
from shared.conf.storage_pool_source import (
    AdapterType,
    AuthType,
    PoolAdapter,
    PoolAuth,
    PoolSource,
    PoolSourceDevice,
    PoolSourceHost,
)
from shared.conf.storage_pool_types import FILE_FEATURES, POOL_TYPES, PoolType, SourcePart
from shared.conf.storage_pool_util import Permissions, sanitize_path
from shared.conf.storage_volume import (
    BackingStore,
    StorageVolumeDef,
    Timestamp,
    Timestamps,
    VolParseFlags,
    VolumeTarget,
    VolumeType,
    format_storage_volume,
    parse_storage_volume,
)
from shared.conf.xmlsafe import parse_xml
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorCode, VirtError


def doc(text: str) -> str:
    """A golden document: dedented, with one final newline."""
    return textwrap.dedent(text).lstrip("\n")


def roundtrip_pool(xml: str) -> str:
    return format_storage_pool(parse_storage_pool(xml))


# ---- pool goldens -----------------------------------------------------------------

NETFS_IN = """
<pool type="netfs" xmlns:fs="http://libvirt.org/schemas/storagepool/fs/1.0">
  <fs:mount_opts>
    <fs:option name="noatime"/>
    <fs:option name="vers=4.2"/>
  </fs:mount_opts>
  <uuid>0F1E2D3C4B5A69788796A5B4C3D2E1F0</uuid>
  <name>shared-images</name>
  <target>
    <permissions><label>system_u:object_r:nfs_t:s0</label><mode>755</mode></permissions>
    <path>/srv//images/</path>
  </target>
  <source>
    <protocol ver="4"/>
    <dir path="/exports/images/"/>
    <host name="nas.example.org" port="2049"/>
  </source>
  <capacity unit="G">12</capacity>
</pool>
"""
NETFS_OUT = doc("""
    <pool type='netfs' xmlns:fs='http://libvirt.org/schemas/storagepool/fs/1.0'>
      <name>shared-images</name>
      <uuid>0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0</uuid>
      <capacity unit='bytes'>0</capacity>
      <allocation unit='bytes'>0</allocation>
      <available unit='bytes'>0</available>
      <source>
        <host name='nas.example.org' port='2049'/>
        <dir path='/exports/images'/>
        <format type='auto'/>
        <protocol ver='4'/>
      </source>
      <target>
        <path>/srv/images</path>
        <permissions>
          <mode>0755</mode>
          <label>system_u:object_r:nfs_t:s0</label>
        </permissions>
      </target>
      <fs:mount_opts>
        <fs:option name='noatime'/>
        <fs:option name='vers=4.2'/>
      </fs:mount_opts>
    </pool>
""")

SCSI_IN = """
<pool type='scsi'>
  <name>hba-by-pci</name>
  <uuid>11111111-2222-3333-4444-555555555555</uuid>
  <source>
    <adapter type='scsi_host'>
      <parentaddr unique_id='7'>
        <address domain='0' bus='0x3' slot='2' function='1'/>
      </parentaddr>
    </adapter>
    <device path='/dev/ignored'/>
  </source>
  <target><path>/dev/disk/by-id</path></target>
</pool>
"""
SCSI_OUT = doc("""
    <pool type='scsi'>
      <name>hba-by-pci</name>
      <uuid>11111111-2222-3333-4444-555555555555</uuid>
      <capacity unit='bytes'>0</capacity>
      <allocation unit='bytes'>0</allocation>
      <available unit='bytes'>0</available>
      <source>
        <adapter type='scsi_host'>
          <parentaddr unique_id='7'>
            <address domain='0x0000' bus='0x03' slot='0x02' function='0x1'/>
          </parentaddr>
        </adapter>
      </source>
      <target>
        <path>/dev/disk/by-id</path>
      </target>
    </pool>
""")

LOGICAL_IN = """
<pool type='logical'>
  <uuid>22222222-3333-4444-5555-666666666666</uuid>
  <source>
    <device path='/dev/vdb1'/>
    <device path='/dev/vdc1'/>
    <name>guests_vg</name>
  </source>
  <target><path>/somewhere/else</path><permissions><group>36</group></permissions></target>
</pool>
"""
LOGICAL_OUT = doc("""
    <pool type='logical'>
      <name>guests_vg</name>
      <uuid>22222222-3333-4444-5555-666666666666</uuid>
      <capacity unit='bytes'>0</capacity>
      <allocation unit='bytes'>0</allocation>
      <available unit='bytes'>0</available>
      <source>
        <device path='/dev/vdb1'/>
        <device path='/dev/vdc1'/>
        <name>guests_vg</name>
        <format type='lvm2'/>
      </source>
      <target>
        <path>/dev/guests_vg</path>
        <permissions>
          <group>36</group>
        </permissions>
      </target>
    </pool>
""")

RBD_IN = """
<pool type='rbd' xmlns:rbd='http://libvirt.org/schemas/storagepool/rbd/1.0'>
  <name>ceph-images</name>
  <uuid>33333333-4444-5555-6666-777777777777</uuid>
  <source>
    <auth username='libvirt' type='ceph'>
      <secret type='ceph' usage='client.libvirt secret'/>
    </auth>
    <host name='mon1.example.org'/>
    <host name='mon2.example.org' port='3300'/>
    <name>images</name>
  </source>
  <target><path>/not/used</path></target>
  <refresh><volume allocation='default'/></refresh>
  <rbd:config_opts>
    <rbd:option name='rbd_cache' value='true'/>
  </rbd:config_opts>
</pool>
"""
RBD_OUT = doc("""
    <pool type='rbd' xmlns:rbd='http://libvirt.org/schemas/storagepool/rbd/1.0'>
      <name>ceph-images</name>
      <uuid>33333333-4444-5555-6666-777777777777</uuid>
      <capacity unit='bytes'>0</capacity>
      <allocation unit='bytes'>0</allocation>
      <available unit='bytes'>0</available>
      <source>
        <host name='mon1.example.org'/>
        <host name='mon2.example.org' port='3300'/>
        <name>images</name>
        <auth type='ceph' username='libvirt'>
          <secret type='ceph' usage='client.libvirt secret'/>
        </auth>
      </source>
      <refresh>
        <volume allocation='default'/>
      </refresh>
      <rbd:config_opts>
        <rbd:option name='rbd_cache' value='true'/>
      </rbd:config_opts>
    </pool>
""")

ISCSI_DIRECT_IN = """
<pool type='iscsi-direct'>
  <name>lun-pool</name>
  <uuid>44444444-5555-6666-7777-888888888888</uuid>
  <source>
    <initiator><iqn name='iqn.2024-01.org.example:host7'/></initiator>
    <device path='iqn.2024-01.org.example:storage'/>
    <host name='192.0.2.10' port='3260'/>
    <vendor name='acme'/>
  </source>
</pool>
"""
ISCSI_DIRECT_OUT = doc("""
    <pool type='iscsi-direct'>
      <name>lun-pool</name>
      <uuid>44444444-5555-6666-7777-888888888888</uuid>
      <capacity unit='bytes'>0</capacity>
      <allocation unit='bytes'>0</allocation>
      <available unit='bytes'>0</available>
      <source>
        <host name='192.0.2.10' port='3260'/>
        <device path='iqn.2024-01.org.example:storage'/>
        <initiator>
          <iqn name='iqn.2024-01.org.example:host7'/>
        </initiator>
        <vendor name='acme'/>
      </source>
    </pool>
""")

DISK_ZFS_DIR_CASES = [
    (
        """<pool type='disk'><name>vdd</name><uuid>55555555-6666-7777-8888-999999999999</uuid>
             <source><device path='/dev/mapper/data' part_separator='yes'/></source>
             <target><path>/dev</path></target></pool>""",
        """
        <pool type='disk'>
          <name>vdd</name>
          <uuid>55555555-6666-7777-8888-999999999999</uuid>
          <capacity unit='bytes'>0</capacity>
          <allocation unit='bytes'>0</allocation>
          <available unit='bytes'>0</available>
          <source>
            <device path='/dev/mapper/data' part_separator='yes'/>
            <format type='unknown'/>
          </source>
          <target>
            <path>/dev</path>
          </target>
        </pool>
        """,
    ),
    (
        """<pool type='zfs'><name>tank</name><uuid>66666666-7777-8888-9999-aaaaaaaaaaaa</uuid>
           </pool>""",
        """
        <pool type='zfs'>
          <name>tank</name>
          <uuid>66666666-7777-8888-9999-aaaaaaaaaaaa</uuid>
          <capacity unit='bytes'>0</capacity>
          <allocation unit='bytes'>0</allocation>
          <available unit='bytes'>0</available>
          <source>
            <name>tank</name>
          </source>
          <target>
            <path>/dev/zvol/tank</path>
          </target>
        </pool>
        """,
    ),
    (
        # owner 4294967295 is libvirt's (uid_t)-1, i.e. unset.
        """<pool type='dir'><name>scratch</name><uuid>77777777-8888-9999-aaaa-bbbbbbbbbbbb</uuid>
             <features><cow state='no'/></features>
             <target><path>//net/share</path>
               <permissions><owner>4294967295</owner><group>3000</group></permissions>
             </target></pool>""",
        """
        <pool type='dir'>
          <name>scratch</name>
          <uuid>77777777-8888-9999-aaaa-bbbbbbbbbbbb</uuid>
          <capacity unit='bytes'>0</capacity>
          <allocation unit='bytes'>0</allocation>
          <available unit='bytes'>0</available>
          <features>
            <cow state='no'/>
          </features>
          <source>
          </source>
          <target>
            <path>//net/share</path>
            <permissions>
              <group>3000</group>
            </permissions>
          </target>
        </pool>
        """,
    ),
]


@pytest.mark.parametrize(
    ("given_xml", "expected"),
    [
        (NETFS_IN, NETFS_OUT),
        (SCSI_IN, SCSI_OUT),
        (LOGICAL_IN, LOGICAL_OUT),
        (RBD_IN, RBD_OUT),
        (ISCSI_DIRECT_IN, ISCSI_DIRECT_OUT),
        *[(given, doc(expected)) for given, expected in DISK_ZFS_DIR_CASES],
    ],
    ids=["netfs", "scsi-parentaddr", "logical", "rbd", "iscsi-direct", "disk", "zfs", "dir"],
)
def test_pool_golden(given_xml: str, expected: str) -> None:
    assert roundtrip_pool(given_xml) == expected
    assert roundtrip_pool(expected) == expected


def test_pool_without_uuid_gets_a_fresh_one() -> None:
    xml = "<pool type='mpath'><name>m</name><target><path>/dev/mapper</path></target></pool>"
    first, second = parse_storage_pool(xml), parse_storage_pool(xml)
    assert first.uuid != second.uuid
    assert first.target == PoolTarget(path="/dev/mapper")


def test_runtime_sizes_are_formatted_but_never_parsed() -> None:
    pool = parse_storage_pool(NETFS_IN).model_copy(
        update={"capacity": 10, "allocation": 4, "available": 6}
    )
    text = format_storage_pool(pool)
    assert "<capacity unit='bytes'>10</capacity>" in text
    assert "<available unit='bytes'>6</available>" in text
    assert parse_storage_pool(text).capacity == 0


def test_ids_above_int_max_print_unsigned_and_read_back() -> None:
    # libvirt writes uid/gid through an (int) cast, and cannot read that back;
    # virtbus writes them unsigned so that its output always reads back.
    xml = (
        "<pool type='dir'><name>d</name><target><path>/p</path>"
        "<permissions><owner>3000000000</owner></permissions></target></pool>"
    )
    text = roundtrip_pool(xml)
    assert "<owner>3000000000</owner>" in text
    assert roundtrip_pool(text) == text
    with pytest.raises(VirtError, match="malformed owner element"):
        parse_storage_pool(text.replace("3000000000", "-1294967296"))


@pytest.mark.parametrize(
    ("path", "clean"),
    [
        ("/", "/"),
        ("///", "/"),
        ("//", "//"),
        ("//srv//a/", "//srv/a"),
        ("///srv", "/srv"),
        ("a//b/", "a/b"),
        ("gluster://host//vol/", "gluster://host//vol/"),
        ("", ""),
        ("/var/lib/images/a.qcow2", "/var/lib/images/a.qcow2"),
        ("rel/a", "rel/a"),
        ("/a/", "/a"),
    ],
)
def test_sanitize_path(path: str, clean: str) -> None:
    assert sanitize_path(path) == clean


# ---- pool errors ------------------------------------------------------------------

POOL_ERRORS = [
    ("<pool type='dir'><target><path>/a</path></target></pool>", ErrorCode.XML_ERROR,
     "missing pool source name element"),
    ("<pool type='dir'><name>a/b</name><target><path>/a</path></target></pool>",
     ErrorCode.XML_ERROR, "name a/b cannot contain '/'"),
    ("<pool type='tape'><name>t</name></pool>", ErrorCode.XML_ERROR,
     "Invalid value for attribute 'type' in element 'pool': 'tape'."),
    ("<pool><name>t</name></pool>", ErrorCode.XML_ERROR,
     "Missing required attribute 'type' in element 'pool'"),
    ("<volume type='dir'><name>t</name></volume>", ErrorCode.XML_ERROR,
     "expecting root element of 'pool', not 'volume'"),
    ("<pool type='dir'><name>d</name><uuid>not-a-uuid</uuid></pool>", ErrorCode.XML_ERROR,
     "malformed uuid element"),
    ("<pool type='dir'><name>d</name></pool>", ErrorCode.XML_ERROR,
     "missing storage pool target path"),
    ("<pool type='netfs'><name>n</name><source><dir path='/x'/></source></pool>",
     ErrorCode.XML_ERROR, "missing storage pool source host name"),
    ("<pool type='netfs'><name>n</name><source><host name='h'/></source></pool>",
     ErrorCode.XML_ERROR, "missing storage pool source path"),
    ("<pool type='fs'><name>f</name><target><path>/m</path></target></pool>",
     ErrorCode.XML_ERROR, "missing storage pool source device name"),
    ("<pool type='fs'><name>f</name><source><device path='/d'/><format type='ntfs'/></source>"
     "<target><path>/m</path></target></pool>", ErrorCode.CONFIG_UNSUPPORTED,
     "unknown pool format type ntfs"),
    ("<pool type='logical'><name>vg</name><features><cow state='yes'/></features></pool>",
     ErrorCode.NO_SUPPORT, "cow feature may only be used for 'fs' and 'dir' pools"),
    ("<pool type='dir'><name>d</name><features><cow state='maybe'/></features></pool>",
     ErrorCode.XML_ERROR, "Invalid value for attribute 'state' in element 'cow': 'maybe'."),
    ("<pool type='rbd'><name>r</name><source><host name='m'/></source></pool>",
     ErrorCode.XML_ERROR, "element 'name' is mandatory for RBD pool"),
    ("<pool type='iscsi'><name>i</name><source><host name='h'/><device path='t'/>"
     "<auth username='u'><secret usage='x'/></auth></source></pool>",
     ErrorCode.CONFIG_UNSUPPORTED, "storage pool missing auth type"),
    ("<pool type='iscsi'><name>i</name><source><host name='h'/>"
     "<auth type='kerberos' username='u'><secret usage='x'/></auth></source></pool>",
     ErrorCode.CONFIG_UNSUPPORTED, "unknown auth type 'kerberos'"),
    ("<pool type='iscsi'><name>i</name><source><host name='h'/>"
     "<auth type='chap'><secret usage='x'/></auth></source></pool>",
     ErrorCode.XML_ERROR, "missing username for auth"),
    ("<pool type='iscsi'><name>i</name><source><host name='h'/>"
     "<auth type='chap' username='u'/></source></pool>",
     ErrorCode.XML_ERROR, "Missing <secret> element in auth"),
    ("<pool type='iscsi'><name>i</name><source><host name='h'/><auth type='chap' username='u'>"
     "<secret usage='x' uuid='11111111-2222-3333-4444-555555555555'/></auth></source></pool>",
     ErrorCode.XML_ERROR, "either secret uuid or usage expected"),
    ("<pool type='netfs'><name>n</name><source><host name='h'/><dir path='/s'/>"
     "<format type='cifs'/><protocol ver='3'/></source></pool>",
     ErrorCode.CONFIG_UNSUPPORTED, "storage pool protocol ver unsupported for pool type 'cifs'"),
    ("<pool type='netfs'><name>n</name><source><host name='h'/><dir path='/s'/>"
     "<protocol ver='4,rw'/></source></pool>",
     ErrorCode.XML_DETAIL, "storage pool protocol ver '4,rw' must not contain ','"),
    ("<pool type='scsi'><name>s</name><target><path>/d</path></target></pool>",
     ErrorCode.XML_ERROR, "missing storage pool source adapter"),
    ("<pool type='scsi'><name>s</name><source><adapter name='host0' wwnn='1'/></source></pool>",
     ErrorCode.XML_ERROR, "requires use of the adapter 'type'"),
    ("<pool type='scsi'><name>s</name><source><adapter type='fc_host' wwnn='20000000c9831b4b'/>"
     "</source></pool>", ErrorCode.XML_ERROR, "'wwnn' and 'wwpn' must be specified"),
    ("<pool type='scsi'><name>s</name><source><adapter type='fc_host' wwnn='20000000c9831b4b' "
     "wwpn='10000000c9831b4'/></source></pool>", ErrorCode.XML_ERROR,
     "Malformed wwn: 10000000c9831b4"),
    ("<pool type='scsi'><name>s</name><source><adapter type='scsi_host' name='host1'>"
     "<parentaddr unique_id='1'><address bus='1'/></parentaddr></adapter></source></pool>",
     ErrorCode.XML_ERROR, "Both 'name' and 'parent' cannot be specified"),
    ("<pool type='scsi'><name>s</name><source><adapter type='scsi_host'>"
     "<parentaddr unique_id='1'><address slot='0x20'/></parentaddr></adapter></source></pool>",
     ErrorCode.XML_ERROR, "Invalid PCI address slot='0x20', must be <= 0x1F"),
    ("<pool type='scsi'><name>s</name><source><adapter type='scsi_host'>"
     "<parentaddr><address slot='1'/></parentaddr></adapter></source></pool>",
     ErrorCode.XML_ERROR, "Missing or invalid scsi adapter 'unique_id' value"),
    ("<pool type='scsi'><name>s</name><source><adapter type='default' name='h'/></source></pool>",
     ErrorCode.XML_ERROR, "Invalid value for attribute 'type' in element 'adapter'"),
    ("<pool type='iscsi-direct'><name>i</name><source><host name='h'/><device path='t'/>"
     "</source></pool>", ErrorCode.CONFIG_UNSUPPORTED, "missing initiator IQN"),
    ("<pool type='dir'><name>d</name><target><path>/p</path>"
     "<permissions><mode>0800</mode></permissions></target></pool>",
     ErrorCode.XML_ERROR, "malformed octal mode"),
    ("<pool type='dir'><name>d</name><target><path>/p</path>"
     "<permissions><mode>01777</mode></permissions></target></pool>",
     ErrorCode.XML_ERROR, "malformed octal mode"),
    ("<pool type='dir'><name>d</name><target><path>/p</path>"
     "<permissions><owner>root</owner></permissions></target></pool>",
     ErrorCode.XML_ERROR, "malformed owner element"),
    ("<pool type='dir'><name>d</name><target><path>/p</path>"
     "<permissions><group>-2</group></permissions></target></pool>",
     ErrorCode.XML_ERROR, "malformed group element"),
    ("<pool type='disk'><name>d</name><source><device path='/d' part_separator='on'/></source>"
     "<target><path>/dev</path></target></pool>", ErrorCode.XML_ERROR,
     "Invalid value for attribute 'part_separator' in element 'device': 'on'."),
    ("<pool type='netfs'><name>n</name><source><host name='h' port='nfs'/><dir path='/s'/>"
     "</source><target><path>/m</path></target></pool>", ErrorCode.XML_ERROR,
     "Invalid value for attribute 'port' in element 'host': 'nfs'. Expected integer value"),
    ("<pool type='fs'><name>f</name><source><device/></source></pool>",
     ErrorCode.XML_ERROR, "missing storage pool source device path"),
    ("<pool type='rbd' xmlns:rbd='http://libvirt.org/schemas/storagepool/rbd/1.0'><name>r</name>"
     "<source><name>p</name><host name='m'/></source>"
     "<rbd:config_opts><rbd:option name='a'/></rbd:config_opts></pool>",
     ErrorCode.XML_ERROR, "no rbd option value specified for name 'a'"),
    ("<pool type='fs' xmlns:fs='http://libvirt.org/schemas/storagepool/fs/1.0'><name>f</name>"
     "<source><device path='/d'/></source><target><path>/m</path></target>"
     "<fs:mount_opts><fs:option/></fs:mount_opts></pool>",
     ErrorCode.XML_ERROR, "no fs mount option name specified"),
    ("<pool type='rbd'><name>r</name><source><name>p</name><host name='m'/></source>"
     "<refresh><volume allocation='lazy'/></refresh></pool>", ErrorCode.CONFIG_UNSUPPORTED,
     "unknown storage pool volume refresh allocation type lazy"),
]  # fmt: skip


@pytest.mark.parametrize(("xml", "code", "message"), POOL_ERRORS)
def test_pool_errors(xml: str, code: ErrorCode, message: str) -> None:
    with pytest.raises(VirtError) as err:
        parse_storage_pool(xml)
    assert err.value.code is code
    assert message in err.value.message


def test_namespace_elements_of_another_pool_type_are_ignored() -> None:
    xml = (
        "<pool type='dir' xmlns:rbd='http://libvirt.org/schemas/storagepool/rbd/1.0'>"
        "<name>d</name><target><path>/p</path></target>"
        "<rbd:config_opts><rbd:option name='a' value='b'/></rbd:config_opts></pool>"
    )
    assert parse_storage_pool(xml).namespace_options == ()
    assert "xmlns" not in roundtrip_pool(xml)


# ---- volume goldens ---------------------------------------------------------------

DIR_POOL = parse_storage_pool(
    "<pool type='dir'><name>images</name><uuid>88888888-9999-aaaa-bbbb-cccccccccccc</uuid>"
    "<target><path>/var/lib/images</path></target></pool>"
)
DISK_POOL = parse_storage_pool(
    "<pool type='disk'><name>sdz</name><source><device path='/dev/sdz'/></source>"
    "<target><path>/dev</path></target></pool>"
)
LOGICAL_POOL = parse_storage_pool("<pool type='logical'><name>vg0</name></pool>")

QCOW2_IN = """
<volume>
  <target>
    <encryption format='luks'>
      <secret type='passphrase' usage='/var/lib/images/guest.qcow2'/>
      <cipher name='aes' size='128' mode='xts'/>
    </encryption>
    <features><lazy_refcounts/></features>
    <nocow/>
    <clusterSize unit='KiB'>64</clusterSize>
    <permissions><mode>0640</mode><owner>107</owner></permissions>
    <format type='qcow2'/>
    <path>/var/lib/images/guest.qcow2</path>
  </target>
  <allocation unit='MB'>3</allocation>
  <capacity unit='k'>2048</capacity>
  <key>/var/lib/images/guest.qcow2</key>
  <name>guest.qcow2</name>
  <backingStore><path>/var/lib/images/base.img</path></backingStore>
</volume>
"""
QCOW2_OUT = doc("""
    <volume type='file'>
      <name>guest.qcow2</name>
      <key>/var/lib/images/guest.qcow2</key>
      <capacity unit='bytes'>2097152</capacity>
      <allocation unit='bytes'>3000000</allocation>
      <target>
        <path>/var/lib/images/guest.qcow2</path>
        <format type='qcow2'/>
        <permissions>
          <mode>0640</mode>
          <owner>107</owner>
        </permissions>
        <encryption format='luks'>
          <secret type='passphrase' usage='/var/lib/images/guest.qcow2'/>
          <cipher name='aes' size='128' mode='xts'/>
        </encryption>
        <compat>1.1</compat>
        <clusterSize unit='B'>65536</clusterSize>
        <features>
          <lazy_refcounts/>
        </features>
      </target>
      <backingStore>
        <path>/var/lib/images/base.img</path>
        <format type='raw'/>
      </backingStore>
    </volume>
""")

PARTITION_IN = """
<volume type='block'>
  <name>sdz3</name>
  <capacity unit='MiB'>512</capacity>
  <source><device path='/dev/sdz'><extent start='0' end='1'/></device></source>
  <target><path>/dev/sdz3</path></target>
</volume>
"""
PARTITION_OUT = doc("""
    <volume type='block'>
      <name>sdz3</name>
      <capacity unit='bytes'>536870912</capacity>
      <allocation unit='bytes'>536870912</allocation>
      <target>
        <path>/dev/sdz3</path>
        <format type='none'/>
      </target>
    </volume>
""")

LV_IN = """
<volume type='block'>
  <name>root</name>
  <capacity>1073741824</capacity>
  <target>
    <path>/dev/vg0/root</path>
    <format type='qcow2'/>
    <timestamps><atime>1.5</atime></timestamps>
    <compat>0.10</compat>
    <features/>
  </target>
  <backingStore><path>/dev/vg0/origin</path><format type='qcow2'/></backingStore>
</volume>
"""
LV_OUT = doc("""
    <volume type='block'>
      <name>root</name>
      <capacity unit='bytes'>1073741824</capacity>
      <allocation unit='bytes'>1073741824</allocation>
      <target>
        <path>/dev/vg0/root</path>
        <compat>0.10</compat>
        <features/>
      </target>
      <backingStore>
        <path>/dev/vg0/origin</path>
      </backingStore>
    </volume>
""")


@pytest.mark.parametrize(
    ("pool", "given_xml", "expected"),
    [
        (DIR_POOL, QCOW2_IN, QCOW2_OUT),
        (DISK_POOL, PARTITION_IN, PARTITION_OUT),
        (LOGICAL_POOL, LV_IN, LV_OUT),
    ],
    ids=["dir-qcow2", "disk-partition", "logical-lv"],
)
def test_volume_golden(pool: StoragePoolDef, given_xml: str, expected: str) -> None:
    vol = parse_storage_volume(given_xml, pool)
    assert format_storage_volume(pool, vol) == expected
    assert format_storage_volume(pool, parse_storage_volume(expected, pool)) == expected


def test_volume_runtime_fields_are_formatted() -> None:
    vol = parse_storage_volume(PARTITION_IN, DISK_POOL)
    assert vol.extents == () and vol.physical == 0 and vol.has_allocation is False
    text = format_storage_volume(
        DISK_POOL,
        vol.model_copy(
            update={
                "physical": 4096,
                "target": vol.target.model_copy(
                    update={
                        "timestamps": Timestamps(mtime=Timestamp(seconds=1700000000, nanoseconds=5))
                    }
                ),
            }
        ),
    )
    assert "<physical unit='bytes'>4096</physical>" in text
    assert "<mtime>1700000000.000000005</mtime>" in text


def test_capacity_flags() -> None:
    no_capacity = "<volume><name>v</name><target><path>/p</path></target></volume>"
    with pytest.raises(VirtError, match="missing capacity element"):
        parse_storage_volume(no_capacity, DIR_POOL)
    assert parse_storage_volume(no_capacity, DIR_POOL, VolParseFlags.NO_CAPACITY).capacity == 0
    with pytest.raises(VirtError, match="missing capacity element"):
        parse_storage_volume(no_capacity, DIR_POOL, VolParseFlags.OPT_CAPACITY)
    backed = no_capacity.replace(
        "</volume>", "<backingStore><path>/b</path></backingStore></volume>"
    )
    vol = parse_storage_volume(backed, DIR_POOL, VolParseFlags.OPT_CAPACITY)
    assert vol.backing_store == BackingStore(path="/b", format="raw")


def test_volume_repeated_elements_read_first_as_xpath_does() -> None:
    # libvirt reads string(./name), ./target/permissions/owner ... : the first
    # element of a name counts, later ones and namespaced ones are ignored.
    xml = (
        "<volume xmlns:o='urn:o'><o:name>ns</o:name><name>first</name><name>second</name>"
        "<capacity>2</capacity><capacity>3</capacity>"
        "<target><path>/p1</path><path>/p2</path>"
        "<permissions><mode>0640</mode><mode>0777</mode><owner>1</owner><owner>2</owner>"
        "<group>3</group><label>a</label><label>b</label></permissions>"
        "<permissions><mode>0600</mode></permissions></target>"
        "<backingStore><path>/b</path><permissions><owner>5</owner></permissions>"
        "</backingStore></volume>"
    )
    vol = parse_storage_volume(xml, DIR_POOL)
    assert (vol.name, vol.capacity, vol.target.path) == ("first", 2, "/p1")
    assert vol.target.permissions == Permissions(mode=0o640, owner=1, group=3, label="a")
    assert vol.backing_store is not None
    assert vol.backing_store.permissions == Permissions(owner=5)


# ---- volume errors ----------------------------------------------------------------


def _vol(target: str = "", capacity: str = "<capacity>1</capacity>", extra: str = "") -> str:
    return f"<volume><name>v</name>{capacity}<target>{target}</target>{extra}</volume>"


VOLUME_ERRORS = [
    (DIR_POOL, "<volume><capacity>1</capacity></volume>", ErrorCode.XML_ERROR,
     "missing volume name element"),
    (DIR_POOL, _vol(capacity="<capacity unit='KiBB'>1</capacity>"), ErrorCode.INVALID_ARG,
     "unknown suffix 'KiBB'"),
    (DIR_POOL, _vol(capacity="<capacity unit='EiB'>8</capacity>"), ErrorCode.OVERFLOW,
     "value too large: 8EiB"),
    (DIR_POOL, _vol(capacity="<capacity>-5</capacity>"), ErrorCode.XML_ERROR,
     "malformed capacity element"),
    (DIR_POOL, _vol(extra="<allocation>lots</allocation>"), ErrorCode.XML_ERROR,
     "malformed capacity element"),
    (DISK_POOL, _vol("<format type='qcow2'/>"), ErrorCode.CONFIG_UNSUPPORTED,
     "unknown volume format type qcow2"),
    (DIR_POOL, _vol("<format type='none'/>"), ErrorCode.CONFIG_UNSUPPORTED,
     "unknown volume format type none"),
    (DIR_POOL, _vol("<format type='linux-swap'/>"), ErrorCode.CONFIG_UNSUPPORTED,
     "unknown volume format type linux-swap"),
    (DIR_POOL, _vol(extra="<backingStore><path>/b</path><format type='ext4'/></backingStore>"),
     ErrorCode.CONFIG_UNSUPPORTED, "unknown volume format type ext4"),
    (DIR_POOL, "<volume type='tape'><name>v</name><capacity>1</capacity></volume>",
     ErrorCode.CONFIG_UNSUPPORTED, "unknown volume type 'tape'"),
    (DIR_POOL, _vol("<compat>1</compat>"), ErrorCode.XML_ERROR,
     "forbidden characters in 'compat' attribute"),
    (DIR_POOL, _vol("<compat>1.x</compat>"), ErrorCode.XML_ERROR,
     "forbidden characters in 'compat' attribute"),
    (DIR_POOL, _vol("<features><zero_copy/></features>"), ErrorCode.CONFIG_UNSUPPORTED,
     "unsupported feature zero_copy"),
    (DIR_POOL, _vol("<clusterSize>big</clusterSize>"), ErrorCode.XML_ERROR,
     "Invalid value 'big' for element or attribute './target/clusterSize'"),
    (DIR_POOL, _vol("<permissions><mode>rw</mode></permissions>"), ErrorCode.XML_ERROR,
     "malformed octal mode"),
    (DIR_POOL, _vol("<encryption/>"), ErrorCode.XML_ERROR, "unknown volume encryption format"),
    (DIR_POOL, _vol("<encryption format='aes'/>"), ErrorCode.CONFIG_UNSUPPORTED,
     "unknown volume encryption format type aes"),
    (DIR_POOL, _vol("<encryption format='luks' engine='kernel'/>"), ErrorCode.XML_ERROR,
     "Invalid value for attribute 'engine' in element 'encryption': 'kernel'."),
    (DIR_POOL, _vol("<encryption format='luks'><secret uuid='x'/></encryption>"),
     ErrorCode.XML_ERROR, "unknown volume encryption secret type"),
    (DIR_POOL, _vol("<encryption format='luks'><secret type='key' usage='u'/></encryption>"),
     ErrorCode.CONFIG_UNSUPPORTED, "unknown volume encryption secret type key"),
    (DIR_POOL, _vol("<encryption format='luks'><secret type='passphrase'/></encryption>"),
     ErrorCode.XML_ERROR, "missing secret uuid or usage attribute"),
    (DIR_POOL, _vol("<encryption format='luks'><secret type='passphrase' uuid='1234'/>"
                    "</encryption>"), ErrorCode.XML_ERROR, "invalid secret uuid '1234'"),
    (DIR_POOL, _vol("<encryption format='luks'><cipher size='256'/></encryption>"),
     ErrorCode.XML_ERROR, "cipher info missing 'name' attribute"),
    (DIR_POOL, _vol("<encryption format='luks'><cipher name='aes'/></encryption>"),
     ErrorCode.XML_ERROR, "Missing required attribute 'size' in element 'cipher'"),
    (DIR_POOL, _vol("<encryption format='luks'><cipher name='aes' size='-1'/></encryption>"),
     ErrorCode.XML_ERROR, "Invalid value for attribute 'size' in element 'cipher': '-1'."),
    (DIR_POOL, _vol("<encryption format='luks'><ivgen name='plain64'/></encryption>"),
     ErrorCode.XML_ERROR, "ivgen element found, but cipher is missing"),
    (DIR_POOL, _vol("<encryption format='luks'><cipher name='aes' size='1'/><ivgen/>"
                    "</encryption>"), ErrorCode.XML_ERROR, "missing ivgen info name string"),
]  # fmt: skip


@pytest.mark.parametrize(("pool", "xml", "code", "message"), VOLUME_ERRORS)
def test_volume_errors(pool: StoragePoolDef, xml: str, code: ErrorCode, message: str) -> None:
    with pytest.raises(VirtError) as err:
        parse_storage_volume(xml, pool)
    assert err.value.code is code
    assert message in err.value.message


def test_cipher_of_a_non_luks_encryption_is_ignored() -> None:
    node = parse_xml(
        "<encryption format='qcow'><secret type='passphrase' usage='v'/>"
        "<cipher name='aes' size='256'/><ivgen name='plain'/></encryption>"
    )
    enc = parse_encryption(node)
    assert enc.cipher is None and enc.ivgen is None
    w = XmlWriter()
    format_encryption(w, enc)
    assert w.getvalue() == doc("""
        <encryption format='qcow'>
          <secret type='passphrase' usage='v'/>
        </encryption>
    """)


# ---- properties: format(parse(format(m))) == format(m) ----------------------------

_TEXT_ALPHABET = string.ascii_letters + string.digits + " -_.:,=@+&<>'\"/"
text = st.text(_TEXT_ALPHABET, min_size=1, max_size=12)
word = st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=10)
uuids = st.uuids().map(str)
maybe_bool = st.none() | st.booleans()


@st.composite
def paths(draw: st.DrawFn) -> str:
    parts = draw(st.lists(word, min_size=1, max_size=4))
    return sanitize_path("/" + "/".join(parts))


permissions = st.builds(
    Permissions,
    mode=st.none() | st.integers(0, 0o777),
    owner=st.none() | st.integers(0, 2**31 - 1),
    group=st.none() | st.integers(0, 2**31 - 1),
    label=st.none() | text,
)
lookups = st.one_of(
    uuids.map(lambda u: SecretLookup(uuid=u)), text.map(lambda u: SecretLookup(usage=u))
)
wwns = st.text("0123456789abcdefABCDEF", min_size=16, max_size=16)


@st.composite
def adapters(draw: st.DrawFn) -> PoolAdapter:
    kind = draw(st.sampled_from(["name", "parent", "fc"]))
    if kind == "name":
        return PoolAdapter(type=AdapterType.SCSI_HOST, name=draw(word))
    if kind == "parent":
        address = PciAddress(
            domain=draw(st.integers(0, 0xFFFF)),
            bus=draw(st.integers(0, 0xFF)),
            slot=draw(st.integers(0, 0x1F)),
            function=draw(st.integers(0, 7)),
        )
        return PoolAdapter(
            type=AdapterType.SCSI_HOST,
            parentaddr=address,
            unique_id=draw(st.integers(0, 2**31 - 1)),
        )
    parent_pair = draw(st.booleans())
    return PoolAdapter(
        type=AdapterType.FC_HOST,
        wwnn=draw(wwns),
        wwpn=draw(wwns),
        parent=draw(st.none() | word),
        parent_wwnn=draw(wwns) if parent_pair else None,
        parent_wwpn=draw(wwns) if parent_pair else None,
        parent_fabric_wwn=draw(st.none() | wwns),
        managed=draw(maybe_bool),
    )


@st.composite
def pools(draw: st.DrawFn) -> StoragePoolDef:
    """A valid pool definition of any type (runtime-only fields left at rest)."""
    pool_type = draw(st.sampled_from(list(PoolType)))
    info = POOL_TYPES[pool_type]
    parts = info.source
    name = draw(word)
    source_name = draw(word) if SourcePart.NAME in parts else None
    fmt = draw(st.sampled_from(info.pool_formats.names)) if info.pool_formats else None
    index = info.pool_formats.index(fmt) if info.pool_formats and fmt else 0
    hosts = draw(
        st.lists(
            st.builds(PoolSourceHost, name=word, port=st.integers(0, 65535)),
            min_size=1 if SourcePart.HOST in parts else 0,
            max_size=3 if SourcePart.HOST in parts else 0,
        )
    )
    devices = draw(
        st.lists(
            st.builds(PoolSourceDevice, path=paths(), part_separator=maybe_bool),
            min_size=1 if parts == SourcePart.DEVICE else 0,
            max_size=3 if SourcePart.DEVICE in parts else 0,
        )
    )
    iqn = word if info.requires_initiator else st.none() | word
    auth = draw(
        st.none()
        | st.builds(
            PoolAuth,
            type=st.sampled_from(list(AuthType)),
            username=text,
            secret_type=st.none() | word,
            secret=lookups,
        )
    )
    source = PoolSource(
        hosts=tuple(hosts),
        devices=tuple(devices),
        dir=draw(paths()) if SourcePart.DIR in parts else None,
        adapter=draw(adapters()) if SourcePart.ADAPTER in parts else None,
        name=source_name,
        format=fmt,
        initiator_iqn=draw(iqn) if SourcePart.INITIATOR_IQN in parts else None,
        auth=auth,
        protocol_ver=draw(st.none() | word.filter(lambda v: "," not in v)) if index < 2 else None,
        vendor=draw(st.none() | text),
        product=draw(st.none() | text),
    )
    target: PoolTarget | None = None
    if info.has_target:
        template = info.target_path_template
        path = template.format(source_name) if template else draw(paths())
        target = PoolTarget(path=sanitize_path(path), permissions=draw(permissions))
    options: list[NamespaceOption] = []
    if info.namespace is not None:
        value = text if info.namespace.with_value else st.none()
        options = draw(st.lists(st.builds(NamespaceOption, name=text, value=value), max_size=3))
    return StoragePoolDef(
        type=pool_type,
        name=name,
        uuid=draw(uuids),
        cow=draw(maybe_bool) if info.supports_cow else None,
        source=source,
        target=target,
        refresh_allocation=draw(st.none() | st.sampled_from(list(RefreshAllocation))),
        namespace_options=tuple(options),
    )


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(pools())
def test_pool_format_is_a_fixed_point(pool: StoragePoolDef) -> None:
    formatted = format_storage_pool(pool)
    assert format_storage_pool(parse_storage_pool(formatted)) == formatted
    # Parsing is lossless for everything the XML holds.
    assert parse_storage_pool(formatted) == pool


@st.composite
def encryptions(draw: st.DrawFn) -> Encryption:
    fmt = draw(st.sampled_from(list(EncryptionFormat)))
    cipher = ivgen = None
    if fmt is EncryptionFormat.LUKS and draw(st.booleans()):
        cipher = Cipher(
            name=draw(word),
            size=draw(st.integers(0, 2**32 - 1)),
            mode=draw(st.none() | word),
            hash=draw(st.none() | word),
        )
        if draw(st.booleans()):
            ivgen = Ivgen(name=draw(word), hash=draw(st.none() | word))
    secrets = draw(st.lists(st.builds(EncryptionSecret, lookup=lookups), max_size=2))
    return Encryption(
        format=fmt,
        engine=draw(st.none() | st.sampled_from(list(EncryptionEngine))),
        secrets=tuple(secrets),
        cipher=cipher,
        ivgen=ivgen,
    )


VOLUME_POOLS = [
    parse_storage_pool(f"<pool type='{t}'><name>p</name>{rest}</pool>")
    for t, rest in [
        ("dir", "<target><path>/p</path></target>"),
        ("disk", "<source><device path='/dev/x'/></source><target><path>/dev</path></target>"),
        ("logical", ""),
        ("gluster", "<source><name>v</name><host name='h'/></source>"),
        ("iscsi", "<source><host name='h'/></source><target><path>/dev</path></target>"),
    ]
]


@st.composite
def volumes(draw: st.DrawFn) -> tuple[StoragePoolDef, StorageVolumeDef]:
    """A pool and a valid volume definition for it (runtime-only fields left at rest)."""
    pool = draw(st.sampled_from(VOLUME_POOLS))
    formats = pool.info.volume_formats
    accepted = [n for n in formats.names if formats.accepts(n)] if formats else []
    volume_format = st.sampled_from(accepted) if accepted else st.none()
    features = draw(st.none() | st.lists(st.sampled_from(FILE_FEATURES), unique=True))
    compat = draw(st.none() | st.from_regex(r"[0-9]{1,3}\.[0-9]{1,3}", fullmatch=True))
    if features is not None and compat is None:
        compat = "1.1"
    capacity = draw(st.integers(0, 2**63 - 1))
    target = VolumeTarget(
        path=draw(st.none() | paths()),
        format=draw(volume_format),
        permissions=draw(permissions),
        encryption=draw(st.none() | encryptions()),
        compat=compat,
        cluster_size=draw(st.integers(0, 2**40)),
        features=tuple(f for f in FILE_FEATURES if f in features) if features is not None else None,
    )
    backing = draw(
        st.none()
        | st.builds(BackingStore, path=paths(), format=volume_format, permissions=permissions)
    )
    has_allocation = draw(st.booleans())
    vol = StorageVolumeDef(
        name=draw(text),
        key=draw(st.none() | text),
        type=draw(st.sampled_from(list(VolumeType))),
        capacity=capacity,
        allocation=draw(st.integers(0, 2**63 - 1)) if has_allocation else capacity,
        has_allocation=has_allocation,
        target=target,
        backing_store=backing,
    )
    return pool, vol


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(volumes())
def test_volume_format_is_a_fixed_point(
    pool_and_vol: tuple[StoragePoolDef, StorageVolumeDef],
) -> None:
    pool, vol = pool_and_vol
    formatted = format_storage_volume(pool, vol)
    reparsed = parse_storage_volume(formatted, pool)
    assert format_storage_volume(pool, reparsed) == formatted
    # libvirt always reads <allocation> back, so only that flag may differ.
    assert reparsed == vol.model_copy(update={"has_allocation": True})


@given(encryptions())
def test_encryption_format_is_a_fixed_point(enc: Encryption) -> None:
    w = XmlWriter()
    format_encryption(w, enc)
    assert parse_encryption(etree.fromstring(w.getvalue())) == enc
