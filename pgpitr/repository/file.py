"""A repository in a local directory (``file:///path``): the embedded default.

Durability: write to a temporary name in the final directory, fsync the file, rename, fsync the
directory.  When pgpitr runs as root, new files and directories take the owner of the repository's
root, so that the unprivileged OS user running PostgreSQL's archiver can keep writing into them.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from pgpitr.errors import InvalidInput, NotFound, RepositoryError
from pgpitr.repository.base import ObjectInfo, Repository, count
from pgpitr.repository.url import FileUrl

_TEMP_MARK = ".pgpitr-tmp-"


class FileRepository(Repository):
    def __init__(self, root: FileUrl | Path) -> None:
        self.location = root if isinstance(root, FileUrl) else FileUrl(Path(root))
        self.root = self.location.path
        self.url = self.location.display
        self._owner: tuple[int, int] | None = None
        if os.geteuid() == 0 and self.root.exists():
            st = self.root.stat()
            if st.st_uid != 0:
                self._owner = (st.st_uid, st.st_gid)

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise InvalidInput(
                f"invalid repository key {key!r}: expected a relative path without '..'"
            )
        return self.root / key

    def _errors(self, exc: OSError, action: str, key: str) -> RepositoryError:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        hint = None
        if exc.errno == errno.ENOSPC:
            hint = "free space in the repository's file system; nothing was acknowledged"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            hint = f"check the owner and mode of {self.root}"
        return RepositoryError(f"cannot {action} {self.url}/{key}: {reason}", hint=hint)

    def _mkdirs(self, directory: Path) -> None:
        missing = []
        d = directory
        while not d.exists():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                continue
            if self._owner:
                os.chown(d, *self._owner)

    def stat(self, key: str) -> ObjectInfo | None:
        count("file", "HEAD")
        try:
            return ObjectInfo(key, self._path(key).stat().st_size)
        except FileNotFoundError:
            return None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # The prefix may end inside a file name, as S3 prefixes do: walk from its directory.
        count("file", "LIST")  # a directory walk stands for one listing
        head, _, _ = prefix.rpartition("/")
        base = self._path(head) if head else self.root
        if not base.is_dir():
            return
        found = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if _TEMP_MARK in name:
                    continue
                path = Path(dirpath, name)
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    try:
                        found.append(ObjectInfo(key, path.stat().st_size))
                    except FileNotFoundError:
                        continue
        yield from sorted(found, key=lambda info: info.key)

    def children(self, prefix: str = "") -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        try:
            return sorted(e.name for e in os.scandir(base) if _TEMP_MARK not in e.name)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise self._errors(exc, "list", prefix) from None

    def _open_read(self, key: str) -> BinaryIO:
        count("file", "GET")
        try:
            return open(self._path(key), "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            raise NotFound(f"object {self.url}/{key} does not exist") from None
        except OSError as exc:
            raise self._errors(exc, "read", key) from None

    def _write_atomic(self, key: str, chunks: Iterable[bytes]) -> int:
        count("file", "PUT")
        final = self._path(key)
        temp = final.with_name(f"{final.name}{_TEMP_MARK}{secrets.token_hex(4)}")
        size = 0
        fd = -1
        try:
            try:
                self._mkdirs(final.parent)
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            except OSError as exc:
                raise self._errors(exc, "write", key) from None
            for chunk in chunks:  # a producer's own failure propagates unchanged
                try:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                except OSError as exc:
                    raise self._errors(exc, "write", key) from None
                size += len(chunk)
            try:
                os.fsync(fd)
                os.close(fd)
                fd = -1
                if self._owner:
                    os.chown(temp, *self._owner)
                os.rename(temp, final)
                dirfd = os.open(final.parent, os.O_RDONLY)
                try:
                    os.fsync(dirfd)
                finally:
                    os.close(dirfd)
            except OSError as exc:
                raise self._errors(exc, "write", key) from None
        except BaseException:
            if fd >= 0:
                os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        return size

    def delete(self, key: str) -> None:
        count("file", "DELETE")
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._errors(exc, "delete", key) from None
        # Leave no empty directories behind, up to the root.
        parent = path.parent
        while parent != self.root and parent.is_relative_to(self.root):
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def check(self) -> None:
        try:
            self._mkdirs(self.root)
        except OSError as exc:
            raise self._errors(exc, "create", "") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise RepositoryError(
                f"the repository {self.url} is not writable", hint=f"check the mode of {self.root}"
            )

    def remove_stale_temporaries(self, older_than: float = 3600) -> int:
        """Remove temporaries a killed writer left (never visible as objects).

        Only those untouched for ``older_than`` seconds: a running writer's file is younger."""
        import time

        removed = 0
        limit = time.time() - older_than
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                path = Path(dirpath, name)
                if _TEMP_MARK in name and path.stat().st_mtime <= limit:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed
