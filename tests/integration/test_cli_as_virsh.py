"""Scenarios replayed against virtbus, compared with what virsh 9.0.0 printed for
the same command lines (tests/data/virsh/scenarios.json, recorded by
tests/data/virsh/capture.py): every mismatch found side by side with virsh has a
step here."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.secret.service import SecretService, SecretSettings
from services.storage.service import StorageService, StorageSettings
from tests.integration.cli import virtbus

pytestmark = pytest.mark.integration
SCENARIOS = json.loads(
    (Path(__file__).parents[1] / "data" / "virsh" / "scenarios.json").read_text()
)


@pytest.fixture
async def url(nats_url: str, tmp_path: Path) -> AsyncIterator[str]:
    secret = SecretSettings(nats_url=nats_url, state_dir=tmp_path / "secret")
    storage = StorageSettings(nats_url=nats_url, state_dir=tmp_path / "storage", host="h1")
    async with SecretService(secret), StorageService(storage):
        yield nats_url


def _word(word: str) -> str:
    return word.encode().decode("unicode_escape") if "\\x" in word else word


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_scenario_prints_what_virsh_printed(url: str, name: str) -> None:
    # The same length as the folder virsh ran in, so that tables keep their widths.
    folder = tempfile.mkdtemp(prefix="vbscn-", dir="/tmp")
    try:
        ours, theirs = [], []
        for recorded in SCENARIOS[name]:
            kind, *words = recorded["step"]
            if kind == "sh":
                subprocess.run(["sh", "-c", words[0].replace("{dir}", folder)], check=True,
                               capture_output=True)  # fmt: skip
                continue
            argv = [_word(w).replace("{dir}", folder) for w in words]
            r = await virtbus(url, *argv)
            ours.append(
                [words, r.rc, r.out.replace(folder, "{dir}"), r.err.replace(folder, "{dir}")]
            )
            theirs.append([words, recorded["rc"], recorded["out"], recorded["err"]])
        wrong = [
            f"ours:   {o!r}\nvirsh's: {t!r}" for o, t in zip(ours, theirs, strict=True) if o != t
        ]
        assert not wrong, "\n".join(wrong)
    finally:
        subprocess.run(["rm", "-rf", folder], check=False)


async def test_secret_service_answers_odd_uuid_texts_without_a_traceback(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """virsh refuses them before asking (the CLI too, in ``lookup_by_uuid``); a
    client that asks anyway gets "not found", and the service logs no error."""
    from client.connection import Client
    from shared.util.errors import ErrorCode, VirtError

    async with await Client.connect(url) as client:
        for text in ("a b", "not-a-uuid", "x.y>z", ""):
            with pytest.raises(VirtError) as info:
                await client.secret.dumpxml(text)
            assert info.value.code is ErrorCode.NO_SECRET, text
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
