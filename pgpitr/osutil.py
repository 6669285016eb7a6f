"""Operating-system helpers the engine shares: atomic file writes, whether a process runs, a
process exit that skips the final garbage collection.

Imported by the WAL commands' fast path: standard library only.
"""

from __future__ import annotations

import atexit
import gc
import os
import secrets
from pathlib import Path


def write_atomic(
    path: Path,
    data: bytes | str,
    *,
    mode: int = 0o644,
    owner: tuple[int, int] | None = None,
    durable: bool = True,
) -> None:
    """Replace ``path`` by ``data`` at once: a reader sees the old file or the new, never part.

    Each writer has a temporary name of its own, so that two writing the same file at once (two
    WAL fetch workers, say) each rename a whole file.  ``durable`` fsyncs the file before the
    rename (what must survive a crash); spool markers and fetched WAL, which are rebuilt when
    lost, skip it."""
    temp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if owner:
            os.chown(temp, *owner)
        os.rename(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def open_private(path: Path, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """A descriptor of a state file that this account alone controls: a symlink in its place is
    refused (O_NOFOLLOW), and so is a file another account owns or may write, or a hard link to
    another file, any of which could have been swapped in.  What a more trusting process would
    follow or truncate is never opened."""
    import errno
    import stat

    from pgpitr.errors import UnsafeFile

    hint = f"remove {path}: pgpitr makes it again as a file of its own"
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(f"{path} is a symbolic link: refused", hint=hint) from None
        raise
    info = os.fstat(fd)
    if (
        info.st_uid != os.geteuid()
        or info.st_mode & 0o022
        or not stat.S_ISREG(info.st_mode)
        or info.st_nlink != 1
    ):
        os.close(fd)
        raise UnsafeFile(
            f"{path} is not a plain, singly linked file that only this account "
            f"(uid {os.geteuid()}) can write: refused",
            hint=hint,
        )
    return fd


def read_private(path: Path) -> str:
    """The text of a secret kept by this account: also refused when others may read it."""
    fd = open_private(path)
    with os.fdopen(fd) as f:
        if os.fstat(f.fileno()).st_mode & 0o077:
            from pgpitr.errors import UnsafeFile

            raise UnsafeFile(
                f"{path} may be read by other accounts: refused", hint=f"chmod 600 {path}"
            )
        return f.read()


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one of another user's counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_FICLONE = 0x40049409  # linux/fs.h: share the source's blocks (btrfs, XFS with reflink)


def copy_mode(directory: Path) -> str:
    """How files can be copied inside ``directory``'s file system, fastest first: ``clone``
    (reflinks), ``copy-file-range`` (the kernel copies, no trip through user space) or
    ``copy``; tried on two small files there, since the answer depends on the file system."""
    import fcntl
    import tempfile

    with tempfile.TemporaryDirectory(prefix=".pgpitr-copy-probe-", dir=directory) as tmp:
        src, dst = Path(tmp, "a"), Path(tmp, "b")
        src.write_bytes(b"x" * 8192)
        with src.open("rb") as fin, dst.open("wb") as fout:
            try:
                fcntl.ioctl(fout.fileno(), _FICLONE, fin.fileno())
                return "clone"
            except OSError:
                pass
            try:
                if os.copy_file_range(fin.fileno(), fout.fileno(), 8192) > 0:
                    return "copy-file-range"
            except (OSError, AttributeError):
                pass
    return "copy"


def no_collection_at_exit() -> None:
    """Have this process end without the interpreter's final garbage collection.

    A process that imported Prefect holds about a million objects; walking them at exit costs
    0.35-0.45 s of CPU, a quarter of a short command's, for memory the kernel frees anyway.
    ``gc.freeze`` as an atexit handler hides them from that walk; it stops nothing from running
    (the other handlers, such as Prefect's draining of its logs and events, run before or after
    it alike), and everything else about the exit stays as it was."""
    atexit.register(gc.freeze)
