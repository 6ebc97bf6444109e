"""Secret values at rest: AES-256-GCM, the secret's UUID bound as associated data.

The key is 32 bytes, given base64-encoded in ``VIRTBUS_SECRET_KEY`` or read
from a key file; ``load_key`` creates the file (mode 0600) with a fresh key
when neither exists, which is what the embedded default does on first start.
A ciphertext moved to another secret's record fails to decrypt.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.util.errors import ErrorCode, ErrorDomain, VirtError

KEY_BYTES = 32
_NONCE_BYTES = 12


def _decode_key(text: str, origin: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except binascii.Error as err:
        raise VirtError(
            ErrorCode.CONFIG_UNSUPPORTED, f"{origin}: not base64", ErrorDomain.SECRET
        ) from err
    if len(key) != KEY_BYTES:
        raise VirtError(
            ErrorCode.CONFIG_UNSUPPORTED,
            f"{origin}: the key must be {KEY_BYTES} bytes, not {len(key)}",
            ErrorDomain.SECRET,
        )
    return key


def load_key(key_text: str | None, key_file: Path) -> bytes:
    """The master key from ``key_text`` if given, else ``key_file`` (created if absent)."""
    if key_text:
        return _decode_key(key_text, "VIRTBUS_SECRET_KEY")
    try:
        return _decode_key(key_file.read_text(), str(key_file))
    except FileNotFoundError:
        pass
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(key).decode() + "\n")
    return key


class ValueCipher:
    """Encrypts and decrypts secret values with one master key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, uuid: str, value: bytes) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, value, uuid.encode())
        return base64.b64encode(nonce + sealed).decode()

    def open(self, uuid: str, sealed: str) -> bytes:
        """Raises ``VirtError`` when the value was not sealed with this key for ``uuid``."""
        try:
            raw = base64.b64decode(sealed)
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], uuid.encode())
        except (InvalidTag, ValueError, binascii.Error) as err:
            raise VirtError(
                ErrorCode.INTERNAL_ERROR,
                f"the stored value of secret '{uuid}' cannot be decrypted with this key",
                ErrorDomain.SECRET,
            ) from err
