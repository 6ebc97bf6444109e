"""LUKS volumes whose passphrase the storage service fetches from the secret service."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from client.connection import Client
from client.storage import StorageClient
from services.secret.service import SecretService, SecretSettings
from services.storage.service import StorageService, StorageSettings
from shared.api.storage import BuildMode, VolRef
from shared.util.errors import VirtError

pytestmark = pytest.mark.integration
HOST = "luks-host"
UUID = "6c1f0a3e-2b7d-4e58-9a41-0d2e3f4a5b6c"


@pytest.fixture
async def storage(nats_url: str, nc: NATS, tmp_path: Path) -> AsyncIterator[StorageClient]:
    secret_settings = SecretSettings(
        nats_url=nats_url, state_dir=tmp_path / "secret", host=HOST, secret_key=None
    )
    storage_settings = StorageSettings(nats_url=nats_url, state_dir=tmp_path / "st", host=HOST)
    async with SecretService(secret_settings), StorageService(storage_settings):
        client = StorageClient(nc, HOST)
        await client.pool_create(
            f"<pool type='dir'><name>enc</name><target><path>{tmp_path / 'enc'}</path>"
            "</target></pool>",
            BuildMode.BUILD,
        )
        secrets = Client(nc).secret
        await secrets.define(
            f"<secret ephemeral='no' private='yes'><uuid>{UUID}</uuid>"
            f"<usage type='volume'><volume>{tmp_path / 'enc'}/any</volume></usage></secret>"
        )
        await secrets.set_value(UUID, b"correct horse battery staple")
        yield client


def _luks_xml(name: str, fmt: str, capacity: str = "<capacity unit='M'>16</capacity>") -> str:
    return (
        f"<volume><name>{name}</name>{capacity}<target><format type='{fmt}'/>"
        f"<encryption format='luks'><secret type='passphrase' uuid='{UUID}'/></encryption>"
        "</target></volume>"
    )


def _qemu_info(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], capture_output=True, check=True
    ).stdout
    info: dict[str, object] = json.loads(out)
    return info


async def test_luks_raw_and_qcow2(storage: StorageClient, tmp_path: Path) -> None:
    raw = await storage.vol_create("enc", _luks_xml("disk.luks", "raw"))
    assert _qemu_info(Path(raw.path))["format"] == "luks"
    qcow = await storage.vol_create("enc", _luks_xml("disk.qcow2", "qcow2"))
    info = _qemu_info(Path(qcow.path))
    assert info["format"] == "qcow2" and info["encrypted"] is True
    xml = await storage.vol_dumpxml(VolRef(pool="enc", name="disk.luks"))
    assert f"<secret type='passphrase' uuid='{UUID}'/>" in xml
    # The passphrase files are gone once the volumes exist.
    assert list((tmp_path / "st" / "secrets").iterdir()) == []


async def test_clone_plain_into_luks(storage: StorageClient, tmp_path: Path) -> None:
    await storage.vol_create(
        "enc", "<volume><name>plain.img</name><capacity unit='M'>4</capacity></volume>"
    )
    clone = await storage.vol_create_from(
        "enc", _luks_xml("copy.luks", "raw", ""), VolRef(pool="enc", name="plain.img")
    )
    assert _qemu_info(Path(clone.path))["format"] == "luks"


async def test_unknown_secret_refused(storage: StorageClient) -> None:
    xml = _luks_xml("x.luks", "raw").replace(UUID, "00000000-0000-4000-8000-000000000000")
    with pytest.raises(VirtError, match="no secret with matching uuid"):
        await storage.vol_create("enc", xml)
    assert [v.name for v in await storage.vol_list("enc")] == []
