"""Process settings from command-line flags and ``VIRTBUS_*`` environment variables.

Precedence: a flag given on the command line, then the environment variable
``VIRTBUS_<FIELD>`` (upper case), then the field's default.  Each process
declares its settings as a pydantic model derived from ``ProcessSettings``;
``load_settings`` builds the argument parser from the model's fields, so a
new setting needs only a field with a description.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError

from shared.util import credfile

ENV_PREFIX = "VIRTBUS_"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def default_state_dir() -> Path:
    """``VIRTBUS_STATE_DIR``, else ``$XDG_STATE_HOME/virtbus`` or
    ``~/.local/state/virtbus`` (``/var/lib/virtbus`` for root)."""
    return Path(credfile.default_state_dir())


class ProcessSettings(BaseModel):
    """Settings every virtbus process has."""

    nats_url: str = Field(DEFAULT_NATS_URL, description="NATS server URL (also NATS_URL)")
    host: str = Field(default_factory=socket.gethostname, description="this host's name")
    http_host: str = Field("127.0.0.1", description="address of /metrics, /healthz, /readyz")
    http_port: int = Field(0, ge=0, le=65535, description="port of the HTTP endpoints (0: any)")
    state_dir: Path = Field(default_factory=default_state_dir, description="state folder")
    nats_connect_timeout: float = Field(
        30.0, gt=0, description="seconds to wait for NATS when starting"
    )
    stream_replicas: int = Field(
        1, ge=1, le=5, description="replicas of the streams this process creates"
    )
    creds: Path | None = Field(
        None, description="NATS credentials file (default: <role>.creds of the credentials folder)"
    )
    tls_ca: Path | None = Field(None, description="CA certificate that signs the NATS server's")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_format: str = Field("json", description="json or text")


S = TypeVar("S", bound=ProcessSettings)


def load_settings(
    model: type[S],
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    prog: str | None = None,
) -> S:
    """Build ``model`` from flags (``--nats-url``), then ``VIRTBUS_NATS_URL``, then defaults.

    Exits with argparse's usage error (status 2) on a bad flag or value.
    """
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog=prog)
    for name, field in model.model_fields.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, help=field.description)
    args = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    for name in model.model_fields:
        if args.get(name) is not None:
            values[name] = args[name]
        elif ENV_PREFIX + name.upper() in env:
            values[name] = env[ENV_PREFIX + name.upper()]
        elif name == "nats_url" and "NATS_URL" in env:
            values[name] = env["NATS_URL"]
    try:
        return model.model_validate(values)
    except ValidationError as err:
        first = err.errors()[0]
        parser.error(f"invalid --{'-'.join(map(str, first['loc']))}: {first['msg']}")
