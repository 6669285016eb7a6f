"""Encryption at rest: a repository that encrypts every object of the backend it wraps.

``EncryptedRepository`` implements the driver surface over another repository (file or S3), so
documents, WAL, backup tar streams, manifests and any index are encrypted without their code
knowing: ``_write_atomic`` encrypts the chunks on their way to the backend, ``_open_read`` hands
back a decrypting reader, and listing, stat and delete pass through (keys and sizes are the
stored ones: object names are not secret, as in pgBackRest and WAL-G).

Stored format of one object (version 2), streamed, never buffered whole::

    header   magic "PGPITRE\\x00" | version 2 | algorithm 1 (aes-256-gcm) | chunk size (u32 BE)
             | key id (8 bytes) | name digest (8 bytes) | salt (16 random bytes)  = 46 bytes
    chunks   AES-256-GCM(object key, nonce = chunk number (96-bit BE),
                         plaintext of chunk-size bytes (the last one shorter, maybe empty),
                         associated data = header | final flag (1 on the last chunk, else 0)
                                           | the object's repository key (UTF-8))
             each chunk-size + 16 bytes, the last one shorter

The repository key ("STANZA/backups/NAME/backup.json", "STANZA/wal/…/SEGMENT-SHA.zst") is
the one within the repository, without the bucket, prefix or directory the URL names: a whole
repository copied elsewhere still reads, but an object swapped with another, renamed or copied
under another name fails authentication.  The name digest (the first 8 bytes of the key's
SHA-256) adds no protection (the key itself is in the associated data); it lets the reader say
"written under another name" (TamperedObject) before decrypting, instead of "damaged".

Version 1 (38-byte header without the name digest, associated data without the key) was
written before names were bound.  It is still read, so repositories written before keep
working, but such an object can be renamed unnoticed until it is rewritten.

What the binding cannot see is an object replaced by an older version of itself (same name,
same encryption key): nothing in the repository can tell the newest version without a record
kept elsewhere.  Most objects have only one version (WAL and history files, named by their
checksum; data objects; archive info); a backup manifest has two (InProgress, then its end,
and the InProgress one never counts as a backup); the catalog index is a hint that readers
check against listings (pgpitr/wal/index/).  A backup put back from an earlier cluster of
the same name is told apart by its system identifier (restore's plan, manifest.check_system).

The object key is HKDF-SHA256(master key, salt, "pgpitr object v1"): a fresh random key per
object, so the chunk counter never repeats a nonce under one key, whatever the number of objects.
The header is authenticated with every chunk (a changed chunk size, salt or key id fails), the
counter fixes each chunk's place (reordered chunks fail) and the final flag marks the end (an
object truncated at a chunk boundary, or with chunks added, fails).  A failure is a
ChecksumMismatch naming the object, as for any damaged object.  The key id is checked before
anything is decrypted, so a wrong key is reported as one.

``cryptography`` is imported only when an encrypted repository is opened: a plain repository's
WAL commands never load it.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from pgpitr.errors import ChecksumMismatch, EncryptionKeyError, RepositoryError, TamperedObject
from pgpitr.repository.base import ENCRYPTED_MAGIC, ObjectInfo, Repository

if TYPE_CHECKING:
    from pgpitr.keys import Keyring

MAGIC = ENCRYPTED_MAGIC
VERSION = 2
#: the format written before names were bound: still read, written only on request (tests)
UNBOUND_VERSION = 1
ALGORITHMS = {"aes-256-gcm": 1}
CHUNK = 1 << 20
TAG = 16
SALT = 16
_HEADERS = {
    UNBOUND_VERSION: struct.Struct(">8sBBI8s16s"),
    VERSION: struct.Struct(">8sBBI8s8s16s"),  # the name digest before the salt
}
#: the header of the objects written now
HEADER_SIZE = _HEADERS[VERSION].size
#: what every version's header starts with: magic, version, algorithm, chunk size, key id
_COMMON = struct.Struct(">8sBBI8s")
_INFO = b"pgpitr object v1"
_DAMAGED_HINT = "the copy in the repository is unusable; restore from another backup"


def is_encrypted(head: bytes) -> bool:
    """Whether stored bytes start like an object of an encrypted repository."""
    return head.startswith(MAGIC)


def _primitives() -> Any:
    # imported on use: the WAL commands of a plain repository must not pay for it
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return AESGCM, HKDF, hashes, InvalidTag


def _object_cipher(master: bytes, salt: bytes) -> Any:
    aesgcm, hkdf, hashes, _ = _primitives()
    key = hkdf(algorithm=hashes.SHA256(), length=32, salt=salt, info=_INFO).derive(master)
    return aesgcm(key)


def _nonce(counter: int) -> bytes:
    return counter.to_bytes(12, "big")


def name_digest(name: str) -> bytes:
    """What a version-2 header records of the object's repository key (see the module)."""
    return hashlib.sha256(name.encode()).digest()[:8]


