"""NATS credentials: how a process finds the user it connects as, and how they are made.

A credentials file holds one NATS URL carrying a role's user and password
(``nats://virtbus-admin:...@127.0.0.1:4222``), the text ``virtbus creds ROLE``
prints.  A process takes, in order: the URL's own user and password, the
file given with ``--creds`` or ``VIRTBUS_CREDS``, then ``<role>.creds`` in
the credentials folders (``VIRTBUS_CREDS_DIR``, else the state folder's
``creds/`` and the system one, ``/var/lib/virtbus/creds``), as a local
``virsh`` finds ``qemu:///system``'s socket.

``CredentialStore`` makes them: one random password per role, kept in files
of mode 0600 (0640 with group ``virtbus``, where that group exists, for the
client roles) that survive restarts; deleting a file rotates its password at
the next start.
"""

from __future__ import annotations

import contextlib
import grp
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from shared.util import credfile, roles
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

SUFFIX = credfile.SUFFIX
SYSTEM_DIR = Path(credfile.SYSTEM_DIR)
#: The group whose members may use the client roles of a local stack.
GROUP = "virtbus"
#: Roles whose files the group may read (the services' stay root's only).
GROUP_ROLES = (roles.ADMIN, roles.READONLY)
ENV_FILE = credfile.ENV_FILE
ENV_DIR = credfile.ENV_DIR


@dataclass(frozen=True)
class Credentials:
    """A NATS user and password, and the server they were issued for."""

    user: str
    password: str
    server: str | None = None

    @property
    def role(self) -> str | None:
        """The virtbus role of the user, or None for a user of another naming."""
        prefix = roles.user_name("")
        return self.user[len(prefix) :] if self.user.startswith(prefix) else None

    @property
    def inbox_prefix(self) -> str:
        """The reply inbox prefix this user's permissions allow."""
        role = self.role
        return roles.inbox_prefix(role) if role else "_INBOX"

    def url(self, server: str | None = None) -> str:
        """``server`` (default: the one issued for) with this user and password in it."""
        parts = urlsplit(server or self.server or "nats://127.0.0.1:4222")
        netloc = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}@"
        netloc += parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=netloc))


def split_url(url: str) -> tuple[str, Credentials | None]:
    """The URL without its user and password, and those as credentials."""
    parts = urlsplit(url if "://" in url else "nats://" + url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url, None
    bare = urlunsplit(parts._replace(netloc=hostport))
    user, _, password = userinfo.partition(":")
    return bare, Credentials(unquote(user), unquote(password), bare)


def read_file(path: Path) -> Credentials:
    """The credentials in ``path``.

    Raises ``VirtError`` (``VIR_ERR_AUTH_FAILED``) when it cannot be read or holds none."""
    try:
        text = path.read_text().strip()
    except OSError as err:
        raise VirtError(
            ErrorCode.AUTH_FAILED,
            f"cannot read credentials file '{path}': {err.strerror}",
            ErrorDomain.RPC,
        ) from err
    _, creds = split_url(text)
    if creds is None:
        raise VirtError(
            ErrorCode.AUTH_FAILED,
            f"credentials file '{path}' holds no NATS URL with a user and password",
            ErrorDomain.RPC,
        )
    return creds


def search_dirs() -> list[Path]:
    """Where ``<role>.creds`` files are looked for, in order."""
    return [Path(d) for d in credfile.search_dirs()]


def find(role: str, explicit: Path | None = None) -> Credentials | None:
    """The credentials of ``role``: ``explicit``, ``VIRTBUS_CREDS``, or the first
    readable ``<role>.creds`` of ``search_dirs()``; None when there are none."""
    path = credfile.find_path(role, str(explicit) if explicit else None)
    return read_file(Path(path)) if path else None


def find_stored(role: str) -> Credentials | None:
    """The first readable ``<role>.creds`` of ``search_dirs()``, else None."""
    path = credfile.stored_path(role)
    return read_file(Path(path)) if path else None


def _group_id() -> int | None:
    try:
        return grp.getgrnam(GROUP).gr_gid
    except KeyError:
        return None


def write_private(path: Path, text: str, *, group: int | None = None) -> None:
    """Write ``text`` to ``path`` with mode 0600 (0640 and that group when given),
    never readable by others even for an instant."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    if group is not None:
        os.chown(tmp, -1, group)
        os.chmod(tmp, 0o640)
    os.replace(tmp, path)


class CredentialStore:
    """The credentials of a local stack, one file per role in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, role: str) -> Path:
        return self.folder / (role + SUFFIX)

    def read(self, role: str) -> Credentials:
        """``role``'s credentials; raises ``VirtError`` when it has none yet."""
        return read_file(self.path(role))

    def ensure(self, names: Iterable[str], server: str) -> dict[str, str]:
        """Each role's password, made for the roles that have none yet; every file
        is (re)written to name ``server``.  Returns role -> password."""
        gid = _group_id() if os.geteuid() == 0 else None
        self.folder.mkdir(parents=True, exist_ok=True)
        if gid is not None:
            os.chown(self.folder, -1, gid)
            self.folder.chmod(0o750)
        else:
            self.folder.chmod(0o700)
        passwords: dict[str, str] = {}
        for name in names:
            path = self.path(name)
            password = secrets.token_urlsafe(24)
            with contextlib.suppress(VirtError):
                if path.exists():
                    password = read_file(path).password
            passwords[name] = password
            creds = Credentials(roles.user_name(name), password, server)
            group = gid if name in GROUP_ROLES else None
            write_private(path, creds.url() + "\n", group=group)
        return passwords
