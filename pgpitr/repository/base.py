"""The backup repository: a small driver surface, and everything else written once.

A backend implements five operations (``stat``, ``list``, ``_open_read``, ``_write_atomic``,
``delete``) plus ``check``.  Compression, checksums, JSON documents and verified reads live here so
that the filesystem and S3 backends behave the same.

Two kinds of objects exist:
- *documents* (backup manifests, archive info, WAL segments) are zstd frames written by us with the
  frame's content checksum on, so every read verifies them;
- *streams* (a base backup's tar.zst, produced by pg_basebackup) are stored as they come, and their
  SHA-256 is recorded by the caller in a document; ``open_verified`` checks it while reading.
"""

from __future__ import annotations

import hashlib
import io
import json
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from pgpitr.errors import ChecksumMismatch, NotFound

if TYPE_CHECKING:
    from pgpitr.repository.url import RepositoryUrl

CHUNK = 8 * 1024 * 1024
#: How every object of an encrypted repository starts (repository/crypt.py).
ENCRYPTED_MAGIC = b"PGPITRE\x00"

#: Requests made to every repository of this process, by backend and kind ("s3", "GET"):
#: what ``pgpitr --stats`` prints at exit.  A dict increment per request: nothing to import.
REQUESTS: dict[tuple[str, str], int] = {}
#: The kinds of request counted: a page of a listing, a read, a stat, a write, a delete, a part
#: of a multipart upload (and its start and completion).
KINDS = ("LIST", "GET", "HEAD", "PUT", "DELETE", "PART")


def count(backend: str, kind: str, n: int = 1) -> None:
    """Count ``n`` requests of ``kind`` to a ``backend`` repository."""
    REQUESTS[backend, kind] = REQUESTS.get((backend, kind), 0) + n


def request_counts() -> dict[str, dict[str, int]]:
    """The requests counted so far: {backend: {kind: n}}."""
    found: dict[str, dict[str, int]] = {}
    for (backend, kind), n in sorted(REQUESTS.items()):
        found.setdefault(backend, {})[kind] = n
    return found


def format_counts(counts: dict[str, dict[str, int]] | None = None) -> str:
    """One line per backend: "s3 requests: LIST 1, GET 4, HEAD 2 (7)"."""
    counts = request_counts() if counts is None else counts
    lines = []
    for backend, kinds in counts.items():
        shown = ", ".join(f"{k} {kinds[k]}" for k in KINDS if k in kinds)
        lines.append(f"{backend} requests: {shown} ({sum(kinds.values())})")
    return "\n".join(lines) or "no repository requests"


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


@dataclass(frozen=True)
class StoredStream:
    key: str
    size: int
    sha256: str


def _zstd():
    import zstandard  # imported on use: the WAL fast path may not need it

    return zstandard


def document_frame(data: bytes, level: int = 3) -> bytes:
    """A document as stored: one zstd frame with its content checksum on."""
    return _zstd().ZstdCompressor(level=level, write_checksum=True).compress(data)


