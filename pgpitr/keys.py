"""Encryption keys of an encrypted repository: where they come from, how they are named.

A key is 32 random bytes, written as 64 hex digits (``openssl rand -hex 32``) or in base64, one
per line in a key file (blank lines and ``#`` comments are skipped).  The first key is the
*current* one, which new objects are encrypted with; the others are older keys, kept so that
objects encrypted with them stay readable (rotation: put a new key on the first line, keep the
old ones below it).  Each key is named by its *key id*, a truncated HMAC of the key under a fixed
label: an object's header carries the id of its key, so a wrong key is told apart from damage
before anything is decrypted, and the id says nothing about the key.

Where the keys are read from, in order:

1. the key file a cluster recorded when it was created (``ClusterState.encryption_key_file``):
   PostgreSQL's archive and restore commands read it, as the server's OS user;
2. ``PGPITR_ENCRYPTION_KEY_FILE``, the file named in the environment;
3. ``PGPITR_ENCRYPTION_KEY``, the keys themselves in the environment (for the CLI only: the WAL
   commands need a file, which is why creating an encrypted cluster asks for one).

A key file must not be readable by group or others (mode 0600, checked on every read).  A key
is never written anywhere by pgpitr: not in the repository, cluster.json, a flow parameter, a
log or an error message (the path of the file, which is no secret, is).

Standard library only: the WAL commands load the keys once per call.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from pgpitr.errors import EncryptionKeyError

ENV_FILE = "PGPITR_ENCRYPTION_KEY_FILE"
ENV_KEY = "PGPITR_ENCRYPTION_KEY"
KEY_BYTES = 32
_ID_LABEL = b"pgpitr encryption key id v1"
_EXAMPLE = "openssl rand -hex 32 > KEYFILE; chmod 600 KEYFILE"


def key_id(key: bytes) -> str:
    """The public name of a key: 16 hex digits of HMAC-SHA256(key, a fixed label)."""
    return hmac.new(key, _ID_LABEL, hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class Keyring:
    """The keys of a repository, the current one first.  Its repr shows ids, never keys."""

    keys: tuple[bytes, ...] = field(repr=False)
    #: where the keys came from, for messages: "the key file /etc/pgpitr/key", never a key
    source: str = ""

    def __post_init__(self) -> None:
        if not self.keys:
            raise EncryptionKeyError(f"{self.source} holds no key", hint=_EXAMPLE)

    @property
    def current(self) -> bytes:
        return self.keys[0]

    @property
    def current_id(self) -> str:
        return key_id(self.keys[0])

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(key_id(k) for k in self.keys)

    def by_id(self, wanted: str) -> bytes | None:
        for key in self.keys:
            if hmac.compare_digest(key_id(key), wanted):
                return key
        return None

    def __repr__(self) -> str:
        return f"Keyring(ids={self.ids}, source={self.source!r})"


def parse_keys(text: str, source: str) -> Keyring:
    """Keys one per line (or separated by white space or commas in the environment)."""
    keys: list[bytes] = []
    entries = [line.split("#", 1)[0].replace(",", " ") for line in text.splitlines()]
    for number, entry in enumerate(entries, 1):
        for word in entry.split():
            keys.append(_decode(word, f"line {number} of {source}"))
    return Keyring(tuple(keys), source)


def _decode(word: str, where: str) -> bytes:
    # never quote the word: it may be a key with one character wrong
    key: bytes | None = None
    if len(word) == 2 * KEY_BYTES:
        try:
            key = bytes.fromhex(word)
        except ValueError:
            key = None
    if key is None:
        try:
            key = base64.b64decode(word, validate=True)
        except (binascii.Error, ValueError):
            key = None
    if key is None or len(key) != KEY_BYTES:
        raise EncryptionKeyError(
            f"{where} is not an encryption key: expected 32 bytes as 64 hex digits or base64",
            hint=f"make one with `{_EXAMPLE}`",
        )
    return key


def read_key_file(path: Path | str) -> Keyring:
    """The keys in ``path``; refused when group or others may read it, or it holds none."""
    path = Path(path)
    source = f"the key file {path}"
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            raw = f.read()
    except FileNotFoundError:
        raise EncryptionKeyError(
            f"{source} does not exist", hint=f"create it (`{_EXAMPLE}`) or fix {ENV_FILE}"
        ) from None
    except PermissionError:
        raise EncryptionKeyError(
            f"{source} is not readable by this user ({_whoami()})",
            hint="the server's OS user runs the WAL commands: make it the file's owner, mode 0600",
        ) from None
    except OSError as exc:
        raise EncryptionKeyError(f"cannot read {source}: {os.strerror(exc.errno or 0)}") from None
    if mode & 0o077:
        raise EncryptionKeyError(
            f"{source} may be read by group or others (mode {stat.S_IMODE(mode):04o})",
            hint=f"chmod 600 {path}",
        )
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise EncryptionKeyError(
            f"{source} is not text: expected keys as 64 hex digits, one per line", hint=_EXAMPLE
        ) from None
    return parse_keys(text, source)


def _whoami() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def env_key_file() -> Path | None:
    """The key file named by the environment, made absolute (it is recorded as it is)."""
    value = os.environ.get(ENV_FILE)
    return Path(value).absolute() if value else None


def load(repository: str, key_file: Path | str | None = None) -> Keyring:
    """The keys of the encrypted repository ``repository`` (its display, for the message):
    from ``key_file`` (what a cluster recorded), else the environment."""
    if key_file:
        return read_key_file(key_file)
    named = env_key_file()
    if named is not None:
        return read_key_file(named)
    if os.environ.get(ENV_KEY):
        return parse_keys(os.environ[ENV_KEY], ENV_KEY)
    raise missing(repository)


def missing(repository: str) -> EncryptionKeyError:
    return EncryptionKeyError(
        f"repository {repository} is encrypted: set {ENV_FILE} to the file holding its key "
        f"(or {ENV_KEY} to the key)",
        hint=f"the key is never stored in the repository; a new one is made with `{_EXAMPLE}`",
    )


def encrypted_but_plain(repository: str, key: str) -> EncryptionKeyError:
    """The error of reading an encrypted object through a repository opened without a key."""
    return EncryptionKeyError(
        f"repository {repository} is encrypted (object {key}): open it with "
        f"?encryption=aes-256-gcm in its URL and set {ENV_FILE} to the file holding its key",
        hint="the key is never stored in the repository; use the key file it was created with",
    )


def key_file_for_server(repository: str, recorded: str | None = None) -> Path:
    """The key file a cluster archiving into the encrypted ``repository`` records: the one it
    already has, else the environment's; checked to hold keys and to be mode 0600.  (That the
    server's OS user can read it is checked by the caller, which knows that user.)"""
    path = Path(recorded) if recorded else env_key_file()
    if path is None:
        if os.environ.get(ENV_KEY):
            raise EncryptionKeyError(
                f"repository {repository} is encrypted and PostgreSQL's archive and restore "
                f"commands read its key from a file: set {ENV_FILE} (not {ENV_KEY})",
                hint=f"write the key to a file the server's OS user owns: `{_EXAMPLE}`",
            )
        raise missing(repository)
    read_key_file(path)
    return path
