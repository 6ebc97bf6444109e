"""The one error type of virtbus, carrying libvirt's error numbers, names and domains.

``VirtError`` is raised by services, by ``shared.conf`` parsers and, on the client
side, for every error reply that crosses the bus.  Its fields are exactly what
libvirt's ``virError`` exposes to a caller: ``code`` (a ``virErrorNumber``),
``domain`` (a ``virErrorDomain``) and a readable ``message``.  The numbers are
libvirt's own, so a tool that knows libvirt's codes can act on ours.
"""

from __future__ import annotations

import enum
from typing import Any


class ErrorCode(enum.IntEnum):
    """libvirt's ``virErrorNumber`` values that virtbus raises or passes on."""

    OK = 0
    INTERNAL_ERROR = 1
    NO_MEMORY = 2
    NO_SUPPORT = 3
    NO_CONNECT = 5
    INVALID_ARG = 8
    OPERATION_FAILED = 9
    NO_SOURCE = 19
    NO_TARGET = 20
    NO_NAME = 21
    XML_ERROR = 27
    OPERATION_DENIED = 29
    OPEN_FAILED = 30
    READ_FAILED = 31
    PARSE_FAILED = 32
    WRITE_FAILED = 34
    XML_DETAIL = 35
    INVALID_NETWORK = 36
    NETWORK_EXIST = 37
    SYSTEM_ERROR = 38
    RPC = 39
    NO_DOMAIN = 42
    NO_NETWORK = 43
    INVALID_MAC = 44
    AUTH_FAILED = 45
    INVALID_STORAGE_POOL = 46
    INVALID_STORAGE_VOL = 47
    NO_STORAGE_POOL = 49
    NO_STORAGE_VOL = 50
    OPERATION_INVALID = 55
    INVALID_NWFILTER = 61
    NO_NWFILTER = 62
    BUILD_FIREWALL = 63
    INVALID_SECRET = 65
    NO_SECRET = 66
    CONFIG_UNSUPPORTED = 67
    OPERATION_TIMEOUT = 68
    INVALID_STREAM = 73
    ARGUMENT_UNSUPPORTED = 74
    STORAGE_PROBE_FAILED = 75
    STORAGE_POOL_BUILT = 76
    OPERATION_ABORTED = 78
    OVERFLOW = 82
    BLOCK_COPY_ACTIVE = 83
    OPERATION_UNSUPPORTED = 84
    RESOURCE_BUSY = 87
    ACCESS_DENIED = 88
    STORAGE_VOL_EXIST = 90
    XML_INVALID_SCHEMA = 92
    NO_SERVER = 95
    DEVICE_MISSING = 99
    INVALID_NWFILTER_BINDING = 100
    NO_NWFILTER_BINDING = 101


class ErrorDomain(enum.IntEnum):
    """libvirt's ``virErrorDomain`` values: which part of the system raised the error."""

    NONE = 0
    XML = 5
    DOM = 6
    RPC = 7
    CONF = 9
    QEMU = 10
    NET = 11
    STORAGE = 18
    NETWORK = 19
    DOMAIN = 20
    SECURITY = 24
    SECRET = 30
    NWFILTER = 33
    STREAMS = 38
    EVENT = 40
    FIREWALL = 59


# libvirt's generic prefix for each code, as virErrorMsg() words it; the message
# the user sees is "<prefix>: <detail>", exactly as virsh prints it.
_PREFIX: dict[ErrorCode, str] = {
    ErrorCode.INTERNAL_ERROR: "internal error",
    ErrorCode.NO_SUPPORT: "this function is not supported by the connection driver",
    ErrorCode.INVALID_ARG: "invalid argument",
    ErrorCode.OPERATION_FAILED: "operation failed",
    ErrorCode.XML_ERROR: "XML error",
    ErrorCode.XML_DETAIL: "XML error",
    ErrorCode.OPERATION_DENIED: "operation forbidden",
    ErrorCode.NETWORK_EXIST: "operation failed",
    ErrorCode.INVALID_NETWORK: "invalid network pointer in",
    ErrorCode.NO_NETWORK: "Network not found",
    ErrorCode.NO_DOMAIN: "Domain not found",
    ErrorCode.INVALID_MAC: "invalid MAC address",
    ErrorCode.AUTH_FAILED: "authentication failed",
    ErrorCode.NO_STORAGE_POOL: "Storage pool not found",
    ErrorCode.NO_STORAGE_VOL: "Storage volume not found",
    ErrorCode.INVALID_STORAGE_POOL: "invalid storage pool pointer in",
    ErrorCode.INVALID_STORAGE_VOL: "invalid storage volume pointer in",
    ErrorCode.OPERATION_INVALID: "Requested operation is not valid",
    ErrorCode.NO_NWFILTER: "Network filter not found",
    ErrorCode.INVALID_NWFILTER: "Invalid network filter",
    ErrorCode.BUILD_FIREWALL: "Error while building firewall",
    ErrorCode.INVALID_SECRET: "Invalid secret",
    ErrorCode.NO_SECRET: "Secret not found",
    ErrorCode.CONFIG_UNSUPPORTED: "unsupported configuration",
    ErrorCode.OPERATION_TIMEOUT: "Timed out during operation",
    ErrorCode.ARGUMENT_UNSUPPORTED: "argument unsupported",
    ErrorCode.STORAGE_PROBE_FAILED: "Storage pool probe failed",
    ErrorCode.STORAGE_POOL_BUILT: "Storage pool already built",
    ErrorCode.OPERATION_ABORTED: "operation aborted",
    ErrorCode.BLOCK_COPY_ACTIVE: "block copy still active",
    ErrorCode.OPERATION_UNSUPPORTED: "Operation not supported",
    ErrorCode.RESOURCE_BUSY: "resource busy",
    ErrorCode.ACCESS_DENIED: "access denied",
    ErrorCode.STORAGE_VOL_EXIST: "storage volume already exists",
    ErrorCode.NO_SERVER: "Server not found",
    ErrorCode.NO_NWFILTER_BINDING: "Network filter binding not found",
    ErrorCode.INVALID_NWFILTER_BINDING: "Invalid network filter binding",
    ErrorCode.OVERFLOW: "numerical overflow",
}