def _associated(header: bytes, name: str) -> tuple[bytes, bytes]:
    """The associated data of the middle chunks and of the last one (byte 8 is the version)."""
    bound = name.encode() if header[8] >= VERSION else b""
    return header + b"\x00" + bound, header + b"\x01" + bound


def encrypt_chunks(
    keyring: Keyring,
    chunks: Iterable[bytes],
    chunk_size: int = CHUNK,
    *,
    name: str,
    version: int = VERSION,
) -> Iterator[bytes]:
    """The stored form of the byte stream ``chunks`` to be stored under the repository key
    ``name``: the header, then sealed chunks.  ``version=UNBOUND_VERSION`` writes the old
    format, which does not bind the name: only tests ask for it, to prove it still reads."""
    salt = os.urandom(SALT)
    fields = [MAGIC, version, ALGORITHMS["aes-256-gcm"], chunk_size]
    fields.append(bytes.fromhex(keyring.current_id))
    if version >= VERSION:
        fields.append(name_digest(name))
    header = _HEADERS[version].pack(*fields, salt)
    cipher = _object_cipher(keyring.current, salt)
    middle, last = _associated(header, name)
    yield header
    counter = 0
    pending = bytearray()
    for chunk in chunks:
        pending += chunk
        # a chunk is sealed only once more follows: the last one carries the final flag
        while len(pending) > chunk_size:
            yield cipher.encrypt(_nonce(counter), bytes(pending[:chunk_size]), middle)
            del pending[:chunk_size]
            counter += 1
    yield cipher.encrypt(_nonce(counter), bytes(pending), last)