def _read_ahead(reader: BinaryIO, size: int = 1 << 20, depth: int = 8) -> Iterator[bytes]:
    """The chunks of ``reader``, read by a thread ahead of the consumer.

    Reading, hashing and storing in turn would stall the producer behind a pipe (pg_basebackup)
    whenever a chunk is hashed or written: the pipe holds 64 kB.  Measured on an uncompressed
    backup, that made the stream take twice as long as pg_basebackup writing to disk itself."""
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(depth)
    stop = threading.Event()

    def pump() -> None:
        item: bytes | BaseException | None
        try:
            while chunk := reader.read(size):
                if not handed(chunk):
                    return
            item = None
        except BaseException as exc:  # handed to the consumer, raised there
            item = exc
        handed(item)

    def handed(item: bytes | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    thread = threading.Thread(target=pump, name="read-ahead", daemon=True)
    thread.start()
    try:
        while (item := chunks.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # a consumer that stopped early does not leave the thread blocked


class Repository(ABC):
    """Where backups and WAL live.  Keys are relative, '/'-separated paths."""

    #: How the repository is shown to people: never contains a secret (``location.display``).
    url: str
    #: The parsed URL it was opened from (a wrapper may leave it unset).
    location: RepositoryUrl

    # -- the driver surface ------------------------------------------------------------------
    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """The object's size, or None when it does not exist."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order."""

    @abstractmethod
    def _open_read(self, key: str) -> BinaryIO:
        """A raw reader; raises NotFound when the object does not exist."""

    @abstractmethod
    def _write_atomic(self, key: str, chunks: Iterable[bytes]) -> int:
        """Store ``chunks`` under ``key``; visible under that key only once complete and durable.

        Returns the number of bytes written.  On any failure nothing is left under ``key``."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object; a missing object is not an error."""

    @abstractmethod
    def check(self) -> None:
        """Prove the repository is reachable and writable with the given credentials."""

    def remove_stale_temporaries(self, older_than: float = 3600) -> int:
        """Remove what killed writers left (never visible as objects); a backend may have none."""
        return 0

    def children(self, prefix: str = "") -> list[str]:
        """The names one level below ``prefix`` (a '/'-ended folder, or "" for the top), like
        a directory listing: ``info`` finds the stanzas with it without listing their WAL.
        This default lists everything below; a backend answers from one level when it can."""
        found = {info.key[len(prefix) :].split("/", 1)[0] for info in self.list(prefix)}
        return sorted(found)

    # -- written once ------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def encryption_record(self) -> dict[str, Any]:
        """What a new stanza's archive info records of the encryption: nothing when plain."""
        return {}

    def put_document(self, key: str, data: bytes, level: int = 3) -> int:
        """Compress ``data`` with a checksummed zstd frame and store it atomically."""
        return self.put_frame(key, document_frame(data, level))

    def put_frame(self, key: str, frame: bytes) -> int:
        """Store a frame made by ``document_frame`` (a caller that needed it first, to name it)."""
        return self._write_atomic(key, [frame])

    def get_document(self, key: str, sha256: str | None = None) -> bytes:
        """Read a document back; a damaged one raises ChecksumMismatch naming the object.

        With ``sha256`` (of the stored frame) the bytes are checked before decompressing; the
        frame's own content checksum is checked in any case."""
        zstd = _zstd()
        with self._open_read(key) as raw:
            frame = raw.read()
        damaged = f"object {self.url}/{key} is damaged"
        hint = "the copy in the repository is unusable; restore from another backup"
        if sha256 is not None and hashlib.sha256(frame).hexdigest() != sha256:
            raise ChecksumMismatch(f"{damaged}: its SHA-256 does not match", hint=hint)
        try:
            return zstd.ZstdDecompressor().decompress(frame)
        except zstd.ZstdError as exc:
            if frame.startswith(ENCRYPTED_MAGIC):  # an encrypted stanza, read without its key
                from pgpitr.keys import encrypted_but_plain

                raise encrypted_but_plain(self.url, key) from None
            raise ChecksumMismatch(f"{damaged}: {exc}", hint=hint) from None

    def put_json(self, key: str, value: Any) -> None:
        self.put_document(key, json.dumps(value, indent=1, sort_keys=True).encode())

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_document(key))

    def put_stream(
        self,
        key: str,
        reader: BinaryIO,
        progress: Callable[[int], None] | None = None,
    ) -> StoredStream:
        """Store a byte stream as it comes, computing its SHA-256 on the way."""
        digest = hashlib.sha256()

        def chunks() -> Iterator[bytes]:
            done = 0
            for chunk in _read_ahead(reader):
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done)
                yield chunk

        size = self._write_atomic(key, chunks())
        return StoredStream(key, size, digest.hexdigest())

    def open_verified(self, key: str, sha256: str, size: int | None = None) -> BinaryIO:
        """A reader that raises ChecksumMismatch at the end if the bytes are not the ones stored."""
        return _VerifyingReader(self._open_read(key), f"{self.url}/{key}", sha256, size)

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove every key; return how many.  Raises at the first failure here; a backend
        that deletes in batches (S3) deletes all it can, then raises DeleteIncomplete naming
        the keys still stored: a count is never reported for objects that are still there."""
        done = 0
        for key in keys:
            self.delete(key)
            done += 1
        return done

    def delete_prefix(self, prefix: str) -> int:
        return self.delete_many([info.key for info in self.list(prefix)])

    def require(self, key: str) -> ObjectInfo:
        info = self.stat(key)
        if info is None:
            raise NotFound(f"object {self.url}/{key} does not exist")
        return info


class _VerifyingReader(io.RawIOBase):
    def __init__(self, raw: BinaryIO, name: str, sha256: str, size: int | None) -> None:
        self._raw = raw
        self._name = name
        self._expected = sha256
        self._size = size
        self._digest = hashlib.sha256()
        self._read = 0
        self._verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        chunk = self._raw.read(len(buffer))
        if not chunk:
            self._verify()
            return 0
        self._digest.update(chunk)
        self._read += len(chunk)
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def _verify(self) -> None:
        if self._verified:
            return
        self._verified = True
        if self._size is not None and self._read != self._size:
            raise ChecksumMismatch(
                f"object {self._name} has {self._read} bytes, the manifest says {self._size}"
            )
        if self._digest.hexdigest() != self._expected:
            raise ChecksumMismatch(
                f"object {self._name} does not match its checksum (sha256 {self._expected[:16]}…)",
                hint="the copy in the repository is damaged; use another backup",
            )

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()
