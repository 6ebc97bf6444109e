"""Where a role's credentials file is, found with nothing but ``os`` (the CLI's
quick path reads it before importing anything heavier).

``find_path`` takes the file given (``--creds``), else ``VIRTBUS_CREDS``,
else the first readable ``<role>.creds`` in ``VIRTBUS_CREDS_DIR``, else in the
state folder's ``creds/`` and ``/var/lib/virtbus/creds``.
"""

from __future__ import annotations

import os

SUFFIX = ".creds"
SYSTEM_DIR = "/var/lib/virtbus/creds"
ENV_FILE = "VIRTBUS_CREDS"
ENV_DIR = "VIRTBUS_CREDS_DIR"


def default_state_dir() -> str:
    """``VIRTBUS_STATE_DIR``, else ``$XDG_STATE_HOME/virtbus`` or
    ``~/.local/state/virtbus`` (``/var/lib/virtbus`` for root)."""
    if os.environ.get("VIRTBUS_STATE_DIR"):
        return os.environ["VIRTBUS_STATE_DIR"]
    if os.geteuid() == 0:
        return "/var/lib/virtbus"
    home = os.path.expanduser("~")
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(home, ".local", "state")
    return os.path.join(base, "virtbus")


def search_dirs() -> list[str]:
    """Where ``<role>.creds`` files are looked for, in order."""
    if os.environ.get(ENV_DIR):
        return [os.environ[ENV_DIR]]
    return list(dict.fromkeys([os.path.join(default_state_dir(), "creds"), SYSTEM_DIR]))


def find_path(role: str, explicit: str | None = None) -> str | None:
    """The credentials file of ``role`` (see the module), or None."""
    return explicit or os.environ.get(ENV_FILE) or stored_path(role)


def stored_path(role: str) -> str | None:
    """The first readable ``<role>.creds`` of ``search_dirs()``, or None."""
    for folder in search_dirs():
        path = os.path.join(folder, role + SUFFIX)
        if os.access(path, os.R_OK):
            return path
    return None