class EncryptedRepository(Repository):
    """Every object of ``inner`` encrypted with the keys of ``keyring`` (see the module)."""

    def __init__(
        self,
        inner: Repository,
        keyring: Keyring,
        algorithm: str = "aes-256-gcm",
        chunk_size: int = CHUNK,
    ) -> None:
        if algorithm not in ALGORITHMS:
            raise RepositoryError(f"unknown encryption {algorithm!r}: expected aes-256-gcm")
        _primitives()  # a missing library fails here, not on the first write
        self.inner = inner
        self.keyring = keyring
        self.algorithm = algorithm
        self.chunk_size = chunk_size  # of new objects; a reader takes each object's own
        self.url = inner.url
        self.location = inner.location

    # -- what the stanza records (archive.info): the algorithm and the key id, never the key --
    def encryption_record(self) -> dict[str, Any]:
        return {"encryption": {"algorithm": self.algorithm, "key_id": self.keyring.current_id}}

    # -- the driver surface --------------------------------------------------------------------
    def stat(self, key: str) -> ObjectInfo | None:
        return self.inner.stat(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def children(self, prefix: str = "") -> list[str]:
        return self.inner.children(prefix)  # names only: nothing to decrypt

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def delete_many(self, keys: Iterable[str]) -> int:
        return self.inner.delete_many(keys)  # S3 deletes in batches

    def delete_prefix(self, prefix: str) -> int:
        return self.inner.delete_prefix(prefix)

    def check(self) -> None:
        self.inner.check()

    def remove_stale_temporaries(self, older_than: float = 3600) -> int:
        return self.inner.remove_stale_temporaries(older_than)

    def _write_atomic(self, key: str, chunks: Iterable[bytes]) -> int:
        """Returns the bytes of the stream as given (what a reader gets back), not as stored."""
        plain = 0

        def counted() -> Iterator[bytes]:
            nonlocal plain
            for chunk in chunks:
                plain += len(chunk)
                yield chunk

        sealed = encrypt_chunks(self.keyring, counted(), self.chunk_size, name=key)
        self.inner._write_atomic(key, sealed)
        return plain

    def _open_read(self, key: str) -> BinaryIO:
        raw = self.inner._open_read(key)
        try:
            cipher, header, chunk_size = self._header(key, raw)
        except BaseException:
            raw.close()
            raise
        middle, last = _associated(header, key)
        return _DecryptingReader(raw, f"{self.url}/{key}", cipher, middle, last, chunk_size)  # type: ignore[return-value]

    def _header(self, key: str, raw: BinaryIO) -> tuple[Any, bytes, int]:
        """The object cipher, the header and the chunk size of the object ``raw`` starts."""
        where = f"{self.url}/{key}"
        head = _read_exactly(raw, _COMMON.size)
        if not is_encrypted(head):
            raise EncryptionKeyError(
                f"object {where} is not encrypted, but the repository URL asks for encryption: "
                "its stanza was created without it",
                hint="open the repository without ?encryption= to read that stanza; a stanza's "
                "objects are all encrypted or all not",
            )
        version = head[8] if len(head) > 8 else 0
        layout = _HEADERS.get(version)
        if layout is not None:
            head += _read_exactly(raw, layout.size - len(head))
        if len(head) < (layout.size if layout else _COMMON.size):
            raise ChecksumMismatch(
                f"object {where} is damaged: truncated header", hint=_DAMAGED_HINT
            )
        _magic, _version, algorithm, chunk_size, kid = _COMMON.unpack_from(head)
        if layout is None or algorithm not in ALGORITHMS.values():
            raise RepositoryError(
                f"object {where} is in encryption format {version}.{algorithm}, which this "
                f"pgpitr does not read (it reads {UNBOUND_VERSION}.1 and {VERSION}.1)",
                hint="upgrade pgpitr",
            )
        salt = head[-SALT:]
        if version >= VERSION and head[_COMMON.size : _COMMON.size + 8] != name_digest(key):
            # the key is in the associated data as well: this only names the failure early
            raise TamperedObject(
                f"object {where} was written under another name: it was swapped, renamed or "
                "copied in the repository (or its header is damaged), and is refused",
                hint="the object under this name is not the one pgpitr stored here; find who "
                "changes the repository, and restore from another backup",
            )
        if not 0 < chunk_size <= 64 << 20:
            raise ChecksumMismatch(f"object {where} is damaged: bad header", hint=_DAMAGED_HINT)
        master = self.keyring.by_id(kid.hex())
        if master is None:
            raise EncryptionKeyError(
                f"wrong encryption key for the repository {self.url}: object {key} was "
                f"encrypted with key id {kid.hex()}, {self.keyring.source} has "
                f"{', '.join(self.keyring.ids)}",
                hint="use the key file this repository was encrypted with (after a rotation, "
                "keep the old keys below the new one)",
            )
        return _object_cipher(master, salt), head, chunk_size


def _read_exactly(raw: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes, fewer only at the end (a network body may return less per read)."""
    parts = []
    while size > 0:
        part = raw.read(size)
        if not part:
            break
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


class _DecryptingReader(io.RawIOBase):
    """The plaintext of a stored object, chunk by chunk; damage raises ChecksumMismatch."""

    def __init__(
        self, raw: BinaryIO, name: str, cipher: Any, middle: bytes, last: bytes, chunk_size: int
    ):
        self._raw = raw
        self._name = name
        self._cipher = cipher
        self._middle, self._last = middle, last
        self._sealed = chunk_size + TAG
        self._counter = 0
        self._carry = b""
        self._plain = b""
        self._offset = 0
        self._done = False
        self._invalid_tag = _primitives()[3]

    def readable(self) -> bool:
        return True

    def _next(self) -> bool:
        """Decrypt the next chunk into the buffer; False at the end of the object."""
        if self._done:
            return False
        data = self._carry + _read_exactly(self._raw, self._sealed + 1 - len(self._carry))
        final = len(data) <= self._sealed  # one byte of look-ahead tells the last chunk
        body, self._carry = (data, b"") if final else (data[: self._sealed], data[self._sealed :])
        try:
            if len(body) < TAG:
                raise self._invalid_tag()
            self._plain = self._cipher.decrypt(
                _nonce(self._counter), body, self._last if final else self._middle
            )
        except self._invalid_tag:
            raise ChecksumMismatch(
                f"object {self._name} is damaged: chunk {self._counter} does not decrypt "
                "(changed, truncated or reordered)",
                hint=_DAMAGED_HINT,
            ) from None
        self._offset = 0
        self._counter += 1
        self._done = final
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = [self._plain[self._offset :]]
            while self._next():
                parts.append(self._plain)
            self._plain, self._offset = b"", 0
            return b"".join(parts)
        while self._offset >= len(self._plain):
            if not self._next():
                return b""
        piece = self._plain[self._offset : self._offset + size]
        self._offset += len(piece)
        return piece

    def readinto(self, buffer: Any) -> int:
        piece = self.read(len(buffer))
        buffer[: len(piece)] = piece
        return len(piece)

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()
