"""The log's Ed25519 signing key, kept in LEDGER_KEY_FILE (PKCS#8 PEM, mode 0600)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


class KeyFileError(RuntimeError):
    """The key file is missing where it must exist, or others can read it."""


def check_permissions(path: Path) -> None:
    """Refuses a key file its group or others may read, write or execute: only its owner may touch it."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"ledger key file {path} has mode {mode:04o}: its group or others may use it, and anyone who can "
            f"read it can sign ledger checkpoints; make it readable by its owner only: chmod 600 {path}"
        )


def _staged(path: Path, key: Ed25519PrivateKey) -> Path:
    """The key in a fresh owner-only file beside ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    return temporary


def write(path: Path, key: Ed25519PrivateKey) -> None:
    """Writes ``key`` to ``path`` atomically, never readable by anyone but the owner."""
    os.replace(_staged(path, key), path)


def _create(path: Path) -> None:
    """Creates a key at ``path``, unless another process just did: then theirs is the key."""
    temporary = _staged(path, Ed25519PrivateKey.generate())
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink()


def load(path: Path, *, create: bool) -> Ed25519PrivateKey:
    """The key in ``path``; with ``create`` (development) a new one is made when the file is missing."""
    if not path.exists():
        if not create:
            raise KeyFileError(f"ledger key file {path} does not exist; mount the key or set LEDGER_KEY_FILE")
        _create(path)
    check_permissions(path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} does not hold an Ed25519 private key")
    return key


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
