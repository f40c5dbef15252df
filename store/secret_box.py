"""Secrets at rest (SPEC §5 `SECRET_KEY`): an account's TOTP secret is stored sealed with Fernet
(AES-128-CBC and HMAC-SHA256, from `cryptography`) under a key derived from TRANSFER_SECRET_KEY, so a copy
of the database alone cannot mint verification codes."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken

from domain.attestation import derive_key

SEALED_PREFIX = "fernet:"
# The key of a Database's box in its sessions' `info`.
SECRET_BOX = "secret_box"


class SecretBox:
    def __init__(self, secret_key: str) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(derive_key(secret_key, "secrets-at-rest")))

    def seal(self, secret: str) -> str:
        return SEALED_PREFIX + self._fernet.encrypt(secret.encode()).decode()

    def seal_bytes(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def open_bytes(self, sealed: bytes) -> bytes:
        return self._fernet.decrypt(sealed)

    def open(self, sealed: str) -> str:
        if not is_sealed(sealed):
            raise ValueError("a secret at rest that is not sealed: run `transfer migrate` with its key")
        try:
            return self._fernet.decrypt(sealed.removeprefix(SEALED_PREFIX).encode()).decode()
        except InvalidToken:
            raise ValueError("a secret sealed under another TRANSFER_SECRET_KEY") from None


def is_sealed(value: str) -> bool:
    return value.startswith(SEALED_PREFIX)
