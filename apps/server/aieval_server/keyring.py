"""API keys at rest: encrypted with Fernet, shown only as a short hint."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from .config import Settings


class SecretKeyError(RuntimeError):
    pass


def _key(settings: Settings) -> bytes:
    if settings.secret_key is not None and settings.secret_key.get_secret_value().strip():
        return settings.secret_key.get_secret_value().strip().encode()
    # Embedded default: a key generated once next to the database, readable by this user only.
    path = Path(settings.data_dir) / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key())
    return path.read_bytes().strip()


def cipher(settings: Settings) -> Fernet:
    try:
        return Fernet(_key(settings))
    except (ValueError, TypeError) as exc:
        raise SecretKeyError("AIEVAL_SECRET_KEY must be a Fernet key (32 url-safe base64-encoded bytes)") from exc


def derived_cipher(settings: Settings, purpose: bytes) -> Fernet:
    """A cipher with a key of its own for `purpose`, derived from the secret key (HKDF-SHA256): what one purpose
    encrypts (e.g. a sign-in flow cookie) can never be taken for what another does (a stored API key)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    cipher(settings)  # SecretKeyError when the key is not a Fernet key
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(_key(settings))
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt(settings: Settings, value: str) -> str:
    return cipher(settings).encrypt(value.encode()).decode()


def decrypt(settings: Settings, token: str) -> str:
    try:
        return cipher(settings).decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretKeyError(
            "a stored API key cannot be decrypted with the current secret key (was AIEVAL_SECRET_KEY changed?)"
        ) from None


# Keys shorter than this get no visible characters at all: four of them would be too large a part of the key.
_HINT_MIN_LENGTH = 16


def hint(value: str) -> str:
    """Enough to recognise which key is stored, not enough to help guess it: at most the last 4 characters
    (a prefix such as `sk-proj-` says which service the key is for, and it shortens a guess)."""
    if len(value) < _HINT_MIN_LENGTH:
        return "****"
    return f"…{value[-4:]}"


def shown_hint(stored: str | None) -> str | None:
    """The hint as shown: hints stored by older versions also kept the key's first 3 characters."""
    if stored is None or "…" not in stored:
        return stored
    return "…" + stored.rsplit("…", 1)[1][-4:]
