"""API keys at rest: encrypted with Fernet, shown only as a short hint."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from .config import Settings


class SecretKeyError(RuntimeError):
    pass


def _key(settings: Settings) -> bytes:
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
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


def encrypt(settings: Settings, value: str) -> str:
    return cipher(settings).encrypt(value.encode()).decode()


def decrypt(settings: Settings, token: str) -> str:
    try:
        return cipher(settings).decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretKeyError(
            "a stored API key cannot be decrypted with the current secret key (was AIEVAL_SECRET_KEY changed?)"
        ) from None


def hint(value: str) -> str:
    """Enough to recognise which key is stored, not enough to use it."""
    if len(value) <= 8:
        return "****"
    return f"{value[:3]}…{value[-4:]}"