class VirtError(Exception):
    """An error as libvirt reports it: code, domain and a readable message.

    Raise it with a code and the detail; ``str(err)`` gives the full line virsh
    would print after ``error: ``.  ``raw=True`` keeps ``message`` as given,
    without the code's generic prefix (used when re-creating an error that
    crossed the bus, whose message is already complete).
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        domain: ErrorDomain = ErrorDomain.NONE,
        *,
        raw: bool = False,
    ) -> None:
        self.code = ErrorCode(code)
        self.domain = ErrorDomain(domain)
        prefix = _PREFIX.get(self.code)
        self.message = message if raw or prefix is None else f"{prefix}: {message}"
        super().__init__(self.message)

    @property
    def name(self) -> str:
        """libvirt's name of the code, e.g. ``VIR_ERR_NO_SECRET``."""
        return f"VIR_ERR_{self.code.name}"

    @property
    def domain_name(self) -> str:
        """libvirt's name of the domain, e.g. ``VIR_FROM_SECRET``."""
        return f"VIR_FROM_{self.domain.name}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of an error reply."""
        return {
            "code": int(self.code),
            "name": self.name,
            "domain": int(self.domain),
            "domain_name": self.domain_name,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VirtError:
        """Re-create an error from the JSON body of an error reply."""
        try:
            code = ErrorCode(int(data["code"]))
        except (KeyError, ValueError, TypeError):
            code = ErrorCode.INTERNAL_ERROR
        try:
            domain = ErrorDomain(int(data.get("domain", 0)))
        except (ValueError, TypeError):
            domain = ErrorDomain.NONE
        return cls(code, str(data.get("message", "unknown error")), domain, raw=True)

    def __repr__(self) -> str:
        return f"VirtError({self.name}, {self.domain_name}, {self.message!r})"


def xml_error(detail: str, domain: ErrorDomain = ErrorDomain.XML) -> VirtError:
    """A document that is not well-formed XML, or not the element expected."""
    return VirtError(ErrorCode.XML_ERROR, detail, domain)


def xml_detail(detail: str, domain: ErrorDomain = ErrorDomain.XML) -> VirtError:
    """A well-formed document whose content libvirt's parser rejects."""
    return VirtError(ErrorCode.XML_DETAIL, detail, domain)


def config_unsupported(detail: str, domain: ErrorDomain = ErrorDomain.XML) -> VirtError:
    """A valid construct that this configuration does not support."""
    return VirtError(ErrorCode.CONFIG_UNSUPPORTED, detail, domain)


def no_space(what: str, detail: str) -> VirtError:
    """A change refused for lack of room (disk, stream or account limits)."""
    return VirtError(
        ErrorCode.SYSTEM_ERROR,
        f"cannot store {what}: No space left on device ({detail})",
        ErrorDomain.NONE,
        raw=True,
    )


def not_private(what: str) -> VirtError:
    """The refusal to send ``what`` over a connection that is neither TLS nor
    loopback (``shared.util.bus.require_private_channel``, and the CLI's quick
    path, which must not import the bus)."""
    return VirtError(
        ErrorCode.OPERATION_DENIED,
        f"{what} travel only over TLS or loopback; connect with a tls:// URL",
        ErrorDomain.RPC,
    )


def send_refused(subject: str) -> VirtError:
    """The server's permissions refused a request to ``subject``
    (``shared.util.bus.request``, and the CLI's quick path)."""
    return VirtError(
        ErrorCode.ACCESS_DENIED, f"this user may not send to {subject}", ErrorDomain.RPC
    )
