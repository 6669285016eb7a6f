"""Real repositories that misbehave once, the way a store does: a 503 on an upload, an object
that comes back short.  Everything else goes to the real repository underneath."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from pgpitr.errors import RepositoryError
from pgpitr.repository import ObjectInfo, Repository


class Wrapped(Repository):
    def __init__(self, inner: Repository) -> None:
        self.inner = inner
        self.url = inner.url
        self.location = inner.location

    def stat(self, key: str) -> ObjectInfo | None:
        return self.inner.stat(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def _open_read(self, key: str) -> BinaryIO:
        return self.inner._open_read(key)

    def _write_atomic(self, key: str, chunks: Iterable[bytes]) -> int:
        return self.inner._write_atomic(key, chunks)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def check(self) -> None:
        self.inner.check()


class RefusesFirstUpload(Wrapped):
    """Answers 503 SlowDown to the first upload of a base backup, after taking part of it."""

    failures: list[str] = []  # class-wide: the flow opens a new repository per task attempt

    def _write_atomic(self, key: str, chunks: Iterable[bytes]) -> int:
        if key.endswith("base.tar.zst") and not RefusesFirstUpload.failures:
            RefusesFirstUpload.failures.append(key)
            next(iter(chunks), None)
            raise RepositoryError(
                f"the repository at {self.url}/{key} answered 503 (SlowDown) to upload",
                transient=True,
            )
        return super()._write_atomic(key, chunks)


class ShortBaseBackup(Wrapped):
    """Returns every base backup 100 bytes short, as a damaged or truncated object would be."""

    def _open_read(self, key: str) -> BinaryIO:
        raw = self.inner._open_read(key)
        if not key.endswith("base.tar.zst"):
            return raw
        with raw:
            return io.BytesIO(raw.read()[:-100])
