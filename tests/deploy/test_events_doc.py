"""docs/events.md: its AsyncAPI document is valid AsyncAPI 3.0.0, and the events a
live stack publishes match the document's CloudEvent schema."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from nats.aio.client import Client as NATS

from shared.util.events import STREAM
from shared.util.natsserver import free_port
from tests.deploy.upstack import virtbus_up
from tests.integration.cli import virtbus

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = ROOT / "examples" / "js-subscriber"
SPEC = JS_DIR / "node_modules" / "@asyncapi" / "specs" / "schemas" / "3.0.0-without-$id.json"


def asyncapi_document() -> dict[str, Any]:
    text = (ROOT / "docs" / "events.md").read_text()
    [block] = re.findall(r"```yaml\n(asyncapi: .*?)```", text, re.S)
    doc: dict[str, Any] = yaml.safe_load(block)
    return doc


@pytest.fixture(scope="session")
def npm_installed() -> Path:
    """`npm ci` in examples/js-subscriber (nats.js, and AsyncAPI's JSON Schemas)."""
    if shutil.which("npm") is None:
        pytest.skip("npm missing: node 20 and npm are needed for the JavaScript example")
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return JS_DIR


def test_document_is_valid_asyncapi_3(npm_installed: Path) -> None:
    schema = json.loads(SPEC.read_text())
    doc = asyncapi_document()
    assert doc["asyncapi"] == "3.0.0"
    jsonschema.Draft7Validator(schema).validate(doc)
    # And the validator does refuse a broken one.
    broken = dict(doc, operations={"x": {"action": "listen", "channel": {}}})
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def payload_validator() -> jsonschema.Draft202012Validator:
    doc = asyncapi_document()
    schema = {"$ref": "#/components/schemas/CloudEvent", "components": doc["components"]}
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def test_documented_example_matches_the_schema() -> None:
    doc = asyncapi_document()
    [example] = doc["components"]["messages"]["CloudEvent"]["examples"]
    payload_validator().validate(example["payload"])


@pytest.mark.e2e
async def test_live_events_match_the_document(tmp_path: Path) -> None:
    async with virtbus_up(free_port(), tmp_path / "state") as up:
        xml = tmp_path / "s.xml"
        xml.write_text(
            "<secret ephemeral='no' private='no'><usage type='ceph'><name>doc</name>"
            "</usage></secret>"
        )
        uuid = (await virtbus(up.url, "secret-define", str(xml))).out.split()[1]
        assert (await virtbus(up.url, "secret-set-value", uuid, "--base64", "aGVsbG8=")).rc == 0
        assert (await virtbus(up.url, "secret-undefine", uuid)).rc == 0
        pool = tmp_path / "pool"
        pool.mkdir()
        r = await virtbus(up.url, "pool-create-as", "docpool", "dir", "--target", str(pool))
        assert r.rc == 0, r.err
        r = await virtbus(up.url, "vol-create-as", "docpool", "v.img", "1M")
        assert r.rc == 0, r.err
        nc = NATS()
        await nc.connect(up.url, inbox_prefix=up.inbox)
        try:
            js = nc.jetstream()
            sub = await js.subscribe("virtbus.event.>", ordered_consumer=True)
            info = await js.stream_info(STREAM)
            events = []
            for _ in range(info.state.messages):
                msg = await sub.next_msg(timeout=10)
                assert msg.headers is not None
                assert msg.headers["Content-Type"] == "application/cloudevents+json"
                events.append(json.loads(msg.data))
        finally:
            await nc.close()
    validator = payload_validator()
    for event in events:
        validator.validate(event)
    kinds = {(e["data"]["object"], e["data"]["detail"]) for e in events}
    assert {("secret", "Defined"), ("secret", "Undefined"), ("pool", "Started")} <= kinds
    print(
        f"{len(events)} live events match the AsyncAPI CloudEvent schema: {sorted(map(str, kinds))}"
    )
